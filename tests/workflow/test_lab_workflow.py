"""On the real lab: approved plans start at their window on a real RQ worker and move the VM; a freeze
holds a plan; a destination that lost capacity after approval sends the plan back with the reason; and a
newcomer's first plan with "let the portal choose" works after `register_lab`, or says per host why not."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import django_rq
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rq import SimpleWorker

from inventory.models import Host, Network, VirtualMachine
from inventory.services.hosts import register_host
from migrations_app.choices import PlanStatus, RunStatus, Severity
from migrations_app.jobs import MIGRATION_QUEUE
from migrations_app.models import ChangeFreeze, MigrationPlan, MigrationRun, NetworkMapping, Notification
from migrations_app.plan_jobs import START_QUEUE
from migrations_app.services import approvals, plans
from migrations_app.services.audits import run_audit
from migrations_app.services.configuration import ensure_network_mapping
from tests.base import make_personas
from tests.engine.conftest import sync
from tests.labguests import LabGuests, NicSpec
from tests.workflow.conftest import login

pytestmark = [pytest.mark.lab]


@pytest.fixture
def people(transactional_db: None) -> dict[str, Any]:
    """Committed rows: the worker runs in this process but the moves commit as in production."""
    return make_personas()


@pytest.fixture
def hosts(lab: dict[str, Any], people: dict[str, Any]) -> dict[str, Host]:
    for name in (START_QUEUE, MIGRATION_QUEUE, "sync"):
        queue = django_rq.get_queue(name)
        queue.empty()
        for job_id in queue.scheduled_job_registry.get_job_ids():
            queue.scheduled_job_registry.remove(job_id, delete_job=True)
    found = {
        e["name"]: register_host(None, name=e["name"], uri=e["uri"], migration_uri=e["migration_uri"], sync=False)
        for e in lab["hosts"]
    }
    sync(found, "h1", "h2")
    ensure_network_mapping(
        None,
        Network.objects.get(host=found["h1"], name="app-net"),
        Network.objects.get(host=found["h2"], name="app-lan"),
    )
    return found


def work() -> None:
    """One pass of a real RQ worker (no fork) over the start and move queues, with RQ's scheduler."""
    queues = [django_rq.get_queue(START_QUEUE), django_rq.get_queue(MIGRATION_QUEUE)]
    SimpleWorker(queues, connection=queues[0].connection).work(burst=True, with_scheduler=True)


def planned(people: dict[str, Any], guest: Any, destination: str, start: datetime | None) -> MigrationPlan:
    """alice's plan to move `guest` live, audited for real, submitted, and approved by carol."""
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    window: dict[str, Any] = {"window_start": start, "window_end": start + timedelta(minutes=30)} if start else {}
    dest = Host.objects.get(name=destination)
    plan = plans.create_plan(people["alice"], vm_ids=[vm.pk], destination_id=dest.pk, mode="live", **window)
    summary = run_audit(plans.latest_audit(plan).pk)  # type: ignore[union-attr]
    assert summary["plan_status"] == PlanStatus.READY, summary
    plan.refresh_from_db()
    plans.submit(people["alice"], plan)
    approvals.approve(people["carol"], plan, "Approved for the lab window.")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.SCHEDULED
    return plan


def wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - timezone.now()).total_seconds()) + 0.5)


