"""Writing the audit log. Every service that changes state calls `record` in its transaction."""

from __future__ import annotations

from typing import Any

from django.db import models

from migrations_app.models import AuditLogEntry


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
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLogEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user else "system",
        verb=verb,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:255],
        before=before or {},
        after=after or {},
        comment=comment,
    )
