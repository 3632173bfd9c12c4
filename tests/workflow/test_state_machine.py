"""The plan state machine: every allowed transition works and is logged; every other is refused with
nothing changed; and no code but the state machine writes a plan's status."""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from migrations_app.choices import TERMINAL_PLAN_STATES, PlanStatus
from migrations_app.models import AuditLogEntry, MigrationPlan, Notification
from migrations_app.services import planstate
from tests.base import REPO
from tests.workflow.conftest import make_plan

pytestmark = pytest.mark.django_db

S = PlanStatus
ALLOWED = {
    (S.DRAFT, S.AUDITING),
    (S.AUDITING, S.AUDITING),
    (S.AUDITING, S.READY),
    (S.AUDITING, S.BLOCKED),
    (S.AUDITING, S.DRAFT),
    (S.READY, S.AUDITING),
    (S.READY, S.PENDING_APPROVAL),
    (S.BLOCKED, S.AUDITING),
    (S.BLOCKED, S.READY),
    (S.PENDING_APPROVAL, S.APPROVED),
    (S.PENDING_APPROVAL, S.REJECTED),
    (S.APPROVED, S.SCHEDULED),
    (S.APPROVED, S.SUPERSEDED),
    (S.SCHEDULED, S.RUNNING),
    (S.SCHEDULED, S.SUPERSEDED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.PARTIALLY_SUCCEEDED),
    (S.RUNNING, S.FAILED),
} | {(s, S.CANCELLED) for s in S if s not in TERMINAL_PLAN_STATES}


def test_the_table_is_the_documented_workflow() -> None:
    table = {(a, b) for a, targets in planstate.TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert all(not planstate.TRANSITIONS.get(s) for s in TERMINAL_PLAN_STATES)  # final states are final


def _plan_in(world: dict[str, Any], status: str) -> MigrationPlan:
    plan = make_plan(world)
    MigrationPlan.objects.filter(pk=plan.pk).update(status=status, status_reason="")
    plan.refresh_from_db()
    return plan


@pytest.mark.parametrize(("before", "after"), sorted(p for p in product(S, S) if p in ALLOWED))
def test_an_allowed_transition_changes_the_state_and_writes_the_log(
    world: dict[str, Any], before: str, after: str
) -> None:
    plan = _plan_in(world, before)
    logged = AuditLogEntry.objects.count()
    planstate.transition(plan, after, actor=world["carol"], reason="because")
    stored = MigrationPlan.objects.get(pk=plan.pk)
    assert stored.status == after == plan.status
    if before == after:
        assert AuditLogEntry.objects.count() == logged  # a newer audit of an auditing plan: no change of state
        return
    entry = AuditLogEntry.objects.exclude(verb="plan.create").latest("id")
    assert (entry.verb, entry.before, entry.after["status"], entry.actor) == (
        f"plan.{after}",
        {"status": before},
        after,
        world["carol"],
    )
    assert entry.target_id == str(plan.pk) and entry.comment == "because" and stored.status_reason == "because"


@pytest.mark.parametrize(("before", "after"), sorted(p for p in product(S, S) if p not in ALLOWED))
def test_every_other_transition_is_refused_and_nothing_changes(world: dict[str, Any], before: str, after: str) -> None:
    plan = _plan_in(world, before)
    logged, told = AuditLogEntry.objects.count(), Notification.objects.count()
    snapshot = MigrationPlan.objects.values().get(pk=plan.pk)
    with pytest.raises(planstate.TransitionError, match=f"cannot become {S(after).label.lower()}"):
        planstate.transition(plan, after, actor=world["carol"], reason="should not stick")
    assert MigrationPlan.objects.values().get(pk=plan.pk) == snapshot
    assert AuditLogEntry.objects.count() == logged and Notification.objects.count() == told


def test_a_transition_from_a_state_the_caller_no_longer_sees_is_refused(world: dict[str, Any]) -> None:
    plan = _plan_in(world, S.PENDING_APPROVAL)
    MigrationPlan.objects.filter(pk=plan.pk).update(status=S.CANCELLED)  # someone else cancelled it meanwhile
    with pytest.raises(planstate.TransitionError, match="cancelled now"):
        planstate.transition(plan, S.APPROVED, expect=S.PENDING_APPROVAL)
    assert MigrationPlan.objects.get(pk=plan.pk).status == S.CANCELLED


def test_only_the_state_machine_writes_a_plans_status() -> None:
    """A status written anywhere else would escape the table, the log and the notifications."""
    writes = re.compile(r"(plan\.status\s*=[^=]|MigrationPlan\.objects[^\n]*\.update\([^)]*\bstatus=)")
    offenders = []
    for path in (REPO / "migrations_app").rglob("*.py"):
        if "migrations" in path.parts or path.name == "planstate.py":
            continue
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if writes.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders
