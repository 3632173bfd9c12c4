"""A small world for the approval workflow: two teams' VMs on test-driver hosts, plans in given states."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from inventory.models import Host, Network, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import AuditStatus, PlanStatus
from migrations_app.models import Audit, MigrationPlan, NetworkMapping
from migrations_app.services import plans as plan_services
from tests.base import PASSWORD, domain_xml, node_file_host


def login(client: Client, user: Any) -> Client:
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def world(people: dict[str, Any]) -> dict[str, Any]:
    """Host src (network prod-a) with payments VMs pay-1, pay-2, pay-3 and analytics VM ana-1; host dst."""
    src = node_file_host(
        "src",
        [
            domain_xml(
                f"pay-{i}",
                f"aaaaaaaa-2222-0000-0000-00000000000{i}",
                team="payments",
                mac=f"52:54:00:30:00:0{i}",
                network="prod-a",
            )
            for i in (1, 2, 3)
        ]
        + [
            domain_xml(
                "ana-1",
                "bbbbbbbb-2222-0000-0000-000000000001",
                team="analytics",
                mac="52:54:00:30:01:01",
                network="prod-a",
            )
        ],
        networks=("prod-a",),
    )
    dst = node_file_host("dst", [], networks=("prod-b",))
    for host in (src, dst):
        assert sync_host(host.pk).ok
    Host.objects.filter(pk__in=[src.pk, dst.pk]).update(site="dc1")
    NetworkMapping.objects.create(
        source=Network.objects.get(host=src, name="prod-a"), destination=Network.objects.get(host=dst, name="prod-b")
    )
    for person in ("alice", "bob", "carol", "dave"):
        people[person].email = f"{person}@example.com"
        people[person].save()
    vms = {vm.name: vm for vm in VirtualMachine.objects.all()}
    return {**people, "src": src, "dst": Host.objects.get(pk=dst.pk), **vms}


def make_plan(
    world: dict[str, Any], requester: str = "alice", vms: tuple[str, ...] = ("pay-1",), **options: Any
) -> MigrationPlan:
    """A plan through the service (its audit is queued, not run: on-commit callbacks do not run here)."""
    return plan_services.create_plan(
        world[requester], vm_ids=[world[v].pk for v in vms], destination_id=world["dst"].pk, **options
    )


def audited(plan: MigrationPlan, status: str = PlanStatus.READY) -> MigrationPlan:
    """Stand in for the audit worker: the newest audit done and clean, the plan ready (or `status`)."""
    audit = plan_services.latest_audit(plan)
    assert audit is not None
    Audit.objects.filter(pk=audit.pk).update(status=AuditStatus.DONE, worst="pass")
    MigrationPlan.objects.filter(pk=plan.pk).update(status=status)
    plan.refresh_from_db()
    return plan


def pending(world: dict[str, Any], requester: str = "alice", **options: Any) -> MigrationPlan:
    """A plan submitted for approval."""
    plan = audited(make_plan(world, requester, **options))
    plan_services.submit(world[requester], plan)
    plan.refresh_from_db()
    return plan
