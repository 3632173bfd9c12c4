"""Migration runs: creating them for approved plans, queueing their jobs, cancel.

Claiming a run under per-host limits, its lease and its end are the engine's (`engine.runstate`,
re-exported here). A run that does not fit stays queued without holding a worker; whenever a run ends
(`runstate.run_finished`, received below), and on the reconciler's schedule, `dispatch()` queues jobs for
the waiting runs again, oldest first.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from migrations_app import events
from migrations_app.choices import TERMINAL_RUN_STATES, Mode, PlanStatus, RunStatus
from migrations_app.engine.runstate import (  # noqa: F401  (the run-state primitives, as callers know them)
    DB_RETRY_SECONDS,
    DISPATCHED,
    LEASE_SECONDS,
    MAX_MOVE_SECONDS,
    active_counts,
    active_run_of,
    finish,
    queue_position,
    retrying_db,
    run_finished,
    try_claim,
    worker_identity,
)
from migrations_app.engine.spec import RunSpec
from migrations_app.models import MigrationRun, PlanItem
from migrations_app.services import auditlog

#: plans whose items may become runs: approved, and on to their window and their waves
STARTABLE_PLAN_STATES = frozenset({PlanStatus.APPROVED, PlanStatus.SCHEDULED, PlanStatus.RUNNING})


class RunError(ValueError):
    """A request the rules refuse; the message says why and nothing was changed."""


# ---- creating -----------------------------------------------------------------------------------------


def plan_options(item: PlanItem) -> dict[str, Any]:
    """The specification a run of `item` gets (`RunSpec`), as stored on the run."""
    return RunSpec.of_item(item).as_options()


def start_item(actor: Any, item: PlanItem) -> MigrationRun:
    """Create a queued run (live or cold, as the item resolved) for one plan item and queue it after commit.

    Refused when the plan is not approved, the item has no destination or its VM already has a run in
    progress.
    """
    if item.plan.status not in STARTABLE_PLAN_STATES:
        raise RunError(f"The plan is {item.plan.get_status_display().lower()}, not approved: nothing can start yet.")
    if item.destination_id is None:
        raise RunError("Choose a destination for this VM first.")
    mode = item.mode or item.plan.mode
    if mode == Mode.AUTO:
        mode = Mode.LIVE
    with transaction.atomic():
        vm = type(item.vm).objects.select_for_update().get(pk=item.vm_id)
        busy = MigrationRun.objects.filter(vm=vm).exclude(status__in=TERMINAL_RUN_STATES).exists()
        if busy:
            raise RunError(f"{vm.name} already has a move queued or in progress.")
        if vm.host_id != item.source_id:
            raise RunError(f"{vm.name} is no longer on {item.source}; re-plan the move.")
        run = MigrationRun.objects.create(
            item=item,
            vm=vm,
            source_id=item.source_id,
            destination_id=item.destination_id,
            mode=mode,
            options=plan_options(item),
        )
        auditlog.record(actor, "run.queue", run, after={"vm": vm.name, "destination": str(item.destination)})
        events.publish(run.pk, "state", events.state_payload(run))
        transaction.on_commit(dispatch)
    return run


# ---- queue ---------------------------------------------------------------------------------------------


def dispatch() -> list[int]:
    """Queue one job for every queued run that has none, oldest first. Safe to call from anywhere, often."""
    from migrations_app import jobs

    with transaction.atomic():
        waiting = list(
            MigrationRun.objects.select_for_update()
            .filter(status=RunStatus.QUEUED, job_id="", cancel_requested=False)
            .order_by("queued_at", "pk")
            .values_list("pk", flat=True)
        )
        if not waiting:
            return []
        MigrationRun.objects.filter(pk__in=waiting).update(job_id=DISPATCHED)

    def enqueue() -> None:
        for run_id in waiting:
            job_id = jobs.enqueue_migration(run_id)
            # the real RQ id, so the reconciler can tell a job lost with Redis from one still waiting
            MigrationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED, job_id=DISPATCHED).update(job_id=job_id)

    transaction.on_commit(enqueue)
    return waiting


def requeue_lost_jobs() -> int:
    """Queued runs whose RQ job no longer exists (Redis flushed or restarted without persistence) get
    dispatched again; a run is never claimed twice because claiming is a conditional UPDATE."""
    import django_rq
    from rq.job import Job

    from migrations_app import jobs

    connection = django_rq.get_connection(jobs.MIGRATION_QUEUE)
    lost = [
        run_id
        for run_id, job_id in MigrationRun.objects.filter(status=RunStatus.QUEUED)
        .exclude(job_id__in=["", DISPATCHED])
        .values_list("pk", "job_id")
        if not Job.exists(job_id, connection=connection)
    ]
    if lost:
        MigrationRun.objects.filter(pk__in=lost, status=RunStatus.QUEUED).update(job_id="")
    return len(lost)


def request_cancel(actor: Any, run: MigrationRun) -> MigrationRun:
    """Cancel a run. Queued: cancelled at once. Live and before cutover: the worker aborts libvirt's job
    within a second and the VM keeps running on the source. After the switch to post-copy: refused."""
    run.refresh_from_db()
    if run.status in TERMINAL_RUN_STATES:
        raise RunError(f"The run has already ended ({run.get_status_display().lower()}).")
    if run.status == RunStatus.QUEUED:
        with transaction.atomic():
            changed = MigrationRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(cancel_requested=True)
            if changed:
                run.cancel_requested = True
                return finish(run, RunStatus.CANCELLED, actor=actor, outcome="Cancelled before it started.")
        run.refresh_from_db()
    if run.status in (RunStatus.CUTOVER, RunStatus.VERIFYING) or "post-copy" in run.phase_detail:
        raise RunError("The VM is already switching over to the destination; the move can no longer be cancelled.")
    with transaction.atomic():
        MigrationRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        run.cancel_requested = True
        detail = (
            "Cancelling: rolling back the cold move" if run.mode == Mode.COLD else "Cancelling: aborting the live move"
        )
        events.run_changed(run, status=RunStatus.CANCELLING, phase_detail=detail)
        auditlog.record(actor, "run.cancel", run, after={"status": RunStatus.CANCELLING})
    return run


def _plan_follows(run_id: int) -> None:
    """The plan's state follows its runs (next wave, or its final state). A failure here must not be
    taken for the run's: the run's end is committed, and the periodic sweep catches the plan up."""
    from migrations_app.services import scheduling

    try:
        scheduling.run_ended(run_id)
    except Exception:
        logging.getLogger(__name__).exception("the plan of run %s could not follow its end", run_id)


def _run_finished(sender: Any, run_id: int, **kwargs: Any) -> None:
    """A run ended (committed): waiting runs get the freed slots, and the plan follows its runs."""
    dispatch()
    _plan_follows(run_id)


run_finished.connect(_run_finished, dispatch_uid="migrations_app.services.runs")
