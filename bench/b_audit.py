"""B-AUDIT: the pre-migration audit of a 500-VM plan on the real lab, on its expensive path.

500 guests are defined on lab host h1, each with one NIC and one disk (a sparse volume, half of them in
the shared pool, half in h1's local pool); 20 of them are started, so the audit has to measure their
memory dirty rate. Everything is synced and planned as one `auto` move to h2 through the network
mapping app-net → app-lan: the audit resolves live or cold per VM, runs every check for every item and
predicts both modes (dirty rates of the running guests, disk copies into h2's pools).
Each repetition queues a fresh audit and runs it in this process: fresh facts from both daemons,
every check, the predictions with their measurements, and the bulk writes. Target: ≤ 5 s; database
queries the same for 50 and 500 VMs (both plans hold all 20 running VMs).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

from bench.common import count_queries, summary

VMS = 500
RUNNING = 20
QUERY_SIZES = (50, 500)
REPS = 5
TARGET_S = 5.0
PREFIX = "bench-audit-"
_NS = uuid.UUID("2b7f4e0c-51a4-4f7e-9d0e-7c1e43a9b6d2")


def _lab() -> dict[str, Any]:
    from django.conf import settings

    data: dict[str, Any] = json.loads(settings.LAB_STATE_FILE.read_text())
    return data


def _name(i: int) -> str:
    return f"{PREFIX}{i:03d}"


def _pool(i: int) -> str:
    return "shared" if i % 2 == 0 else "local"


def _domain(i: int, disk_path: str, virt: str) -> str:
    from inventory.hypervisor.domxml import METADATA_NS

    return (
        f"<domain type='{virt}'><name>{_name(i)}</name><uuid>{uuid.uuid5(_NS, str(i))}</uuid>"
        f"<metadata><vmportal:owner xmlns:vmportal='{METADATA_NS}'><vmportal:team>payments</vmportal:team>"
        f"</vmportal:owner></metadata><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        f"<features><acpi/><apic/></features><devices>"
        f"<emulator>/usr/bin/qemu-system-x86_64</emulator>"
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk_path}'/>"
        f"<target dev='vda' bus='virtio'/></disk><interface type='network'>"
        f"<mac address='52:54:00:ba:{i >> 8:02x}:{i & 255:02x}'/><source network='app-net'/><model type='virtio'/>"
        f"</interface><controller type='usb' model='none'/></devices></domain>"
    )


def _remove_all(conn: Any) -> None:
    """Every guest and volume this benchmark made on the host (by name), whatever state it is in."""
    import libvirt

    for dom in conn.listAllDomains(0):
        if dom.name().startswith(PREFIX):
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    for pool_name in ("shared", "local"):
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(pool_name)
            pool.refresh(0)
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(PREFIX):
                    with contextlib.suppress(libvirt.libvirtError):
                        vol.delete(0)


def _create(conn: Any, virt: str) -> None:
    pools = {name: conn.storagePoolLookupByName(name) for name in ("shared", "local")}
    for i in range(VMS):
        vol = pools[_pool(i)].createXML(
            f"<volume><name>{_name(i)}.raw</name><capacity unit='MiB'>16</capacity>"
            f"<allocation>0</allocation><target><format type='raw'/></target></volume>",
            0,
        )
        dom = conn.defineXML(_domain(i, vol.path(), virt))
        if i < RUNNING:
            dom.create()


def run() -> list[dict[str, Any]]:
    import libvirt
    from django.contrib.auth import get_user_model

    from inventory.models import Host, Network, StoragePool, Team, VirtualMachine
    from inventory.services.accounts import ensure_roles
    from inventory.services.sync import sync_host
    from migrations_app.models import MigrationPlan, NetworkMapping, Prediction
    from migrations_app.services import plans as plan_services
    from migrations_app.services.audits import run_audit

    lab = _lab()
    uris = {h["name"]: h for h in lab["hosts"]}
    conn = libvirt.open(uris["h1"]["uri"])
    _remove_all(conn)
    try:
        _create(conn, "kvm" if lab.get("kvm") else "qemu")
        ensure_roles()
        team, _ = Team.objects.get_or_create(slug="payments", defaults={"name": "Payments"})
        owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
        team.members.add(owner)
        hosts = {}
        for name in ("h1", "h2"):
            hosts[name], _ = Host.objects.get_or_create(
                name=name, defaults={"uri": uris[name]["uri"], "migration_uri": uris[name]["migration_uri"]}
            )
            assert sync_host(hosts[name].pk).ok
        StoragePool.objects.filter(name="shared").update(shared_by_admin=True)
        NetworkMapping.objects.get_or_create(
            source=Network.objects.get(host=hosts["h1"], name="app-net"),
            destination=Network.objects.get(host=hosts["h2"], name="app-lan"),
        )
        # the running VMs first, so that the smaller plan holds all of them too
        ids = list(
            VirtualMachine.objects.filter(name__startswith=PREFIX, present=True)
            .order_by("name")
            .values_list("pk", flat=True)
        )
        assert len(ids) == VMS, len(ids)
        running = VirtualMachine.objects.filter(pk__in=ids, state="running").count()
        assert running == RUNNING, running

        def plan_of(count: int) -> MigrationPlan:
            return plan_services.create_plan(
                owner, vm_ids=ids[:count], destination_id=hosts["h2"].pk, mode="auto", fresh_backup=False
            )

        def audit_once(plan: MigrationPlan) -> tuple[float, int]:
            audit = plan_services.request_audit(plan, reason="bench")
            start = time.perf_counter()
            outcome = run_audit(audit.pk)
            elapsed = time.perf_counter() - start
            audit.refresh_from_db()
            assert audit.status == "done", (audit.status, audit.error, outcome)
            assert audit.results.values("item").distinct().count() == VMS
            measured = Prediction.objects.filter(
                audit=audit, mode="live", inputs__dirty_rate_source__startswith="measured"
            ).count()
            return elapsed, measured

        big = plan_of(VMS)
        audit_once(big)  # warm-up: connections, capability caches
        samples, measured = [], []
        for _ in range(REPS):
            seconds, count = audit_once(big)
            samples.append(seconds)
            measured.append(count)
        queries = {}
        for size in QUERY_SIZES:
            plan = plan_of(size)
            audit = plan_services.request_audit(plan, reason="bench")
            with count_queries() as n:
                run_audit(audit.pk)
            queries[size] = n[0]
        stats = summary(samples)
        return [
            {
                "name": "audit_500",
                "inputs": {
                    "vms": VMS,
                    "running": RUNNING,
                    "disks": VMS,
                    "source": "h1",
                    "destination": "h2",
                    "mode": "auto",
                    "reps": REPS,
                },
                "unit": "s",
                **stats,
                "samples": len(samples),
                "dirty_rates_measured": measured,
                "target": f"median <= {TARGET_S} s; every running VM's dirty rate measured",
                "pass": stats["median"] <= TARGET_S and min(measured) == RUNNING,
            },
            {
                "name": "audit_queries",
                "inputs": {"vms": list(QUERY_SIZES), "running": RUNNING},
                "unit": "queries",
                **{f"queries_{k}": v for k, v in queries.items()},
                "target": "does not grow with the number of VMs",
                "pass": len(set(queries.values())) == 1,
            },
        ]
    finally:
        _remove_all(conn)
        conn.close()
        MigrationPlan.objects.filter(requester__username="bench-owner").delete()
