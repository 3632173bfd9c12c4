"""Runs start only from approved plans (no lab: test-driver hosts)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from inventory.models import VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import PlanStatus
from migrations_app.engine.spec import RunSpec
from migrations_app.models import MigrationRun
from migrations_app.services.runs import RunError, start_item
from tests.base import domain_xml, node_file_host
from tests.live.conftest import make_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def item(people: dict[str, Any]) -> Any:
    src = node_file_host("start-src", [domain_xml("start-1", str(uuid.UUID(int=4711)), team="payments")])
    dst = node_file_host("start-dst", [])
    for host in (src, dst):
        assert sync_host(host.pk).ok
    plan = make_plan(people["alice"], people["payments"], [VirtualMachine.objects.get(name="start-1")], dst)
    return plan.items.get()


@pytest.mark.parametrize(
    "status",
    [
        PlanStatus.DRAFT,
        PlanStatus.READY,
        PlanStatus.BLOCKED,
        PlanStatus.PENDING_APPROVAL,
        PlanStatus.REJECTED,
        PlanStatus.CANCELLED,
        PlanStatus.SUPERSEDED,
    ],
)
def test_a_plan_that_is_not_approved_starts_nothing(item: Any, people: dict[str, Any], status: str) -> None:
    type(item.plan).objects.filter(pk=item.plan.pk).update(status=status)
    item.plan.refresh_from_db()
    with pytest.raises(RunError, match="not approved"):
        start_item(people["alice"], item)
    assert not MigrationRun.objects.exists()


@pytest.mark.parametrize("status", [PlanStatus.APPROVED, PlanStatus.SCHEDULED, PlanStatus.RUNNING])
def test_an_approved_plan_queues_a_run(item: Any, people: dict[str, Any], status: str) -> None:
    type(item.plan).objects.filter(pk=item.plan.pk).update(status=status)
    item.plan.refresh_from_db()
    run = start_item(people["alice"], item)
    assert run.status == "queued" and MigrationRun.objects.filter(item=item).count() == 1


def test_a_run_carries_its_typed_specification_and_no_working_state(item: Any, people: dict[str, Any]) -> None:
    plan = item.plan
    type(plan).objects.filter(pk=plan.pk).update(max_downtime_ms=120, bandwidth_mib_s=40, allow_force_off=True)
    item.plan.refresh_from_db()
    run = start_item(people["alice"], item)
    spec = RunSpec.of(run.options)
    assert spec == RunSpec.of_item(item)
    assert (spec.max_downtime_ms, spec.bandwidth_mib_s, spec.allow_force_off) == (120, 40, True)
    assert run.options == spec.as_options() and run.scratch == {}


def test_run_spec_from_stored_options() -> None:
    assert RunSpec.of(None) == RunSpec()
    # an older run: working state in its options, some values missing or empty
    old = RunSpec.of({"max_downtime_ms": "500", "compression": "", "flags": ["live"], "cold": {"was_running": True}})
    assert old.max_downtime_ms == 500 and old.compression == "none" and old.shutdown_timeout_s == 120
    spec = RunSpec(network_map={"52:54:00:AA:00:01": "lan", "52:54:00:aa:00:02": ""})
    assert spec.live_network_map() == {"52:54:00:aa:00:01": "lan"}
    assert RunSpec.of(spec.as_options()) == spec
