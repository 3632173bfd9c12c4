"""Operators' commands: queue host syncs for the workers; re-audit plans stuck in 'auditing'."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import django_rq
import pytest
from django.core.management import call_command
from django.utils import timezone

from migrations_app.choices import AuditStatus, PlanStatus
from migrations_app.models import Audit
from tests.workflow.conftest import make_plan, world  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def test_sync_inventory_queues_one_job_per_host(world: dict[str, Any]) -> None:  # noqa: F811
    queue = django_rq.get_queue("sync")
    before = set(queue.get_job_ids())
    out = StringIO()
    call_command("sync_inventory", "--queue", stdout=out)
    new = [j for j in queue.get_job_ids() if j not in before]
    try:
        assert "2 host sync(s) queued" in out.getvalue() and len(new) == 2
        jobs = [queue.fetch_job(j) for j in new]
        assert sorted(job.args[0] for job in jobs if job is not None) == sorted([world["src"].pk, world["dst"].pk])
    finally:
        for job_id in new:
            queue.remove(job_id)


def test_reaudit_stuck_plans_queues_a_new_audit_only_for_stuck_ones(world: dict[str, Any]) -> None:  # noqa: F811
    stuck = make_plan(world)
    fresh = make_plan(world, vms=("pay-2",))
    assert stuck.status == fresh.status == PlanStatus.AUDITING
    Audit.objects.filter(plan=stuck).update(created_at=timezone.now() - timedelta(hours=1))
    out = StringIO()
    call_command("reaudit_stuck_plans", "--dry-run", stdout=out)
    assert f"plan {stuck.pk}" in out.getvalue() and f"plan {fresh.pk}" not in out.getvalue()
    assert stuck.audits.count() == 1
    call_command("reaudit_stuck_plans", stdout=out)
    assert stuck.audits.count() == 2 and fresh.audits.count() == 1
    assert stuck.audits.order_by("-pk").first().status == AuditStatus.QUEUED  # type: ignore[union-attr]
    out = StringIO()
    call_command("reaudit_stuck_plans", stdout=out)
    assert "No plan is stuck" in out.getvalue()
