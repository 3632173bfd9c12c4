"""Recovering runs: what a live move that ended, was aborted or lost its worker means, and settling it.

Both the live engine (when libvirt's job returns an error, or its own code crashed) and the reconciler
(when a run's lease expired) ask both hosts where the VM's UUID is (`inventory.hypervisor.migrate.locate`)
and must reach the same conclusion from the same facts. `whereabouts` and `live_failure` take those plain
facts and return the conclusion (no database, no host: tested over plain inputs); `resolve` asks the
hosts and records the outcome. It never destroys, starts or undefines a guest that runs anywhere; it only
removes inactive leftovers the move itself created on the destination.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid as uuid_lib
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone

from inventory.hypervisor import HypervisorError
from inventory.hypervisor import migrate as hv
from inventory.hypervisor.migrate import DomainLocation
from migrations_app import events
from migrations_app.choices import ACTIVE_RUN_STATES, Mode, RunStatus
from migrations_app.engine import runstate as runs
from migrations_app.engine.shared import cleanup, libvirt_timeout, record_moved
from migrations_app.models import MigrationRun

log = logging.getLogger(__name__)

#: how often an adopted run's libvirt job is looked at while it runs on
ADOPT_POLL_S = 1.0
#: how long the backup job of a run whose worker died may take to end after it was aborted
BACKUP_ABORT_S = 120


class Whereabouts(enum.StrEnum):
    """Where the VM is, judged from what the source and the destination report."""

    UNREACHABLE = "unreachable"  # a host did not answer: cannot tell yet
    MOVED = "moved"  # runs on the destination only: the move happened
    BOTH = "both"  # runs on both hosts (an interrupted post-copy?): an admin decides
    ON_SOURCE = "on source"  # runs on the source only: the move did not happen
    NOT_RUNNING = "not running"  # runs nowhere: the portal never starts a guest by itself


def whereabouts(source: DomainLocation, destination: DomainLocation) -> Whereabouts:
    if not source.reachable or not destination.reachable:
        return Whereabouts.UNREACHABLE
    if destination.running and not source.running:
        return Whereabouts.MOVED
    if source.running and destination.running:
        return Whereabouts.BOTH
    if source.running:
        return Whereabouts.ON_SOURCE
    return Whereabouts.NOT_RUNNING


@dataclass(frozen=True)
class Failure:
    """How a live move that did not move the VM ends: its terminal status and the message for people."""

    status: str
    message: str


def live_failure(aborted_by: str, error: str, *, max_downtime_ms: int, max_move_s: int) -> Failure:
    """The terminal state of a live move whose job ended without moving the VM.

    `aborted_by` is who aborted libvirt's job: "cancel" (a user), "policy" (the convergence policy gave
    up), "timeout" (the move took too long) or "" (libvirt failed on its own: its `error` is the message).
    """
    if aborted_by == "cancel":
        return Failure(RunStatus.CANCELLED, "Cancelled: the live move was aborted.")
    if aborted_by == "policy":
        return Failure(
            RunStatus.FAILED,
            f"The guest did not converge: it dirties memory faster than it can be sent, even at the maximum "
            f"downtime of {max_downtime_ms} ms; the move was aborted as the plan says.",
        )
    if aborted_by == "timeout":
        return Failure(RunStatus.FAILED, f"The move took longer than the {max_move_s} s allowed and was aborted.")
    return Failure(RunStatus.FAILED, error)


def resolve(run: MigrationRun, *, wait: bool = False) -> dict[str, Any]:
    """Decide one adopted run from what the hosts say. With `wait`, first wait for a running libvirt job
    to end (the adopt job does this; the start-up pass must not block the worker), aborting it again while
    a cancel is requested. Without it, a job still running gives the decision "watching" with the id the
    adopt job must have (`job_id`): the run is that job's from now on, so no second adopt job is queued."""
    if run.mode == Mode.COLD:
        # a cold move has no libvirt job to wait for; its own rollback knows what to undo
        from migrations_app.engine import rollback

        return rollback.resolve(run)
    uuid = str(run.vm.uuid)
    src = hv.locate(run.source.uri, uuid, libvirt_timeout())
    if not src.job_active:
        _backup_abandoned(run)  # a backup its dead worker was taking can never be completed now
    if src.job_active and not wait:
        # the caller (the reconciler) queues a job with this id that adopts it (`adopt`)
        job_id = uuid_lib.uuid4().hex
        events.run_changed(
            run,
            phase_detail="libvirt is still moving the VM; the portal watches it again",
            job_id=job_id,
            worker="waiting for a worker to adopt it",
        )
        return {"run": run.pk, "decision": "watching", "job_id": job_id}
    started = time.monotonic()
    while src.job_active and time.monotonic() - started < runs.MAX_MOVE_SECONDS:
        events.heartbeat(run.pk, lease_seconds=runs.LEASE_SECONDS)
        if MigrationRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
            with suppress(HypervisorError):
                hv.abort_job(run.source.uri, uuid, libvirt_timeout())
        time.sleep(ADOPT_POLL_S)
        src = hv.locate(run.source.uri, uuid, libvirt_timeout())
    dst = hv.locate(run.destination.uri, uuid, libvirt_timeout())
    found = whereabouts(src, dst)
    if found == Whereabouts.UNREACHABLE:
        # cannot tell yet: give the lease back so the next pass tries again
        down = run.source if not src.reachable else run.destination
        events.run_changed(
            run, phase_detail=f"Waiting for {down} to answer to confirm where the VM is", lease_until=timezone.now()
        )
        return {"run": run.pk, "decision": "unreachable"}
    cancelled = run.cancel_requested
    if found == Whereabouts.MOVED:
        record_moved(run)
        stats = hv.completed_stats(run.destination.uri, uuid, libvirt_timeout())
        fields: dict[str, Any] = {"transferred_at": run.transferred_at or timezone.now(), "percent": 100.0}
        if stats is not None:
            fields.update(
                downtime_ms=stats.downtime_ms,
                setup_ms=stats.setup_ms,
                elapsed_ms=stats.elapsed_ms,
                completed_stats=stats.raw,
            )
        left = " Its old definition is still on the source (shut off)." if src.exists else ""
        runs.finish(
            run,
            RunStatus.SUCCEEDED,
            outcome=f"Running on {run.destination}. The move finished while no worker watched it.{left}",
            pending_cleanup={},
            **fields,
        )
        return {"run": run.pk, "decision": "succeeded"}
    if found == Whereabouts.BOTH:
        runs.finish(
            run,
            RunStatus.FAILED,
            error="The VM runs on both hosts (an interrupted post-copy move?). Nothing was touched.",
            outcome=f"An admin must decide which of {run.source} and {run.destination} keeps it.",
        )
        return {"run": run.pk, "decision": "both"}
    if found == Whereabouts.ON_SOURCE:
        note, pending = cleanup(run)
        status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
        runs.finish(
            run,
            status,
            error="" if cancelled else "The worker stopped while moving the VM and the move did not complete.",
            outcome=f"The VM keeps running on {run.source}. {note}".strip(),
            pending_cleanup=pending,
        )
        return {"run": run.pk, "decision": str(status)}
    where = ", ".join(
        f"{host}: {loc.state if loc.exists else 'absent'}" for host, loc in ((run.source, src), (run.destination, dst))
    )
    runs.finish(
        run,
        RunStatus.FAILED,
        error="The VM is not running on either host; the portal does not start it.",
        outcome=f"{where}. An admin must check.",
    )
    return {"run": run.pk, "decision": "not running"}


