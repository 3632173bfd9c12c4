"""Windows, freezes, the start job and the sweep, cancelling, and a plan's state following its runs —
the parts that need no hypervisor (the lab tests start real moves)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from migrations_app.choices import PlanStatus, RunStatus, Scope
from migrations_app.models import AuditLogEntry, ChangeFreeze, ChangeWindow, MigrationPlan, MigrationRun, Notification
from migrations_app.services import approvals, runs, scheduling
from migrations_app.services.plans import PlanError
from tests.workflow.conftest import login, pending

pytestmark = pytest.mark.django_db


def approve(world: dict[str, Any], plan: MigrationPlan, capture: Any) -> list[Any]:
    with capture(execute=False) as callbacks:
        approvals.approve(world["carol"], plan, "Fine.")
    plan.refresh_from_db()
    return callbacks


def test_a_plan_with_its_own_window_is_scheduled_for_the_windows_start(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    start = timezone.now() + timedelta(hours=2)
    plan = pending(world, window_start=start, window_end=start + timedelta(hours=1))
    callbacks = approve(world, plan, django_capture_on_commit_callbacks)
    assert plan.status == PlanStatus.SCHEDULED and plan.scheduled_for == start
    assert "the plan's own change window" in plan.schedule_note
    assert [
        c for c in callbacks if getattr(c, "func", None) is scheduling.enqueue_start
    ]  # RQ's scheduler gets the start job


def test_without_a_window_of_its_own_the_next_admin_window_for_its_team_applies(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    ChangeWindow.objects.create(
        name="analytics nights",
        scope=Scope.TEAM,
        team=world["analytics"],
        start=now + timedelta(hours=1),
        end=now + timedelta(hours=2),
    )
    ChangeWindow.objects.create(
        name="payments weekly",
        scope=Scope.TEAM,
        team=world["payments"],
        start=now - timedelta(days=7, hours=-3),  # last week, three hours from now: repeats in 3 h
        end=now - timedelta(days=7, hours=-4),
        repeat_weekly=True,
    )
    plan = pending(world)
    approve(world, plan, django_capture_on_commit_callbacks)
    assert "payments weekly" in plan.schedule_note
    assert plan.scheduled_for is not None
    assert abs((plan.scheduled_for - (now + timedelta(hours=3))).total_seconds()) < 1


def test_with_no_window_at_all_it_starts_once_approved(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = pending(world)
    approve(world, plan, django_capture_on_commit_callbacks)
    assert plan.scheduled_for is not None and plan.scheduled_for <= timezone.now()


def test_a_plan_whose_window_already_ended_cannot_be_approved(world: dict[str, Any]) -> None:
    past = timezone.now() - timedelta(hours=2)
    plan = pending(world, window_start=past, window_end=past + timedelta(hours=1))
    with pytest.raises(PlanError, match="window ended"):
        approvals.approve(world["carol"], plan, "Fine.")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.PENDING_APPROVAL and not plan.approvals.exists()


def _scheduled(world: dict[str, Any], capture: Any, **options: Any) -> MigrationPlan:
    plan = pending(world, **options)
    approve(world, plan, capture)
    return plan


def test_the_start_job_does_nothing_before_the_plans_time(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    start = timezone.now() + timedelta(minutes=5)
    plan = _scheduled(
        world, django_capture_on_commit_callbacks, window_start=start, window_end=start + timedelta(hours=1)
    )
    assert scheduling.start_due(plan.pk)["started"] is False
    plan.refresh_from_db()
    assert (
        plan.status == PlanStatus.SCHEDULED
        and plan.start_claimed_at is None
        and not plan.audits.filter(reason="schedule").exists()
    )


def test_a_freeze_holds_a_due_plan_until_it_ends(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _scheduled(world, django_capture_on_commit_callbacks)
    end = timezone.now() + timedelta(hours=1)
    ChangeFreeze.objects.create(
        name="quarter end",
        scope=Scope.HOST,
        host=world["dst"],
        start=timezone.now() - timedelta(minutes=1),
        end=end,
        reason="closing the books",
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = scheduling.start_due(plan.pk)
    assert result["why"] == "frozen"
    plan.refresh_from_db()
    assert plan.status == PlanStatus.SCHEDULED and plan.scheduled_for == end
    assert "quarter end" in plan.status_reason and "host dst" in plan.status_reason
    assert not plan.audits.filter(reason="schedule").exists() and not MigrationRun.objects.exists()
    assert AuditLogEntry.objects.filter(verb="plan.held", target_id=str(plan.pk)).exists()
    assert Notification.objects.filter(user=world["alice"], verb="plan.held").exists()
    assert [
        c for c in callbacks if getattr(c, "func", None) is scheduling.enqueue_start
    ]  # tried again when the freeze ends


def test_a_freeze_of_another_team_does_not_hold_the_plan(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _scheduled(world, django_capture_on_commit_callbacks)
    ChangeFreeze.objects.create(
        name="analytics freeze",
        scope=Scope.TEAM,
        team=world["analytics"],
        start=timezone.now() - timedelta(minutes=1),
        end=timezone.now() + timedelta(hours=1),
    )
    assert scheduling.freeze_at(plan, timezone.now()) is None


def test_a_freeze_that_outlasts_the_window_sends_the_plan_back(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    start = timezone.now() + timedelta(seconds=1)
    plan = _scheduled(
        world, django_capture_on_commit_callbacks, window_start=start, window_end=start + timedelta(minutes=30)
    )
    MigrationPlan.objects.filter(pk=plan.pk).update(scheduled_for=timezone.now())
    MigrationPlan.objects.filter(pk=plan.pk).update(window_start=timezone.now() - timedelta(seconds=1))
    ChangeFreeze.objects.create(
        name="all hands", start=timezone.now() - timedelta(minutes=1), end=timezone.now() + timedelta(hours=2)
    )
    scheduling.start_due(plan.pk)
    plan.refresh_from_db()
    assert (
        plan.status == PlanStatus.SUPERSEDED
        and "all hands" in plan.status_reason
        and "plan it again" in plan.status_reason
    )


def test_the_sweep_starts_a_plan_whose_start_job_was_lost(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    plan = _scheduled(world, django_capture_on_commit_callbacks)
    MigrationPlan.objects.filter(pk=plan.pk).update(
        scheduled_for=timezone.now() - timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS + 5)
    )
    # (the job never ran: Redis lost it) — a freeze makes the outcome visible without a hypervisor
    ChangeFreeze.objects.create(
        name="f", start=timezone.now() - timedelta(minutes=1), end=timezone.now() + timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks(execute=False):
        done = scheduling.sweep()
    assert done["started"] == [plan.pk]
    plan.refresh_from_db()
    assert "Held by the change freeze" in plan.status_reason
    assert scheduling.sweep()["started"] == []  # not due again until the freeze ends


def test_a_started_plan_is_taken_only_once(world: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    plan = _scheduled(world, django_capture_on_commit_callbacks)
    MigrationPlan.objects.filter(pk=plan.pk).update(start_claimed_at=timezone.now())  # another worker is re-auditing it
    assert scheduling.start_due(plan.pk)["why"] == "not due, or already being started"


def _running(
    world: dict[str, Any], capture: Any, vms: tuple[str, ...] = ("pay-1", "pay-2"), **options: Any
) -> MigrationPlan:
    plan = _scheduled(world, capture, vms=vms, **options)
    from migrations_app.services import planstate

    planstate.transition(plan, PlanStatus.RUNNING)
    return plan


def _finish(run: MigrationRun, status: str, capture: Any) -> None:
    with capture(execute=True):
        runs.finish(run, status, outcome="test")


def test_waves_run_one_after_the_other_and_the_plan_follows_its_runs(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _running(world, django_capture_on_commit_callbacks)
    first, second = plan.items.order_by("pk")
    type(second).objects.filter(pk=second.pk).update(wave=2)
    with django_capture_on_commit_callbacks(execute=False):
        assert scheduling.start_next_wave(plan) == 1
    run1 = MigrationRun.objects.get()
    assert run1.item_id == first.pk
    _finish(run1, RunStatus.SUCCEEDED, django_capture_on_commit_callbacks)
    run2 = MigrationRun.objects.exclude(pk=run1.pk).get()  # the next wave started when the first ended
    assert run2.item_id == second.pk
    plan.refresh_from_db()
    assert plan.status == PlanStatus.RUNNING
    _finish(run2, RunStatus.FAILED, django_capture_on_commit_callbacks)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.PARTIALLY_SUCCEEDED
    assert "1 of 2 VMs moved" in plan.status_reason and "pay-2: failed" in plan.status_reason


def test_a_failed_vm_stops_the_others_only_if_the_plan_says_so(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _running(world, django_capture_on_commit_callbacks, vms=("pay-1", "pay-2", "pay-3"), stop_on_failure=True)
    item1, item2, item3 = plan.items.order_by("pk")
    type(item3).objects.filter(pk=item3.pk).update(wave=2)
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.start_next_wave(plan)
    run1, run2 = MigrationRun.objects.order_by("pk")
    _finish(run1, RunStatus.FAILED, django_capture_on_commit_callbacks)
    run2.refresh_from_db()
    assert run2.status == RunStatus.CANCELLED  # still queued: stopped
    plan.refresh_from_db()
    assert plan.status == PlanStatus.FAILED and MigrationRun.objects.count() == 2  # wave 2 never started


def test_cancelling_a_running_plan_cancels_its_queued_runs(
    client: Client, world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _running(world, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.start_next_wave(plan)
    login(client, world["alice"])
    url = reverse("migrations_app:plan_cancel", args=[plan.pk])
    page = client.get(plan.get_absolute_url()).content.decode()
    assert "moves under way are aborted" in page  # the confirmation says what will happen
    client.post(url)  # no confirmation: nothing happens
    plan.refresh_from_db()
    assert plan.status == PlanStatus.RUNNING
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"confirm": "yes"})
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CANCELLED
    assert set(MigrationRun.objects.values_list("status", flat=True)) == {RunStatus.CANCELLED}


def test_a_run_is_cancelled_from_its_page_after_confirmation(
    client: Client, world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _running(world, django_capture_on_commit_callbacks, vms=("pay-1",))
    with django_capture_on_commit_callbacks(execute=False):
        scheduling.start_next_wave(plan)
    run = MigrationRun.objects.get()
    login(client, world["alice"])
    page = client.get(reverse("runs:run_detail", args=[run.pk])).content.decode()
    assert "the live move is aborted and the VM keeps running on src" in page
    client.post(reverse("runs:run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("runs:run_cancel", args=[run.pk]), {"confirm": "yes"})
    run.refresh_from_db()
    plan.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and plan.status == PlanStatus.FAILED  # nothing moved
    login(client, world["bob"])
    assert client.get(reverse("runs:run_detail", args=[run.pk])).status_code == 404


def test_a_scheduled_plan_can_be_cancelled_and_its_start_job_then_does_nothing(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _scheduled(world, django_capture_on_commit_callbacks)
    scheduling.cancel_plan(world["alice"], plan)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CANCELLED
    assert scheduling.start_due(plan.pk) == {"plan": plan.pk, "started": False, "why": "not scheduled"}
    with pytest.raises(PlanError, match="already cancelled"):
        scheduling.cancel_plan(world["alice"], plan)


def test_the_sweep_is_registered_with_the_periodic_jobs() -> None:
    from rq import cron

    import vmportal.cron  # noqa: F401  (registers on import)
    from migrations_app.plan_jobs import sweep_plans

    assert any(entry["func"] is sweep_plans for entry in cron._job_data_registry)


def test_a_plan_sent_back_is_planned_again_as_a_new_draft(
    client: Client, world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = _scheduled(world, django_capture_on_commit_callbacks, vms=("pay-1", "pay-2"), max_downtime_ms=500)
    from migrations_app.services import planstate

    planstate.transition(plan, PlanStatus.SUPERSEDED, reason="RES-MEM on pay-1: no memory left.")
    login(client, world["alice"])
    page = client.get(plan.get_absolute_url()).content.decode()
    assert "RES-MEM on pay-1: no memory left." in page and "Plan again" in page
    response = client.post(reverse("migrations_app:plan_again", args=[plan.pk]))
    new = MigrationPlan.objects.exclude(pk=plan.pk).get()
    assert response["Location"] == new.get_absolute_url()
    assert new.status == PlanStatus.AUDITING and new.max_downtime_ms == 500 and new.requester == world["alice"]
    assert sorted(new.items.values_list("vm__name", flat=True)) == ["pay-1", "pay-2"]
    assert client.post(reverse("migrations_app:plan_again", args=[new.pk]), follow=True).status_code == 200
    assert MigrationPlan.objects.count() == 2  # a plan under way is not copied
