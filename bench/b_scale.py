"""B-SCALE: the portal at fleet size, on libvirt test-driver hosts.

(a) 1,000 hosts × 20 VMs synced by 4 RQ workers (separate processes, the `sync` queue, as in production):
    from queueing every host's sync until the last one is stored (20,000 VMs in the inventory). Target ≤ 60 s.
    The workers are started as the product starts them (`manage.py rqworker`, the worker class from
    settings.RQ, migrations_app.worker.ReconcilingWorker, which runs sync jobs in its own process).
(b) evacuation of a host with 2,000 VMs: `bulk.evacuate` (host in maintenance, the plan with its 2,000 items)
    and the plan's audit (fresh facts, destination choice among the enabled hosts, every check, the
    predictions, the wave planner), in this process, as the audit worker runs it. Target ≤ 30 s; database
    queries of the same path at 200 and at 2,000 VMs compared (they must not grow with the number of VMs).

The test driver reports no free memory and only i686 guests: the guests are i686, and the destination hosts
are credited 64 GiB through a negative memory reserve (which the audit and the wave planner both count).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, count_queries, setup_django, summary

HOSTS, PER_HOST, WORKERS = 1000, 20, 4
SYNC_TARGET_S = 60.0
EVACUATION_VMS, QUERY_SIZES = 2000, (200, 2000)
DESTINATIONS = 10
EVACUATION_TARGET_S = 30.0
GIB = 1024**3
_NS = uuid.UUID("0d7c1a2e-6b7e-4f3a-9d41-5a2b9c3e7f10")
PREFIX = "bench-scale"


def _domain(name: str, index: int) -> str:
    from tests.base import domain_xml

    return domain_xml(
        name,
        str(uuid.uuid5(_NS, name)),
        team="payments",
        mac=f"52:54:{index >> 24 & 255:02x}:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}",
        memory_kib=65536,
    ).replace("<type arch='x86_64' machine='pc'>", "<type arch='i686'>")


def _hosts(count: int, per_host: int, prefix: str, first_index: int = 0) -> list[Any]:
    from inventory.models import Host
    from tests.base import write_node_file

    rows = []
    for h in range(count):
        name = f"{prefix}-{h:04d}"
        domains = [_domain(f"{name}-vm{v:02d}", first_index + h * per_host + v) for v in range(per_host)]
        rows.append(Host(name=name, uri=write_node_file(name, domains)))
    return Host.objects.bulk_create(rows)


def _remove(prefix: str) -> None:
    from inventory.models import Host, Network, StoragePool, VirtualMachine
    from migrations_app.models import AuditLogEntry, MigrationPlan

    hosts = Host.objects.filter(name__startswith=prefix)
    plans = MigrationPlan.objects.filter(items__source__in=hosts).distinct()
    for plan in plans:
        plan.items.all().delete()
        plan.audits.all().delete()
    MigrationPlan.objects.filter(pk__in=[p.pk for p in plans]).delete()
    del AuditLogEntry  # the log is append-only: its rows stay in the bench database, dropped at the end
    VirtualMachine.objects.filter(host__in=hosts).delete()
    StoragePool.objects.filter(host__in=hosts).delete()
    Network.objects.filter(host__in=hosts).delete()
    for host in hosts:
        Path(host.uri.removeprefix("test://")).unlink(missing_ok=True)
    hosts.delete()


# ---- (a) sync --------------------------------------------------------------------------------------


def _workers() -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    procs = []
    for _ in range(WORKERS):
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", "sync"],
                cwd=BENCH_DIR.parent,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def _wait_for_workers(count: int, timeout: float = 120) -> None:
    import django_rq
    from rq import Worker

    queue = django_rq.get_queue("sync")
    deadline = time.monotonic() + timeout
    while len([w for w in Worker.all(queue=queue)]) < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the sync workers did not start")
        time.sleep(0.2)


def _sync_fleet() -> dict[str, Any]:
    import django_rq

    from inventory.jobs import enqueue_sync
    from inventory.models import Host, VirtualMachine

    hosts = _hosts(HOSTS, PER_HOST, f"{PREFIX}-a")
    ids = [h.pk for h in hosts]
    queue = django_rq.get_queue("sync")
    queue.empty()
    procs = _workers()
    try:
        _wait_for_workers(WORKERS)
        start = time.perf_counter()
        for host_id in ids:
            enqueue_sync(host_id)
        deadline = start + 600
        while Host.objects.filter(pk__in=ids, last_sync_at__isnull=True).exists():
            if time.perf_counter() > deadline:
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
        synced = Host.objects.filter(pk__in=ids, last_sync_at__isnull=False).count()
        vms = VirtualMachine.objects.filter(host_id__in=ids).count()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    complete = synced == HOSTS and vms == HOSTS * PER_HOST
    return {
        "name": "sync_1000_hosts",
        "inputs": {"hosts": HOSTS, "vms_per_host": PER_HOST, "workers": WORKERS},
        "unit": "s",
        **summary([elapsed]),
        "samples": 1,
        "hosts_synced": synced,
        "vms_stored": vms,
        "target": f"<= {SYNC_TARGET_S} s, every host synced",
        "pass": complete and elapsed <= SYNC_TARGET_S,
    }


# ---- (b) evacuation ---------------------------------------------------------------------------------


def _evacuation_world(vms: int, tag: str) -> tuple[Any, Any]:
    """A source host with `vms` guests and DESTINATIONS roomy hosts, synced; returns (source, admin)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from inventory.models import Host
    from inventory.permissions import APPROVERS
    from inventory.services.accounts import ensure_roles
    from inventory.services.sync import sync_host

    ensure_roles()
    admin, _ = get_user_model().objects.get_or_create(username="bench-scale-admin")
    admin.groups.add(Group.objects.get(name=APPROVERS))
    prefix = f"{PREFIX}-b{tag}"
    source = _hosts(1, vms, f"{prefix}-src", first_index=10_000_000)[0]
    destinations = _hosts(DESTINATIONS, 0, f"{prefix}-dst")
    for host in [source, *destinations]:
        if not sync_host(host.pk).ok:
            raise RuntimeError(f"sync of {host.name} failed")
    Host.objects.filter(pk__in=[h.pk for h in destinations]).update(
        memory_reserve=-64 * GIB, cpu_overcommit=300, max_incoming=4
    )
    Host.objects.filter(pk=source.pk).update(max_outgoing=8)
    return Host.objects.get(pk=source.pk), admin


