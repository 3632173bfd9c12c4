"""The permission layer: who may see which object and who may do what. Every view, form, API endpoint
and websocket consumer asks here; the services ask again before they change anything.

- `visible(user, obj)`: may the user see the object at all? Objects of other teams are invisible, and
  pages answer 404 for them (`get_visible_or_404`), so their existence is not given away.
- `refusal(user, action, obj)`: why the user may not do `action` (None when allowed). `require` raises
  `Denied` (a PermissionDenied, so a page answers 403 with the reason).

`user` None is the portal itself (management commands, the scheduler), which may do everything.
Roles come from `inventory.permissions` (approvers/admins, auditors; app owners are team members).
Whether an action fits the object's *state* (approving a draft…) is the state machine's business, not
this module's. Everything here is a plain synchronous function of a user and an object, so async code
(websocket consumers) calls it through `sync_to_async`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.http import Http404

from inventory.models import Host, Team, VirtualMachine
from inventory.permissions import AnyUser, is_admin, is_auditor, sees_everything

M = TypeVar("M", bound=models.Model)


class Action(StrEnum):
    VIEW = "view"
    PLAN_CREATE = "plan.create"
    PLAN_EDIT = "plan.edit"  # edit, re-audit, submit
    PLAN_CANCEL = "plan.cancel"
    PLAN_APPROVE = "plan.approve"  # approve or reject
    PLAN_OVERRIDE = "plan.override"
    PLAN_EMERGENCY = "plan.emergency"  # run an emergency change at once
    PLAN_REVIEW = "plan.review"  # review an emergency change afterwards
    RUN_CANCEL = "run.cancel"
    RUN_MOVE_BACK = "run.move_back"  # plan the move back of a live move that failed validation
    PROBE_EDIT = "probe.edit"  # a VM's owner-defined validation probes
    HOST_MANAGE = "host.manage"  # register, test connection, sync
    OWNERSHIP_MANAGE = "ownership.manage"  # teams, memberships, VM ownership
    CHANGE_CONTROL_MANAGE = "change_control.manage"  # windows, freezes, policies, thresholds, network mappings
    SETTINGS_VIEW = "settings.view"  # look at teams, windows, freezes, policies, mappings
    APPROVAL_QUEUE = "approval.queue"  # see the approval queue
    AUDITLOG_VIEW = "auditlog.view"


class Denied(PermissionDenied):
    """The user may not do this; str() is the reason, shown on the 403 page."""


READ_ONLY = "Auditors have read-only access; they can look at everything but change nothing."
ADMINS_ONLY = "Only approvers/admins may do this."


def _team_ids(user: AnyUser) -> set[int]:
    cached = getattr(user, "_vmportal_team_ids", None)
    if cached is None:
        cached = set(Team.objects.filter(members=user.pk).values_list("pk", flat=True))
        user._vmportal_team_ids = cached
    return cached


def _team_of(obj: Any) -> int | None:
    """The team that owns an object (plans and VMs directly; items and runs through their plan)."""
    from migrations_app.models import MigrationPlan, MigrationRun, PlanItem

    if isinstance(obj, MigrationPlan | VirtualMachine):
        return obj.team_id
    if isinstance(obj, PlanItem):
        return obj.plan.team_id
    if isinstance(obj, MigrationRun):
        return obj.item.plan.team_id
    raise TypeError(f"{type(obj).__name__} has no owning team")


def _plan_of(obj: Any) -> Any:
    from migrations_app.models import MigrationRun, PlanItem

    if isinstance(obj, MigrationRun):
        return obj.item.plan
    if isinstance(obj, PlanItem):
        return obj.plan
    return obj


def visible(user: AnyUser, obj: Any) -> bool:
    """May the user see this object (and so learn that it exists)?"""
    from migrations_app.models import Notification

    if not user.is_authenticated:
        return False
    if isinstance(obj, Notification):
        return obj.user_id == user.pk
    if sees_everything(user):
        return True
    if isinstance(obj, Host):
        return True  # the fleet is visible to everyone signed in; the VMs on it are not
    try:
        team = _team_of(obj)
    except TypeError:
        return False  # teams, settings and the log are for admins and auditors
    return team is not None and team in _team_ids(user)


def _member_or_admin(user: AnyUser, obj: Any) -> str | None:
    if is_admin(user):
        return None
    if is_auditor(user):
        return READ_ONLY
    plan = _plan_of(obj)
    if user.pk == plan.requester_id or plan.team_id in _team_ids(user):
        return None
    return "Only the plan's team and admins may do this."


def refusal(user: AnyUser, action: Action | str, obj: Any = None) -> str | None:
    """Why `user` may not do `action` on `obj`, or None when it is allowed."""
    action = Action(action)
    if user is None:
        return None  # the portal itself: management commands, the scheduler, the reconciler
    if not user.is_authenticated:
        return "Log in first."
    if obj is not None and not visible(user, obj):
        return "This object does not exist or is not one of your teams'."
    if action == Action.VIEW:
        return None
    if action == Action.PLAN_CREATE:
        return READ_ONLY if is_auditor(user) and not is_admin(user) else None
    if action in (Action.PLAN_EDIT, Action.PLAN_CANCEL, Action.RUN_CANCEL, Action.RUN_MOVE_BACK):
        return _member_or_admin(user, obj)
    if action == Action.PROBE_EDIT:
        if is_admin(user):
            return None
        if is_auditor(user):
            return READ_ONLY
        return (
            None if obj is not None and _team_of(obj) in _team_ids(user) else "Only the VM's team may edit its probes."
        )
    if action in (Action.PLAN_APPROVE, Action.PLAN_OVERRIDE, Action.PLAN_EMERGENCY):
        if not is_admin(user):
            return READ_ONLY if is_auditor(user) else "Only approvers may decide on plans."
        if obj is not None and _plan_of(obj).requester_id == user.pk:
            return (
                "This is your own plan: another approver must decide on it (four eyes: nobody approves or "
                "overrides their own plan, not even an admin)."
            )
        return None
    if action == Action.PLAN_REVIEW:
        if not is_admin(user):
            return READ_ONLY if is_auditor(user) else "Only approvers review emergency changes."
        plan = _plan_of(obj) if obj is not None else None
        review = getattr(plan, "emergency", None) if plan is not None else None
        if plan is not None and user.pk in {plan.requester_id, getattr(review, "ran_by_id", None)}:
            return "You requested or ran this emergency change; another approver must review it."
        return None
    if action in (Action.APPROVAL_QUEUE, Action.AUDITLOG_VIEW, Action.SETTINGS_VIEW):
        return None if sees_everything(user) else "Only approvers and auditors may see this."
    # everything else administers the portal
    if is_admin(user):
        return None
    return READ_ONLY if is_auditor(user) else ADMINS_ONLY


def allowed(user: AnyUser, action: Action | str, obj: Any = None) -> bool:
    return refusal(user, action, obj) is None


def require(user: AnyUser, action: Action | str, obj: Any = None) -> None:
    """Raise `Denied` with the reason unless the user may do this."""
    reason = refusal(user, action, obj)
    if reason is not None:
        raise Denied(reason)


def get_visible_or_404(user: AnyUser, queryset: models.QuerySet[M], **lookup: Any) -> M:
    """The object if it exists and the user may see it; otherwise 404 (the same answer for both)."""
    try:
        obj = queryset.get(**lookup)
    except (ObjectDoesNotExist, ValueError):
        raise Http404("No such object, or it is not one of your teams'.") from None
    if not visible(user, obj):
        raise Http404("No such object, or it is not one of your teams'.")
    return obj


def check_view(user: AnyUser, action: Action | str, obj: Any = None) -> None:
    """For views: 404 when the object is invisible, 403 with the reason when the action is not allowed."""
    if obj is not None and not visible(user, obj):
        raise Http404("No such object, or it is not one of your teams'.")
    require(user, action, obj)


# ---- querysets and questions the live pages and the websocket consumers ask ---------------------------


def visible_plans(user: AnyUser) -> models.QuerySet[Any]:
    """Plans the user may see (and watch live): the permission-carrying queryset, written once."""
    from migrations_app.models import MigrationPlan

    return MigrationPlan.objects.visible_to(user)


def visible_runs(user: AnyUser) -> models.QuerySet[Any]:
    """Runs the user may see: those of the plans they may see."""
    from migrations_app.models import MigrationRun

    if not user.is_authenticated:
        return MigrationRun.objects.none()
    return MigrationRun.objects.filter(item__plan__in=visible_plans(user).values("pk"))


def may_watch_fleet(user: AnyUser) -> bool:
    """Every signed-in user sees the hosts; the runs listed are filtered by `visible_runs`."""
    return bool(user.is_authenticated)


def may_watch_plan(user: AnyUser, plan_id: int) -> bool:
    return visible_plans(user).filter(pk=plan_id).exists()


def may_watch_run(user: AnyUser, run_id: int) -> bool:
    return visible_runs(user).filter(pk=run_id).exists()
