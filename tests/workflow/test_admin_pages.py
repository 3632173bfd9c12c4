"""Admins' portal pages: teams and members, VM ownership, windows, freezes, policies, thresholds,
network mappings — every change audit-logged, bad input refused with nothing saved, lists without N+1."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inventory.choices import Reachability, TeamSource
from inventory.models import Host, Network, Team, VirtualMachine
from migrations_app.models import AuditLogEntry, ChangeFreeze, ChangeWindow, NetworkMapping, StandardChangePolicy
from migrations_app.services import plans as plan_services
from tests.workflow.conftest import login

pytestmark = pytest.mark.django_db


def test_admins_create_teams_and_manage_members(client: Client, world: dict[str, Any]) -> None:
    login(client, world["carol"])
    response = client.post(reverse("manage:team_list"), {"name": "Storage <b>ops</b>", "slug": ""})
    team = Team.objects.get(name="Storage <b>ops</b>")
    assert response["Location"] == reverse("manage:team_detail", args=[team.slug])
    page = client.get(response["Location"]).content.decode()
    assert "Storage &lt;b&gt;ops&lt;/b&gt;" in page and "<b>ops</b>" not in page
    client.post(reverse("manage:team_member_add", args=[team.slug]), {"username": "bob"})
    assert list(team.members.values_list("username", flat=True)) == ["bob"]
    response = client.post(
        reverse("manage:team_member_add", args=[team.slug]), {"username": "<script>x</script>"}, follow=True
    )
    assert (
        "There is no active user named" in response.content.decode()
        and "<script>x</script>" not in response.content.decode()
    )
    duplicate = client.post(reverse("manage:team_list"), {"name": "storage <b>OPS</b>"})
    assert duplicate.status_code == 400 and Team.objects.filter(slug__startswith="storage").count() == 1
    client.post(reverse("manage:team_member_remove", args=[team.slug]), {"user": world["bob"].pk})
    assert not team.members.exists()
    verbs = list(AuditLogEntry.objects.filter(target_type="inventory.team").values_list("verb", flat=True))
    assert sorted(verbs) == ["team.create", "team.member_add", "team.member_remove"]


def test_admins_assign_vm_ownership_in_bulk(
    client: Client, world: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    login(client, world["carol"])
    with django_assert_max_num_queries(12):
        page = client.get(reverse("manage:ownership"), {"team": "payments"}).content.decode()
    assert "pay-1" in page and "ana-1" not in page
    vms = [world["pay-1"].pk, world["pay-2"].pk]
    client.post(reverse("manage:ownership"), {"vms": vms, "team": world["analytics"].pk})
    assert set(VirtualMachine.objects.filter(pk__in=vms).values_list("team__slug", "team_source")) == {
        ("analytics", TeamSource.ADMIN)
    }
    assert AuditLogEntry.objects.filter(verb="vm.assign_team", actor=world["carol"]).count() == 2
    # forged posts: unknown VM ids or team, nothing saved
    client.post(reverse("manage:ownership"), {"vms": [999999], "team": world["payments"].pk})
    client.post(reverse("manage:ownership"), {"vms": [world["pay-3"].pk], "team": 999999})
    assert VirtualMachine.objects.get(pk=world["pay-3"].pk).team == world["payments"]
    login(client, world["dave"])
    assert client.post(reverse("manage:ownership"), {"vms": vms, "team": world["payments"].pk}).status_code == 403


def test_admins_keep_windows_and_freezes_and_bad_periods_are_refused(client: Client, world: dict[str, Any]) -> None:
    login(client, world["carol"])
    url = reverse("manage:freezes_list")
    start = timezone.localtime() + timedelta(days=1)
    fmt = "%Y-%m-%dT%H:%M"
    good = {
        "name": "Year end",
        "scope": "host",
        "host": world["dst"].pk,
        "start": start.strftime(fmt),
        "end": (start + timedelta(days=3)).strftime(fmt),
        "reason": "books",
    }
    assert client.post(url, {**good, "end": (start - timedelta(hours=1)).strftime(fmt)}).status_code == 400
    assert client.post(url, {**good, "host": ""}).status_code == 400  # a host freeze needs its host
    assert not ChangeFreeze.objects.exists()
    assert client.post(url, good).status_code == 302
    freeze = ChangeFreeze.objects.get()
    assert freeze.applies_to == "host dst"
    page = client.get(url).content.decode()
    assert "Year end" in page and "host dst" in page
    edit = reverse("manage:freezes_edit", args=[freeze.pk])
    client.post(edit, {**good, "name": "Year end (extended)"})
    freeze.refresh_from_db()
    assert freeze.name == "Year end (extended)"
    client.post(reverse("manage:freezes_delete", args=[freeze.pk]))  # no confirmation: kept
    assert ChangeFreeze.objects.exists()
    client.post(reverse("manage:freezes_delete", args=[freeze.pk]), {"confirm": "yes"})
    assert not ChangeFreeze.objects.exists()
    verbs = list(
        AuditLogEntry.objects.filter(target_type="migrations_app.changefreeze")
        .order_by("id")
        .values_list("verb", flat=True)
    )
    assert verbs == ["changefreeze.create", "changefreeze.update", "changefreeze.delete"]
    updated = AuditLogEntry.objects.get(verb="changefreeze.update")
    assert (updated.before["name"], updated.after["name"]) == ("Year end", "Year end (extended)")
    client.post(
        reverse("manage:windows_list"),
        {
            "name": "Sundays",
            "scope": "global",
            "start": start.strftime(fmt),
            "end": (start + timedelta(hours=4)).strftime(fmt),
            "repeat_weekly": "on",
        },
    )
    assert ChangeWindow.objects.get().repeat_weekly


def test_policies_and_mappings_are_validated(client: Client, world: dict[str, Any]) -> None:
    login(client, world["carol"])
    assert client.post(reverse("manage:policies_list"), {"name": "big", "max_vms": 100000}).status_code == 400
    client.post(
        reverse("manage:policies_list"),
        {"name": "small", "enabled": "on", "max_vms": 3, "live_only": "on", "teams": [world["payments"].pk]},
    )
    assert list(StandardChangePolicy.objects.get().teams.all()) == [world["payments"]]
    assert client.post(reverse("manage:approval-rules_list"), {"min_vms": 5, "approvers": 1}).status_code == 400
    source = Network.objects.get(host=world["src"], name="prod-a")
    other = Network.objects.get(host=world["dst"], name="prod-b")
    # the world already maps prod-a to dst: a second mapping to the same host is refused
    response = client.post(reverse("manage:network-mappings_list"), {"source": source.pk, "destination": other.pk})
    assert response.status_code == 400 and "already has a mapping" in response.content.decode()
    same_host = client.post(reverse("manage:network-mappings_list"), {"source": source.pk, "destination": source.pk})
    assert same_host.status_code == 400 and NetworkMapping.objects.count() == 1


def test_unreachable_or_maintenance_hosts_are_not_offered_as_destinations(
    client: Client, world: dict[str, Any]
) -> None:
    far = Host.objects.create(
        name="far", uri="test:///nowhere.xml", reachability=Reachability.UNREACHABLE, last_error="timed out"
    )
    Host.objects.create(name="resting", uri="test:///resting.xml", maintenance=True)
    login(client, world["alice"])
    page = client.get(reverse("migrations_app:plan_create")).content.decode()
    assert ">dst<" in page and ">far<" not in page and ">resting<" not in page
    with pytest.raises(plan_services.PlanError, match="could not be reached at its last sync"):
        plan_services.create_plan(world["alice"], vm_ids=[world["pay-1"].pk], destination_id=far.pk)
