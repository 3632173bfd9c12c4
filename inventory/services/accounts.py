"""Roles as Django groups, and the demo accounts `make run` creates."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from inventory.models import Team
from inventory.permissions import APPROVERS, AUDITORS

PORTAL_APPS = ("inventory", "migrations_app")


def ensure_roles() -> None:
    """Create the approver and auditor groups with their admin-site permissions (idempotent)."""
    perms = Permission.objects.filter(content_type__app_label__in=PORTAL_APPS)
    approvers, _ = Group.objects.get_or_create(name=APPROVERS)
    approvers.permissions.set(
        perms.exclude(content_type__model="auditlogentry", codename__regex=r"^(add|change|delete)_")
    )
    auditors, _ = Group.objects.get_or_create(name=AUDITORS)
    auditors.permissions.set(perms.filter(codename__startswith="view_"))


@dataclass
class DemoAccount:
    username: str
    role: str
    password: str | None  # None when the account already existed and was left alone


DEMO_TEAMS = [("Payments", "payments"), ("Analytics", "analytics")]
DEMO_USERS = [
    ("alice", "app owner, team Payments", "payments"),
    ("bob", "app owner, team Analytics", "analytics"),
    ("carol", "approver/admin", APPROVERS),
    ("dave", "auditor (read-only)", AUDITORS),
]


@transaction.atomic
def create_demo_accounts(reset_passwords: bool = False) -> list[DemoAccount]:
    """Teams and one user per role. New passwords are random and returned once, never stored in clear."""
    ensure_roles()
    teams = {slug: Team.objects.get_or_create(slug=slug, defaults={"name": name})[0] for name, slug in DEMO_TEAMS}
    user_model = get_user_model()
    accounts = []
    for username, role, membership in DEMO_USERS:
        user, created = user_model.objects.get_or_create(username=username)
        if not user.email:
            user.email = f"{username}@example.com"  # notification mails (the console backend in development)
        password = None
        if created or reset_passwords:
            password = secrets.token_urlsafe(12)
            user.set_password(password)
        if membership in teams:
            teams[membership].members.add(user)
        else:
            user.is_staff = True
            user.groups.add(Group.objects.get(name=membership))
        user.save()
        accounts.append(DemoAccount(username, role, password))
    return accounts
