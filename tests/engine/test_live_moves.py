"""Live moves on the real lab: shared storage and local disks, each onto a differently named network."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from inventory.hypervisor.domxml import METADATA_NS, parse_domain
from inventory.models import Host, VirtualMachine
from migrations_app.choices import RunStatus
from migrations_app.engine import live
from migrations_app.models import AuditLogEntry, MigrationRun
from migrations_app.services.runs import start_item
from tests.engine.conftest import plan_item
from tests.labguests import DiskSpec, LabGuests, NicSpec

pytestmark = [pytest.mark.lab]


def _check_moved(run: MigrationRun, lab_guests: LabGuests, guest: Any, destination: str, network: str) -> Any:
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw)
    assert lab_guests.where(guest) == {destination: "running"}
    dom = lab_guests.conn(destination).lookupByUUIDString(guest.uuid)
    assert dom.isPersistent()
    info = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert [(n.mac, n.network) for n in info.nics] == [(guest.macs[0], network)]
    assert info.team_tag == "payments"  # the run tag did not replace the team tag
    tag = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    assert f'id="{run.pk}"' in tag
    assert run.samples.count() >= 1
    assert run.samples.filter(phase="done", percent=100).exists()
    percents = list(run.samples.values_list("percent", flat=True))
    assert percents == sorted(percents)
    assert run.downtime_ms is not None and run.downtime_ms >= 0
    assert run.elapsed_ms and run.transferred_at is not None
    assert run.setup_ms is not None, run.completed_stats  # the source's JOB_COMPLETED event arrived
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    assert vm.host.name == destination and vm.present
    verbs = set(AuditLogEntry.objects.values_list("verb", flat=True))
    assert {"run.queue", "run.succeeded", "vm.move"} <= verbs
    assert run.pending_cleanup == {}
    return info


def test_live_move_over_shared_storage_lands_on_the_mapped_network(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1", memory_mib=128, disks=[DiskSpec(pool="shared", capacity_mib=64)], nics=[NicSpec(network="app-net")]
    )
    item = plan_item(people, lab_hosts, guest, "h2")
    assert item.network_map == {guest.macs[0]: "app-lan"}
    run = start_item(people["alice"], item)
    live.execute(run.pk)
    info = _check_moved(run, lab_guests, guest, "h2", "app-lan")
    assert [d.source for d in info.disks] == [guest.disks[0]["path"]]  # same file: memory only
    run.refresh_from_db()
    assert "non_shared_disk" not in run.scratch["flags"]


def test_live_move_with_local_disks_copies_them_into_the_mapped_pool(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1",
        memory_mib=128,
        disks=[
            DiskSpec(pool="local", format="qcow2", capacity_mib=256),
            DiskSpec(pool="local", format="raw", capacity_mib=64, write_mib=8, target="vdb"),
        ],
        nics=[NicSpec(network="app-net")],
    )
    item = plan_item(people, lab_hosts, guest, "h3")
    assert item.network_map == {guest.macs[0]: "applan"}
    assert {d["pool"] for d in item.storage_map.values()} == {"local"}
    run = start_item(people["alice"], item)
    live.execute(run.pk)
    info = _check_moved(run, lab_guests, guest, "h3", "applan")
    run.refresh_from_db()
    assert {"non_shared_disk", "synchronous_writes"} <= set(run.scratch["flags"])
    assert sorted(run.scratch["copy_disks"]) == ["vda", "vdb"]
    pool = lab_guests.conn("h3").storagePoolLookupByName("local")
    pool.refresh(0)
    for disk in info.disks:
        assert disk.source.startswith("/srv/vmportal-lab/local/")
        vol = pool.storageVolLookupByName(disk.source.rsplit("/", 1)[1])
        _type, capacity, allocation = vol.info()
        assert allocation < capacity  # created sparse and still sparse after the copy
    vdb = lab_guests.conn("h3").storageVolLookupByPath(next(d.source for d in info.disks if d.target == "vdb"))
    assert vdb.info()[2] >= 8 * 1024 * 1024  # the written data arrived
    lab_guests.volumes += [("local", d.source.rsplit("/", 1)[1]) for d in info.disks]
