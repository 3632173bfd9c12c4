"""Who may watch plans and runs, and who may cancel a run: the one place the live pages, the history and
report pages and the websocket consumers ask.

It rests on the permission-carrying querysets (`MigrationPlan.objects.visible_to`) and on
`inventory.permissions`; a finer permission layer replaces the bodies here, and every caller follows.
All functions are synchronous (consumers call them through `database_sync_to_async`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from inventory.permissions import is_admin, is_auditor
from migrations_app.models import MigrationPlan, MigrationRun

if TYPE_CHECKING:
    from inventory.permissions import AnyUser


def plans(user: AnyUser) -> QuerySet[MigrationPlan]:
    """Plans the user may see (and watch live)."""
    return MigrationPlan.objects.visible_to(user)


def runs(user: AnyUser) -> QuerySet[MigrationRun]:
    """Runs the user may see: those of the plans they may see."""
    if not user.is_authenticated:
        return MigrationRun.objects.none()
    return MigrationRun.objects.filter(item__plan__in=plans(user).values("pk"))


def may_watch_fleet(user: AnyUser) -> bool:
    """Every signed-in user sees the hosts; the runs listed are filtered by `runs()`."""
    return bool(user.is_authenticated)


def may_watch_plan(user: AnyUser, plan_id: int) -> bool:
    return plans(user).filter(pk=plan_id).exists()


def may_watch_run(user: AnyUser, run_id: int) -> bool:
    return runs(user).filter(pk=run_id).exists()


def may_cancel_run(user: AnyUser, run: MigrationRun) -> bool:
    """Admins, and members of the plan's team; auditors only read."""
    if not user.is_authenticated or (is_auditor(user) and not is_admin(user)):
        return False
    return is_admin(user) or plans(user).filter(pk=run.item.plan_id).exists()
