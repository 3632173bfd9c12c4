"""The reconciler: finishes the record of runs whose worker stopped reporting (lease expired).

It runs when a worker starts (migrations_app.worker.ReconcilingWorker) and on a schedule (vmportal.cron).
For each such run it asks both hosts where the VM's UUID really is and whether libvirt is still moving it,
and then writes the outcome that matches. It never destroys, starts or undefines a guest that runs
anywhere; it only removes inactive leftovers the move itself created on the destination.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid as uuid_lib
from contextlib import suppress
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from inventory.hypervisor import HypervisorError
from inventory.hypervisor import migrate as hv
from migrations_app import events
from migrations_app.choices import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, Mode, RunStatus
from migrations_app.engine.live import cleanup, record_moved
from migrations_app.models import MigrationRun
from migrations_app.services import runs

log = logging.getLogger(__name__)

ADOPT_POLL_S = 1.0


def _timeout() -> float:
    return float(getattr(settings, "LIBVIRT_CONNECT_TIMEOUT", 15))


def _pid_gone(worker: str) -> bool:
    """The run's owner was a process on this machine that no longer exists."""
    host, _, pid = worker.rpartition(" ")[2].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _job_over(job_id: str) -> bool:
    """RQ says the run's job is no longer running: its work horse was killed (RQ moved the job to the
    failed registry), it was stopped, or it returned without ending the run. A job Redis no longer knows
    (a Redis restart) proves nothing: the lease decides then."""
    if not job_id or job_id in ("inline", runs.DISPATCHED):
        return False
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    from migrations_app import jobs

    try:
        status = Job.fetch(job_id, connection=django_rq.get_connection(jobs.MIGRATION_QUEUE)).get_status()
    except NoSuchJobError:
        return False
    except Exception:  # Redis down: no evidence either way
        return False
    return status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED)


def orphaned() -> list[tuple[int, Any]]:
    """Active runs nobody drives any more: (id, lease) of those whose lease ran out, and of those whose
    owner is known dead before that (RQ failed its job when the work horse died; its process is gone)."""
    now = timezone.now()
    found = []
    rows = MigrationRun.objects.filter(status__in=ACTIVE_RUN_STATES).values_list(
        "pk", "lease_until", "job_id", "worker"
    )
    for run_id, lease, job_id, worker in rows:
        if lease is None or lease < now or _pid_gone(worker) or _job_over(job_id):
            found.append((run_id, lease))
    return found


def adopt_orphans() -> list[dict[str, Any]]:
    """Take over every orphaned run (a conditional update, so two reconcilers never both adopt one) and
    decide it, or hand a still-running libvirt job to an adopt job that resumes its monitor."""
    now = timezone.now()
    results = []
    for run_id, lease in orphaned():
        taken = MigrationRun.objects.filter(pk=run_id, lease_until=lease, status__in=ACTIVE_RUN_STATES).update(
            lease_until=now + timedelta(seconds=runs.LEASE_SECONDS),
            worker=f"reconciler {runs.worker_identity()}"[:200],
        )
        if taken:
            results.append(resolve(MigrationRun.objects.select_related("source", "destination", "vm").get(pk=run_id)))
    return results


def reconcile() -> list[dict[str, Any]]:
    """One pass: adopt every orphaned run, retry pending destination clean-ups, then dispatch."""
    results = adopt_orphans()
    for run in MigrationRun.objects.filter(status__in=TERMINAL_RUN_STATES).exclude(pending_cleanup={}):
        note, pending = cleanup(run)
        if not pending:
            MigrationRun.objects.filter(pk=run.pk).update(pending_cleanup={})
            results.append({"run": run.pk, "cleaned": note})
    runs.requeue_lost_jobs()
    runs.dispatch()
    return results


def watch(interval: float = 2.0) -> None:
    """Adopt orphaned runs within seconds, for ever (the `watch_runs` command, beside the workers)."""
    while True:
        try:
            results = adopt_orphans()
            if results:
                log.info("adopted: %s", results)
        except Exception:  # a database or Redis restart: try again next round
            log.warning("adopting orphaned runs failed", exc_info=True)
            connection.close()
        time.sleep(interval)


def resolve(run: MigrationRun, *, wait: bool = False) -> dict[str, Any]:
    """Decide one adopted run from what the hosts say. With `wait`, first wait for a running libvirt job
    to end (the adopt job does this; the start-up pass must not block the worker)."""
    if run.mode == Mode.COLD:
        # a cold move has no libvirt job to wait for; its own rollback knows what to undo
        from migrations_app.engine import rollback

        return rollback.resolve(run)
    uuid = str(run.vm.uuid)
    src = hv.locate(run.source.uri, uuid, _timeout())
    if not src.job_active:
        _backup_abandoned(run)  # a backup its dead worker was taking can never be completed now
    if src.job_active and not wait:
        from migrations_app import jobs

        # the adopt job's id first: until it starts, the run is its (and no second adopt job is queued)
        job_id = uuid_lib.uuid4().hex
        events.run_changed(
            run,
            phase_detail="libvirt is still moving the VM; the portal watches it again",
            job_id=job_id,
            worker="waiting for a worker to adopt it",
        )
        jobs.enqueue_adopt(run.pk, job_id=job_id)
        return {"run": run.pk, "decision": "watching"}
    started = time.monotonic()
    while src.job_active and time.monotonic() - started < runs.MAX_MOVE_SECONDS:
        events.heartbeat(run.pk, lease_seconds=runs.LEASE_SECONDS)
        if MigrationRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
            with suppress(HypervisorError):
                hv.abort_job(run.source.uri, uuid, _timeout())
        time.sleep(ADOPT_POLL_S)
        src = hv.locate(run.source.uri, uuid, _timeout())
    dst = hv.locate(run.destination.uri, uuid, _timeout())
    if not src.reachable or not dst.reachable:
        # cannot tell yet: give the lease back so the next pass tries again
        down = run.source if not src.reachable else run.destination
        events.run_changed(
            run, phase_detail=f"Waiting for {down} to answer to confirm where the VM is", lease_until=timezone.now()
        )
        return {"run": run.pk, "decision": "unreachable"}
    cancelled = run.cancel_requested
    if dst.running and not src.running:
        record_moved(run)
        stats = hv.completed_stats(run.destination.uri, uuid, _timeout())
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
    if src.running and dst.running:
        runs.finish(
            run,
            RunStatus.FAILED,
            error="The VM runs on both hosts (an interrupted post-copy move?). Nothing was touched.",
            outcome=f"An admin must decide which of {run.source} and {run.destination} keeps it.",
        )
        return {"run": run.pk, "decision": "both"}
    if src.running:
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
    while hv.locate(run.source.uri, uuid, _timeout()).job_active and time.monotonic() - started < 120:
        try:
            hv.abort_job(run.source.uri, uuid, _timeout())
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
