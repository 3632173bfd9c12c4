"""Resource checks fire on the lab: memory once approved moves count, vCPUs, host state."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from inventory.hypervisor.facts import FactsReader
from inventory.models import Host, VirtualMachine
from migrations_app.checks.registry import OTHER_TEAMS
from migrations_app.choices import PlanStatus
from migrations_app.models import MigrationPlan, PlanItem
from tests.checks.conftest import Planner, outcomes, vm_of
from tests.labguests import LabGuests

pytestmark = [pytest.mark.django_db, pytest.mark.lab]

#: a lab path where no daemon listens (inside the allowed socket directory)
NO_HOST_URI = "qemu+unix:///system?socket=/var/lib/vmportal-lab/nohost/sock"


def _approved_move(people: dict[str, Any], source: Host, destination: Host, memory: int) -> MigrationPlan:
    """An approved plan of another team bringing a large VM onto `destination` (database facts only:
    the lab has no VM that large, and RES-MEM counts approved moves from the database)."""
    vm = VirtualMachine.objects.create(
        uuid=uuid.uuid4(), name="big-approved", host=source, memory=memory, max_memory=memory, vcpus=1
    )
    plan = MigrationPlan.objects.create(
        name="approved elsewhere", requester=people["bob"], team=people["analytics"], status=PlanStatus.APPROVED
    )
    PlanItem.objects.create(plan=plan, vm=vm, source=source, destination=destination)
    return plan


def test_res_mem_blocks_once_other_approved_moves_are_counted(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define("h1", nics=[], memory_mib=64, start=False)
    _mode, before = outcomes(plan_move(guest, "h2", mode="cold"))
    assert before["RES-MEM"].severity == "pass", before["RES-MEM"].message
    with FactsReader() as reader:
        free = reader.host(lab_hosts["h2"].uri).memory_free
    # leaves less than the reserve plus this VM's 64 MiB once counted
    _approved_move(people, lab_hosts["h1"], lab_hosts["h2"], free - lab_hosts["h2"].memory_reserve)
    _mode, after = outcomes(plan_move(guest, "h2", mode="cold"))
    memory = after["RES-MEM"]
    assert memory.severity == "block", memory.message
    assert memory.destination["approved inbound"]["count"] == 1
    assert memory.destination["approved inbound"][OTHER_TEAMS][0]["vm"] == "big-approved"
    assert memory.destination["reserve"] == lab_hosts["h2"].memory_reserve
    assert memory.source == {"memory": 64 * 1024 * 1024}


def test_res_mem_ignores_approved_moves_in_another_window(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    guest = lab_guests.define("h1", nics=[], start=False)
    other = _approved_move(people, lab_hosts["h1"], lab_hosts["h2"], 10**15)
    MigrationPlan.objects.filter(pk=other.pk).update(
        window_start=now + timedelta(days=2), window_end=now + timedelta(days=2, hours=1)
    )
    plan = plan_move(
        guest, "h2", mode="cold", window_start=now + timedelta(hours=1), window_end=now + timedelta(hours=2)
    )
    _mode, results = outcomes(plan)
    assert results["RES-MEM"].severity == "pass" and results["RES-MEM"].destination["approved inbound"]["count"] == 0


def test_res_cpu_warns_over_the_overcommit_ratio_and_blocks_past_the_hard_limit(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    h2 = lab_hosts["h2"]
    Host.objects.filter(pk=h2.pk).update(cpu_overcommit=10)  # h2 has 2 CPUs: 20 vCPUs allowed, 40 hard limit
    busy = lab_guests.define("h1", nics=[], vcpus=24, start=False)
    _mode, warned = outcomes(plan_move(busy, "h2", mode="cold"))
    assert warned["RES-CPU"].severity == "warn", warned["RES-CPU"].message
    assert warned["RES-CPU"].destination["overcommit ratio"] == 10.0
    huge = lab_guests.define("h1", nics=[], vcpus=48, start=False)
    _mode, blocked = outcomes(plan_move(huge, "h2", mode="cold"))
    assert blocked["RES-CPU"].severity == "block", blocked["RES-CPU"].message
    small = lab_guests.define("h1", nics=[], vcpus=1, start=False)
    _mode, fine = outcomes(plan_move(small, "h2", mode="cold"))
    assert fine["RES-CPU"].severity == "pass"


def test_an_unreachable_destination_blocks_res_host_and_nothing_else_blocks(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    nowhere = Host.objects.create(name="nowhere", uri=NO_HOST_URI)
    guest = lab_guests.define("h1", start=True)
    _mode, results = outcomes(plan_move(guest, nowhere, mode="live"))
    assert results["RES-HOST"].severity == "block" and "cannot be reached" in results["RES-HOST"].message
    assert results["RES-HOST"].destination["reachable"] is False
    blocks = {cid for cid, o in results.items() if o.severity == "block"}
    assert blocks == {"RES-HOST"}, {cid: results[cid].message for cid in blocks}
    undecided = {cid for cid, o in results.items() if o.message.startswith("Cannot decide")}
    assert {"NET-MAC", "RES-MEM", "HC-MACHINE", "STO-SPACE"} <= undecided
    assert all(results[cid].severity == "warn" for cid in undecided)


def test_an_unreachable_source_blocks_res_host(lab_hosts: dict[str, Host], people: dict[str, Any]) -> None:
    from migrations_app.services.plans import create_plan

    gone = Host.objects.create(name="gone", uri=NO_HOST_URI)
    vm = VirtualMachine.objects.create(
        uuid=uuid.uuid4(), name="stranded", host=gone, team=people["payments"], memory=2**26, vcpus=1
    )
    plan = create_plan(people["alice"], vm_ids=[vm.pk], destination_id=lab_hosts["h2"].pk, mode="cold")
    _mode, results = outcomes(plan)
    assert results["RES-HOST"].severity == "block" and "source" in results["RES-HOST"].message
    assert results["RES-HOST"].source["reachable"] is False
    assert {cid for cid, o in results.items() if o.severity == "block"} == {"RES-HOST"}


def test_a_destination_in_maintenance_blocks(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    guest = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move(guest, "h2", mode="cold")
    Host.objects.filter(pk=lab_hosts["h2"].pk).update(maintenance=True)
    _mode, results = outcomes(plan)
    assert results["RES-HOST"].severity == "block" and "maintenance" in results["RES-HOST"].message
    assert vm_of(guest).host.name == "h1"