def _evacuate_and_audit(source: Any, admin: Any) -> dict[str, Any]:
    from migrations_app.services import audits, bulk, plans

    result = bulk.evacuate(admin, source)
    (plan,) = result.plans
    audit = plans.latest_audit(plan)
    assert audit is not None
    summary_ = audits.run_audit(audit.pk)
    plan.refresh_from_db()
    return {"plan": plan, "audit": summary_}


def _evacuation() -> list[dict[str, Any]]:
    from inventory.models import Host

    results = []
    source, admin = _evacuation_world(EVACUATION_VMS, "t")
    try:
        start = time.perf_counter()
        outcome = _evacuate_and_audit(source, admin)
        elapsed = time.perf_counter() - start
        plan = outcome["plan"]
        items = plan.items.count()
        placed = plan.items.filter(destination__isnull=False).count()
        waves = plan.wave_plan.get("waves", [])
        results.append(
            {
                "name": "evacuation_2000_vms_audit_and_waves",
                "inputs": {
                    "vms": EVACUATION_VMS,
                    "destination_hosts": DESTINATIONS,
                    "hosts_in_inventory": Host.objects.count(),
                },
                "unit": "s",
                **summary([elapsed]),
                "samples": 1,
                "plan_status": plan.status,
                "items": items,
                "items_with_destination": placed,
                "waves": len(waves),
                "wave_problems": len(plan.wave_plan.get("problems", {})),
                "audit_ms": outcome["audit"].get("elapsed_ms"),
                "target": f"<= {EVACUATION_TARGET_S} s",
                "pass": elapsed <= EVACUATION_TARGET_S and items == EVACUATION_VMS and placed == items and bool(waves),
            }
        )
    finally:
        _remove(f"{PREFIX}-bt")
    counts = {}
    for size in QUERY_SIZES:
        source, admin = _evacuation_world(size, f"q{size}")
        try:
            with count_queries() as n:
                _evacuate_and_audit(source, admin)
            counts[size] = n[0]
        finally:
            _remove(f"{PREFIX}-bq{size}")
    small, large = (counts[s] for s in QUERY_SIZES)
    results.append(
        {
            "name": "evacuation_queries",
            "inputs": {"vms": list(QUERY_SIZES), "destination_hosts": DESTINATIONS},
            "unit": "queries",
            f"queries_{QUERY_SIZES[0]}": small,
            f"queries_{QUERY_SIZES[1]}": large,
            "target": "does not grow with the number of VMs",
            "pass": small == large,
        }
    )
    return results


def run() -> list[dict[str, Any]]:
    setup_django()
    from inventory.models import Team

    created = Team.objects.get_or_create(slug="payments", defaults={"name": "Payments"})[1]
    _remove(PREFIX)
    try:
        results = [_sync_fleet()]
        _remove(f"{PREFIX}-a")  # (b) has its own hosts: the audit reads every enabled host
        results += _evacuation()
        return results
    finally:
        _remove(PREFIX)
        if created:
            Team.objects.filter(slug="payments").delete()
