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
    assert backup.state == "ready" and backup.verified and backup.host is not None and backup.host.name == "h1"
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
    store = lab_guests.conn("h1").storageVolLookupByPath(backup.disks[0]["path"])
    assert store.info()[1] == 16 * 1024 * 1024
    assert backup.expires_at is not None
    result = backups.prune(now=backup.expires_at + timedelta(seconds=1))
    assert result["backups"] >= 1
    backup.refresh_from_db()
    assert backup.state == "pruned"
    with pytest.raises(libvirt.libvirtError):
        lab_guests.conn("h1").storageVolLookupByPath(backup.disks[0]["path"])
    assert backups.latest_verified_backup(vm, timedelta(days=365)) is None
