"""RQ entry points of migrations_app. They take ids and call one service."""

from __future__ import annotations

import django_rq

AUDIT_QUEUE = "default"
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
