"""A small fleet with plans and runs made directly in the database, for the live pages and consumers."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import PlanStatus, RunStatus
from migrations_app.models import MigrationPlan, MigrationRun, PlanItem, ProgressSample
from tests.base import domain_xml, node_file_host

HOSTILE = "<img src=x onerror=alert(1)>"


def make_plan(owner: Any, team: Any, vms: list[VirtualMachine], dest: Host, name: str = "") -> MigrationPlan:
    plan = MigrationPlan.objects.create(
        name=name or f"move {vms[0].name}", requester=owner, team=team, mode="live", status=PlanStatus.APPROVED
    )
    for vm in vms:
        PlanItem.objects.create(plan=plan, vm=vm, source=vm.host, destination=dest, mode="live")
    return plan


def make_run(item: PlanItem, status: str = RunStatus.TRANSFERRING, samples: int = 0, **fields: Any) -> MigrationRun:
    now = timezone.now()
    defaults: dict[str, Any] = {"started_at": now - timedelta(seconds=samples or 1), "percent": 0}
    if status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.ROLLED_BACK):
        defaults.update(finished_at=now, percent=100 if status == RunStatus.SUCCEEDED else 40)
    defaults.update(fields)
    run = MigrationRun.objects.create(
        item=item,
        vm=item.vm,
        source_id=item.source_id,
        destination_id=item.destination_id or 0,
        mode=item.mode or "live",
        status=status,
        options={"fresh_backup": False},
        **defaults,
    )
    if samples:
        total = 512 * 1024 * 1024
        ProgressSample.objects.bulk_create(
            ProgressSample(
                run=run,
                at=now - timedelta(seconds=samples - i),
                elapsed_s=i * 0.5,
                phase="memory",
                percent=100 * i / samples,
                bytes_processed=total * i // samples,
                bytes_remaining=total - total * i // samples,
                bytes_total=total,
                throughput_bps=100e6,
                dirty_rate_bps=5e6,
                iteration=1 + i // 100,
                eta_s=(samples - i) * 0.5,
            )
            for i in range(samples)
        )
    return run


@pytest.fixture
def fleet(people: dict[str, Any]) -> dict[str, Any]:
    return build_fleet(people)


def build_fleet(people: dict[str, Any]) -> dict[str, Any]:
    """Hosts src and dst (test driver); payments VMs pay-1 and a hostile name, analytics VM ana-1; a plan
    per team with a run in flight (alice's with 20 samples)."""
    src = node_file_host(
        "live-src",
        [
            domain_xml("pay-1", str(uuid.UUID(int=901)), team="payments", mac="52:54:00:20:00:01"),
            domain_xml(HOSTILE, str(uuid.UUID(int=902)), team="payments", mac="52:54:00:20:00:02"),
            domain_xml("ana-1", str(uuid.UUID(int=903)), team="analytics", mac="52:54:00:20:00:03"),
        ],
    )
    dst = node_file_host("live-dst", [])
    for host in (src, dst):
        assert sync_host(host.pk).ok
    vms = {vm.name: vm for vm in VirtualMachine.objects.all()}
    pay_plan = make_plan(people["alice"], people["payments"], [vms["pay-1"], vms[HOSTILE]], dst, "payments move")
    ana_plan = make_plan(people["bob"], people["analytics"], [vms["ana-1"]], dst, "analytics move")
    pay_items = list(pay_plan.items.order_by("pk"))
    pay_run = make_run(pay_items[0], samples=20, percent=42.0)
    hostile_run = make_run(pay_items[1], status=RunStatus.QUEUED, started_at=None)
    ana_run = make_run(ana_plan.items.get(), samples=3)
    return {
        **people,
        "src": src,
        "dst": dst,
        **{f"vm:{k}": v for k, v in vms.items()},
        "pay_plan": pay_plan,
        "ana_plan": ana_plan,
        "pay_run": pay_run,
        "hostile_run": hostile_run,
        "ana_run": ana_run,
    }


def session_cookie(user: Any) -> str:
    """A real session for `user`, as the browser would send it after logging in."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def process_env() -> dict[str, str]:
    """Environment for another process on the test database, the tests' Redis and channel prefix."""
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings
    from django.db import connection

    parts = urlsplit(settings.DATABASE_URL)
    env = dict(os.environ)
    env.update(
        VMPORTAL_DATABASE_URL=urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}")),
        VMPORTAL_REDIS_URL=settings.REDIS_URL,
        VMPORTAL_CHANNEL_PREFIX=str(settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]),  # type: ignore[index]
        VMPORTAL_TESTING="1",
    )
    return env
