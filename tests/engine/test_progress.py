"""The pure parts of the engine: progress from job stats, the convergence policy, the XML rewrite.

No lab needed; the lab tests prove the same behaviour end to end.
"""

from __future__ import annotations

from inventory.hypervisor.domxml import parse_domain
from inventory.hypervisor.migrate import JobStats, rewrite_xml
from inventory.models import Host
from migrations_app.engine.live import _tls
from migrations_app.engine.progress import ConvergencePolicy, ProgressTracker, downtime_steps


def stats(iteration: int, remaining: int, processed: int = 0) -> JobStats:
    return JobStats(
        active=True,
        elapsed_ms=1000 * iteration,
        memory_total=512 << 20,
        memory_processed=processed,
        memory_remaining=remaining,
        data_processed=processed,
        data_remaining=remaining,
        iteration=iteration,
    )


def test_percent_never_goes_backwards_when_a_new_iteration_adds_dirty_pages() -> None:
    tracker = ProgressTracker()
    first = tracker.sample(stats(1, 400 << 20, 100 << 20))
    second = tracker.sample(stats(2, 450 << 20, 200 << 20))  # remaining grew: pages were dirtied again
    assert second.percent >= first.percent
    assert tracker.sample(stats(3, 0, 600 << 20)).percent == 99.0  # 100 only once libvirt says done
    assert second.phase == "memory" and second.eta_s is not None


def test_downtime_steps_start_low_and_end_at_the_plans_maximum() -> None:
    assert downtime_steps(400) == [100, 200, 400]
    assert downtime_steps(300) == [75, 150, 300]
    assert downtime_steps(10) == [10]


def test_a_stalled_guest_gets_each_downtime_step_then_the_plans_choice() -> None:
    policy = ConvergencePolicy(max_downtime_ms=400, on_no_convergence="postcopy", postcopy_allowed=True)
    actions = [policy.observe(stats(i, 16 << 20)) for i in range(1, 12)]
    kinds = [(a.kind, a.downtime_ms) for a in actions if a is not None]
    assert kinds == [("downtime", 200), ("downtime", 400), ("postcopy", None)]
    aborting = ConvergencePolicy(max_downtime_ms=400, on_no_convergence="postcopy", postcopy_allowed=False)
    last = [a for a in (aborting.observe(stats(i, 16 << 20)) for i in range(1, 12)) if a is not None][-1]
    assert last.kind == "abort"


def test_a_converging_guest_is_left_alone() -> None:
    policy = ConvergencePolicy(max_downtime_ms=400)
    remaining = 300 << 20
    for i in range(1, 10):
        assert policy.observe(stats(i, remaining)) is None
        remaining //= 2


def test_the_rewrite_maps_nics_by_mac_and_moves_disks_keeping_everything_else() -> None:
    xml = (
        "<domain type='qemu'><name>x</name><uuid>6f1d3c52-8e0b-4c4e-9a57-0b3c1f0d2a11</uuid><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a/x.qcow2'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/shared/y.img'/>"
        "<target dev='vdb' bus='virtio'/></disk>"
        "<interface type='network'><mac address='52:54:00:00:00:01'/><source network='app-net'/>"
        "<target dev='vnet3'/><model type='virtio'/></interface></devices></domain>"
    )
    out, unmapped = rewrite_xml(xml, {"52:54:00:00:00:01": "app-lan"}, {"vda": ("/b/x.raw", "raw")})
    info = parse_domain(out)
    assert unmapped == []
    assert [(n.mac, n.network, n.target_dev) for n in info.nics] == [("52:54:00:00:00:01", "app-lan", "")]
    assert [(d.target, d.source, d.format) for d in info.disks] == [
        ("vda", "/b/x.raw", "raw"),
        ("vdb", "/shared/y.img", "raw"),
    ]
    _, unmapped = rewrite_xml(xml, {}, {})
    assert unmapped == ["52:54:00:00:00:01"]


def test_hosts_reached_over_tls_migrate_over_tls() -> None:
    tls = Host(name="a", uri="qemu+tls://a.example.com/system")
    ssh = Host(name="b", uri="qemu+ssh://root@b.example.com/system")
    assert _tls(tls, ssh) and not _tls(ssh, ssh)
    assert _tls(ssh, Host(name="c", uri="qemu+ssh://c/system", migration_uri="qemu+tls://c.storage/system"))
