"""The reconciler: finishes the record of runs nobody drives any more (lease expired, or the worker known
dead before that).

It runs when a worker starts (migrations_app.worker.ReconcilingWorker), on a schedule (vmportal.cron) and,
to adopt within seconds, in `manage.py watch_runs`. For each such run the engine's recovery
(`migrations_app.engine.recovery.resolve`) asks both hosts where the VM's UUID really is and whether
libvirt is still moving it, and writes the outcome that matches; a job libvirt still runs is adopted by
an adopt job queued here (`migrations_app.engine.recovery.adopt`: a live move's monitor resumes).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from migrations_app.choices import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES
from migrations_app.engine import recovery
from migrations_app.engine.shared import cleanup
from migrations_app.models import MigrationRun
from migrations_app.services import runs

log = logging.getLogger(__name__)


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
    """Decide one adopted run (`migrations_app.engine.recovery.resolve`); a libvirt job still running
    is adopted by a job queued with the id the run now carries."""
    result = recovery.resolve(run, wait=wait)
    if result.get("decision") == "watching":
        from migrations_app import jobs

        jobs.enqueue_adopt(run.pk, job_id=result.pop("job_id"))
    return result


def adopt(run_id: int, *, job_id: str = "") -> dict[str, Any]:
    """The adopt job (`migrations_app.engine.recovery.adopt`): a live move's monitor resumes, a backup
    nobody can record is aborted, then the outcome is recorded from what the hosts say."""
    return recovery.adopt(run_id, job_id=job_id)
