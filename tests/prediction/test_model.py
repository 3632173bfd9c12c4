"""The prediction model on plain inputs, and predict_item/plan_totals on database rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from inventory.choices import PowerState
from inventory.hypervisor.measure import parse_link_speeds
from inventory.models import Disk, Host, StoragePool, VirtualMachine
from migrations_app import prediction as pr
from migrations_app.choices import Mode, RunStatus, Verdict
from migrations_app.models import MigrationPlan, MigrationRun, PlanItem, ProgressSample
from tests.base import write_node_file

MIB = 1024 * 1024
GIB = 1024 * MIB


# ---- pre-copy -----------------------------------------------------------------------------------


def test_an_idle_guest_converges_after_one_pass_plus_the_final_one() -> None:
    result = pr.precopy(512 * MIB, 0, 1000 * MIB, 300)
    assert result.converged and result.iterations == 2
    assert result.transfer_s == pytest.approx(0.512)
    assert result.downtime_ms == pytest.approx(pr.SWITCHOVER_MS)


def test_passes_shrink_geometrically_when_the_dirty_rate_is_below_the_bandwidth() -> None:
    # 1 GiB at 100 MiB/s, dirtied at 50 MiB/s: 1024 → 512 → 256 → 128 → 64 → 32 → 16 MiB ≤ 30 MiB (300 ms).
    result = pr.precopy(GIB, 50 * MIB, 100 * MIB, 300)
    assert result.converged and result.iterations == 7
    assert result.final_bytes == 16 * MIB
    assert result.bytes_sent == (1024 + 512 + 256 + 128 + 64 + 32 + 16) * MIB
    assert result.downtime_ms == pytest.approx(160 + pr.SWITCHOVER_MS)


def test_a_dirty_rate_above_the_bandwidth_never_converges_without_help() -> None:
    result = pr.precopy(GIB, 200 * MIB, 100 * MIB, 300)
    assert not result.converged and result.downtime_ms is None


def test_auto_converge_throttles_until_it_converges() -> None:
    result = pr.precopy(GIB, 120 * MIB, 100 * MIB, 300, auto_converge=True)
    assert result.converged and 0.2 <= result.max_throttle <= 0.99


def test_a_tiny_bandwidth_cannot_converge_even_with_the_strongest_throttle() -> None:
    # At 1 MiB/s the last 300 ms hold 0.3 MiB, while a 1 % slice of 2000 MiB/s still dirties far more.
    result = pr.precopy(GIB, 2000 * MIB, 1 * MIB, 300, auto_converge=True)
    assert not result.converged


def test_bandwidth_must_be_positive() -> None:
    with pytest.raises(ValueError):
        pr.precopy(GIB, 0, 0, 300)


# ---- live and cold estimates --------------------------------------------------------------------


def live(**kw: Any) -> pr.Estimate:
    base: dict[str, Any] = {
        "memory_bytes": GIB,
        "memory_in_use_bytes": GIB,
        "dirty_bps": 10 * MIB,
        "link_bps": 1000 * MIB,
    }
    return pr.live_estimate(pr.LiveInputs(**(base | kw)))


def test_live_verdicts() -> None:
    assert live().verdict == Verdict.CONVERGES
    needs = live(dirty_bps=120 * MIB, link_bps=100 * MIB)
    assert needs.verdict == Verdict.NEEDS_AUTO_CONVERGE and needs.duration_s is not None
    assert needs.load["guest_throttle_pct"] >= 20
    never = live(dirty_bps=2000 * MIB, link_bps=1 * MIB)
    assert never.verdict == Verdict.WILL_NOT_CONVERGE and never.duration_s is None and never.downtime_ms is None
    assert "cold" in never.explanation
    unknown = live(dirty_bps=None)
    assert unknown.verdict == Verdict.UNKNOWN and unknown.duration_s is not None


def test_the_plan_cap_is_the_bandwidth_when_lower_than_the_link() -> None:
    capped = live(dirty_bps=0, bandwidth_cap_bps=100 * MIB)
    assert capped.detail["effective_bandwidth_bps"] == 100 * MIB
    assert capped.duration_s == pytest.approx(pr.SETUP_S + 1024 / 100)
    # the cap below the dirty rate is what makes a busy guest not converge
    assert live(dirty_bps=400 * MIB, bandwidth_cap_bps=50 * MIB, auto_converge=False).verdict in (
        Verdict.NEEDS_AUTO_CONVERGE,
        Verdict.WILL_NOT_CONVERGE,
    )


def test_post_copy_finishes_what_pre_copy_cannot_with_a_tiny_downtime() -> None:
    est = live(dirty_bps=2000 * MIB, link_bps=1 * MIB, postcopy_allowed=True, memory_in_use_bytes=64 * MIB)
    assert est.verdict == Verdict.WILL_NOT_CONVERGE
    assert est.duration_s is not None and est.downtime_ms == pr.SWITCHOVER_MS and est.detail["postcopy"]


def test_local_disks_are_mirrored_before_memory_at_the_bandwidth() -> None:
    shared = live(dirty_bps=0, memory_in_use_bytes=100 * MIB, link_bps=100 * MIB)
    local = live(dirty_bps=0, memory_in_use_bytes=100 * MIB, link_bps=100 * MIB, disk_bytes=300 * MIB)
    assert shared.duration_s is not None and local.duration_s is not None
    assert local.duration_s - shared.duration_s == pytest.approx(3.0 + pr.DISK_MIRROR_SETUP_S)
    assert local.load["destination_write_bytes"] == 300 * MIB and shared.load["destination_write_bytes"] == 0


def test_a_stopped_vm_cannot_move_live() -> None:
    assert not live(running=False).possible


def test_cold_copies_allocation_at_the_slower_of_write_and_link() -> None:
    est = pr.cold_estimate(pr.ColdInputs(copy_bytes=500 * MIB, write_bps=50 * MIB, link_bps=100 * MIB))
    assert est.detail["copy_s"] == pytest.approx(10)
    assert est.duration_s == pytest.approx(pr.SHUTDOWN_TYPICAL_S + 10 + pr.START_S)
    assert est.downtime_ms == pytest.approx((pr.SHUTDOWN_TYPICAL_S + 10 + pr.START_S + pr.BOOT_ASSUMED_S) * 1000)
    assert est.detail["duration_upper_s"] == pytest.approx(120 + 10 + pr.START_S)
    link_bound = pr.cold_estimate(pr.ColdInputs(copy_bytes=500 * MIB, write_bps=500 * MIB, link_bps=100 * MIB))
    assert link_bound.detail["copy_s"] == pytest.approx(5)


def test_cold_move_of_a_stopped_vm_adds_no_downtime() -> None:
    est = pr.cold_estimate(pr.ColdInputs(copy_bytes=0, write_bps=None, link_bps=100 * MIB, running=False))
    assert est.downtime_ms == 0 and est.duration_s == pytest.approx(pr.START_S)


def test_recommendation() -> None:
    cold = pr.cold_estimate(pr.ColdInputs(copy_bytes=0, write_bps=None, link_bps=100 * MIB))
    assert pr.recommend(live(), cold)[0] == Mode.LIVE
    assert pr.recommend(live(dirty_bps=2000 * MIB, link_bps=1 * MIB), cold)[0] == Mode.COLD
    needs = live(dirty_bps=120 * MIB, link_bps=100 * MIB)
    assert pr.recommend(needs, cold, auto_converge=True)[0] == Mode.LIVE
    assert pr.recommend(needs, cold, auto_converge=False)[0] == Mode.COLD
    assert pr.recommend(live(running=False), cold)[0] == Mode.COLD


# ---- schedule -----------------------------------------------------------------------------------


def test_schedule_respects_host_slots_and_waves() -> None:
    jobs = [pr.Job(10, "a", "b"), pr.Job(10, "a", "b"), pr.Job(10, "a", "b")]
    assert pr.schedule(jobs, {"a": 2}, {"b": 2}) == 20
    assert pr.schedule(jobs, {"a": 3}, {"b": 3}) == 10
    assert pr.schedule(jobs, {"a": 3}, {"b": 1}) == 30
    waves = [pr.Job(10, "a", "b", 1), pr.Job(5, "c", "d", 2)]
    assert pr.schedule(waves, {}, {}) == 15


def test_link_speeds_come_from_interfaces_that_are_up() -> None:
    xml = "<device><capability type='net'><interface>{}</interface><link {}/></capability></device>"
    found = parse_link_speeds(
        [
            xml.format("eth0", "speed='1000' state='up'"),
            xml.format("eth1", "speed='10000' state='down'"),
            xml.format("lo", "state='unknown'"),
            "<device><capability type='pci'/></device>",
        ]
    )
    assert found == [("eth0", 1000)]


# ---- on database rows ---------------------------------------------------------------------------


@pytest.fixture
def setup_rows(people: dict[str, Any]) -> dict[str, Any]:
    src = Host.objects.create(name="src", uri="test:///default", link_mib_s=100)
    dst = Host.objects.create(name="dst", uri=write_node_file("prediction-dst", []), max_incoming=1)
    pools = {}
    for host in (src, dst):
        pools[host.name, "local"] = StoragePool.objects.create(host=host, name="local")
        pools[host.name, "shared"] = StoragePool.objects.create(host=host, name="shared", shared_by_admin=True)
    vm = VirtualMachine.objects.create(
        uuid=uuid.uuid4(), name="vm", host=src, state=PowerState.RUNNING, memory=GIB, team=people["payments"]
    )
    Disk.objects.create(
        vm=vm, target="vda", source="/shared/vda.qcow2", pool=pools["src", "shared"], capacity=10 * GIB, allocation=GIB
    )
    Disk.objects.create(
        vm=vm, target="vdb", source="/local/vdb.raw", pool=pools["src", "local"], capacity=8 * GIB, allocation=200 * MIB
    )
    Disk.objects.create(
        vm=vm, target="hdc", source="/iso/os.iso", device="cdrom", capacity=700 * MIB, allocation=700 * MIB
    )
    plan = MigrationPlan.objects.create(name="p", requester=people["alice"], team=people["payments"])
    item = PlanItem.objects.create(
        plan=plan,
        vm=vm,
        source=src,
        destination=dst,
        storage_map={"vda": {"pool": "shared", "format": "keep"}, "vdb": {"pool": "local", "format": "keep"}},
    )
    return {"src": src, "dst": dst, "vm": vm, "plan": plan, "item": item}


FACTS = pr.PredictionFacts(dirty_rate_bps=10 * MIB, memory_in_use_bytes=512 * MIB, destination_write_bps=50 * MIB)


@pytest.mark.django_db
def test_predict_item_copies_only_the_allocation_of_local_disks(setup_rows: dict[str, Any]) -> None:
    item, plan = setup_rows["item"], setup_rows["plan"]
    preds = pr.predict_item(item, plan, FACTS)
    assert sorted(p.mode for p in preds) == [Mode.COLD, Mode.LIVE]
    assert sum(p.recommended for p in preds) == 1
    by_mode = {p.mode: p for p in preds}
    live_p, cold_p = by_mode[Mode.LIVE], by_mode[Mode.COLD]
    assert live_p.pk is None and cold_p.pk is None  # unsaved; the audit runner saves them
    # the shared disk stays put, the local one copies its 200 MiB allocation (not its 8 GiB), the CD-ROM nothing
    assert live_p.bytes_to_copy == cold_p.bytes_to_copy == 200 * MIB
    assert live_p.inputs["disk_capacity_bytes"] == 8 * GIB
    # link: the admin figure of the source (100 MiB/s); no history yet
    assert live_p.inputs["link_bps"] == 100 * MIB and "admin" in live_p.inputs["link_source"]
    assert cold_p.inputs["copy_s"] == pytest.approx(4)  # 200 MiB at the 50 MiB/s write throughput
    assert live_p.verdict == Verdict.CONVERGES and live_p.recommended
    # 0.5 s setup, 4 s to mirror 200 MiB at the destination's 50 MiB/s, then 512 → 51.2 → 5.12 MiB at 100 MiB/s
    assert live_p.duration_s == pytest.approx(pr.SETUP_S + pr.DISK_MIRROR_SETUP_S + 4 + (512 + 51.2 + 5.12) / 100)
    assert live_p.inputs["iterations"] == 3
    # the test driver starts no QEMU: the setup falls back to the lab figure, and says so
    assert live_p.inputs["setup_s"] == pr.SETUP_S and "probe QEMU not started" in live_p.inputs["setup_source"]
    for p in preds:
        assert isinstance(p.inputs["disks"], list) and p.explanation


@pytest.mark.django_db
def test_moving_a_shared_disk_to_another_pool_copies_it(setup_rows: dict[str, Any]) -> None:
    item = setup_rows["item"]
    item.storage_map["vda"] = {"pool": "local", "format": "qcow2"}
    preds = pr.predict_item(item, setup_rows["plan"], FACTS)
    assert preds[0].bytes_to_copy == GIB + 200 * MIB


@pytest.mark.django_db
def test_a_pool_of_the_same_name_that_is_not_shared_on_the_destination_gets_a_copy(setup_rows: dict[str, Any]) -> None:
    StoragePool.objects.filter(host=setup_rows["dst"], name="shared").update(shared_by_admin=False)
    preds = pr.predict_item(setup_rows["item"], setup_rows["plan"], FACTS)
    assert preds[0].bytes_to_copy == GIB + 200 * MIB
    vda = next(d for d in preds[0].inputs["disks"] if d["target"] == "vda")
    assert vda["copied"] and vda["bytes_to_copy"] == GIB


@pytest.mark.django_db
def test_history_of_past_moves_beats_the_admin_figure(setup_rows: dict[str, Any]) -> None:
    src, dst, vm, item = setup_rows["src"], setup_rows["dst"], setup_rows["vm"], setup_rows["item"]
    now = timezone.now()
    for rate in (200, 300, 400):
        run = MigrationRun.objects.create(
            item=item,
            vm=vm,
            source=src,
            destination=dst,
            mode=Mode.LIVE,
            status=RunStatus.SUCCEEDED,
            finished_at=now,
            setup_ms=700,
        )
        ProgressSample.objects.create(run=run, at=now, phase="memory", throughput_bps=rate * MIB)
    # the way back counts too (same link), with libvirt's completed stats preferred over the samples
    back = MigrationRun.objects.create(
        item=item,
        vm=vm,
        source=dst,
        destination=src,
        mode=Mode.LIVE,
        status=RunStatus.SUCCEEDED,
        finished_at=now,
        completed_stats={"memory_bps": 500 * MIB},
    )
    ProgressSample.objects.create(run=back, at=now, phase="memory", throughput_bps=1 * MIB)
    # failed runs and cold runs do not count
    MigrationRun.objects.create(item=item, vm=vm, source=src, destination=dst, mode=Mode.LIVE, status=RunStatus.FAILED)
    MigrationRun.objects.create(
        item=item, vm=vm, source=src, destination=dst, mode=Mode.COLD, status=RunStatus.SUCCEEDED, finished_at=now
    )
    preds = pr.predict_item(item, setup_rows["plan"], FACTS)
    assert preds[0].inputs["link_bps"] == 350 * MIB and "5 past moves" not in preds[0].inputs["link_source"]
    assert "4 past moves" in preds[0].inputs["link_source"]
    assert preds[0].inputs["setup_s"] == pytest.approx(0.7)


@pytest.mark.django_db
def test_predictions_are_storable(setup_rows: dict[str, Any]) -> None:
    from migrations_app.models import Audit, Prediction

    audit = Audit.objects.create(plan=setup_rows["plan"])
    preds = pr.predict_item(setup_rows["item"], setup_rows["plan"], FACTS)
    for p in preds:
        p.audit = audit
    Prediction.objects.bulk_create(preds)
    stored = {p.mode: p for p in Prediction.objects.filter(audit=audit)}
    assert set(stored) == {Mode.LIVE, Mode.COLD}
    assert stored[Mode.LIVE].inputs["disks"][1]["target"] == "vdb" and stored[Mode.LIVE].load["network_bytes"] > 0


@pytest.mark.django_db
def test_plan_totals_and_the_change_window(setup_rows: dict[str, Any]) -> None:
    plan, item = setup_rows["plan"], setup_rows["item"]
    preds = pr.predict_item(item, plan, FACTS)
    live_p = next(p for p in preds if p.mode == Mode.LIVE)
    assert live_p.duration_s is not None
    totals = pr.plan_totals(plan, preds)
    assert totals.seconds == pytest.approx(live_p.duration_s) and totals.fits_window is None
    plan.window_start = timezone.now()
    plan.window_end = plan.window_start + timedelta(seconds=3600)
    assert pr.plan_totals(plan, preds).fits_window is True
    plan.window_end = plan.window_start + timedelta(seconds=1)
    short = pr.plan_totals(plan, preds)
    assert short.fits_window is False and "does not fit" in short.explanation
    # the item's resolved mode wins over the recommendation
    item.mode = Mode.COLD
    cold_p = next(p for p in preds if p.mode == Mode.COLD)
    assert pr.plan_totals(plan, preds).seconds == pytest.approx(cold_p.duration_s)


@pytest.mark.django_db
def test_without_history_or_admin_figure_the_link_is_read_from_the_hosts_or_assumed(
    setup_rows: dict[str, Any],
) -> None:
    setup_rows["src"].link_mib_s = None
    setup_rows["src"].save()
    preds = pr.predict_item(setup_rows["item"], setup_rows["plan"], FACTS)
    source = preds[0].inputs["link_source"]
    assert source.startswith(("nominal", "assumed")), source
    if source.startswith("assumed"):
        assert preds[0].inputs["link_bps"] == pr.DEFAULT_LINK_BPS


@pytest.mark.django_db
def test_a_stopped_vm_is_recommended_cold_without_added_downtime(setup_rows: dict[str, Any]) -> None:
    vm = setup_rows["vm"]
    vm.state = PowerState.SHUTOFF
    vm.save()
    preds = {p.mode: p for p in pr.predict_item(setup_rows["item"], setup_rows["plan"])}
    assert preds[Mode.COLD].recommended and not preds[Mode.LIVE].recommended
    assert preds[Mode.LIVE].verdict == Verdict.NOT_APPLICABLE and preds[Mode.LIVE].duration_s is None
    assert preds[Mode.COLD].downtime_ms == 0
    assert preds[Mode.COLD].inputs["dirty_rate_source"] == "the VM is not running"
    # the test driver has no pool named "local": the write probe says why, the link bandwidth is used
    assert preds[Mode.COLD].inputs["destination_write_source"].startswith("not measured")
    assert preds[Mode.COLD].inputs["copy_rate_bps"] == 100 * MIB
