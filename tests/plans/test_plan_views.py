"""Plan pages and services: who may do what, defaults, and forged posts refused with nothing saved."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.models import Host, Network, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import Area, AuditStatus, PlanStatus, Severity
from migrations_app.models import Audit, AuditLogEntry, CheckResult, MigrationPlan, NetworkMapping, PlanItem
from migrations_app.services import plans as plan_services
from tests.base import PASSWORD, domain_xml, node_file_host
from vmportal.access import Denied

pytestmark = pytest.mark.django_db


def login(client: Client, user: Any) -> Client:
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def world(people: dict[str, Any]) -> dict[str, Any]:
    """Host src (network prod-a) with a payments VM and an analytics VM; host dst (network prod-b); host off."""
    src = node_file_host(
        "src",
        [
            domain_xml(
                "pay-1",
                "aaaaaaaa-1111-0000-0000-000000000001",
                team="payments",
                mac="52:54:00:10:00:01",
                network="prod-a",
            ),
            domain_xml(
                "pay-2",
                "aaaaaaaa-1111-0000-0000-000000000002",
                team="payments",
                mac="52:54:00:10:00:02",
                network="prod-a",
            ),
            domain_xml(
                "ana-1",
                "bbbbbbbb-1111-0000-0000-000000000001",
                team="analytics",
                mac="52:54:00:10:00:03",
                network="prod-a",
            ),
        ],
        networks=("prod-a",),
    )
    dst = node_file_host("dst", [], networks=("prod-b", "other"))
    off = node_file_host("off", [], networks=("prod-a",))
    other = node_file_host("elsewhere", [], networks=("prod-c",))
    for host in (src, dst, off, other):
        assert sync_host(host.pk).ok
    Host.objects.filter(pk=off.pk).update(enabled=False)
    NetworkMapping.objects.create(
        source=Network.objects.get(host=src, name="prod-a"), destination=Network.objects.get(host=dst, name="prod-b")
    )
    vms = {vm.name: vm for vm in VirtualMachine.objects.all()}
    return {**people, "src": src, "dst": dst, "off": off, "other": other, **vms}


def create(client: Client, data: dict[str, Any], capture: Any) -> Any:
    with capture(execute=False) as callbacks:
        response = client.post(reverse("migrations_app:plan_create"), data)
    return response, callbacks


BASE = {
    "mode": "auto",
    "change_type": "normal",
    "max_downtime_ms": 300,
    "parallel_connections": 1,
    "compression": "none",
    "on_no_convergence": "abort",
    "shutdown_timeout_s": 120,
    "fresh_backup": "on",
}


def test_an_owner_creates_a_plan_with_default_mappings_and_an_audit_is_queued(
    client: Client, world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    login(client, world["alice"])
    response, callbacks = create(
        client,
        {**BASE, "vms": [world["pay-1"].pk, world["pay-2"].pk], "destination": world["dst"].pk},
        django_capture_on_commit_callbacks,
    )
    plan = MigrationPlan.objects.get()
    assert response.status_code == 302 and response["Location"] == plan.get_absolute_url()
    assert plan.status == PlanStatus.AUDITING and plan.team == world["payments"] and plan.requester == world["alice"]
    items = {i.vm.name: i for i in plan.items.select_related("vm")}
    assert set(items) == {"pay-1", "pay-2"}
    assert items["pay-1"].network_map == {"52:54:00:10:00:01": "prod-b"}  # from the admins' mapping
    assert items["pay-1"].storage_map == {"vda": {"pool": "default-pool", "format": "keep"}}
    assert Audit.objects.get(plan=plan).status == AuditStatus.QUEUED
    assert [c for c in callbacks if "request_audit" in c.__qualname__]  # the audit job is queued after commit
    assert AuditLogEntry.objects.filter(verb="plan.create", target_id=str(plan.pk)).exists()
    page = client.get(plan.get_absolute_url()).content.decode()
    assert "pay-1" in page and "prod-b" in page and "The audit is reading both hosts" in page


@pytest.mark.parametrize(
    "case",
    [
        "other_team",
        "disabled_host",
        "negative_bandwidth",
        "huge_list",
        "garbage_ids",
        "mixed_teams",
        "same_host",
        "no_vms",
        "unknown_host",
    ],
)
def test_forged_create_posts_are_refused_and_nothing_is_saved(
    client: Client, world: dict[str, Any], django_capture_on_commit_callbacks: Any, case: str
) -> None:
    login(client, world["alice"])
    data: dict[str, Any] = {**BASE, "vms": [world["pay-1"].pk], "destination": world["dst"].pk}
    expected = {
        "other_team": "not your team",
        "disabled_host": "Select a valid choice",
        "negative_bandwidth": "greater than or equal to 1",
        "huge_list": "at most 500 VMs",
        "garbage_ids": "malformed",
        "mixed_teams": "not your team",
        "same_host": "Select a valid choice",
        "no_vms": "This field is required",
        "unknown_host": "Select a valid choice",
    }[case]
    if case == "other_team":
        data["vms"] = [world["ana-1"].pk]
    elif case == "disabled_host":
        data["destination"] = world["off"].pk
    elif case == "negative_bandwidth":
        data["bandwidth_mib_s"] = -5
    elif case == "huge_list":
        data["vms"] = list(range(1, 600))
    elif case == "garbage_ids":
        data["vms"] = ["1; drop table", "x"]
    elif case == "mixed_teams":
        data["vms"] = [world["pay-1"].pk, world["ana-1"].pk]
    elif case == "same_host":
        data["destination"] = "src"
    elif case == "no_vms":
        data["vms"] = []
    elif case == "unknown_host":
        data["destination"] = 999999
    response, callbacks = create(client, data, django_capture_on_commit_callbacks)
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert not MigrationPlan.objects.exists() and not PlanItem.objects.exists() and not callbacks


def test_the_service_refuses_a_destination_that_is_the_source_or_disabled(world: dict[str, Any]) -> None:
    with pytest.raises(plan_services.PlanError, match="already on src"):
        plan_services.create_plan(world["alice"], vm_ids=[world["pay-1"].pk], destination_id=world["src"].pk)
    with pytest.raises(plan_services.PlanError, match="disabled"):
        plan_services.create_plan(world["alice"], vm_ids=[world["pay-1"].pk], destination_id=world["off"].pk)
    with pytest.raises(Denied, match="read-only"):
        plan_services.create_plan(world["dave"], vm_ids=[world["pay-1"].pk], destination_id=world["dst"].pk)
    assert not MigrationPlan.objects.exists()


@pytest.fixture
def plan(world: dict[str, Any]) -> MigrationPlan:
    return plan_services.create_plan(
        world["alice"], vm_ids=[world["pay-1"].pk], destination_id=world["dst"].pk, name="move pay-1"
    )


def test_a_network_of_another_host_is_refused_in_an_item_edit(
    client: Client, world: dict[str, Any], plan: MigrationPlan
) -> None:
    login(client, world["alice"])
    item = plan.items.get()
    before = dict(item.network_map)
    url = reverse("migrations_app:plan_update_item", args=[plan.pk, item.pk])
    response = client.post(url, {"net-52:54:00:10:00:01": "prod-c"}, follow=True)
    assert "is not a network of dst" in response.content.decode()
    item.refresh_from_db()
    assert item.network_map == before
    response = client.post(url, {"net-52:54:00:10:00:01": "other"}, follow=True)
    item.refresh_from_db()
    assert item.network_map == {"52:54:00:10:00:01": "other"}
    response = client.post(url, {"pool-vda": "no-such-pool"}, follow=True)
    assert "choose a storage pool of dst" in response.content.decode()
    response = client.post(url, {"net-52:54:00:ff:ff:ff": "other"}, follow=True)
    assert "names a NIC this VM does not have" in response.content.decode()


def test_other_teams_cannot_see_or_edit_a_plan(client: Client, world: dict[str, Any], plan: MigrationPlan) -> None:
    login(client, world["bob"])
    assert client.get(plan.get_absolute_url()).status_code == 404
    item = plan.items.get()
    assert (
        client.post(
            reverse("migrations_app:plan_update_item", args=[plan.pk, item.pk]), {"destination": "auto"}
        ).status_code
        == 404
    )
    assert client.post(reverse("migrations_app:plan_submit", args=[plan.pk])).status_code == 404
    assert "move pay-1" not in client.get(reverse("migrations_app:plan_list")).content.decode()
    login(client, world["dave"])  # auditors see, but cannot change
    assert client.get(plan.get_absolute_url()).status_code == 200
    response = client.post(reverse("migrations_app:plan_cancel", args=[plan.pk]), {"confirm": "yes"}, follow=True)
    assert "read-only" in response.content.decode()
    plan.refresh_from_db()
    assert plan.status != PlanStatus.CANCELLED


def _finish_audit(plan: MigrationPlan, severity: str) -> Audit:
    """Stand in for the audit runner so the submit/override rules are tested on their own."""
    audit = plan_services.latest_audit(plan)
    assert audit is not None
    Audit.objects.filter(pk=audit.pk).update(status=AuditStatus.DONE, worst=severity)
    CheckResult.objects.create(
        audit=audit, item=plan.items.get(), check_id="NET-MAPPED", area=Area.NETWORK, severity=severity, message="m"
    )
    plan.status = PlanStatus.BLOCKED if severity == Severity.BLOCK else PlanStatus.READY
    plan.save()
    audit.refresh_from_db()
    return audit


def test_a_blocked_plan_needs_an_override_by_another_approver(
    client: Client, world: dict[str, Any], plan: MigrationPlan
) -> None:
    _finish_audit(plan, Severity.BLOCK)
    login(client, world["alice"])
    response = client.post(reverse("migrations_app:plan_submit", args=[plan.pk]), follow=True)
    assert "The audit blocks this plan (NET-MAPPED)" in response.content.decode()
    plan.refresh_from_db()
    assert plan.status == PlanStatus.BLOCKED
    # the owner cannot override; an approver who requested the plan cannot either
    assert (
        client.post(
            reverse("migrations_app:plan_override", args=[plan.pk]),
            {"reason": "because I say so", "confirm": "on"},
            follow=True,
        ).status_code
        == 403
    )
    assert not plan.overrides.exists()
    with pytest.raises(Denied, match="your own plan"):
        plan_services.record_override(
            world["carol"], MigrationPlan(pk=plan.pk, requester=world["carol"]), "long enough reason"
        )
    login(client, world["carol"])
    page = client.get(plan.get_absolute_url()).content.decode()
    assert "Override the blocks" in page
    response = client.post(
        reverse("migrations_app:plan_override", args=[plan.pk]),
        {"reason": "Known false positive, network exists under another name", "confirm": "on"},
        follow=True,
    )
    assert "Override recorded" in response.content.decode()
    assert AuditLogEntry.objects.filter(verb="plan.override", actor=world["carol"]).exists()
    login(client, world["alice"])
    response = client.post(reverse("migrations_app:plan_submit", args=[plan.pk]), follow=True)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.PENDING_APPROVAL, response.content.decode()
    assert "Known false positive" in client.get(plan.get_absolute_url()).content.decode()


def test_an_edit_re_runs_the_audit(
    world: dict[str, Any], plan: MigrationPlan, django_capture_on_commit_callbacks: Any
) -> None:
    _finish_audit(plan, Severity.PASS)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        plan_services.update_options(world["alice"], plan, max_downtime_ms=500)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.AUDITING and plan.audits.count() == 2
    assert len([c for c in callbacks if "request_audit" in c.__qualname__]) == 1
    with pytest.raises(plan_services.PlanError, match="between 10 ms and 60000 ms"):
        plan_services.update_options(world["alice"], plan, max_downtime_ms=5)


def test_cancel_needs_confirmation(client: Client, world: dict[str, Any], plan: MigrationPlan) -> None:
    login(client, world["alice"])
    client.post(reverse("migrations_app:plan_cancel", args=[plan.pk]))
    plan.refresh_from_db()
    assert plan.status != PlanStatus.CANCELLED
    client.post(reverse("migrations_app:plan_cancel", args=[plan.pk]), {"confirm": "yes"})
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CANCELLED


def test_plan_pages_do_not_grow_queries_with_items(client: Client, world: dict[str, Any]) -> None:
    login(client, world["carol"])
    small = plan_services.create_plan(world["carol"], vm_ids=[world["pay-1"].pk], destination_id=world["dst"].pk)
    big = plan_services.create_plan(
        world["carol"], vm_ids=[world["pay-1"].pk, world["pay-2"].pk], destination_id=world["dst"].pk
    )

    def count(url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    assert count(small.get_absolute_url()) == count(big.get_absolute_url()) <= 20
    assert count(reverse("migrations_app:plan_list")) <= 10
    new_vm = [
        domain_xml(f"n{i}", str(uuid.UUID(int=900 + i)), team="payments", mac=f"52:54:00:20:00:{i:02x}")
        for i in range(30)
    ]
    sync_host(node_file_host("more", new_vm).pk)
    assert count(reverse("migrations_app:plan_create")) <= 15
