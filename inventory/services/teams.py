"""Teams and memberships, kept by admins on the portal's pages; every change is audit-logged."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.text import slugify

from inventory.models import Team
from migrations_app import auditlog
from vmportal import access
from vmportal.access import Action


class TeamError(ValueError):
    """A change the rules refuse; the message says why and nothing was saved."""


def create_team(actor: Any, name: str, slug: str = "") -> Team:
    access.require(actor, Action.OWNERSHIP_MANAGE)
    name = name.strip()
    slug = slugify(slug or name)[:100]
    if not name or not slug:
        raise TeamError("Give the team a name (letters or digits).")
    with transaction.atomic():
        if Team.objects.filter(name__iexact=name).exists() or Team.objects.filter(slug=slug).exists():
            raise TeamError(f"A team named '{name}' (or with the tag '{slug}') already exists.")
        team = Team.objects.create(name=name[:100], slug=slug)
        auditlog.record(actor, "team.create", team, after={"name": team.name, "slug": team.slug})
    return team


def add_member(actor: Any, team: Team, username: str) -> Any:
    access.require(actor, Action.OWNERSHIP_MANAGE)
    user = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if user is None:
        raise TeamError(f"There is no active user named '{username.strip()[:150]}'.")
    with transaction.atomic():
        if team.members.filter(pk=user.pk).exists():
            raise TeamError(f"{user.get_username()} is already a member of {team.name}.")
        team.members.add(user)
        auditlog.record(actor, "team.member_add", team, after={"member": user.get_username()})
    return user


def remove_member(actor: Any, team: Team, user_id: int) -> Any:
    access.require(actor, Action.OWNERSHIP_MANAGE)
    user = team.members.filter(pk=user_id).first()
    if user is None:
        raise TeamError("That person is not a member of this team.")
    with transaction.atomic():
        team.members.remove(user)
        auditlog.record(actor, "team.member_remove", team, before={"member": user.get_username()})
    return user
