"""RQ entry points of the approval workflow. They take ids and call one service."""

from __future__ import annotations

from datetime import datetime

import django_rq
from django.utils import timezone

#: the audit queue: starting a plan re-audits it first
START_QUEUE = "default"
START_TIMEOUT = 900


def start_plan(plan_id: int) -> dict[str, object]:
    """At a plan's time: hold it (freeze), send it back (window over, re-audit finds something new), or
    start its runs (migrations_app.services.scheduling.start_due)."""
    from migrations_app.services import scheduling

    return scheduling.start_due(plan_id)


def enqueue_start(plan_id: int, at: datetime) -> str:
    queue = django_rq.get_queue(START_QUEUE)
    description = f"start plan {plan_id}"
    if at <= timezone.now():
        job = queue.enqueue(start_plan, plan_id, job_timeout=START_TIMEOUT, description=description)
    else:
        # RQ's scheduler (workers run with --with-scheduler) moves the job to the queue at `at`
        job = queue.enqueue_at(at, start_plan, plan_id, job_timeout=START_TIMEOUT, description=description)
    return job.id


def sweep_plans() -> dict[str, list[int]]:
    """Scheduled: start plans whose start job was lost, finish plans whose last run ended unnoticed."""
    from migrations_app.services import scheduling

    return scheduling.sweep()
