"""Backups: a live move's fresh backup is taken while the guest runs, and it restores elsewhere."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import libvirt
import pytest

from inventory.models import Host, VirtualMachine
from migrations_app.choices import RunStatus
from migrations_app.engine import live
from migrations_app.models import Backup
from migrations_app.services import backups
from migrations_app.services.runs import start_item
from tests.cold.conftest import cold_item
from tests.labguests import DiskSpec, Guest, LabGuests, NicSpec

pytestmark = [pytest.mark.lab]


def test_a_live_move_with_a_fresh_backup_policy_backs_up_the_running_guest_and_the_backup_restores(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[DiskSpec(pool="local", format="qcow2", capacity_mib=64)],
        nics=[NicSpec(network="app-net")],
    )
    item = cold_item(people, lab_hosts, guest, "h2", mode="live", fresh_backup=True)
    run = start_item(people["alice"], item)
    assert run.options["fresh_backup"] is True
    live.execute(run.pk)
    run.refresh_from_db()
    backup = Backup.objects.get(run=run)
    lab_guests.volumes += [(d["pool"], d["volume"]) for d in backup.disks]
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw, run.outcome)
    assert lab_guests.where(guest) == {"h2": "running"}

    # taken by libvirt's push backup while the guest ran, before the live move, which itself needs the
    # guest running: nothing stopped it in between
    assert backup.method == "push" and backup.vm_was_running
    assert backup.finished_at is not None and run.transferred_at is not None
    assert backup.finished_at < run.transferred_at
    assert run.samples.exists() and run.downtime_ms is not None
    # the VM's disk is local to h1: the backup lands in another host's backup pool
    assert backup.state == "ready" and backup.verified and backup.host is not None
    assert backup.host.name in ("h2", "h3") and backup.pool == "backup" and not backup.on_shared_storage
    assert all(d["path"].startswith("/var/lib/libvirt/backup/") for d in backup.disks)
    _no_push_files_left_on(lab_guests, "h1", guest)
    assert [d["target"] for d in backup.disks] == ["vda"] and backup.disks[0]["sha256"]
    assert backup.expires_at is not None and backup.expires_at > backup.created_at + timedelta(days=1)
    assert backups.verify_backup(backup)
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    assert backups.latest_verified_backup(vm, timedelta(hours=1)) == backup
    assert backups.latest_verified_backup(vm, timedelta(seconds=0)) is None

    # restore on another host than where the VM now runs: a new guest that starts
    restored = backups.restore_backup(
        people["carol"], backup, lab_hosts["h1"], pool="local", network_map={guest.macs[0]: "app-net"}
    )
    lab_guests.created.append(
        Guest(
            name=restored.name,
            uuid=restored.uuid,
            host="h1",
            disks=[{"pool": d["pool"], "volume": d["path"].rsplit("/", 1)[1]} for d in restored.disks],
        )
    )
    copy = lab_guests.conn("h1").lookupByUUIDString(restored.uuid)
    assert copy.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert lab_guests.where(guest) == {"h2": "running"}  # the original is untouched
    assert restored.disks[0]["path"].startswith("/srv/vmportal-lab/local/")


def test_a_stopped_vm_is_backed_up_by_copy_and_pruned_after_retention(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1", memory_mib=64, disks=[DiskSpec(pool="local", format="raw", capacity_mib=16, write_mib=1)], start=False
    )
    item = cold_item(people, lab_hosts, guest, "h2")
    vm = item.vm
    backup = backups.take_backup(people["alice"], vm)
    lab_guests.volumes += [(d["pool"], d["volume"]) for d in backup.disks]
    assert backup.method == "copy" and backup.verified
    assert backup.host is not None and backup.host.name != "h1"
    where = backup.host.name
    store = lab_guests.conn(where).storageVolLookupByPath(backup.disks[0]["path"])
    assert store.info()[1] == 16 * 1024 * 1024
    assert backup.expires_at is not None
    result = backups.prune(now=backup.expires_at + timedelta(seconds=1))
    assert result["backups"] >= 1
    backup.refresh_from_db()
    assert backup.state == "pruned"
    with pytest.raises(libvirt.libvirtError):
        lab_guests.conn(where).storageVolLookupByPath(backup.disks[0]["path"])
    assert backups.latest_verified_backup(vm, timedelta(days=365)) is None


def _no_push_files_left_on(lab_guests: LabGuests, host: str, guest: Guest) -> None:
    """The push backup's files QEMU wrote beside the disks were removed once copied to their place."""
    pool = lab_guests.conn(host).storagePoolLookupByName("local")
    pool.refresh(0)
    assert not [n for n in pool.listVolumes() if n.startswith(f"vmportal-backup-{guest.name}-")]


def test_a_local_disk_backup_lives_off_its_host_the_audit_says_where_and_it_restores_without_that_host(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    """Backup of a stopped VM with data on h1's local disk → another host's backup pool; BAK-RECENT shows
    that place; with h1's daemon stopped (the host lost), the backup restores onto the third host and the
    restored disk holds exactly the VM's data."""
    from inventory.hypervisor.storage import VolumeHost
    from migrations_app.engine.transfer import read_digest
    from tests.base import labctl
    from tests.checks.conftest import outcomes
    from tests.engine.conftest import sync

    guest = lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=32, write_mib=4)],
        nics=[],
        start=False,
    )
    sync(lab_hosts)
    vm = VirtualMachine.objects.select_related("host").get(uuid=guest.uuid)
    backup = backups.take_backup(people["alice"], vm)
    lab_guests.volumes += [(d["pool"], d["volume"]) for d in backup.disks]
    assert backup.host is not None and backup.host.name in ("h2", "h3") and backup.pool == "backup"
    keeper = backup.host.name
    other = ({"h2", "h3"} - {keeper}).pop()

    # the audit names the place and passes: the backup survives the VM's host
    item = cold_item(people, lab_hosts, guest, "h2")
    outcome = outcomes(item.plan)[1]["BAK-RECENT"]
    assert outcome.severity == "pass", outcome.message
    assert outcome.source["location"] == f"{keeper}/backup" and f"{keeper}/backup" in outcome.message

    with VolumeHost(lab_hosts["h1"].uri) as h1:
        original = read_digest(h1, guest.disks[0]["path"])[0]
    labctl("stop-host", "h1")
    try:
        restored = backups.restore_backup(
            people["carol"], backup, lab_hosts[other], pool="local", network_map={}, start=False
        )
        lab_guests.created.append(
            Guest(
                name=restored.name,
                uuid=restored.uuid,
                host=other,
                disks=[{"pool": d["pool"], "volume": d["path"].rsplit("/", 1)[1]} for d in restored.disks],
            )
        )
        with VolumeHost(lab_hosts[other].uri) as there:
            assert read_digest(there, restored.disks[0]["path"])[0] == original
        assert lab_guests.conn(other).lookupByUUIDString(restored.uuid).isPersistent()
    finally:
        labctl("start-host", "h1")
