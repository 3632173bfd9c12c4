"""B-AUDIT: the pre-migration audit of a 500-VM plan on the real lab.

500 small stopped guests are defined on lab host h1 (one NIC each, no disk), synced, and planned as
one cold move to h2 through the network mapping app-net → app-lan. Each repetition queues a fresh
audit and runs it in this process: fresh facts from both daemons, every check for every item, the
predictions and the bulk writes. Target: ≤ 5 s; database queries the same for 50 and 500 VMs.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

from bench.common import count_queries, summary

VMS = 500
QUERY_SIZES = (50, 500)
REPS = 5
TARGET_S = 5.0
_NS = uuid.UUID("2b7f4e0c-51a4-4f7e-9d0e-7c1e43a9b6d2")


def _lab() -> dict[str, Any]:
    from django.conf import settings

    data: dict[str, Any] = json.loads(settings.LAB_STATE_FILE.read_text())
    return data


def _domain(i: int) -> str:
    from inventory.hypervisor.domxml import METADATA_NS

    return (
        f"<domain type='qemu'><name>bench-audit-{i:03d}</name><uuid>{uuid.uuid5(_NS, str(i))}</uuid>"
        f"<metadata><vmportal:owner xmlns:vmportal='{METADATA_NS}'><vmportal:team>payments</vmportal:team>"
        f"</vmportal:owner></metadata><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        f"<emulator>/usr/bin/qemu-system-x86_64</emulator><interface type='network'>"
        f"<mac address='52:54:00:ba:{i >> 8:02x}:{i & 255:02x}'/><source network='app-net'/><model type='virtio'/>"
        f"</interface></devices></domain>"
    )


def _undefine_all(conn: Any) -> None:
    import libvirt

    for i in range(VMS):
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(f"bench-audit-{i:03d}").undefine()


def run() -> list[dict[str, Any]]:
    import libvirt
    from django.contrib.auth import get_user_model

    from inventory.models import Host, Network, StoragePool, Team, VirtualMachine
    from inventory.services.accounts import ensure_roles
    from inventory.services.sync import sync_host
    from migrations_app.models import MigrationPlan, NetworkMapping
    from migrations_app.services import plans as plan_services
    from migrations_app.services.audits import run_audit

    lab = _lab()
    uris = {h["name"]: h for h in lab["hosts"]}
    conn = libvirt.open(uris["h1"]["uri"])
    _undefine_all(conn)
    for i in range(VMS):
        conn.defineXML(_domain(i))
    try:
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
        ids = list(
            VirtualMachine.objects.filter(name__startswith="bench-audit-", present=True)
            .order_by("name")
            .values_list("pk", flat=True)
        )
        assert len(ids) == VMS, len(ids)

        def plan_of(count: int) -> MigrationPlan:
            return plan_services.create_plan(
                owner, vm_ids=ids[:count], destination_id=hosts["h2"].pk, mode="cold", fresh_backup=True
            )

        def audit_once(plan: MigrationPlan) -> float:
            audit = plan_services.request_audit(plan, reason="bench")
            start = time.perf_counter()
            outcome = run_audit(audit.pk)
            elapsed = time.perf_counter() - start
            audit.refresh_from_db()
            assert audit.status == "done", (audit.status, audit.error, outcome)
            assert audit.results.count() >= count_checks(plan) > 0
            return elapsed

        def count_checks(plan: MigrationPlan) -> int:
            return plan.items.count()

        big = plan_of(VMS)
        audit_once(big)  # warm-up: connections, capability caches
        samples = [audit_once(big) for _ in range(REPS)]
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
                "inputs": {"vms": VMS, "source": "h1", "destination": "h2", "mode": "cold", "reps": REPS},
                "unit": "s",
                **stats,
                "samples": len(samples),
                "target": f"median <= {TARGET_S} s",
                "pass": stats["median"] <= TARGET_S,
            },
            {
                "name": "audit_queries",
                "inputs": {"vms": list(QUERY_SIZES)},
                "unit": "queries",
                **{f"queries_{k}": v for k, v in queries.items()},
                "target": "does not grow with the number of VMs",
                "pass": len(set(queries.values())) == 1,
            },
        ]
    finally:
        _undefine_all(conn)
        conn.close()
        MigrationPlan.objects.filter(requester__username="bench-owner").delete()
