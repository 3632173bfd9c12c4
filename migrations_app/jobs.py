"""RQ entry points of migrations_app. They take ids and call one service."""

from __future__ import annotations

import django_rq

AUDIT_QUEUE = "audits"  # its own worker: a big audit never delays syncs
AUDIT_TIMEOUT = 900  # seconds: a 500-VM plan reads two hosts and measures dirty rates


def run_audit(audit_id: int) -> dict[str, object]:
    """Run the pre-migration audit of one plan (see migrations_app.services.audits)."""
    from migrations_app.services import audits as audit_service

    return audit_service.run_audit(audit_id)


def enqueue_audit(audit_id: int) -> str:
    job = django_rq.get_queue(AUDIT_QUEUE).enqueue(
        run_audit, audit_id, job_timeout=AUDIT_TIMEOUT, description=f"audit {audit_id}"
    )
    return job.id


# ---- migration runs ---------------------------------------------------------------------------------

MIGRATION_QUEUE = "migrations"
#: Longer than the longest move the engine allows (it aborts a live job at MAX_MOVE_SECONDS), plus time
#: for completed stats, the sync of both hosts and a clean-up, so RQ never kills a move half way.
MIGRATION_TIMEOUT = 15 * 60


def _migration_timeout() -> int:
    from migrations_app.services.runs import MAX_MOVE_SECONDS

    return MAX_MOVE_SECONDS + MIGRATION_TIMEOUT


def run_migration(run_id: int) -> dict[str, object]:
    """Claim and perform one migration run (a run that must wait for a host slot stays queued)."""
    from rq import get_current_job

    from migrations_app.choices import Mode
    from migrations_app.engine import cold, live
    from migrations_app.models import MigrationRun
    from migrations_app.services.runs import worker_identity

    job = get_current_job()
    # dispatch by mode: cold runs are the portal's own copy (migrations_app.engine.cold)
    if MigrationRun.objects.filter(pk=run_id, mode=Mode.COLD).exists():
        return cold.execute(run_id, job_id=job.id if job else "inline", worker=worker_identity())
    return live.execute(run_id, job_id=job.id if job else "inline", worker=worker_identity())


def enqueue_migration(run_id: int) -> str:
    # never retried: a second attempt must be a decision by a person, after the first one is understood
    job = django_rq.get_queue(MIGRATION_QUEUE).enqueue(
        run_migration,
        run_id,
        job_timeout=_migration_timeout(),
        retry=None,
        description=f"migration run {run_id}",
    )
    return job.id


def adopt_run(run_id: int) -> dict[str, object]:
    """Watch a move whose worker died while libvirt kept moving the VM; record the outcome."""
    from rq import get_current_job

    from migrations_app.services import reconcile

    job = get_current_job()
    return reconcile.adopt(run_id, job_id=job.id if job else "")


def enqueue_adopt(run_id: int, *, job_id: str | None = None) -> str:
    job = django_rq.get_queue(MIGRATION_QUEUE).enqueue(
        adopt_run,
        run_id,
        job_id=job_id,
        job_timeout=_migration_timeout(),
        description=f"adopt migration run {run_id}",
    )
    return job.id


def reconcile_runs() -> list[dict[str, object]]:
    """Scheduled: adopt runs whose lease expired, retry destination clean-ups, dispatch waiting runs."""
    from migrations_app.services import reconcile

    return reconcile.reconcile()


def prune_backups() -> dict[str, int]:
    """Scheduled: remove backups and retained source disks whose retention has ended."""
    from migrations_app.services import backups

    return backups.prune()
