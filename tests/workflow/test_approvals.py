"""Four eyes, comments, approver thresholds, standard and emergency changes, and who is told."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inventory.permissions import APPROVERS
from migrations_app.choices import ApprovalKind, ChangeType, PlanStatus
from migrations_app.models import (
    Approval,
    ApprovalRule,
    AuditLogEntry,
    EmergencyReview,
    Notification,
    StandardChangePolicy,
)
from migrations_app.services import approvals, notifications
from migrations_app.services.plans import PlanError
from tests.base import PASSWORD
from tests.workflow.conftest import login, pending
from vmportal.access import Denied

pytestmark = pytest.mark.django_db


@pytest.fixture
def erin(world: dict[str, Any]) -> Any:
    """A second approver."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("erin", "erin@example.com", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=APPROVERS))
    return user


def test_nobody_approves_their_own_plan_not_even_an_admin(world: dict[str, Any]) -> None:
    plan = pending(world, "carol")
    with pytest.raises(Denied, match="your own plan"):
        approvals.approve(world["carol"], plan, "I trust myself")
    with pytest.raises(Denied, match="read-only"):
        approvals.approve(world["dave"], plan, "auditors look only")
    with pytest.raises(Denied, match="Only approvers"):
        approvals.reject(world["alice"], plan, "not an approver")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.PENDING_APPROVAL and not Approval.objects.exists()


def test_a_decision_needs_a_comment_and_records_who_and_when(world: dict[str, Any]) -> None:
    plan = pending(world)
    with pytest.raises(PlanError, match="comment"):
        approvals.approve(world["carol"], plan, "  ")
    approvals.approve(world["carol"], plan, "Window and audit look right.")
    decision = Approval.objects.get()
    assert (decision.approver, decision.decision, decision.comment) == (
        world["carol"],
        "approve",
        "Window and audit look right.",
    )
    assert decision.at is not None and decision.audit is not None
    plan.refresh_from_db()
    assert plan.status == PlanStatus.SCHEDULED and plan.approved_audit_id == decision.audit_id
    verbs = list(AuditLogEntry.objects.filter(target_id=str(plan.pk)).values_list("verb", flat=True))
    assert {"plan.approval", "plan.approved", "plan.scheduled"} <= set(verbs)


def test_approving_a_plan_that_is_not_waiting_is_refused(world: dict[str, Any]) -> None:
    plan = pending(world)
    approvals.reject(world["carol"], plan, "Not this week.")
    with pytest.raises(PlanError):
        approvals.approve(world["carol"], plan, "changed my mind")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.REJECTED and "Not this week." in plan.status_reason


def test_big_plans_need_two_distinct_approvers(world: dict[str, Any], erin: Any) -> None:
    ApprovalRule.objects.create(min_vms=2, approvers=2)
    small = pending(world)
    big = pending(world, vms=("pay-2", "pay-3"))
    assert (small.approvals_required, big.approvals_required) == (1, 2)
    approvals.approve(world["carol"], big, "first look is fine")
    big.refresh_from_db()
    assert big.status == PlanStatus.PENDING_APPROVAL
    with pytest.raises(PlanError, match="already decided"):
        approvals.approve(world["carol"], big, "and again")
    approvals.approve(erin, big, "second pair of eyes")
    big.refresh_from_db()
    assert big.status == PlanStatus.SCHEDULED
    approved = AuditLogEntry.objects.get(verb="plan.approved", target_id=str(big.pk))
    assert "carol" in approved.comment and "erin" in approved.comment


def test_a_standard_change_that_fits_a_policy_is_approved_automatically(world: dict[str, Any]) -> None:
    StandardChangePolicy.objects.create(name="small moves in one site", max_vms=2, live_only=False, clean_audit=True)
    plan = pending(world, change_type=ChangeType.STANDARD)
    assert plan.status == PlanStatus.SCHEDULED
    decision = Approval.objects.get(plan=plan)
    assert decision.approver is None and decision.kind == ApprovalKind.STANDARD and decision.policy is not None
    assert "standard change" in AuditLogEntry.objects.get(verb="plan.approved", target_id=str(plan.pk)).comment


def test_a_standard_change_that_fits_no_policy_waits_with_the_reason(world: dict[str, Any]) -> None:
    StandardChangePolicy.objects.create(name="tiny", max_vms=1, live_only=False)
    plan = pending(world, vms=("pay-1", "pay-2"), change_type=ChangeType.STANDARD)
    assert plan.status == PlanStatus.PENDING_APPROVAL
    assert "“tiny”: it moves 2 VMs, more than 1" in plan.status_reason
    assert not Approval.objects.exists()


