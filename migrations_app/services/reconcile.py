"""The reconciler: finishes the record of runs whose worker stopped reporting (lease expired).

It runs when a worker starts (migrations_app.worker.ReconcilingWorker) and on a schedule (vmportal.cron).
For each such run it asks both hosts where the VM's UUID really is and whether libvirt is still moving it,
and then writes the outcome that matches. It never destroys, starts or undefines a guest that runs
anywhere; it only removes inactive leftovers the move itself created on the destination.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from inventory.hypervisor import migrate as hv
from migrations_app import events
from migrations_app.choices import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, Mode, RunStatus
from migrations_app.engine.live import cleanup, record_moved
from migrations_app.engine.recovery import Whereabouts, whereabouts
from migrations_app.engine.shared import libvirt_timeout as _timeout
from migrations_app.models import MigrationRun
from migrations_app.services import runs

log = logging.getLogger(__name__)

ADOPT_POLL_S = 1.0


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
    """Decide one adopted run from what the hosts say. With `wait`, first wait for a running libvirt job
    to end (the adopt job does this; the start-up pass must not block the worker)."""
    if run.mode == Mode.COLD:
        # a cold move has no libvirt job to wait for; its own rollback knows what to undo
        from migrations_app.engine import rollback

        return rollback.resolve(run)
    uuid = str(run.vm.uuid)
    src = hv.locate(run.source.uri, uuid, _timeout())
    if src.job_active and not wait:
        from migrations_app import jobs

        events.run_changed(run, phase_detail="libvirt is still moving the VM; the portal watches it again")
        jobs.enqueue_adopt(run.pk)
        return {"run": run.pk, "decision": "watching"}
    started = time.monotonic()
    while src.job_active and time.monotonic() - started < runs.MAX_MOVE_SECONDS:
        events.heartbeat(run.pk, lease_seconds=runs.LEASE_SECONDS)
        time.sleep(ADOPT_POLL_S)
        src = hv.locate(run.source.uri, uuid, _timeout())
    dst = hv.locate(run.destination.uri, uuid, _timeout())
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


def adopt(run_id: int) -> dict[str, Any]:
    """Watch a run whose libvirt job outlived its worker until the job ends, then record the outcome."""
    run = MigrationRun.objects.select_related("source", "destination", "vm").get(pk=run_id)
    if run.status not in ACTIVE_RUN_STATES:
        return {"run": run_id, "decision": "already ended"}
    return resolve(run, wait=True)
