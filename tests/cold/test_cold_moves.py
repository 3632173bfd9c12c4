"""Cold moves on the real lab: conversion, network mapping, retained source disks, sparse copies."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import libvirt
import pytest

from inventory.hypervisor.domxml import parse_domain
from inventory.models import Host, VirtualMachine
from migrations_app.choices import RunStatus
from migrations_app.engine import cold
from migrations_app.models import Backup, RetainedDisk
from migrations_app.services.backups import prune, release_retained_disk
from migrations_app.services.runs import start_item
from tests.base import LABCTL
from tests.cold.conftest import cold_item, forget_later
from tests.labguests import DiskSpec, LabGuests, NicSpec

pytestmark = [pytest.mark.lab]

MiB = 1024 * 1024


def _allocated(host: str, path: str) -> int:
    """Bytes really allocated for a file on a lab host (du inside the host's mount namespace)."""
    out = subprocess.run(
        [str(LABCTL), "exec", host, "--", "du", "-B1", path], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[0])


def test_cold_move_converts_vmdk_to_qcow2_maps_the_network_and_keeps_the_source_disks(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[
            DiskSpec(pool="local", format="vmdk", capacity_mib=64, bus="virtio"),
            DiskSpec(pool="local", format="raw", capacity_mib=64, write_mib=8, target="vdb"),
        ],
        nics=[NicSpec(network="app-net")],
    )
    item = cold_item(people, lab_hosts, guest, "h2", formats={"vda": "qcow2"}, fresh_backup=True)
    assert item.network_map == {guest.macs[0]: "app-lan"}
    run = start_item(people["alice"], item)
    assert run.mode == "cold"
    cold.execute(run.pk)
    run.refresh_from_db()
    forget_later(lab_guests, guest, f"{guest.name}-vda.qcow2", f"{guest.name}-vdb.raw")
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw, run.outcome)

    # running on the destination only, with the mapped NIC (same MAC) and the disks in the mapped pool/format
    assert lab_guests.where(guest) == {"h2": "running"}
    dom = lab_guests.conn("h2").lookupByUUIDString(guest.uuid)
    assert dom.isPersistent()
    info = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert [(n.mac, n.network) for n in info.nics] == [(guest.macs[0], "app-lan")]
    disks = {d.target: d for d in info.disks}
    assert disks["vda"].format == "qcow2" and disks["vda"].source == f"/srv/vmportal-lab/local/{guest.name}-vda.qcow2"
    assert disks["vdb"].format == "raw" and disks["vdb"].source == f"/srv/vmportal-lab/local/{guest.name}-vdb.raw"
    vol = lab_guests.conn("h2").storageVolLookupByPath(disks["vda"].source)
    assert "<format type='qcow2'/>" in vol.XMLDesc(0)  # really converted, not just renamed
    assert lab_guests.conn("h2").storageVolLookupByPath(disks["vdb"].source).info()[2] >= 8 * MiB

    # the source definition is gone, its disks are kept and recorded
    pool = lab_guests.conn("h1").storagePoolLookupByName("local")
    pool.refresh(0)
    for disk in guest.disks:
        assert pool.storageVolLookupByName(disk["volume"]).path() == disk["path"]
    retained = RetainedDisk.objects.filter(run=run)
    assert sorted(r.path for r in retained) == sorted(d["path"] for d in guest.disks)
    assert run.finished_at is not None
    assert all(r.released_at is None and r.retain_until > run.finished_at for r in retained)

    # progress in bytes, and the copies verified
    samples = list(run.samples.order_by("at", "pk"))
    assert samples and samples[-1].phase == "done" and samples[-1].percent == 100
    total = sum(t["size"] for t in run.scratch["transfers"])
    assert samples[-1].bytes_total == total == samples[-1].bytes_processed
    assert [s.bytes_processed for s in samples] == sorted(s.bytes_processed for s in samples)
    assert all(t["verified"] for t in run.scratch["transfers"])
    assert {t["target"]: t["format"] for t in run.scratch["transfers"]} == {"vda": "qcow2", "vdb": "raw"}

    # the backup was taken first (VM stopped: by copy), verified
    backup = Backup.objects.get(run=run)
    assert backup.state == "ready" and backup.verified and backup.method == "copy"
    assert sorted(d["target"] for d in backup.disks) == ["vda", "vdb"]
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    assert vm.host.name == "h2"
    # the staging copy made for the conversion is gone
    assert not any(v.startswith("vmportal-run") for v in pool.listVolumes())

    # kept disks go when an admin releases them, or when their retention ends
    first, second = retained.order_by("target")
    assert release_retained_disk(people["carol"], first)
    assert prune(now=second.retain_until + timedelta(seconds=1))["retained_disks"] == 1
    pool.refresh(0)
    assert not {d["volume"] for d in guest.disks} & set(pool.listVolumes())
    assert set(RetainedDisk.objects.filter(run=run).values_list("released_by", flat=True)) == {"carol", "retention"}


def test_a_mostly_empty_2_gib_image_costs_io_in_proportion_to_its_data(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    written = 32
    guest = lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=2048, write_mib=written)],
        nics=[NicSpec(network="app-net")],
    )
    item = cold_item(people, lab_hosts, guest, "h2")
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    forget_later(lab_guests, guest, f"{guest.name}-vda.raw")
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw, run.outcome)
    report = run.scratch["transfers"][0]
    size = 2048 * MiB
    dest_path = f"/srv/vmportal-lab/local/{guest.name}-vda.raw"
    allocated = _allocated("h2", dest_path)
    print(
        f"\n2 GiB raw image, {written} MiB written: file {report['size']} B; data sent {report['bytes_sent']} B; "
        f"read from source {report['bytes_read']} B; read back to verify {report['bytes_verified']} B; "
        f"destination allocation {allocated} B; copy {report['seconds']} s"
    )
    assert report["size"] == size and report["verified"]
    # what travelled is the data (plus at most the 4 KiB that keep the file's length), not the 2 GiB
    assert written * MiB <= report["bytes_sent"] <= written * MiB + 64 * 1024
    assert report["bytes_read"] == report["bytes_verified"] == written * MiB
    assert allocated < 2 * written * MiB
