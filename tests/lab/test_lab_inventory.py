"""Inventory against the real lab: three libvirt daemons with QEMU guests (lab/labctl)."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest

from inventory.choices import Reachability
from inventory.models import Host, StoragePool, VirtualMachine
from inventory.services.hosts import probe_host, register_host
from inventory.services.sync import sync_host
from tests.base import labctl, make_personas

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


@pytest.fixture
def lab_hosts(lab: dict[str, Any]) -> dict[str, Host]:
    make_personas()
    hosts = {}
    for entry in lab["hosts"]:
        hosts[entry["name"]] = register_host(
            None, name=entry["name"], uri=entry["uri"], migration_uri=entry["migration_uri"], sync=False
        )
    return hosts


def sync_all(hosts: dict[str, Host]) -> None:
    for host in hosts.values():
        assert sync_host(host.pk).ok, host.name


def test_sync_finds_every_lab_vm_with_its_disks_nics_and_networks(
    lab: dict[str, Any], lab_hosts: dict[str, Host]
) -> None:
    sync_all(lab_hosts)
    # Other tests' throw-away guests may exist on the lab hosts; every lab guest must be found.
    found = {str(u) for u in VirtualMachine.objects.filter(present=True).values_list("uuid", flat=True)}
    assert {g["uuid"] for g in lab["guests"]} <= found
    for guest in lab["guests"]:
        vm = VirtualMachine.objects.select_related("host", "team").get(uuid=guest["uuid"])
        assert vm.name == guest["name"] and vm.host.name == guest["host"] and vm.present
        assert vm.state == guest["state"].replace(" ", ""), guest["name"]
        assert vm.memory == guest["memory_mib"] * 1024 * 1024 and vm.vcpus == guest["vcpus"]
        assert (vm.team.slug if vm.team else None) == guest["team"]
        assert vm.machine_type.startswith("pc") and vm.arch == "x86_64"
        disks = {d.target: d for d in vm.disks.select_related("pool")}
        assert set(disks) == {d["target"] for d in guest["disks"]}, guest["name"]
        for expected in guest["disks"]:
            disk = disks[expected["target"]]
            assert disk.format == expected["format"] and disk.bus == expected["bus"]
            assert disk.source == expected["path"]
            assert disk.pool is not None and disk.pool.name == expected["pool"]
            assert disk.capacity == expected["capacity_bytes"]
            assert disk.allocation is not None and disk.allocation < disk.capacity  # sparse images
        nics = {n.mac: n for n in vm.nics.select_related("network")}
        assert set(nics) == {n["mac"] for n in guest["nics"]}
        for expected in guest["nics"]:
            nic = nics[expected["mac"]]
            assert nic.source_network == expected["network"] and nic.model == expected["model"]
            assert nic.network is not None and nic.network.host == vm.host
    for entry in lab["hosts"]:
        host = Host.objects.get(name=entry["name"])
        assert host.reachability == Reachability.REACHABLE
        assert host.arch == "x86_64" and "pc" in host.machine_types and host.cpus >= 1
        assert host.libvirt_version and host.hypervisor_version and host.memory_total > host.memory_free > 0
        assert host.host_uuid == entry["host_uuid"]
        assert "<domainCapabilities>" in host.domain_capabilities
        assert host.virt_type in ("kvm", "qemu")  # what libvirt offers; lab guests use qemu (TCG) here
        assert set(host.networks.values_list("name", flat=True)) == {n["name"] for n in entry["networks"]}
        pools = {p.name: p for p in StoragePool.objects.filter(host=host)}
        assert {"local", "shared"} <= set(pools) and all(p.capacity > 0 for p in pools.values())


def test_linux_guest_details(lab: dict[str, Any], lab_hosts: dict[str, Host]) -> None:
    sync_all(lab_hosts)
    vm = VirtualMachine.objects.get(name="linux-01")
    assert "<kernel>" in vm.xml and vm.firmware == "bios" and vm.snapshot_count == 0
    assert VirtualMachine.objects.get(name="tiny-01").disks.count() == 0
    assert VirtualMachine.objects.get(name="tiny-01").team is None


def _guest_host(lab: dict[str, Any], name: str) -> dict[str, Any]:
    guest = next(g for g in lab["guests"] if g["name"] == name)
    return next(h for h in lab["hosts"] if h["name"] == guest["host"])


def _migrate(lab: dict[str, Any], name: str, src: str, dst: str, net_from: str, net_to: str) -> None:
    """Live-migrate by hand, as an admin would with virsh, mapping the NIC's network."""
    xml = labctl("virsh", src, "dumpxml", "--migratable", name).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as fh:
        fh.write(xml.replace(f"network='{net_from}'", f"network='{net_to}'"))
        fh.flush()
        dst_uri = next(h["migration_uri"] for h in lab["hosts"] if h["name"] == dst)
        labctl(
            "virsh",
            src,
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            "--xml",
            fh.name,
            "--persistent-xml",
            fh.name,
            name,
            dst_uri,
        )


