"""The plan state machine: the one place that changes `MigrationPlan.status`.

Every transition goes through `transition()`, which locks the plan row, refuses anything not in
`TRANSITIONS` (nothing is changed then), writes the new state with an audit-log row in the same
transaction, tells the people it concerns (migrations_app.services.notifications) and publishes the
change to the plan's channel group after commit.

    draft → auditing → ready | blocked → pending_approval → approved | rejected → scheduled → running →
    succeeded | partially_succeeded | failed;  cancelled from any non-terminal state;  superseded when
    the facts under an approved plan change.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from migrations_app import events
from migrations_app.choices import CANCELLABLE_PLAN_STATES, PlanStatus
from migrations_app.models import MigrationPlan
from migrations_app.services import auditlog

S = PlanStatus

#: from → the states it may go to (besides `cancelled`, allowed from every non-terminal state)
TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.AUDITING}),
    # an edit while auditing queues a newer audit; the plan stays auditing
    S.AUDITING: frozenset({S.AUDITING, S.READY, S.BLOCKED, S.DRAFT}),
    S.READY: frozenset({S.AUDITING, S.PENDING_APPROVAL}),
    S.BLOCKED: frozenset({S.AUDITING, S.READY}),
    S.PENDING_APPROVAL: frozenset({S.APPROVED, S.REJECTED}),
    S.APPROVED: frozenset({S.SCHEDULED, S.SUPERSEDED}),
    S.SCHEDULED: frozenset({S.RUNNING, S.SUPERSEDED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.PARTIALLY_SUCCEEDED, S.FAILED}),
}
for _state in CANCELLABLE_PLAN_STATES:
    TRANSITIONS[_state] = TRANSITIONS.get(_state, frozenset()) | {S.CANCELLED}


class TransitionError(ValueError):
    """A transition the state machine does not allow; nothing was changed."""


def allowed(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def transition(
    plan: MigrationPlan,
    new: str,
    *,
    actor: Any = None,
    reason: str = "",
    expect: str | frozenset[str] | None = None,
    fields: dict[str, Any] | None = None,
    log: dict[str, Any] | None = None,
) -> MigrationPlan:
    """Move `plan` to `new` or raise TransitionError with nothing changed.

    `expect`: the state(s) the caller saw; if the plan has moved on meanwhile the call is refused too.
    `fields`: other plan fields written in the same UPDATE. `log`: extra values for the audit-log row.
    `reason`: why, in words (kept on the plan and shown on its page). `plan` is updated in place.
    """
    with transaction.atomic():
        current = MigrationPlan.objects.select_for_update().values_list("status", flat=True).get(pk=plan.pk)
        expected = {expect} if isinstance(expect, str) else expect
        if expected is not None and current not in expected:
            raise TransitionError(
                f"The plan is {S(current).label.lower()} now, no longer {' or '.join(S(e).label.lower() for e in expected)}."
            )
        if not allowed(current, new):
            raise TransitionError(f"A plan that is {S(current).label.lower()} cannot become {S(new).label.lower()}.")
        changes: dict[str, Any] = {**(fields or {}), "status": new}
        if new != current or reason:
            changes["status_reason"] = reason
        if new != current:
            changes["status_changed_at"] = timezone.now()
        changes["updated_at"] = timezone.now()
        MigrationPlan.objects.filter(pk=plan.pk).update(**changes)
        for key, value in changes.items():
            setattr(plan, key, value)
        if new == current:
            return plan  # a newer audit of an auditing plan: no change of state to record or announce
        auditlog.record(
            actor,
            f"plan.{new}",
            plan,
            before={"status": current},
            after={"status": new, **(log or {})},
            comment=reason,
        )
        from migrations_app.services import notifications

        notifications.plan_changed(plan, current, new, actor=actor, reason=reason)
        events.plan_changed(plan, before=current, reason=reason)
    return plan


def transition_if(plan: MigrationPlan, expect: str, new: str, **kwargs: Any) -> bool:
    """`transition` only if the plan is still in `expect`; False (nothing changed) otherwise."""
    try:
        transition(plan, new, expect=expect, **kwargs)
    except TransitionError:
        return False
    return True
