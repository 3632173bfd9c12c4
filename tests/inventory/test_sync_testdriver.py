"""Sync against the libvirt test driver: scale, idempotence, moves and disappearances."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.choices import Reachability, TeamSource
from inventory.hypervisor import read_host
from inventory.hypervisor.domxml import parse_domain
from inventory.models import NIC, Disk, Host, VirtualMachine
from inventory.services.sync import apply_snapshot, sync_host
from tests.base import domain_xml, make_personas, node_file_host, write_node_file

pytestmark = pytest.mark.django_db


def _domains(count: int, prefix: str = "vm") -> list[str]:
    return [
        domain_xml(
            f"{prefix}-{i:04d}",
            str(uuid.UUID(int=i + 1)),
            mac=f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            team="payments" if i % 2 else "analytics",
            disk_format="raw" if i % 3 == 0 else "qcow2",
        )
        for i in range(count)
    ]


def test_it_syncs_a_thousand_domains_correctly() -> None:
    make_personas()
    host = node_file_host("big", _domains(1000))
    result = sync_host(host.pk)
    assert result.ok and result.created == 1000
    assert VirtualMachine.objects.filter(host=host, present=True).count() == 1000
    assert Disk.objects.filter(vm__host=host).count() == 1000
    assert NIC.objects.filter(vm__host=host).count() == 1000
    vm = VirtualMachine.objects.get(name="vm-0999")
    assert str(vm.uuid) == str(uuid.UUID(int=1000))
    assert vm.state == "running" and vm.memory == 128 * 1024 * 1024 and vm.vcpus == 1
    assert vm.team is not None and vm.team.slug == "payments" and vm.team_source == TeamSource.METADATA
    assert vm.disks.get().format == "raw" and vm.disks.get().cache == "none"
    nic = vm.nics.get()
    assert nic.mac == "52:54:00:00:03:e7" and nic.source_network == "default" and nic.network is not None
    assert VirtualMachine.objects.filter(team__slug="payments").count() == 500
    host.refresh_from_db()
    assert host.reachability == Reachability.REACHABLE and host.cpus == 4


def test_resync_with_nothing_changed_rewrites_nothing() -> None:
    host = node_file_host("same", _domains(50))
    sync_host(host.pk)
    before = dict(VirtualMachine.objects.values_list("uuid", "updated_at"))
    disk_ids = set(Disk.objects.values_list("pk", flat=True))
    result = sync_host(host.pk)
    assert (result.created, result.updated, result.unchanged, result.missing) == (0, 0, 50, 0)
    assert dict(VirtualMachine.objects.values_list("uuid", "updated_at")) == before
    assert set(Disk.objects.values_list("pk", flat=True)) == disk_ids


def _queries_for_sync(host: Host) -> int:
    with CaptureQueriesContext(connection) as ctx:
        sync_host(host.pk)
    return len(ctx.captured_queries)


def test_queries_do_not_grow_with_the_number_of_domains() -> None:
    small = node_file_host("small", _domains(10, "s"))
    large = node_file_host("large", _domains(300, "l")[10:])
    assert _queries_for_sync(small) == _queries_for_sync(large)
    assert _queries_for_sync(small) == _queries_for_sync(large)  # re-sync too


def test_a_vm_that_moved_keeps_one_row_with_the_new_host() -> None:
    moving = domain_xml("mover", "11111111-2222-3333-4444-555555555555", mac="52:54:00:aa:bb:01")
    a = node_file_host("host-a", [moving])
    b = node_file_host("host-b", [])
    sync_host(a.pk)
    original = VirtualMachine.objects.get(name="mover")
    write_node_file("host-a", [])
    write_node_file("host-b", [moving])
    assert sync_host(b.pk).moved == 1
    assert sync_host(a.pk).missing == 0
    vm = VirtualMachine.objects.get(uuid="11111111-2222-3333-4444-555555555555")
    assert vm.pk == original.pk and vm.host == b and vm.present
    assert VirtualMachine.objects.count() == 1


def test_a_vm_that_disappears_is_marked_missing_not_deleted() -> None:
    host = node_file_host("shrinking", _domains(3))
    sync_host(host.pk)
    write_node_file("shrinking", _domains(3)[:2])
    assert sync_host(host.pk).missing == 1
    gone = VirtualMachine.objects.get(name="vm-0002")
    assert not gone.present and gone.missing_since is not None
    assert gone.disks.count() == 1  # its last known disks are kept with it
    write_node_file("shrinking", _domains(3))
    sync_host(host.pk)
    gone.refresh_from_db()
    assert gone.present and gone.missing_since is None


def test_an_inactive_copy_elsewhere_does_not_steal_the_row() -> None:
    """A shut-off definition of a VM that runs on another host (e.g. a cold move's retained source)."""
    running = domain_xml("app", "99999999-2222-3333-4444-555555555555")
    a = node_file_host("run-here", [running])
    sync_host(a.pk)
    b = node_file_host("copy-here", [])
    snapshot = read_host(b.uri)
    copy = parse_domain(running)
    copy.state = "shutoff"
    snapshot.domains.append(copy)
    result = apply_snapshot(b.pk, snapshot)
    vm = VirtualMachine.objects.get(name="app")
    assert result.elsewhere == 1 and vm.host == a and vm.state == "running"
    assert vm.also_defined_on == ["copy-here"]
    apply_snapshot(b.pk, read_host(b.uri))  # the copy was undefined
    vm.refresh_from_db()
    assert vm.also_defined_on == [] and vm.host == a and vm.present


def test_an_unreachable_host_keeps_its_vms_and_last_known_state() -> None:
    host = node_file_host("fragile", _domains(2))
    sync_host(host.pk)
    Host.objects.filter(pk=host.pk).update(uri="test:///nonexistent/dir/fragile.xml")
    result = sync_host(host.pk)
    assert not result.ok and result.error
    host.refresh_from_db()
    assert host.reachability == Reachability.UNREACHABLE and host.last_error
    assert VirtualMachine.objects.filter(host=host, present=True, state="running").count() == 2


def test_admin_assignment_wins_over_the_metadata_tag() -> None:
    people = make_personas()
    host = node_file_host("owned", _domains(2))
    sync_host(host.pk)
    vm = VirtualMachine.objects.get(name="vm-0001")
    assert vm.team == people["payments"]
    from inventory.services.hosts import assign_team

    assign_team(people["carol"], [vm], people["analytics"])
    write_node_file("owned", _domains(2) + _domains(1, "extra"))  # force a changed snapshot
    sync_host(host.pk)
    vm.refresh_from_db()
    assert vm.team == people["analytics"] and vm.team_source == TeamSource.ADMIN


def test_a_resync_picks_up_each_kind_of_change_and_leaves_the_rest_alone() -> None:
    """One domain's definition changes (every kind of field the inventory keeps), another only stops
    (its state is not in the XML); the third is left as it was."""
    make_personas()
    ids = [str(uuid.UUID(int=900 + i)) for i in range(3)]
    same = [domain_xml(f"c-{i}", ids[i], mac=f"52:54:00:00:09:0{i}", team="analytics") for i in range(3)]
    host = node_file_host("changing", same, networks=("default", "other"))
    assert sync_host(host.pk).created == 3
    untouched = VirtualMachine.objects.get(name="c-2")
    before = (untouched.updated_at, list(untouched.disks.values_list("pk", flat=True)))
    changed = (
        domain_xml(
            "c-0-renamed",
            ids[0],
            mac="52:54:00:00:09:aa",
            team="payments",
            network="other",
            disk_format="raw",
            memory_kib=262144,
        )
        .replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu><title>new title</title><description>new text</description>")
        .replace(
            "</devices>",
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices>",
        )
    )
    write_node_file("changing", [changed, *same[1:]], networks=("default", "other"))
    snapshot = read_host(host.uri)
    stopped = next(d for d in snapshot.domains if d.uuid == ids[1])
    stopped.state = "shutoff"  # what libvirt reports beside the XML, which stays the same
    result = apply_snapshot(host.pk, snapshot)
    assert (result.created, result.updated, result.unchanged, result.missing) == (0, 2, 1, 0)

    vm = VirtualMachine.objects.get(uuid=ids[0])
    assert (vm.name, vm.memory, vm.vcpus, vm.title, vm.description) == (
        "c-0-renamed",
        256 * 1024 * 1024,
        2,
        "new title",
        "new text",
    )
    assert vm.has_guest_agent and vm.team is not None and vm.team.slug == "payments" and vm.team_tag == "payments"
    assert vm.disks.get().format == "raw"
    nic = vm.nics.get()
    assert (nic.mac, nic.source_network, nic.network.name if nic.network else "") == (
        "52:54:00:00:09:aa",
        "other",
        "other",
    )
    assert VirtualMachine.objects.get(uuid=ids[1]).state == "shutoff"
    untouched.refresh_from_db()
    assert (untouched.updated_at, list(untouched.disks.values_list("pk", flat=True))) == before
    assert untouched.state == "running" and untouched.last_seen_at == vm.last_seen_at