def adopt(run_id: int, *, job_id: str = "") -> dict[str, Any]:
    """Take over a run whose libvirt job outlived its worker: a live move's monitor resumes (progress,
    convergence policy, cancel, time limit); a backup nobody can record any more is aborted. Then the
    outcome is recorded from what the hosts say."""
    run = MigrationRun.objects.select_related("source", "destination", "vm").get(pk=run_id)
    if run.status not in ACTIVE_RUN_STATES:
        return {"run": run_id, "decision": "already ended"}
    # this job owns the run now (unless a newer adopt job was queued meanwhile): if its work horse dies
    # too, the same signs show it
    mine = MigrationRun.objects.filter(pk=run_id)
    if job_id:
        mine = mine.filter(job_id=job_id)
    taken = mine.update(
        worker=f"reconciler {runs.worker_identity()}"[:200],
        lease_until=timezone.now() + timedelta(seconds=runs.LEASE_SECONDS),
    )
    if not taken:
        return {"run": run_id, "decision": "adopted by another job"}
    run.refresh_from_db()
    if run.mode == Mode.LIVE:
        if run.status == RunStatus.BACKUP:
            _abort_backup(run)
        else:
            from migrations_app.engine.live import LiveMove

            LiveMove(run).resume()
        run.refresh_from_db()
        if run.status not in ACTIVE_RUN_STATES:
            return {"run": run_id, "decision": str(run.status)}
    return resolve(run, wait=True)


def _abort_backup(run: MigrationRun) -> None:
    """The backup job of a run whose worker died: nobody can record it, so it is aborted (the guest keeps
    running on the source) and the backup marked failed."""
    uuid = str(run.vm.uuid)
    started = time.monotonic()
    while hv.locate(run.source.uri, uuid, libvirt_timeout()).job_active and time.monotonic() - started < BACKUP_ABORT_S:
        try:
            hv.abort_job(run.source.uri, uuid, libvirt_timeout())
        except HypervisorError:
            log.warning("aborting the backup job of run %s failed", run.pk, exc_info=True)
        events.heartbeat(run.pk, lease_seconds=runs.LEASE_SECONDS)
        time.sleep(ADOPT_POLL_S)
    _backup_abandoned(run)


def _backup_abandoned(run: MigrationRun) -> None:
    from migrations_app.models.backups import Backup, BackupState

    Backup.objects.filter(run=run, state=BackupState.TAKING).update(
        state=BackupState.FAILED, error="The worker stopped while taking the backup.", finished_at=timezone.now()
    )
