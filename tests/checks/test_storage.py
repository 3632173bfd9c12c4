"""Storage checks fire on the lab: space, cache, shareable disks, backing files, snapshots, media, jobs."""

from __future__ import annotations

import secrets

import libvirt
import pytest

from migrations_app.services.plans import update_item
from tests.checks.conftest import Planner, outcomes
from tests.labguests import DiskSpec, LabGuests

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


def test_sto_shared_tells_copied_disks_from_shared_ones(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define(
        "h1", disks=[DiskSpec(pool="shared", cache="none"), DiskSpec(pool="local", target="vdb")], nics=[], start=False
    )
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    shared = results["STO-SHARED"]
    assert shared.severity == "info" and "vdb" in shared.message
    assert shared.source["vda"]["copied"] is False and shared.source["vdb"]["copied"] is True


def test_sto_space_blocks_when_the_destination_pool_is_too_small(
    lab_guests: LabGuests, plan_move: Planner, people: dict
) -> None:
    # a 100 TiB sparse qcow2 image: tiny while it stays qcow2, its full size once converted to raw
    guest = lab_guests.define(
        "h1", disks=[DiskSpec(pool="local", capacity_mib=100 * 1024 * 1024)], nics=[], start=False
    )
    plan = plan_move(guest, "h2", mode="cold")
    _mode, sparse = outcomes(plan)
    assert sparse["STO-SPACE"].severity == "pass", sparse["STO-SPACE"].message
    update_item(people["alice"], plan.items.get(), storage_map={"vda": {"pool": "local", "format": "raw"}})
    _mode, raw = outcomes(plan)
    space = raw["STO-SPACE"]
    assert space.severity == "block", space.message
    assert space.destination["local"]["needed"] == 100 * 1024**4
    assert space.destination["local"]["available"] < 100 * 1024**4


def test_sto_cache_blocks_a_writeback_disk_on_shared_storage_live(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", disks=[DiskSpec(pool="shared", cache="writeback")], nics=[], start=False)
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    assert live["STO-CACHE"].severity == "block" and "cache=writeback" in live["STO-CACHE"].message
    _mode, cold = outcomes(plan_move(guest, "h2", mode="cold"))
    assert cold["STO-CACHE"].severity == "pass"


def test_sto_shareable_blocks_unless_every_vm_sharing_the_disk_moves(lab_guests: LabGuests, plan_move: Planner) -> None:
    spec = DiskSpec(pool="shared", format="raw", shareable=True, cache="none")
    first = lab_guests.define("h1", disks=[spec], nics=[], start=False)
    second = lab_guests.define(
        "h1",
        disks=[DiskSpec(pool="shared", format="raw", shareable=True, cache="none", volume=first.disks[0]["volume"])],
        nics=[],
        start=False,
    )
    _mode, alone = outcomes(plan_move(first, "h2", mode="cold"))
    assert alone["STO-SHAREABLE"].severity == "block" and second.name in alone["STO-SHAREABLE"].message
    _mode, together = outcomes(plan_move([first, second], "h2", mode="cold"), first.name)
    assert together["STO-SHAREABLE"].severity == "pass", together["STO-SHAREABLE"].message


def test_sto_backing_blocks_a_shared_disk_whose_backing_file_is_local(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    conn = lab_guests.conn("h1")
    token = secrets.token_hex(3)
    base_name, overlay_name = f"t-base-{token}.qcow2", f"t-overlay-{token}.qcow2"
    base = conn.storagePoolLookupByName("local").createXML(
        f"<volume><name>{base_name}</name><capacity unit='MiB'>64</capacity>"
        "<target><format type='qcow2'/></target></volume>",
        0,
    )
    lab_guests.volumes.append(("local", base_name))
    conn.storagePoolLookupByName("shared").createXML(
        f"<volume><name>{overlay_name}</name><capacity unit='MiB'>64</capacity><target><format type='qcow2'/>"
        f"</target><backingStore><path>{base.path()}</path><format type='qcow2'/></backingStore></volume>",
        0,
    )
    lab_guests.volumes.append(("shared", overlay_name))
    guest = lab_guests.define(
        "h1", disks=[DiskSpec(pool="shared", volume=overlay_name, cache="none")], nics=[], start=False
    )
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    backing = live["STO-BACKING"]
    assert backing.severity == "block", backing.message
    assert backing.destination["missing"] == {"vda": [base.path()]}
    _mode, cold = outcomes(plan_move(guest, "h2", mode="cold"))
    assert cold["STO-BACKING"].severity == "info" and "flattened" in cold["STO-BACKING"].message


def test_sto_snapshots_warns_about_a_snapshot(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", disks=[DiskSpec(format="qcow2")], nics=[], start=False)
    dom = lab_guests.conn("h1").lookupByUUIDString(guest.uuid)
    dom.snapshotCreateXML("<domainsnapshot><name>before-move</name></domainsnapshot>", 0)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    assert results["STO-SNAPSHOTS"].severity == "warn" and results["STO-SNAPSHOTS"].source == {"snapshots": 1}


def _cdrom(path: str) -> str:
    return (
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
        f"<source file='{path}'/><target dev='hdc' bus='ide'/><readonly/></disk>"
    )


def test_sto_media_warns_about_a_local_iso_missing_on_the_destination(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    local_iso = lab_guests.volume("h1", "local", f"t-{secrets.token_hex(3)}.iso", "raw", 1)
    guest = lab_guests.define("h1", nics=[], devices_xml=_cdrom(local_iso), start=False)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    assert results["STO-MEDIA"].severity == "warn" and local_iso in results["STO-MEDIA"].message
    shared_iso = lab_guests.volume("h1", "shared", f"t-{secrets.token_hex(3)}-shared.iso", "raw", 1)
    on_shared = lab_guests.define("h1", nics=[], devices_xml=_cdrom(shared_iso), start=False)
    _mode, results = outcomes(plan_move(on_shared, "h2", mode="cold"))
    assert results["STO-MEDIA"].severity == "pass", results["STO-MEDIA"].message


def test_sto_jobs_blocks_a_vm_with_a_running_block_copy(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", disks=[DiskSpec(pool="local", format="qcow2")], nics=[], start=True)
    dom = lab_guests.conn("h1").lookupByUUIDString(guest.uuid)
    copy = f"{guest.name}.copy"
    lab_guests.volumes.append(("local", copy))
    # 1 MiB/s keeps the mirror of the 64 MiB disk running for the whole test
    dom.blockCopy(
        "vda",
        f"<disk type='file'><source file='/srv/vmportal-lab/local/{copy}'/><driver type='qcow2'/></disk>",
        {"bandwidth": 1024 * 1024},
        libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB,
    )
    _mode, results = outcomes(plan_move(guest, "h2", mode="live"))
    jobs = results["STO-JOBS"]
    assert jobs.severity == "block" and "copy" in jobs.message
    assert jobs.source["block jobs"] == {"vda": "copy"}
    dom.blockJobAbort("vda", 0)
    _mode, results = outcomes(plan_move(guest, "h2", mode="live", owner="alice"))
    assert results["STO-JOBS"].severity == "pass"
