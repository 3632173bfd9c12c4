"""The prediction against reality on the lab: measurements on real guests and real moves.

Acceptance: predicted vs measured transfer time of an idle guest's live move within a factor of 2.
The factor compares two figures of the same move (prediction and its measured wall time); there is no
wall-clock limit anywhere.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from typing import Any

import libvirt
import pytest

from inventory.hypervisor import measure
from inventory.models import Host, StoragePool, VirtualMachine
from inventory.services.hosts import register_host
from inventory.services.sync import sync_host
from migrations_app.choices import Mode, Verdict
from migrations_app.models import MigrationPlan, PlanItem
from migrations_app.prediction import measure_facts, predict_item
from migrations_app.services.plans import default_network_map, default_storage_map
from tests.labguests import DiskSpec, Guest, LabGuests, NicSpec

pytestmark = [pytest.mark.lab]

MIB = 1024 * 1024
BOOT = "/srv/vmportal-lab/boot"


def host_entry(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in lab["hosts"] if h["name"] == name)


def linux_guest(lab_guests: LabGuests, host: str, ip: str, memory_mib: int = 256) -> Guest:
    """A throw-away copy of the lab's Linux guest (direct kernel boot) at its own address."""
    guest = lab_guests.define(host, memory_mib=memory_mib, nics=[NicSpec(network="app-net")], start=False)
    conn = lab_guests.conn(host)
    xml = conn.lookupByUUIDString(guest.uuid).XMLDesc(0)
    boot = (
        f"<kernel>{BOOT}/vmlinux</kernel><initrd>{BOOT}/initrd.img</initrd>"
        f"<cmdline>console=ttyS0 panic=-1 quiet ip={ip}::10.78.0.254:255.255.255.0:{guest.name}:eth0:off</cmdline>"
    )
    conn.defineXML(xml.replace("<boot dev='hd'/>", boot))
    conn.lookupByUUIDString(guest.uuid).create()
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://{ip}/", timeout=2).read()  # noqa: S310  (lab address)
            return guest
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_dirty_rate_of_a_guest_dirtying_memory_is_close_to_its_target(
    lab: dict[str, Any], lab_guests: LabGuests
) -> None:
    uri = host_entry(lab, "h1")["uri"]
    guest = linux_guest(lab_guests, "h1", "10.78.0.53")
    quiet = lab_guests.define("h1", memory_mib=64, nics=[])  # sits in SeaBIOS
    target = 50 * MIB  # the guest's `dirty 50` rewrites 50 MiB/s (16 blocks of 64 KiB per MiB)
    urllib.request.urlopen("http://10.78.0.53/cgi-bin/dirty?50", timeout=10).read()  # noqa: S310
    time.sleep(2)
    rates, idle = [], []
    for _ in range(5):
        both = measure.dirty_rates(uri, [guest.uuid, quiet.uuid])  # both guests in one period
        assert both[guest.uuid].bytes_per_s is not None, both[guest.uuid].reason
        assert both[quiet.uuid].bytes_per_s is not None, both[quiet.uuid].reason
        rates.append(float(both[guest.uuid].bytes_per_s or 0))
        idle.append(float(both[quiet.uuid].bytes_per_s or 0))
    median = statistics.median(rates)
    print(
        f"\ndirty rate: target 50 MiB/s, measured {[round(r / MIB, 1) for r in rates]} MiB/s; "
        f"idle guest {[round(r / MIB, 1) for r in idle]} MiB/s"
    )
    # The guest's paced writer can be starved of CPU on a shared 2-core machine, so single periods may
    # read low (the guest really dirtied less then); it never reads high, most periods are near the
    # target, and at least one is within 30 % of it.
    assert all(r <= 1.6 * target for r in rates)
    assert median >= 0.3 * target
    assert any(0.7 * target <= r <= 1.3 * target for r in rates)
    assert statistics.median(idle) < median / 4
    use = measure.memory_in_use(uri, guest.uuid)
    assert use.bytes_in_use is not None and 0 < use.bytes_in_use <= 256 * MIB and use.total == 256 * MIB


def test_dirty_rate_says_why_when_it_cannot_measure(lab: dict[str, Any], lab_guests: LabGuests) -> None:
    uri = host_entry(lab, "h1")["uri"]
    guest = lab_guests.define("h1", memory_mib=64, nics=[], start=False)
    stopped = measure.dirty_rate(uri, guest.uuid)
    assert stopped.bytes_per_s is None and "not running" in stopped.reason
    missing = measure.dirty_rate(uri, "00000000-0000-4000-8000-000000000000")
    assert missing.bytes_per_s is None and "does not exist" in missing.reason
    assert measure.memory_in_use(uri, guest.uuid).bytes_in_use is None


