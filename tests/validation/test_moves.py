"""Real moves of the lab's Linux guest (guest agent, data disk at /data, network filter, probes),
validated after the switch-over: clean live and cold moves pass every check; a guest that panics
after arriving fails VAL-CONSOLE with the panic lines, and the cold move rolls back to the source."""

from __future__ import annotations

from typing import Any

import pytest

from inventory.models import Host, VirtualMachine
from migrations_app.choices import RunStatus, ValidationStatus
from migrations_app.engine import cold, live
from migrations_app.models import AuditLogEntry, MigrationRun, Probe
from migrations_app.services import live as live_pages
from migrations_app.services.runs import start_item
from migrations_app.validation import REGISTRY
from tests.cold.conftest import cold_item
from tests.engine.conftest import plan_item, sync
from tests.engine.linux import define_linux, http, wait_for
from tests.labguests import LabGuests
from tests.validation.conftest import OneShotPanic

pytestmark = [pytest.mark.lab]


def _results(run: MigrationRun) -> dict[str, Any]:
    return {r.check_id: r for r in run.validation.results.all()}


def _add_probes(guest: Any, ip: str) -> None:
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    Probe.objects.create(vm=vm, kind="tcp", port=80)  # address from the guest agent
    Probe.objects.create(vm=vm, kind="http", address=ip, port=80, path="/", expect_status=200)


def _assert_all_pass(run: MigrationRun) -> dict[str, Any]:
    results = _results(run)
    assert list(results) == list(REGISTRY), "every VAL-* check ran, in catalogue order"
    bad = {cid: (r.outcome, r.message) for cid, r in results.items() if r.outcome not in ("pass", "info")}
    assert bad == {}
    assert run.validation.status == ValidationStatus.PASSED
    assert run.validation.duration_ms and run.validation.duration_ms > 0
    # the checks' deliberate waits are reported beside the validation's time (the console is always watched)
    waits = run.validation.waits
    assert set(waits) == {"agent", "console", "probes", "total"} and waits["console"] > 0
    assert waits["total"] == pytest.approx(waits["agent"] + waits["console"] + waits["probes"], abs=0.2)
    assert waits["total"] <= run.validation.duration_ms
    for r in results.values():
        assert set(r.evidence) == {"expected", "found"} and r.at is not None
    return results


def test_clean_live_move_of_the_linux_guest_passes_every_check(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.131"
    guest = define_linux(
        lab_guests, "h1", ip, agent=True, data_disk=True, nic_filter="lab-clean-traffic", team="payments"
    )
    item = plan_item(people, lab_hosts, guest, "h2", max_downtime_ms=500)
    _add_probes(guest, ip)
    run = start_item(people["alice"], item)
    live.execute(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.outcome)
    results = _assert_all_pass(run)
    assert lab_guests.where(guest) == {"h2": "running"}
    # the checks looked at real things
    assert results["VAL-CONTINUITY"].outcome == "pass"
    assert (
        results["VAL-CONTINUITY"].evidence["expected"]["boot_id"]
        == results["VAL-CONTINUITY"].evidence["found"]["boot_id"]
    )
    assert results["VAL-AGENT"].evidence["found"]["filesystems"] == ["/data"]
    assert ip in results["VAL-AGENT"].evidence["found"]["addresses"][guest.macs[0]]
    assert results["VAL-SECURITY"].evidence["found"]["filters"] == {guest.macs[0]: "lab-clean-traffic"}
    assert results["VAL-NICS"].evidence["found"][guest.macs[0]] == {"network": "app-lan", "link": "up"}
    assert "2 probe(s) passed" in results["VAL-PROBES"].message
    # measured downtime beside the plan's limit
    downtime = results["VAL-DOWNTIME"]
    assert downtime.evidence == {"expected": {"limit_ms": 500}, "found": {"downtime_ms": run.downtime_ms}}
    assert "limit of 500 ms" in downtime.message
    assert "validation passed in" in run.outcome
    snapshot = live_pages.validation_snapshot(run)
    assert snapshot is not None and snapshot["status"] == "passed" and snapshot["failed"] == 0
    assert [r["check_id"] for r in snapshot["results"]] == list(REGISTRY)


def test_clean_cold_move_of_the_linux_guest_passes_every_check(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.132"
    guest = define_linux(lab_guests, "h1", ip, agent=True, data_disk=True, nic_filter="lab-clean-traffic")
    item = cold_item(people, lab_hosts, guest, "h3", shutdown_timeout_s=30, allow_force_off=False)
    _add_probes(guest, ip)
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.outcome)
    results = _assert_all_pass(run)
    assert lab_guests.where(guest) == {"h3": "running"}
    assert results["VAL-AGENT"].evidence["found"]["filesystems"] == ["/data"]
    assert results["VAL-DISKS"].evidence["found"]["checksums"]  # the copies were verified by checksum
    assert results["VAL-CONTINUITY"].outcome == "info"  # a cold move restarts the guest
    assert results["VAL-DOWNTIME"].evidence["found"]["unavailable_s"] > 0


def test_guest_that_panics_after_arriving_fails_console_and_the_cold_move_rolls_back(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], panic_server: OneShotPanic
) -> None:
    ip = "10.78.0.133"
    guest = define_linux(lab_guests, "h1", ip, agent=True, onboot_url=panic_server.url)
    wait_for(lambda: panic_server.answers, timeout=60)
    assert panic_server.answers == ["ok"]  # the first boot, on the source, does not panic
    item = cold_item(people, lab_hosts, guest, "h2", shutdown_timeout_s=30, allow_force_off=False)
    panic_server.arm()
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    assert panic_server.answers[:2] == ["ok", "panic 1"]  # it booted on the destination, then was asked to panic
    assert run.status == RunStatus.FAILED, run.outcome
    console = _results(run)["VAL-CONSOLE"]
    assert console.outcome == "fail"
    assert any("Kernel panic" in line for line in console.evidence["found"]["lines"]), console.evidence
    assert run.validation.status == ValidationStatus.FAILED
    assert "VAL-CONSOLE" in run.error
    assert "Rolled back" in run.outcome and "running again on h1" in run.outcome
    # the VM runs on the source again (it booted without panicking), and nothing is left on the destination
    assert lab_guests.where(guest) == {"h1": "running"}
    wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=60)
    assert VirtualMachine.objects.get(uuid=guest.uuid).host.name == "h1"
    assert AuditLogEntry.objects.filter(verb="run.failed").exists()
    sync(lab_hosts, "h1", "h2")
