"""B-PAGES: the fleet dashboard, VM list, plan page and run page with 10,000 VMs, 500 hosts and 1,000
past runs in the database (plus the history page, which lists those runs).

Each page is requested through Django's test client (the whole middleware and template stack, no
network) by an approver, who sees everything, and the VM list and fleet also by an app owner. The plan
has 50 VMs with a full audit (32 results each), predictions and a run per VM; the run page shows a run
of one hour's progress (7,200 samples). 5 warm-up requests, then 30 timed ones per page.
Target: p95 ≤ 200 ms and ≤ 15 queries per page.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

HOSTS = 500
VMS = 10_000
PAST_RUNS = 1_000
PLAN_ITEMS = 50
RUN_SAMPLES = 7_200
WARMUP = 5
REQUESTS = 30
TARGET_P95_MS = 200.0
MAX_QUERIES = 15
CHECKS = 32


def _populate() -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone

    from inventory.models import Host, StoragePool, Team, VirtualMachine
    from inventory.permissions import APPROVERS
    from inventory.services.accounts import ensure_roles
    from migrations_app.choices import Area, RunStatus, Severity
    from migrations_app.models import (
        Audit,
        CheckResult,
        MigrationPlan,
        MigrationRun,
        PlanItem,
        Prediction,
        ProgressSample,
    )

    ensure_roles()
    users = get_user_model().objects
    admin = users.create_user("bench-pages-admin", password="x" * 20)  # noqa: S106
    admin.groups.add(Group.objects.get(name=APPROVERS))
    owner = users.create_user("bench-pages-owner", password="x" * 20)  # noqa: S106
    teams = Team.objects.bulk_create(Team(slug=f"bp-team-{i}", name=f"Team {i}") for i in range(20))
    teams[0].members.add(owner)
    gib = 1 << 30
    hosts = Host.objects.bulk_create(
        Host(
            name=f"bp-host-{i:03d}",
            uri=f"test:///bp-host-{i:03d}",
            cpus=64,
            memory_total=512 * gib,
            memory_free=(100 + i % 300) * gib,
            reachability="unreachable" if i % 97 == 0 else "reachable",
            maintenance=i % 50 == 0,
            last_sync_at=timezone.now(),
        )
        for i in range(HOSTS)
    )
    StoragePool.objects.bulk_create(
        StoragePool(host=h, name="local", capacity=4096 * gib, allocation=(i % 4000) * gib) for i, h in enumerate(hosts)
    )
    vms = VirtualMachine.objects.bulk_create(
        (
            VirtualMachine(
                uuid=uuid.uuid4(),
                name=f"bp-vm-{i:05d}",
                host=hosts[i % HOSTS],
                team=teams[i % len(teams)],
                state="running" if i % 5 else "shutoff",
                vcpus=2,
                memory=4 * gib,
            )
            for i in range(VMS)
        ),
        batch_size=2000,
    )
    now = timezone.now()
    # 1,000 past runs: 100 plans of 10 VMs, each moved once, over the last 60 days
    outcomes = [RunStatus.SUCCEEDED] * 8 + [RunStatus.FAILED, RunStatus.ROLLED_BACK]
    past_plans = MigrationPlan.objects.bulk_create(
        MigrationPlan(name=f"bp-past-{p}", requester=owner, team=teams[p % len(teams)], status="succeeded")
        for p in range(PAST_RUNS // 10)
    )
    past_items = PlanItem.objects.bulk_create(
        PlanItem(
            plan=plan, vm=vms[p * 10 + k], source=vms[p * 10 + k].host, destination=hosts[(p + 1) % HOSTS], mode="live"
        )
        for p, plan in enumerate(past_plans)
        for k in range(10)
    )
    past_runs = MigrationRun.objects.bulk_create(
        MigrationRun(
            item=item,
            vm=item.vm,
            source_id=item.source_id,
            destination_id=item.destination_id or 0,
            mode="live",
            status=outcomes[n % len(outcomes)],
            started_at=now - timedelta(days=n % 60, seconds=30),
            finished_at=now - timedelta(days=n % 60),
            percent=100,
            downtime_ms=5 + (n * 37) % 400,
            elapsed_ms=30_000,
            bytes_total=4 * gib,
        )
        for n, item in enumerate(past_items)
    )
    MigrationRun.objects.filter(pk__in=[r.pk for r in past_runs]).update(queued_at=timezone.now() - timedelta(days=1))
    # the plan on the plan page: 50 VMs, a full audit with predictions, one run each (in flight)
    # in waves of 10, as the audit's wave planner stored them (the plan page shows the waves)
    per_wave = 10
    waves = [
        {"number": w + 1, "items": per_wave, "start_s": 20.0 * w, "end_s": 20.0 * (w + 1), "in_window": True}
        for w in range(-(-PLAN_ITEMS // per_wave))
    ]
    wave_plan = {"summary": f"{len(waves)} waves.", "total_s": waves[-1]["end_s"], "waves": waves, "problems": {}}
    plan = MigrationPlan.objects.create(
        name="bp-plan", requester=owner, team=teams[0], status="running", wave_plan=wave_plan
    )
    items = PlanItem.objects.bulk_create(
        PlanItem(
            plan=plan,
            vm=vms[5000 + k * 20],
            source=vms[5000 + k * 20].host,
            destination=hosts[1],
            mode="live",
            wave=k // per_wave + 1,
        )
        for k in range(PLAN_ITEMS)
    )
    audit = Audit.objects.create(plan=plan, status="done", worst="warn", finished_at=now)
    areas = list(Area)
    CheckResult.objects.bulk_create(
        CheckResult(
            audit=audit,
            item=item,
            check_id=f"CHK-{c:02d}",
            area=areas[c % len(areas)],
            severity=Severity.WARN if c == 3 else Severity.PASS,
            message=f"check {c} on {item.vm_id}",
            evidence={"source": "x", "destination": "y"},
        )
        for item in items
        for c in range(CHECKS)
    )
    Prediction.objects.bulk_create(
        Prediction(audit=audit, item=item, mode=mode, duration_s=2.0, downtime_ms=30.0, recommended=mode == "live")
        for item in items
        for mode in ("live", "cold")
    )
    plan_runs = MigrationRun.objects.bulk_create(
        MigrationRun(
            item=item,
            vm=item.vm,
            source_id=item.source_id,
            destination_id=item.destination_id or 0,
            mode="live",
            status=RunStatus.TRANSFERRING,
            started_at=now,
            percent=k * 2,
        )
        for k, item in enumerate(items)
    )
    run = plan_runs[0]
    ProgressSample.objects.bulk_create(
        (
            ProgressSample(
                run=run,
                at=now - timedelta(seconds=(RUN_SAMPLES - i) / 2),
                elapsed_s=i / 2,
                phase="memory",
                percent=min(99, i / 72),
                bytes_processed=i << 20,
                bytes_remaining=(RUN_SAMPLES - i) << 20,
                bytes_total=RUN_SAMPLES << 20,
                throughput_bps=2e6,
                dirty_rate_bps=1e5,
                iteration=1 + i // 500,
                eta_s=(RUN_SAMPLES - i) / 2,
            )
            for i in range(RUN_SAMPLES)
        ),
        batch_size=2000,
    )
    return {"admin": admin, "owner": owner, "plan": plan, "run": run}


def _measure(client: Any, url: str) -> dict[str, Any]:
    from django.db import connection

    for _ in range(WARMUP):
        assert client.get(url).status_code == 200, url
    executed = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url)
    assert response.status_code == 200
    times = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
    ordered = sorted(times)
    return {
        "queries": len(executed),
        "bytes": len(response.content),
        "median_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


def run() -> list[dict[str, Any]]:
    from django.test import Client
    from django.urls import reverse

    from migrations_app.services import live

    world = _populate()
    admin, owner = Client(HTTP_HOST="127.0.0.1"), Client(HTTP_HOST="127.0.0.1")
    admin.force_login(world["admin"])
    owner.force_login(world["owner"])
    pages = [
        ("fleet dashboard", admin, reverse("inventory:dashboard")),
        ("fleet dashboard (owner)", owner, reverse("inventory:dashboard")),
        ("VM list", admin, reverse("inventory:vm_list")),
        ("VM list (owner, search)", owner, reverse("inventory:vm_list") + "?q=bp-vm-01"),
        ("plan page", admin, reverse("migrations_app:plan_detail", args=[world["plan"].pk])),
        ("run page", admin, reverse("runs:run_detail", args=[world["run"].pk])),
        ("history and reports", admin, reverse("runs:history")),
    ]
    results = []
    inputs = {"hosts": HOSTS, "vms": VMS, "past_runs": PAST_RUNS, "plan_items": PLAN_ITEMS, "run_samples": RUN_SAMPLES}
    for name, client, url in pages:
        figures = _measure(client, url)
        results.append(
            {
                "name": f"B-PAGES {name}",
                "inputs": inputs,
                "unit": "ms",
                **figures,
                "target": f"p95 <= {TARGET_P95_MS} ms and <= {MAX_QUERIES} queries",
                "pass": figures["p95_ms"] <= TARGET_P95_MS and figures["queries"] <= MAX_QUERIES,
            }
        )
    # what the run page's websocket sends first (the chart's points come with it)
    times = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        live.run_snapshot(world["run"].pk)
        times.append((time.perf_counter() - start) * 1000)
    ordered = sorted(times)
    results.append(
        {
            "name": "B-PAGES run snapshot (websocket)",
            "inputs": inputs,
            "unit": "ms",
            "median_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
            "target": "informative",
        }
    )
    return results
