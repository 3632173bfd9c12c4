"""Migration runs: creating and queueing them, claiming them under per-host limits, leases, cancel.

Per-host limits (Host.max_outgoing / max_incoming) hold across any number of workers because every
claim happens in one PostgreSQL transaction that first locks the source and destination `Host` rows
(`SELECT … FOR UPDATE`, always in primary-key order so two claims cannot deadlock), then counts the
active runs of those hosts and moves the run from queued to preflight with a conditional UPDATE. Two
workers claiming for the same host are therefore serialised by the row lock, and a run can be claimed
only once. A run that does not fit stays queued without holding a worker; whenever a run ends, and on
the reconciler's schedule, `dispatch()` queues jobs for the waiting runs again, oldest first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from inventory.models import Host
from migrations_app import events
from migrations_app.choices import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, Mode, RunStatus
from migrations_app.models import MigrationRun, PlanItem
from migrations_app.services import auditlog

#: How long a run stays owned by its worker without a heartbeat. The monitor renews it with every progress
#: sample (about twice a second), so this only has to outlast a pause in writing, not a whole move.
LEASE_SECONDS = settings.RUN_LEASE_SECONDS
#: The longest a live move may take before the engine aborts it (the source keeps the VM).
MAX_MOVE_SECONDS = settings.MAX_MOVE_SECONDS
log = logging.getLogger(__name__)
T = TypeVar("T")

#: "queued" runs whose job is in the RQ queue carry this job id until a worker picks them up.
DISPATCHED = "dispatched"


class RunError(ValueError):
    """A request the rules refuse; the message says why and nothing was changed."""


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


#: how long a move's terminal write waits for the database to come back
DB_RETRY_SECONDS = 300


def retrying_db(fn: Callable[[], T], *, for_s: float = 0.0) -> T | None:
    """Run a database write (or read) of a move, riding out a database restart: on a lost connection the
    connection is dropped and the call tried again until `for_s` has passed. Returns None if it never
    went through (a monitor then carries on and writes again on its next reading)."""
    end = time.monotonic() + for_s
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise  # the caller's transaction is lost anyway; it decides
            log.warning("database unavailable; will try again", exc_info=True)
            with contextlib.suppress(Exception):
                connection.close()
            if time.monotonic() >= end:
                return None
            time.sleep(1.0)


# ---- creating -----------------------------------------------------------------------------------------


def plan_options(item: PlanItem) -> dict[str, Any]:
    plan = item.plan
    return {
        "bandwidth_mib_s": plan.bandwidth_mib_s,
        "max_downtime_ms": plan.max_downtime_ms,
        "auto_converge": plan.auto_converge,
        "postcopy_allowed": plan.postcopy_allowed,
        "on_no_convergence": plan.on_no_convergence,
        "parallel_connections": plan.parallel_connections,
        "compression": plan.compression,
        "network_map": dict(item.network_map),
        "storage_map": dict(item.storage_map),
        # cold moves and the backup phase (issue 5)
        "fresh_backup": plan.fresh_backup,
        "shutdown_timeout_s": plan.shutdown_timeout_s,
        "allow_force_off": plan.allow_force_off,
    }


def start_item(actor: Any, item: PlanItem) -> MigrationRun:
    """Create a queued run (live or cold, as the item resolved) for one plan item and queue it after commit.

    Refused when the item has no destination or its VM already has a run in progress.
    """
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


# ---- queue and claim ----------------------------------------------------------------------------------


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


def _lock_hosts(*host_ids: int) -> dict[int, Host]:
    """Lock host rows in primary-key order (the same order everywhere, so never a deadlock)."""
    return {h.pk: h for h in Host.objects.select_for_update().filter(pk__in=set(host_ids)).order_by("pk")}


def active_counts(source_id: int, destination_id: int) -> tuple[int, int]:
    active = MigrationRun.objects.filter(status__in=ACTIVE_RUN_STATES)
    return (
        active.filter(source_id=source_id).count(),
        active.filter(destination_id=destination_id).count(),
    )


def try_claim(run_id: int, *, job_id: str, worker: str) -> MigrationRun | None:
    """Move a queued run to preflight if both hosts have a free slot; None if it must keep waiting
    (or is no longer queued). Serialised per host by the row locks taken first."""
    with transaction.atomic():
        run = MigrationRun.objects.filter(pk=run_id).first()
        if run is None:
            return None
        hosts = _lock_hosts(run.source_id, run.destination_id)
        run.refresh_from_db()
        if run.status != RunStatus.QUEUED:
            return None
        outgoing, incoming = active_counts(run.source_id, run.destination_id)
        if outgoing >= hosts[run.source_id].max_outgoing or incoming >= hosts[run.destination_id].max_incoming:
            MigrationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(job_id="")
            transaction.on_commit(lambda: events.queue_changed(run_id, queue_position(run)))
            return None
        now = timezone.now()
        claimed = MigrationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.PREFLIGHT,
            job_id=job_id[:64],
            worker=worker[:200],
            started_at=now,
            heartbeat_at=now,
            lease_until=now + timedelta(seconds=LEASE_SECONDS),
            phase_detail="Checking both hosts",
        )
        if claimed != 1:
            return None
        run.refresh_from_db()
        events.publish(run.pk, "state", events.state_payload(run))
    return run


def active_run_of(vm: Any) -> MigrationRun | None:
    """The run moving this VM now (claimed, not ended), if any: while there is one, the VM is "moving"."""
    return (
        MigrationRun.objects.filter(vm=vm, status__in=ACTIVE_RUN_STATES)
        .select_related("source", "destination")
        .order_by("-pk")
        .first()
    )


def queue_position(run: MigrationRun) -> int | None:
    """1 for the next queued run that shares a host with this one, 2 for the one after…; None if not queued."""
    if run.status != RunStatus.QUEUED:
        return None
    ahead = (
        MigrationRun.objects.filter(status=RunStatus.QUEUED)
        .filter(Q(source_id=run.source_id) | Q(destination_id=run.destination_id))
        .filter(Q(queued_at__lt=run.queued_at) | Q(queued_at=run.queued_at, pk__lt=run.pk))
        .count()
    )
    return ahead + 1


def queue_positions(runs: list[MigrationRun]) -> dict[int, int | None]:
    return {run.pk: queue_position(run) for run in runs}


# ---- ending -------------------------------------------------------------------------------------------


def finish(run: MigrationRun, status: str, *, actor: Any = None, **fields: Any) -> MigrationRun:
    """Record a terminal state with an audit-log row, then let waiting runs have the freed slots."""
    if status not in TERMINAL_RUN_STATES:
        raise ValueError(f"{status} is not a terminal run state")
    before = run.status

    def write() -> MigrationRun:
        return _finish(run, status, before, actor, fields)

    # the end of a move must be recorded even across a database restart
    written = retrying_db(write, for_s=DB_RETRY_SECONDS)
    if written is None:
        raise OperationalError(f"the end of run {run.pk} could not be written")
    return written


def _finish(run: MigrationRun, status: str, before: str, actor: Any, fields: dict[str, Any]) -> MigrationRun:
    with transaction.atomic():
        # the same host locks as a claim: a claim that found no free slot has either already put its run
        # back in the queue (so the dispatch below re-queues it) or will see this run ended
        _lock_hosts(run.source_id, run.destination_id)
        events.run_changed(run, status=status, finished_at=timezone.now(), lease_until=None, **fields)
        auditlog.record(
            actor,
            f"run.{status}",
            run,
            before={"status": before},
            after={
                "status": status,
                "outcome": run.outcome,
                "error": run.error,
                "downtime_ms": run.downtime_ms,
                "host": str(run.destination if status == RunStatus.SUCCEEDED else run.source),
            },
        )
        transaction.on_commit(dispatch)
        transaction.on_commit(lambda: _plan_follows(run.pk))
    return run


def _plan_follows(run_id: int) -> None:
    """The plan's state follows its runs (next wave, or its final state). A failure here must not be
    taken for the run's: the run's end is committed, and the periodic sweep catches the plan up."""
    from migrations_app.services import scheduling

    try:
        scheduling.run_ended(run_id)
    except Exception:
        logging.getLogger(__name__).exception("the plan of run %s could not follow its end", run_id)


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