def test_write_throughput_probe_is_positive_and_leaves_no_volume(lab: dict[str, Any], lab_guests: LabGuests) -> None:
    uri = host_entry(lab, "h2")["uri"]
    pool = lab_guests.conn("h2").storagePoolLookupByName("local")
    before = set(pool.listVolumes())
    result = measure.pool_write_throughput(uri, "local", mib=16)
    pool.refresh(0)
    assert result.bytes_per_s is not None and result.bytes_per_s > 0, result.reason
    assert result.bytes_written == 16 * MIB and result.seconds > 0
    assert {v for v in pool.listVolumes() if v.startswith("vmportal-probe-")} <= before
    print(f"\nwrite throughput into h2/local: {result.bytes_per_s / MIB:.0f} MiB/s")
    missing = measure.pool_write_throughput(uri, "no-such-pool")
    assert missing.bytes_per_s is None and "does not exist" in missing.reason


def test_link_speed_is_read_from_the_hosts_interfaces(lab: dict[str, Any]) -> None:
    speed = measure.link_speed(host_entry(lab, "h1")["uri"])
    assert speed.bytes_per_s is None or (speed.bytes_per_s > 0 and speed.interface)


# ---- predicted vs measured ------------------------------------------------------------------------


def _rows(lab: dict[str, Any], guest: Guest, people: dict[str, Any]) -> tuple[MigrationPlan, PlanItem]:
    hosts = {}
    for name in ("h1", "h2"):
        entry = host_entry(lab, name)
        hosts[name] = register_host(None, name=name, uri=entry["uri"], migration_uri=entry["migration_uri"], sync=False)
        assert sync_host(hosts[name].pk).ok
    # the lab's "shared" pool is a directory on a cluster file system: an admin marks it shared
    StoragePool.objects.filter(name="shared").update(shared_by_admin=True)
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    h2 = Host.objects.get(name="h2")
    plan = MigrationPlan.objects.create(name="predict", requester=people["alice"], team=people["payments"])
    item = PlanItem.objects.create(
        plan=plan,
        vm=vm,
        source=hosts["h1"],
        destination=h2,
        mode=Mode.LIVE,
        network_map=default_network_map(vm, h2),
        storage_map=default_storage_map(vm, h2),
    )
    return plan, item


def _migrate(lab: dict[str, Any], lab_guests: LabGuests, guest: Guest, extra_flags: int = 0) -> float:
    """Live-migrate h1 → h2 peer-to-peer with the NIC's network renamed; return the wall time."""
    dom = lab_guests.conn("h1").lookupByUUIDString(guest.uuid)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE).replace("network='app-net'", "network='app-lan'")
    params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml, libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: xml}
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | extra_flags
    )
    start = time.monotonic()
    dom.migrateToURI3(host_entry(lab, "h2")["migration_uri"], params, flags)
    return time.monotonic() - start


def _downtime_ms(lab_guests: LabGuests, guest: Guest) -> float | None:
    """The real downtime from the destination's completed job stats."""
    stats = lab_guests.conn("h2").lookupByUUIDString(guest.uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return stats.get("downtime")


@pytest.mark.django_db
def test_predicted_vs_measured_live_move_of_an_idle_guest(
    lab: dict[str, Any], lab_guests: LabGuests, people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1",
        memory_mib=128,
        disks=[DiskSpec(pool="shared", format="qcow2", capacity_mib=64, cache="none")],
        nics=[NicSpec(network="app-net")],
    )
    plan, item = _rows(lab, guest, people)
    preds = {p.mode: p for p in predict_item(item, plan)}
    live = preds[Mode.LIVE]
    assert live.verdict == Verdict.CONVERGES and live.recommended and not preds[Mode.COLD].recommended
    assert live.bytes_to_copy == 0 and live.duration_s is not None
    assert live.inputs["setup_source"].startswith("measured")
    measured = _migrate(lab, lab_guests, guest)
    assert lab_guests.where(guest) == {"h2": "running"}
    ratio = measured / live.duration_s
    print(
        f"\nidle guest (128 MiB, shared qcow2) h1→h2 live: predicted {live.duration_s:.3f} s, "
        f"measured {measured:.3f} s, measured/predicted {ratio:.2f}; downtime predicted {live.downtime_ms:.0f} ms, "
        f"measured {_downtime_ms(lab_guests, guest)} ms; "
        f"inputs: memory in use {live.inputs['memory_in_use_bytes'] / MIB:.0f} MiB, "
        f"dirty {live.inputs['dirty_rate_bps'] / MIB:.1f} MiB/s, link {live.inputs['link_bps'] / MIB:.0f} MiB/s "
        f"({live.inputs['link_source']}), setup {live.inputs['setup_s']:.2f} s ({live.inputs['setup_source']})"
    )
    assert 0.5 <= ratio <= 2


@pytest.mark.django_db
def test_predicted_vs_measured_live_move_with_a_local_disk_copy(
    lab: dict[str, Any], lab_guests: LabGuests, people: dict[str, Any]
) -> None:
    guest = lab_guests.define(
        "h1",
        memory_mib=128,
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=256, write_mib=64, cache="none")],
        nics=[NicSpec(network="app-net")],
    )
    plan, item = _rows(lab, guest, people)
    facts = measure_facts([item])  # the batch path an audit of many VMs uses
    preds = {p.mode: p for p in predict_item(item, plan, facts[item.pk])}
    live = preds[Mode.LIVE]
    assert live.inputs["dirty_rate_source"].startswith("measured")
    allocation = live.inputs["disks"][0]["allocation"]
    assert live.bytes_to_copy == allocation and 64 * MIB <= allocation < 256 * MIB  # sparse: not the capacity
    assert live.duration_s is not None
    measured = _migrate(lab, lab_guests, guest, libvirt.VIR_MIGRATE_NON_SHARED_DISK)
    assert lab_guests.where(guest) == {"h2": "running"}
    ratio = measured / live.duration_s
    print(
        f"\nlocal-disk guest (128 MiB, raw 256 MiB / {allocation / MIB:.0f} MiB allocated) h1→h2 live with disk copy: "
        f"predicted {live.duration_s:.3f} s, measured {measured:.3f} s, measured/predicted {ratio:.2f}; "
        f"downtime predicted {live.downtime_ms:.0f} ms, measured {_downtime_ms(lab_guests, guest)} ms; disk rate {live.inputs.get('destination_write_bps', 0) / MIB:.0f} MiB/s ({live.inputs['destination_write_source']})"
    )
    assert 0.5 <= ratio <= 2


