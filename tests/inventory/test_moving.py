"""A VM in the middle of a live move: the incoming half on the destination is not its home, and its page
says it is moving while a run is active."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from inventory.hypervisor.reader import read_host
from inventory.models import VirtualMachine
from inventory.services.sync import apply_snapshot, sync_host
from migrations_app.models import MigrationPlan, MigrationRun, PlanItem
from tests.base import PASSWORD, domain_xml, node_file_host

pytestmark = pytest.mark.django_db

UUID = "cccccccc-0000-0000-0000-000000000003"


@pytest.fixture
def two_hosts(people: dict[str, Any]) -> dict[str, Any]:
    source = node_file_host("move-src", [domain_xml("pay-db", UUID, team="payments")])
    destination = node_file_host("move-dst", [])
    assert sync_host(source.pk).ok and sync_host(destination.pk).ok
    return {**people, "source": source, "destination": destination}


def _incoming(two_hosts: dict[str, Any], **changes: Any) -> Any:
    """The destination's snapshot with the VM's incoming half in it (paused, transient, reason migration)."""
    snap = read_host(two_hosts["source"].uri)
    dom = dataclasses.replace(snap.domains[0], **changes)
    empty = read_host(two_hosts["destination"].uri)
    return dataclasses.replace(empty, domains=[dom])


def test_the_incoming_half_of_a_live_move_does_not_take_the_vm(two_hosts: dict[str, Any]) -> None:
    destination = two_hosts["destination"]
    snap = _incoming(two_hosts, state="paused", persistent=False, incoming_migration=True)
    result = apply_snapshot(destination.pk, snap)
    vm = VirtualMachine.objects.get(uuid=UUID)
    assert vm.host == two_hosts["source"] and vm.state == "running" and vm.present
    assert result.elsewhere == 1 and result.moved == 0
    # the source still reports it: it stays there, running
    assert sync_host(two_hosts["source"].pk).ok
    vm.refresh_from_db()
    assert vm.host == two_hosts["source"] and vm.state == "running"
    # once the move has finished the destination runs it, and the row follows
    snap = _incoming(two_hosts, state="running", persistent=True, incoming_migration=False)
    assert apply_snapshot(destination.pk, snap).moved == 1
    vm.refresh_from_db()
    assert vm.host == destination


def test_the_vm_page_says_moving_while_a_run_is_active(client: Client, two_hosts: dict[str, Any]) -> None:
    vm = VirtualMachine.objects.get(uuid=UUID)
    plan = MigrationPlan.objects.create(
        name="move pay-db", requester=two_hosts["alice"], team=two_hosts["payments"], mode="live"
    )
    item = PlanItem.objects.create(
        plan=plan, vm=vm, source=two_hosts["source"], destination=two_hosts["destination"], mode="live"
    )
    run = MigrationRun.objects.create(
        item=item,
        vm=vm,
        source=two_hosts["source"],
        destination=two_hosts["destination"],
        mode="live",
        status="transferring",
        started_at=timezone.now(),
    )
    assert client.login(username="alice", password=PASSWORD)
    url = reverse("inventory:vm_detail", args=[UUID])
    page = client.get(url).content.decode()
    assert "data-moving-badge>moving<" in page and "from move-src to move-dst" in page
    assert reverse("runs:run_detail", args=[run.pk]) in page
    MigrationRun.objects.filter(pk=run.pk).update(status="failed", finished_at=timezone.now())
    assert "data-moving-badge" not in client.get(url).content.decode()
