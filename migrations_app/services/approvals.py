"""Change approval: four eyes, approver thresholds, standard-change policies, emergency changes.

- Nobody decides on their own plan, not even an admin (vmportal.access). Every decision carries a
  comment, who and when (an `Approval` row) and an audit-log row.
- A plan needs as many distinct approvers as the largest `ApprovalRule` its size reaches (1 without one);
  the count is fixed when the plan is submitted. One rejection rejects it.
- A *standard* plan that fits an enabled `StandardChangePolicy` is approved at submission by the policy,
  recorded as such. A standard plan that fits none waits for an approver like a normal one, with the
  reason on its page.
- An *emergency* plan may be run at once by an approver other than its requester: it skips windows and
  freezes and is flagged for review afterwards by yet another approver.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from migrations_app import events
from migrations_app.choices import ApprovalKind, ChangeType, Decision, Mode, PlanStatus, Severity
from migrations_app.models import (
    Approval,
    ApprovalRule,
    Audit,
    EmergencyReview,
    MigrationPlan,
    StandardChangePolicy,
)
from migrations_app.services import auditlog, live, planstate
from migrations_app.services.plans import PlanError, latest_audit, uncovered_blocks
from vmportal import access
from vmportal.access import Action

MIN_COMMENT = 3


def required_approvers(plan: MigrationPlan) -> int:
    size = plan.items.count()
    found = ApprovalRule.objects.filter(min_vms__lte=size).aggregate(n=Max("approvers"))["n"]
    return max(int(found or 1), 1)


def _comment(comment: str) -> str:
    comment = (comment or "").strip()
    if len(comment) < MIN_COMMENT:
        raise PlanError("Give a comment with your decision (it is kept with the plan and shown to its team).")
    return comment[:4000]


def _store(**fields: Any) -> Approval:
    """Store one decision and tell the plan's watchers after commit (the plan page's approval history)."""
    approval = Approval.objects.create(**fields)
    events.approval_recorded(approval.plan_id, live.approval_payload(approval))
    return approval


def _record(plan: MigrationPlan, approver: Any, decision: str, comment: str, **extra: Any) -> Approval:
    try:
        with transaction.atomic():
            return _store(
                plan=plan, approver=approver, decision=decision, comment=comment, audit=latest_audit(plan), **extra
            )
    except IntegrityError:
        raise PlanError("You have already decided on this plan.") from None


def approvals_so_far(plan: MigrationPlan) -> int:
    return plan.approvals.filter(decision=Decision.APPROVE).values("approver").distinct().count()


def approve(approver: Any, plan: MigrationPlan, comment: str) -> MigrationPlan:
    """One approver's yes. The plan is approved (and scheduled) once enough distinct approvers said yes."""
    access.require(approver, Action.PLAN_APPROVE, plan)
    comment = _comment(comment)
    with transaction.atomic():
        locked = MigrationPlan.objects.select_for_update().get(pk=plan.pk)
        if locked.status != PlanStatus.PENDING_APPROVAL:
            raise PlanError(
                f"The plan is {locked.get_status_display().lower()}; only a plan waiting for approval can be approved."
            )
        _record(plan, approver, Decision.APPROVE, comment)
        given = approvals_so_far(plan)
        auditlog.record(
            approver, "plan.approval", plan, after={"decision": Decision.APPROVE, "approvals": given}, comment=comment
        )
        if given >= locked.approvals_required:
            _approved(plan, approver, f"Approved by {_names(plan)}: {comment}")
        else:
            plan.refresh_from_db()
    return plan


def _names(plan: MigrationPlan) -> str:
    names = [a.approver.get_username() for a in plan.approvals.select_related("approver") if a.approver]
    return ", ".join(names) or "policy"


def _approved(plan: MigrationPlan, actor: Any, reason: str) -> None:
    from migrations_app.services import scheduling

    planstate.transition(
        plan,
        PlanStatus.APPROVED,
        actor=actor,
        reason=reason,
        expect=PlanStatus.PENDING_APPROVAL,
        fields={"approved_audit": latest_audit(plan)},
    )
    scheduling.schedule(plan, actor=actor)


def reject(approver: Any, plan: MigrationPlan, comment: str) -> MigrationPlan:
    access.require(approver, Action.PLAN_APPROVE, plan)
    comment = _comment(comment)
    with transaction.atomic():
        _record(plan, approver, Decision.REJECT, comment)
        try:
            planstate.transition(
                plan,
                PlanStatus.REJECTED,
                actor=approver,
                reason=f"Rejected by {approver.get_username()}: {comment}",
                expect=PlanStatus.PENDING_APPROVAL,
            )
        except planstate.TransitionError as exc:
            raise PlanError(str(exc)) from None
    return plan


# ---- standard changes -----------------------------------------------------------------------------------