def test_scheduled_plans_start_at_their_window_a_freeze_holds_one_and_lost_capacity_sends_one_back(
    client: Client, lab_guests: LabGuests, hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    sync(hosts, "h3")
    ensure_network_mapping(
        None,
        Network.objects.get(host=hosts["h1"], name="app-net"),
        Network.objects.get(host=hosts["h3"], name="applan"),
    )
    guests = [lab_guests.define("h1", memory_mib=64, nics=[NicSpec(network="app-net")]) for _ in range(3)]
    sync(hosts, "h1")
    start = timezone.now() + timedelta(seconds=40)
    on_time = planned(people, guests[0], "h2", start)  # moves at its window, not before
    lost = planned(people, guests[1], "h3", start)  # h3 loses its capacity between approval and window
    held = planned(people, guests[2], "h2", None)  # no window: due at once, but a freeze is declared first
    freeze_end = start - timedelta(seconds=10)
    ChangeFreeze.objects.create(name="lab freeze", start=timezone.now() - timedelta(seconds=1), end=freeze_end)

    work()  # before the window: only the plan without one is due, and the freeze holds it
    for plan in (on_time, lost, held):
        plan.refresh_from_db()
        assert plan.status == PlanStatus.SCHEDULED, (plan.name, plan.status_reason)
    assert not MigrationRun.objects.exists()
    assert "Held by the change freeze “lab freeze”" in held.status_reason and held.scheduled_for == freeze_end
    assert all(lab_guests.where(g) == {"h1": "running"} for g in guests)

    Host.objects.filter(name="h3").update(memory_reserve=1 << 50)  # an admin reserves all of h3's memory
    wait_until(start)
    work()  # the freeze is over and the window has come: two moves and one plan sent back

    for plan, guest in ((on_time, guests[0]), (held, guests[2])):
        plan.refresh_from_db()
        run = MigrationRun.objects.get(item__plan=plan)
        assert run.status == RunStatus.SUCCEEDED, (run.error, run.outcome)
        assert plan.status == PlanStatus.SUCCEEDED, plan.status_reason
        assert lab_guests.where(guest) == {"h2": "running"}
    on_time_started = MigrationRun.objects.get(item__plan=on_time).started_at
    held_started = MigrationRun.objects.get(item__plan=held).started_at
    assert on_time_started is not None and on_time_started >= start
    assert held_started is not None and held_started >= freeze_end
    lost.refresh_from_db()
    assert lost.status == PlanStatus.SUPERSEDED
    assert "RES-MEM" in lost.status_reason and "plan it again" in lost.status_reason
    assert not MigrationRun.objects.filter(item__plan=lost).exists()
    assert lab_guests.where(guests[1]) == {"h1": "running"}
    verbs = set(Notification.objects.filter(user=people["alice"], plan=on_time).values_list("verb", flat=True))
    assert {"plan.approved", "plan.running", "plan.succeeded"} <= verbs
    assert Notification.objects.filter(user=people["alice"], plan=lost, verb="plan.superseded").exists()
    login(client, people["alice"])
    page = client.get(lost.get_absolute_url()).content.decode()
    assert "Sent back to its team" in page and "RES-MEM" in page


def test_register_lab_seeds_the_mappings_a_first_plan_needs(
    lab_guests: LabGuests, lab: dict[str, Any], people: dict[str, Any]
) -> None:
    call_command("register_lab", stdout=open("/dev/null", "w"))  # noqa: SIM115
    pairs = set(
        NetworkMapping.objects.values_list(
            "source__host__name", "source__name", "destination__host__name", "destination__name"
        )
    )
    assert {
        ("h1", "app-net", "h2", "app-lan"),
        ("h2", "app-lan", "h3", "applan"),
        ("h3", "applan", "h1", "app-net"),
    } <= pairs
    guest = lab_guests.define("h1", memory_mib=64, nics=[NicSpec(network="app-net")], start=False)
    sync({"h1": Host.objects.get(name="h1")}, "h1")
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    plan = plans.create_plan(people["alice"], vm_ids=[vm.pk], destinations={vm.pk: None}, mode="auto")
    summary = run_audit(plans.latest_audit(plan).pk)  # type: ignore[union-attr]
    item = plan.items.select_related("destination").get()
    assert item.destination is not None and item.destination.name in ("h2", "h3"), item.destination_reason
    assert summary["plan_status"] == PlanStatus.READY, item.destination_reason


def test_without_mappings_the_portal_says_which_check_turned_each_host_down(
    lab_guests: LabGuests, lab: dict[str, Any], people: dict[str, Any]
) -> None:
    found = {
        e["name"]: register_host(None, name=e["name"], uri=e["uri"], migration_uri=e["migration_uri"], sync=False)
        for e in lab["hosts"]
    }
    sync(found, "h1", "h2", "h3")
    guest = lab_guests.define("h1", memory_mib=64, nics=[NicSpec(network="app-net")], start=False)
    sync(found, "h1")
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    Host.objects.filter(name="h3").update(maintenance=True)
    plan = plans.create_plan(people["alice"], vm_ids=[vm.pk], destinations={vm.pk: None}, mode="auto")
    run_audit(plans.latest_audit(plan).pk)  # type: ignore[union-attr]
    item = plan.items.get()
    assert item.destination is None
    rejected = {r["host"]: r for r in item.destination_rejections}
    assert {c["check"] for c in rejected["h2"]["checks"]} == {"NET-MAPPED"}
    assert rejected["h3"]["why"] == "in maintenance"
    assert "h2: NET-MAPPED (live, cold)" in item.destination_reason and "h3: in maintenance" in item.destination_reason
    audit = plans.latest_audit(plan)
    res_host = audit.results.get(check_id="RES-HOST")  # type: ignore[union-attr]
    assert res_host.severity == Severity.BLOCK and "h2 — NET-MAPPED" in res_host.message
    assert "network" in res_host.remediation and "reachable" not in res_host.remediation
    for result in audit.results.filter(message__startswith="Cannot decide: no destination"):  # type: ignore[union-attr]
        assert "Choose a destination" in result.remediation and "reachable" not in result.remediation