def test_an_emergency_runs_at_once_and_waits_for_review_by_another_approver(
    client: Client, world: dict[str, Any], erin: Any
) -> None:
    normal = pending(world)
    with pytest.raises(PlanError, match="emergency change"):
        approvals.run_emergency(world["carol"], normal, "The host is on fire.")
    plan = pending(world, vms=("pay-2",), change_type=ChangeType.EMERGENCY)
    with pytest.raises(Denied, match="Only approvers"):
        approvals.run_emergency(world["alice"], plan, "I am in a hurry")
    approvals.run_emergency(world["carol"], plan, "The host's disks are failing.")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.SCHEDULED and "Emergency" in plan.schedule_note
    assert list(approvals.to_review()) == [EmergencyReview.objects.get(plan=plan)]
    login(client, erin)
    queue = client.get(reverse("migrations_app:approval_queue")).content.decode()
    assert "Emergency changes to review" in queue and plan.name in queue
    with pytest.raises(Denied, match="another approver must review"):
        approvals.review_emergency(world["carol"], plan, "looked fine to me")
    approvals.review_emergency(erin, plan, "Justified: the disks were failing.")
    assert not approvals.to_review().exists()
    assert AuditLogEntry.objects.filter(verb="plan.emergency_review", actor=erin).exists()


def test_the_approval_queue_shows_risk_and_lets_an_approver_decide_inline(
    client: Client, world: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from migrations_app.models import ChangeWindow

    ChangeWindow.objects.create(name="nights", start=timezone.now(), end=timezone.now() + timedelta(hours=1))
    login(client, world["carol"])
    plans = [pending(world)]

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            client.get(reverse("migrations_app:approval_queue"))
        return len(ctx.captured_queries)

    one = count()
    plans += [pending(world, vms=("pay-2",)), pending(world, "carol", vms=("pay-3",))]
    assert count() == one <= 20  # no query per plan
    page = client.get(reverse("migrations_app:approval_queue")).content.decode()
    assert all(p.name in page for p in plans)
    assert "Your own plan: another approver decides." in page  # carol's own plan has no decision form
    assert page.count('name="decision" value="approve"') == 2
    response = client.post(
        reverse("migrations_app:plan_decide", args=[plans[0].pk]),
        {"decision": "reject", "comment": "Needs a window.", "next": "queue"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse("migrations_app:approval_queue")
    plans[0].refresh_from_db()
    assert plans[0].status == PlanStatus.REJECTED


def test_the_right_people_get_mail_and_in_app_notifications(
    client: Client, world: dict[str, Any], erin: Any, django_capture_on_commit_callbacks: Any
) -> None:
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        plan = pending(world)
    # submitted → the approvers, not the requester
    assert sorted(m.to[0] for m in mail.outbox) == ["carol@example.com", "erin@example.com"]
    assert all("waits for approval" in m.subject and plan.get_absolute_url() in m.body for m in mail.outbox)
    assert set(Notification.objects.values_list("user__username", flat=True)) == {"carol", "erin"}
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.approve(world["carol"], plan, "Go ahead on Sunday.")
    # approved → the owner team (alice) — not bob (another team), not carol (her own action)
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "was approved" in mail.outbox[0].subject and "Go ahead on Sunday." in mail.outbox[0].body
    login(client, world["alice"])
    page = client.get(reverse("inventory:dashboard")).content.decode()
    assert 'aria-label="1 unread"' in page
    listing = client.get(reverse("notifications")).content.decode()
    assert "was approved" in listing
    client.post(reverse("notifications_read"))
    assert notifications.unread_count(world["alice"]) == 0
    assert not Notification.objects.filter(user=world["bob"]).exists()


def test_a_rejection_reaches_the_team_with_the_comment(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    plan = pending(world)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        approvals.reject(world["carol"], plan, "Move it after the release.")
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "rejected" in mail.outbox[0].subject and "Move it after the release." in mail.outbox[0].body


def test_hostile_comments_are_shown_as_text(client: Client, world: dict[str, Any]) -> None:
    plan = pending(world)
    approvals.reject(world["carol"], plan, "<script>alert(1)</script> no")
    login(client, world["alice"])
    page = client.get(plan.get_absolute_url()).content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; no" in page


def test_the_approver_is_warned_when_the_prediction_does_not_fit_the_window(
    client: Client, world: dict[str, Any]
) -> None:
    from migrations_app.models import MigrationPlan

    start = timezone.now() + timedelta(hours=1)
    plan = pending(world, window_start=start, window_end=start + timedelta(minutes=10))
    MigrationPlan.objects.filter(pk=plan.pk).update(predicted_seconds=3600)
    login(client, world["carol"])
    queue = client.get(reverse("migrations_app:approval_queue")).content.decode()
    assert "will not finish inside its window" in queue
    page = client.get(plan.get_absolute_url()).content.decode()
    assert "will not finish inside its window (3600 s predicted)" in page