def policy_misfit(policy: StandardChangePolicy, plan: MigrationPlan, audit: Audit) -> str | None:
    """Why the plan is not a standard change under this policy (None: it is)."""
    items = list(plan.items.select_related("source", "destination"))
    if len(items) > policy.max_vms:
        return f"it moves {len(items)} VMs, more than {policy.max_vms}"
    allowed_teams = {t.pk for t in policy.teams.all()}
    if allowed_teams and plan.team_id not in allowed_teams:
        return f"it does not apply to team {plan.team}"
    if policy.live_only and any((i.mode or plan.mode) != Mode.LIVE for i in items):
        return "not every VM moves live"
    if policy.same_site and any(i.destination is None or i.source.site != i.destination.site for i in items):
        return "not every move stays inside one site"
    if plan.overrides.exists() or uncovered_blocks(plan, audit):
        return "the audit has blocks (overridden or not)"
    if policy.clean_audit and audit.results.filter(severity=Severity.WARN).exists():
        return "the audit has warnings"
    return None


def approve_if_standard(plan: MigrationPlan, audit: Audit) -> StandardChangePolicy | None:
    """At submission: approve a standard plan that fits an enabled policy, recorded as the policy's decision."""
    if plan.change_type != ChangeType.STANDARD:
        return None
    misfits = []
    for policy in StandardChangePolicy.objects.filter(enabled=True).prefetch_related("teams"):
        why = policy_misfit(policy, plan, audit)
        if why is None:
            _store(
                plan=plan,
                approver=None,
                decision=Decision.APPROVE,
                kind=ApprovalKind.STANDARD,
                policy=policy,
                audit=audit,
                comment=f"Fits the standard-change policy “{policy.name}”.",
            )
            _approved(plan, None, f"Approved automatically: a standard change under the policy “{policy.name}”.")
            return policy
        misfits.append(f"“{policy.name}”: {why}")
    reason = (
        "No standard-change policy fits (" + "; ".join(misfits) + "), so an approver decides."
        if misfits
        else "No standard-change policy is defined, so an approver decides."
    )
    MigrationPlan.objects.filter(pk=plan.pk).update(status_reason=reason)
    plan.status_reason = reason
    return None


# ---- emergency changes ----------------------------------------------------------------------------------


def run_emergency(approver: Any, plan: MigrationPlan, justification: str) -> MigrationPlan:
    """An approver (not the requester) runs an emergency plan at once: approved, scheduled for now,
    windows and freezes skipped, and flagged for review afterwards."""
    from migrations_app.services import scheduling

    access.require(approver, Action.PLAN_EMERGENCY, plan)
    justification = _comment(justification)
    if plan.change_type != ChangeType.EMERGENCY:
        raise PlanError("Only a plan submitted as an emergency change can be run at once; approve it instead.")
    with transaction.atomic():
        locked = MigrationPlan.objects.select_for_update().get(pk=plan.pk)
        if locked.status != PlanStatus.PENDING_APPROVAL:
            raise PlanError(f"The plan is {locked.get_status_display().lower()}; it cannot be run as an emergency.")
        _record(plan, approver, Decision.APPROVE, justification, kind=ApprovalKind.EMERGENCY)
        EmergencyReview.objects.create(plan=plan, ran_by=approver, justification=justification)
        planstate.transition(
            plan,
            PlanStatus.APPROVED,
            actor=approver,
            reason=f"Emergency change run at once by {approver.get_username()}: {justification}",
            expect=PlanStatus.PENDING_APPROVAL,
            fields={"approved_audit": latest_audit(plan)},
            log={"emergency": True},
        )
        scheduling.schedule(plan, actor=approver, emergency=True)
        from migrations_app.services import notifications

        notifications.notify(
            notifications.approvers().exclude(pk__in=[approver.pk, plan.requester_id]),
            f"Emergency change “{plan.name}” needs a review",
            f"{approver.get_username()} ran it at once: {justification}",
            plan=plan,
            verb="plan.emergency",
        )
    return plan


def review_emergency(reviewer: Any, plan: MigrationPlan, comment: str) -> EmergencyReview:
    access.require(reviewer, Action.PLAN_REVIEW, plan)
    comment = _comment(comment)
    with transaction.atomic():
        review = EmergencyReview.objects.select_for_update().filter(plan=plan).first()
        if review is None:
            raise PlanError("This plan was not an emergency change; there is nothing to review.")
        if review.reviewed_at is not None:
            raise PlanError("This emergency change has already been reviewed.")
        review.reviewed_by, review.reviewed_at, review.review = reviewer, timezone.now(), comment
        review.save(update_fields=["reviewed_by", "reviewed_at", "review"])
        auditlog.record(reviewer, "plan.emergency_review", plan, after={"reviewed": True}, comment=comment)
    return review


def to_review() -> Any:
    return (
        EmergencyReview.objects.filter(reviewed_at__isnull=True)
        .select_related("plan", "plan__team", "plan__requester", "ran_by")
        .order_by("ran_at")
    )
