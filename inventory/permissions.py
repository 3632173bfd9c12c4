"""Who may see and do what. Roles are Django groups; membership of a team gives sight of its VMs.

- approvers (admins): register hosts, assign teams, approve plans; see everything.
- auditors: read-only, see everything.
- app owners: members of one or more teams; see only those teams' VMs.
"""

from __future__ import annotations

from typing import Any

APPROVERS = "approvers"
AUDITORS = "auditors"

#: a User or AnonymousUser (request.user); typed loosely because custom user models are allowed
AnyUser = Any


def _groups(user: AnyUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_vmportal_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._vmportal_groups = cached
    return cached


def is_admin(user: AnyUser) -> bool:
    """Approvers and superusers administer the portal."""
    return bool(user.is_authenticated and (getattr(user, "is_superuser", False) or APPROVERS in _groups(user)))


def is_auditor(user: AnyUser) -> bool:
    return AUDITORS in _groups(user)


def sees_everything(user: AnyUser) -> bool:
    return is_admin(user) or is_auditor(user)


def can_write(user: AnyUser) -> bool:
    """May change anything at all: signed in and not read-only (an auditor who is not also an admin)."""
    return bool(user.is_authenticated and (is_admin(user) or not is_auditor(user)))


def require_admin(actor: AnyUser | None, what: str = "do this") -> None:
    """For services: `None` is the system itself (sync, scheduler, management commands); any person
    must be an approver/admin. Raises PermissionDenied otherwise."""
    from django.core.exceptions import PermissionDenied

    if actor is not None and not is_admin(actor):
        raise PermissionDenied(f"Only approvers/admins may {what}.")
