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


def _same_content(source_host: str, source: str, destination_host: str, destination: str) -> bool:
    """The guest-visible content of two images on two lab hosts is identical (`qemu-img compare` on
    the files' backing paths, which the root namespace sees; formats may differ)."""
    backing = {h: f"/var/lib/vmportal-lab/{h}/local/" for h in (source_host, destination_host)}
    a = backing[source_host] + source.rsplit("/", 1)[1]
    b = backing[destination_host] + destination.rsplit("/", 1)[1]
    return subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True).returncode == 0


def test_cold_move_converts_vmdk_to_qcow2_maps_the_network_and_keeps_the_source_disks(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    """A vmdk disk cannot go through libvirt's block mirror: the default path falls back to the stream copy,
    which converts on the source first, and says why."""
    path = "stream"
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

    # progress in bytes, and the copies verified: the same content as the source disks
    assert run.scratch["cold"]["copy_path"] == path
    assert "vda (vmdk) is not" in run.scratch["cold"]["mirror_unavailable"]
    samples = list(run.samples.order_by("at", "pk"))
    assert samples and samples[-1].phase == "done" and samples[-1].percent == 100
    total = sum(t["size"] for t in run.scratch["transfers"])
    assert samples[-1].bytes_total == total == samples[-1].bytes_processed
    assert [s.bytes_processed for s in samples] == sorted(s.bytes_processed for s in samples)
    assert all(t["verified"] and t["method"] == path for t in run.scratch["transfers"])
    assert {t["target"]: t["format"] for t in run.scratch["transfers"]} == {"vda": "qcow2", "vdb": "raw"}
    for disk in guest.disks:
        target = disks[disk["target"]].source
        assert _same_content("h1", disk["path"], "h2", target), disk

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
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], settings: Any
) -> None:
    """The stream path (the fallback): what travels, is read and read back is the data only."""
    settings.COLD_COPY = "stream"
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


def test_the_block_mirror_copies_a_mostly_empty_2_gib_image_sparse_and_converted(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    """The fast path (default): a paused carrier holding the VM's disk started on the source, the raw disk
    mirrored into a qcow2 volume; only the data is allocated on the destination, the content is the
    source's, and nothing keeps running."""
    written = 32
    guest = lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=2048, write_mib=written)],
        nics=[NicSpec(network="app-net")],
        start=False,
    )
    item = cold_item(people, lab_hosts, guest, "h2", formats={"vda": "qcow2"})
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    forget_later(lab_guests, guest, f"{guest.name}-vda.qcow2")
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw, run.outcome)
    assert run.scratch["cold"]["copy_path"] == "mirror" and not run.scratch["cold"]["mirror_started"]
    dest_path = f"/srv/vmportal-lab/local/{guest.name}-vda.qcow2"
    allocated = _allocated("h2", dest_path)
    report = run.scratch["transfers"][0]
    print(f"\n2 GiB raw image, {written} MiB written, by block mirror: {report}; destination allocation {allocated} B")
    assert written * MiB <= allocated < 2 * written * MiB
    assert _same_content("h1", guest.disks[0]["path"], "h2", dest_path)
    # stopped before, stopped after: defined on h2, shut off, and no paused copy left on either host
    assert lab_guests.where(guest) == {"h2": str(libvirt.VIR_DOMAIN_SHUTOFF)}
    assert run.scratch["cold"]["mirror"]["carrier"] == f"vmportal-copy-{guest.uuid}"
    for host in ("h1", "h2"):
        assert not [d.name() for d in lab_guests.conn(host).listAllDomains(0) if d.name().startswith("vmportal-copy-")]