@pytest.mark.django_db
def test_busy_guest_prediction_before_and_after_the_link_is_known_from_a_past_move(
    lab: dict[str, Any], lab_guests: LabGuests, people: dict[str, Any]
) -> None:
    """A guest dirtying 50 MiB/s: first predicted with the nominal link speed (an upper bound), then,
    once one move between the hosts is recorded as the portal's runner records it, with that move's
    real throughput. Asserted through libvirt's results only (QEMU 7.2 under TCG may oops a guest that
    dirties memory hard after a move); the figures are printed for the record."""
    from django.utils import timezone

    from migrations_app.choices import RunStatus
    from migrations_app.models import MigrationRun

    guest = linux_guest(lab_guests, "h1", "10.78.0.55")
    urllib.request.urlopen("http://10.78.0.55/cgi-bin/dirty?50", timeout=10).read()  # noqa: S310
    time.sleep(2)
    plan, item = _rows(lab, guest, people)
    first = next(p for p in predict_item(item, plan) if p.mode == Mode.LIVE)
    assert first.verdict == Verdict.CONVERGES and first.duration_s is not None
    assert first.inputs["dirty_rate_bps"] > 10 * MIB
    assert not first.inputs["link_source"].startswith("median")
    measured_first = _migrate(lab, lab_guests, guest)
    assert lab_guests.where(guest) == {"h2": "running"}
    stats = lab_guests.conn("h2").lookupByUUIDString(guest.uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    h2 = item.destination
    assert h2 is not None
    MigrationRun.objects.create(
        item=item,
        vm=item.vm,
        source=item.source,
        destination=h2,
        mode=Mode.LIVE,
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
        completed_stats=stats,
    )
    # the way back h2 → h1, predicted with the recorded move's throughput
    back = PlanItem.objects.create(
        plan=MigrationPlan.objects.create(name="back", requester=people["alice"], team=people["payments"]),
        vm=item.vm,
        source=h2,
        destination=item.source,
        mode=Mode.LIVE,
    )
    second = next(p for p in predict_item(back, back.plan) if p.mode == Mode.LIVE)
    assert second.inputs["link_source"].startswith("median of 1 past move")
    assert second.inputs["link_bps"] == stats["memory_bps"]
    dom = lab_guests.conn("h2").lookupByUUIDString(guest.uuid)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE).replace("network='app-lan'", "network='app-net'")
    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    start = time.monotonic()
    dom.migrateToURI3(
        host_entry(lab, "h1")["migration_uri"],
        {libvirt.VIR_MIGRATE_PARAM_DEST_XML: xml, libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: xml},
        flags,
    )
    measured_back = time.monotonic() - start
    assert lab_guests.where(guest) == {"h1": "running"}
    back_stats = lab_guests.conn("h1").lookupByUUIDString(guest.uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    assert second.duration_s is not None
    print(
        f"\nbusy guest (256 MiB, dirtying {first.inputs['dirty_rate_bps'] / MIB:.0f} MiB/s): "
        f"h1→h2 predicted {first.duration_s:.3f} s with {first.inputs['link_bps'] / MIB:.0f} MiB/s "
        f"({first.inputs['link_source']}), measured {measured_first:.3f} s "
        f"(ratio {measured_first / first.duration_s:.2f}, libvirt: {stats['memory_bps'] / MIB:.0f} MiB/s, "
        f"downtime {stats.get('downtime')} ms); "
        f"h2→h1 predicted {second.duration_s:.3f} s with {second.inputs['link_bps'] / MIB:.0f} MiB/s "
        f"(past move), measured {measured_back:.3f} s (ratio {measured_back / second.duration_s:.2f}); "
        f"downtime predicted {second.downtime_ms:.0f} ms, measured {back_stats.get('downtime')} ms"
    )
