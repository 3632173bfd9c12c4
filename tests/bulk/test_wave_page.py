"""The plan page shows the waves the audit planned, with their VMs, hosts and predicted timeline, before
the owner submits: read from what the wave planner stored, in a fixed number of queries, escaped, and
only for those who may see the plan."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import AuditStatus
from migrations_app.models import MigrationPlan
from migrations_app.services import audits as audit_services
from migrations_app.services import plans as plan_services
from tests.base import PASSWORD, node_file_host
from tests.bulk.test_csv_plans import credit_free_memory, guest_domain

pytestmark = pytest.mark.django_db

VMS = 4


@pytest.fixture
def hosts(people: dict[str, Any]) -> dict[str, Any]:
    source = node_file_host(
        "wave-src",
        [
            guest_domain(f"wave-vm-{i}", f"eeeeeeee-0000-0000-0000-{i:012x}", f"52:54:00:6e:00:{i:02x}")
            for i in range(VMS)
        ],
    )
    destination = node_file_host("wave-dst", [])
    for host in (source, destination):
        assert sync_host(host.pk).ok
    # one move at a time leaves the source: every VM gets a wave of its own
    Host.objects.filter(pk=source.pk).update(max_outgoing=1)
    Host.objects.filter(pk=destination.pk).update(cpu_overcommit=100, max_incoming=4)
    credit_free_memory(Host.objects.filter(pk=destination.pk))
    return {**people, "source": source, "destination": destination}


def audited_plan(owner: Any, names: list[str], destination: Host) -> MigrationPlan:
    vm_ids = list(VirtualMachine.objects.filter(name__in=names).values_list("pk", flat=True))
    plan = plan_services.create_plan(owner, vm_ids=vm_ids, destination_id=destination.pk)
    audit = plan_services.latest_audit(plan)
    assert audit is not None
    summary = audit_services.run_audit(audit.pk)
    assert summary["status"] == AuditStatus.DONE, summary
    plan.refresh_from_db()
    return plan


def page(client: Client, user: Any, plan: MigrationPlan) -> Any:
    assert client.login(username=user.username, password=PASSWORD)
    return client.get(plan.get_absolute_url())


def wave_rows(html: str) -> dict[int, str]:
    return {int(n): row for n, row in re.findall(r'<tr data-wave="(\d+)"[^>]*>(.*?)</tr>', html, re.S)}


def test_the_plan_page_shows_every_wave_with_its_vms_hosts_and_timeline(client: Client, hosts: dict[str, Any]) -> None:
    names = [f"wave-vm-{i}" for i in range(VMS)]
    plan = audited_plan(hosts["alice"], names, hosts["destination"])
    stored = plan.wave_plan["waves"]
    assert len(stored) == VMS  # the planner's own result: one VM per wave
    response = page(client, hosts["alice"], plan)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Waves and predicted timeline" in html
    assert plan.wave_plan["summary"] in html
    rows = wave_rows(html)
    assert sorted(rows) == [w["number"] for w in stored]
    items = {i.vm.name: i for i in plan.items.select_related("vm")}
    for wave in stored:
        row = rows[wave["number"]]
        members = [name for name, item in items.items() if item.wave == wave["number"]]
        assert len(members) == 1
        assert members[0] in row
        assert [n for n in names if n not in members and n in row] == []
        assert "wave-src" in row and "wave-dst" in row
        # predicted start and end, as the planner stored them, in order on the timeline
        assert f"+{wave['start_s']:.1f} s" in row and f"+{wave['end_s']:.1f} s" in row
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(stored, stored[1:], strict=False))
    assert stored[-1]["end_s"] > stored[0]["start_s"]


def test_what_the_waves_show_is_escaped(client: Client, hosts: dict[str, Any]) -> None:
    plan = audited_plan(hosts["alice"], ["wave-vm-0", "wave-vm-1"], hosts["destination"])
    VirtualMachine.objects.filter(name="wave-vm-0").update(name="<script>alert(1)</script>")
    Host.objects.filter(pk=hosts["destination"].pk).update(name="dst<b>&")
    html = page(client, hosts["alice"], plan).content.decode()
    waves = html[html.index("Waves and predicted timeline") : html.index("VMs and where they go")]
    assert "<script>alert(1)</script>" not in waves and "&lt;script&gt;alert(1)&lt;/script&gt;" in waves
    assert "dst<b>&" not in waves and "dst&lt;b&gt;&amp;" in waves


def test_the_wave_section_costs_no_query_per_vm_or_wave(client: Client, hosts: dict[str, Any]) -> None:
    small = audited_plan(hosts["alice"], ["wave-vm-0"], hosts["destination"])
    big = audited_plan(hosts["alice"], [f"wave-vm-{i}" for i in range(VMS)], hosts["destination"])
    assert len(big.wave_plan["waves"]) == VMS > len(small.wave_plan["waves"]) == 1
    assert client.login(username=hosts["alice"].username, password=PASSWORD)

    def count(plan: MigrationPlan, waves_shown: bool = True) -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(plan.get_absolute_url())
        assert response.status_code == 200
        assert ("Waves and predicted timeline" in response.content.decode()) is waves_shown
        return len(ctx.captured_queries)

    small_count, big_count = count(small), count(big)
    # the same page without a wave plan: the section is read from what the page loads anyway
    MigrationPlan.objects.filter(pk=big.pk).update(wave_plan={})
    assert small_count == big_count == count(big, waves_shown=False)
    assert big_count <= 20  # the plan page's bound for an editable draft (tests/plans/test_plan_views.py)


def test_another_team_gets_404_for_the_plan_and_its_waves(client: Client, hosts: dict[str, Any]) -> None:
    plan = audited_plan(hosts["alice"], ["wave-vm-0", "wave-vm-1"], hosts["destination"])
    response = page(client, hosts["bob"], plan)
    assert response.status_code == 404
    assert "wave-vm-0" not in response.content.decode()


def test_before_an_audit_planned_waves_there_is_no_wave_section(client: Client, hosts: dict[str, Any]) -> None:
    vm = VirtualMachine.objects.get(name="wave-vm-0")
    plan = plan_services.create_plan(hosts["alice"], vm_ids=[vm.pk], destination_id=hosts["destination"].pk)
    response = page(client, hosts["alice"], plan)
    assert response.status_code == 200 and "Waves and predicted timeline" not in response.content.decode()
