"""The one writer of the audit log: every change of state appends its entry here, in its transaction.

A leaf module (like `events`), below the services, the engines and the inventory, which all record
what they change. Reading and exporting the log is `migrations_app.services.auditlog`.

The log is append-only: the model refuses to save an existing row or delete one, and the database
refuses UPDATE and DELETE (a trigger, migration 0006), so even raw SQL cannot rewrite history.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.db import models

from migrations_app.models import AuditLogEntry

#: the address of the request being served (set by vmportal.middleware.AuditContextMiddleware)
source_address: ContextVar[str | None] = ContextVar("vmportal_source_address", default=None)


def record(
    actor: Any,
    verb: str,
    target: models.Model,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    comment: str = "",
) -> AuditLogEntry:
    """Append one entry. `actor` is a user, or None for the system (sync, scheduler)."""
    return record_event(
        actor,
        verb,
        target._meta.label_lower,
        str(target.pk),
        target_repr=str(target),
        before=before,
        after=after,
        comment=comment,
    )


def record_event(
    actor: Any,
    verb: str,
    target_type: str,
    target_id: str,
    *,
    target_repr: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    comment: str = "",
    source: str | None = None,
) -> AuditLogEntry:
    """Append one entry about something that is not a row of ours (a login, a user name)."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLogEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user else "system",
        verb=verb,
        target_type=target_type[:64],
        target_id=target_id[:64],
        target_repr=(target_id if target_repr is None else target_repr)[:255],
        before=before or {},
        after=after or {},
        comment=comment,
        source_address=source if source is not None else source_address.get(),
    )
