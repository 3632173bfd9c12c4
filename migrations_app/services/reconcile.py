"""The reconciler: finishes the record of runs whose worker stopped reporting (lease expired).

It runs when a worker starts (migrations_app.worker.ReconcilingWorker) and on a schedule (vmportal.cron).
For each such run the engine's recovery (`migrations_app.engine.recovery.resolve`) asks both hosts where
the VM's UUID really is and whether libvirt is still moving it, and writes the outcome that matches; a
job libvirt still runs is watched by an adopt job queued here.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from migrations_app.choices import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES
from migrations_app.engine import recovery
from migrations_app.engine.shared import cleanup
from migrations_app.models import MigrationRun
from migrations_app.services import runs

log = logging.getLogger(__name__)


def reconcile() -> list[dict[str, Any]]:
    """One pass: adopt every run whose lease expired, retry pending destination clean-ups, then dispatch."""
    now = timezone.now()
    results = []
    expired = MigrationRun.objects.filter(status__in=ACTIVE_RUN_STATES).filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True)
    )
    for run_id, lease in expired.values_list("pk", "lease_until"):
        # take the run over with a conditional update, so two reconcilers never both adopt it
        taken = MigrationRun.objects.filter(pk=run_id, lease_until=lease, status__in=ACTIVE_RUN_STATES).update(
            lease_until=now + timedelta(seconds=runs.LEASE_SECONDS),
            worker=f"reconciler {runs.worker_identity()}"[:200],
        )
        if taken:
            results.append(resolve(MigrationRun.objects.select_related("source", "destination", "vm").get(pk=run_id)))
    for run in MigrationRun.objects.filter(status__in=TERMINAL_RUN_STATES).exclude(pending_cleanup={}):
        note, pending = cleanup(run)
        if not pending:
            MigrationRun.objects.filter(pk=run.pk).update(pending_cleanup={})
            results.append({"run": run.pk, "cleaned": note})
    runs.requeue_lost_jobs()
    runs.dispatch()
    return results


def resolve(run: MigrationRun, *, wait: bool = False) -> dict[str, Any]:
    """Decide one adopted run (`migrations_app.engine.recovery.resolve`); a libvirt job still running
    is watched by an adopt job."""
    result = recovery.resolve(run, wait=wait)
    if result.get("decision") == "watching":
        from migrations_app import jobs

        jobs.enqueue_adopt(run.pk)
    return result


def adopt(run_id: int) -> dict[str, Any]:
    """Watch a run whose libvirt job outlived its worker until the job ends, then record the outcome."""
    run = MigrationRun.objects.select_related("source", "destination", "vm").get(pk=run_id)
    if run.status not in ACTIVE_RUN_STATES:
        return {"run": run_id, "decision": "already ended"}
    return resolve(run, wait=True)
