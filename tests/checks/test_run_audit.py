"""The audit runner: one result per check per item, plan ready or blocked, overrides, destination choice."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inventory.models import Host
from migrations_app.checks import REGISTRY
from migrations_app.choices import AuditStatus, PlanStatus
from migrations_app.models import CheckResult
from migrations_app.services.audits import candidate_destinations, evaluate_plan, run_audit
from migrations_app.services.plans import PlanError, latest_audit, record_override, submit
from tests.checks.conftest import Planner, sync, vm_of
from tests.labguests import DiskSpec, LabGuests, NicSpec
from vmportal.access import Denied

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


def _audit(plan: Any) -> dict[str, Any]:
    audit = latest_audit(plan)
    assert audit is not None and audit.status == AuditStatus.QUEUED
    return run_audit(audit.pk)


def test_run_audit_stores_every_check_for_every_item_and_blocks_the_plan(
    lab_guests: LabGuests, plan_move: Planner, people: dict[str, Any]
) -> None:
    clean = lab_guests.define("h1", disks=[DiskSpec(pool="shared", cache="none")], start=True)
    unmapped = lab_guests.define("h1", nics=[NicSpec("backup-net")], start=False)
    plan = plan_move([clean, unmapped], "h2", mode="auto")
    summary = _audit(plan)
    assert summary["status"] == AuditStatus.DONE and summary["plan_status"] == PlanStatus.BLOCKED
    audit = latest_audit(plan)
    assert audit is not None and audit.status == AuditStatus.DONE and audit.worst == "block"
    assert audit.started_at and audit.finished_at
    assert CheckResult.objects.filter(audit=audit).count() == 2 * len(REGISTRY)
    for item in plan.items.all():
        assert set(item.check_results.filter(audit=audit).values_list("check_id", flat=True)) == set(REGISTRY)
    blocks = {(r.item.vm.name, r.check_id) for r in CheckResult.objects.filter(audit=audit, severity="block")}
    assert (unmapped.name, "NET-MAPPED") in blocks and not any(name == clean.name for name, _ in blocks)
    result = CheckResult.objects.get(audit=audit, item__vm__name=unmapped.name, check_id="NET-MAPPED")
    assert result.area == "network" and result.remediation and set(result.evidence) == {"source", "destination"}
    modes = dict(plan.items.values_list("vm__name", "mode"))
    assert modes[clean.name] == "live"
    plan.refresh_from_db()
    assert plan.status == PlanStatus.BLOCKED
    with pytest.raises(PlanError, match="NET-MAPPED"):
        submit(people["alice"], plan)
    record_override(people["carol"], plan, "Backup NIC is re-attached by hand after the move.")
    plan.refresh_from_db()
    assert plan.status == PlanStatus.READY
    submit(people["alice"], plan)
    assert plan.status == PlanStatus.PENDING_APPROVAL


def test_a_clean_plan_becomes_ready_with_predictions(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", nics=[NicSpec("app-net")], start=False)
    plan = plan_move(guest, "h2", mode="auto")
    summary = _audit(plan)
    assert summary["plan_status"] == PlanStatus.READY, summary
    item = plan.items.get()
    assert item.mode == "cold"
    plan.refresh_from_db()
    audit = latest_audit(plan)
    assert audit is not None
    assert {p.mode for p in audit.predictions.all()} == {"live", "cold"}
    assert plan.predicted_seconds is not None


def test_the_audit_measures_each_running_guest_once_and_the_prediction_uses_it(
    lab_guests: LabGuests, plan_move: Planner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inventory.hypervisor import measure

    calls: list[tuple[str, list[str]]] = []
    real = measure.dirty_rates

    def counted(uri: str, uuids: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append((uri, list(uuids)))
        return real(uri, uuids, *args, **kwargs)

    monkeypatch.setattr(measure, "dirty_rates", counted)
    running = [lab_guests.define(host, nics=[NicSpec(net)]) for host, net in (("h1", "app-net"), ("h1", "app-net"))]
    running.append(lab_guests.define("h3", nics=[NicSpec("applan")]))
    stopped = lab_guests.define("h1", nics=[NicSpec("app-net")], start=False)
    plan = plan_move([*running, stopped], "h2", mode="auto")
    summary = _audit(plan)
    assert summary["status"] == AuditStatus.DONE, summary
    # one dirty-rate period per source host, each running guest in exactly one of them
    measured = sorted(u for _uri, uuids in calls for u in uuids)
    assert measured == sorted(g.uuid for g in running)
    assert len(calls) == 2
    audit = latest_audit(plan)
    assert audit is not None
    live = {p.item.vm.name: p for p in audit.predictions.filter(mode="live").select_related("item__vm")}
    for guest in running:
        # what the audit measured is what the prediction used (not measured again on its own)
        assert live[guest.name].inputs["dirty_rate_source"] == "measured: libvirt dirty-rate calculation"
        assert live[guest.name].inputs["dirty_rate_bps"] is not None
    assert live[stopped.name].inputs["dirty_rate_source"] == "the VM is not running"


def test_the_requester_cannot_override_their_own_plan(lab_guests: LabGuests, plan_move: Planner, people: dict) -> None:
    guest = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move(guest, "h2", mode="cold", owner="carol", fresh_backup=False)  # BAK-RECENT blocks
    assert _audit(plan)["plan_status"] == PlanStatus.BLOCKED
    with pytest.raises(Denied, match="own plan"):
        record_override(people["carol"], plan, "I know what I am doing, trust me.")


def test_an_audit_runs_once_even_if_two_workers_take_it(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move(guest, "h2", mode="cold")
    audit = latest_audit(plan)
    assert audit is not None
    assert run_audit(audit.pk)["claimed"] is True
    assert run_audit(audit.pk) == {"audit": audit.pk, "claimed": False}
    assert CheckResult.objects.filter(audit=audit).count() == len(REGISTRY)


def test_the_portal_chooses_a_destination_that_passes_the_hard_checks(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    guest = lab_guests.define("h1", nics=[NicSpec("app-net")], start=False)
    sync(lab_hosts["h1"])
    candidates = candidate_destinations(vm_of(guest), "auto")
    # h3 is not synced in these tests, so no network mapping leads there: only h2 qualifies
    assert [c.host.name for c in candidates] == ["h2"]
    assert candidates[0].reason.startswith("h2:") and candidates[0].memory_headroom > 0
    plan = plan_move(guest, None, mode="auto")
    _audit(plan)
    item = plan.items.select_related("destination").get()
    assert item.destination is not None and item.destination.name == "h2" and item.destination_auto
    assert "passes every hard check" in item.destination_reason
    assert item.network_map == {guest.macs[0]: "app-lan"}
    assert item.storage_map == {}


def test_no_candidate_means_res_host_blocks(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    guest = lab_guests.define("h1", nics=[NicSpec("backup-net")], start=False)  # no host maps the backup network
    sync(lab_hosts["h1"])
    assert candidate_destinations(vm_of(guest), "cold") == []
    plan = plan_move(guest, None, mode="cold")
    _audit(plan)
    item = plan.items.get()
    assert item.destination is None and item.destination_reason.startswith("No host passes")
    result = item.check_results.get(check_id="RES-HOST")
    assert result.severity == "block" and "No destination host" in result.message


def test_database_queries_do_not_grow_with_the_number_of_vms(lab_guests: LabGuests, plan_move: Planner) -> None:
    guests = [lab_guests.define("h1", nics=[NicSpec("app-net")], start=False) for _ in range(4)]
    one, four = plan_move(guests[0], "h2", mode="cold"), plan_move(guests, "h2", mode="cold")
    counts = []
    for plan in (one, four):
        with CaptureQueriesContext(connection) as queries:
            evaluate_plan(plan)
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