def test_a_vm_moved_with_virsh_migrate_keeps_one_row_with_the_new_host(
    lab: dict[str, Any], lab_hosts: dict[str, Host]
) -> None:
    assert _guest_host(lab, "web-01")["name"] == "h1"
    sync_all(lab_hosts)
    row = VirtualMachine.objects.get(name="web-01")
    _migrate(lab, "web-01", "h1", "h2", "app-net", "app-lan")
    try:
        sync_all(lab_hosts)
        moved = VirtualMachine.objects.get(name="web-01")
        assert moved.pk == row.pk and moved.host.name == "h2" and moved.present and moved.state == "running"
        assert VirtualMachine.objects.filter(uuid=row.uuid).count() == 1
        nic = moved.nics.get()
        assert nic.source_network == "app-lan" and nic.network is not None and nic.network.host.name == "h2"
        assert moved.disks.get().pool is not None and moved.disks.get().pool.host.name == "h2"
    finally:
        _migrate(lab, "web-01", "h2", "h1", "app-lan", "app-net")
    sync_all(lab_hosts)
    assert VirtualMachine.objects.get(name="web-01").host.name == "h1"


def test_an_undefined_vm_is_marked_missing_and_comes_back(lab: dict[str, Any], lab_hosts: dict[str, Host]) -> None:
    sync_all(lab_hosts)
    host = _guest_host(lab, "legacy-01")["name"]
    xml = labctl("virsh", host, "dumpxml", "legacy-01").stdout
    labctl("virsh", host, "undefine", "legacy-01")
    try:
        sync_all(lab_hosts)
        vm = VirtualMachine.objects.get(name="legacy-01")
        assert not vm.present and vm.missing_since is not None
        assert vm.disks.get().format == "vmdk"  # last known details kept
    finally:
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as fh:
            fh.write(xml)
            fh.flush()
            labctl("virsh", host, "define", fh.name)
    sync_all(lab_hosts)
    vm = VirtualMachine.objects.get(name="legacy-01")
    assert vm.present and vm.missing_since is None


def test_a_stopped_daemon_marks_the_host_unreachable_without_losing_rows(
    lab: dict[str, Any], lab_hosts: dict[str, Host]
) -> None:
    sync_all(lab_hosts)
    h3 = lab_hosts["h3"]
    before = dict(VirtualMachine.objects.filter(host=h3).values_list("uuid", "state"))
    assert before
    labctl("stop-host", "h3")
    try:
        result = sync_host(h3.pk)
        assert not result.ok and ("cannot be reached" in result.error or "could not be opened" in result.error)
        h3.refresh_from_db()
        assert h3.reachability == Reachability.UNREACHABLE and h3.last_error
        report = probe_host(h3)
        assert not report.ok and report.message
        after = dict(VirtualMachine.objects.filter(host=h3, present=True).values_list("uuid", "state"))
        assert after == before
    finally:
        labctl("start-host", "h3")
    assert sync_host(h3.pk).ok
    h3.refresh_from_db()
    assert h3.reachability == Reachability.REACHABLE and not h3.last_error


def test_test_connection_reports_reachability_and_versions(lab: dict[str, Any], lab_hosts: dict[str, Host]) -> None:
    report = probe_host(lab_hosts["h1"])
    assert report.ok and report.libvirt_version.startswith("9.") and report.hypervisor_version.startswith("QEMU")
