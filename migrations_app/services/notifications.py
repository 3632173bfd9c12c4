"""Telling people about plan changes that concern them: an in-app notification (written in the
transaction of the change) and an e-mail (sent after commit through Django's mail backend).

Who hears of what: a submitted plan → the approvers (never the requester); approved, rejected, started,
succeeded, partially succeeded, failed, superseded or cancelled → the plan's team and its requester.
Nobody is told about their own action.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from inventory.permissions import APPROVERS
from migrations_app import events
from migrations_app.choices import PlanStatus
from migrations_app.models import MigrationPlan, Notification

log = logging.getLogger(__name__)

S = PlanStatus

#: state → (who, headline); {name} is the plan's name
PLAN_MESSAGES: dict[str, tuple[str, str]] = {
    S.PENDING_APPROVAL: ("approvers", "Plan “{name}” waits for approval"),
    S.APPROVED: ("owners", "Plan “{name}” was approved"),
    S.REJECTED: ("owners", "Plan “{name}” was rejected"),
    S.RUNNING: ("owners", "Plan “{name}” started moving VMs"),
    S.SUCCEEDED: ("owners", "Plan “{name}” succeeded"),
    S.PARTIALLY_SUCCEEDED: ("owners", "Plan “{name}” partially succeeded"),
    S.FAILED: ("owners", "Plan “{name}” failed"),
    S.SUPERSEDED: ("owners", "Plan “{name}” was sent back: the facts under it changed"),
    S.CANCELLED: ("owners", "Plan “{name}” was cancelled"),
}


def group_name(user_id: int) -> str:
    return f"notifications-user-{user_id}"


def approvers() -> Any:
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(groups__name=APPROVERS) | Q(is_superuser=True))
        .distinct()
    )


def owners(plan: MigrationPlan) -> Any:
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(teams=plan.team_id) | Q(pk=plan.requester_id))
        .distinct()
    )


def plan_changed(plan: MigrationPlan, before: str, after: str, *, actor: Any = None, reason: str = "") -> int:
    """Notify whoever the new state concerns; returns how many people were told."""
    entry = PLAN_MESSAGES.get(after)
    if entry is None:
        return 0
    audience, headline = entry
    people = approvers().exclude(pk=plan.requester_id) if audience == "approvers" else owners(plan)
    if getattr(actor, "pk", None) is not None:
        people = people.exclude(pk=actor.pk)
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else "the portal"
    lines = [f"Plan: {plan.name} (team {plan.team.name}, requested by {plan.requester.get_username()})"]
    lines.append(f"Now: {S(after).label} (was {S(before).label.lower()}), by {who}.")
    if reason:
        lines.append(f"Why: {reason}")
    return notify(people, headline.format(name=plan.name), "\n".join(lines), plan=plan, verb=f"plan.{after}")


def notify(users: Iterable[Any], title: str, body: str, *, plan: MigrationPlan | None = None, verb: str = "") -> int:
    """In-app notifications now (same transaction), one e-mail per person with an address after commit."""
    recipients = list(users)
    if not recipients:
        return 0
    url = plan.get_absolute_url() if plan is not None else ""
    title = title[:200]
    Notification.objects.bulk_create(
        [Notification(user=u, plan=plan, verb=verb[:32], title=title, body=body, url=url) for u in recipients]
    )
    for user in recipients:
        events.publish_group(group_name(user.pk), "notification.new", {"title": title, "url": url})
    addresses = [u.email for u in recipients if u.email]
    if addresses:
        link = f"{settings.PORTAL_URL}{url}" if url else settings.PORTAL_URL
        text = f"{body}\n\n{link}\n"
        transaction.on_commit(lambda: _send(title, text, addresses))
    return len(recipients)


def _send(subject: str, body: str, addresses: list[str]) -> None:
    """One message per person (no one sees the others' addresses); a mail server that is down loses
    the e-mail only, never the change or its in-app notification."""
    try:
        with get_connection() as connection:
            for address in addresses:
                EmailMessage(f"[vmportal] {subject}", body, to=[address], connection=connection).send()
    except Exception:
        log.warning("sending notification mail %r failed", subject, exc_info=True)


# ---- the in-app list ---------------------------------------------------------------------------------


def unread_count(user: Any) -> int:
    if not user.is_authenticated:
        return 0
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


def mark_read(user: Any, ids: Iterable[int] | None = None) -> int:
    """Mark the user's notifications read (all of them, or those ids); others' ids are ignored."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        unread = unread.filter(pk__in=list(ids))
    return unread.update(read_at=timezone.now())
