"""Adopted live moves keep control: after the worker (or only its work horse) is killed, the run is adopted
at once on RQ's and the process table's evidence (not when its lease runs out: the lease here is ten
minutes) and the same monitor carries on — progress, the plan's convergence policy with its remaining
steps, post-copy, cancel. The inventory meanwhile keeps the VM where it runs."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from inventory.hypervisor import migrate as hv
from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import TERMINAL_RUN_STATES, RunStatus
from migrations_app.models import MigrationRun
from migrations_app.services.runs import request_cancel, start_item
from tests.engine.conftest import Workers, plan_item
from tests.engine.linux import define_linux, http, wait_for
from tests.labguests import LabGuests

pytestmark = [pytest.mark.lab]

#: far longer than any of these tests: an adoption seen here came from evidence of the death, not the lease
LONG_LEASE = "600"


def _busy(lab_guests: LabGuests, ip: str) -> tuple[Any, str]:
    guest = define_linux(lab_guests, "h1", ip)
    boot_id = http(ip, "/cgi-bin/bootid")
    # 16 MiB rewritten at ~40 MB/s: far more than an 8 MiB/s cap can carry in any downtime allowed
    assert "dirty started" in http(ip, "/cgi-bin/dirty?40,16")
    return guest, boot_id


def _ended(run_id: int, timeout: float = 400) -> MigrationRun:
    wait_for(lambda: MigrationRun.objects.get(pk=run_id).status in TERMINAL_RUN_STATES, timeout=timeout)
    return MigrationRun.objects.select_related("vm").get(pk=run_id)


def _steps(run: MigrationRun) -> list[float]:
    limits = [s for s in run.samples.order_by("at", "pk").values_list("downtime_limit_ms", flat=True) if s]
    return sorted(set(limits), key=limits.index)


def _resumed_at(run_id: int) -> Any:
    return (
        MigrationRun.objects.get(pk=run_id)
        .samples.filter(note__contains="monitor resumed")
        .values_list("at", flat=True)
        .first()
    )


def test_an_adopted_move_applies_the_remaining_convergence_steps_and_aborts_as_the_plan_says(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    guest, boot_id = _busy(lab_guests, "10.78.0.72")
    item = plan_item(
        people,
        lab_hosts,
        guest,
        "h2",
        bandwidth_mib_s=8,
        max_downtime_ms=400,
        auto_converge=False,
        postcopy_allowed=False,
        on_no_convergence="abort",
    )
    workers.start(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)
    workers.start(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)  # the other one runs the adopt job
    workers.start_watcher(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)
    run = start_item(people["alice"], item)
    wait_for(lambda: MigrationRun.objects.get(pk=run.pk).samples.filter(bytes_processed__gt=0).exists(), timeout=120)
    run.refresh_from_db()
    assert run.status == RunStatus.TRANSFERRING and _steps(run) == [100]  # no step raised yet
    workers.kill(workers.owner(run.worker))  # SIGKILL to the worker and its work horse
    wait_for(lambda: _resumed_at(run.pk), timeout=60)
    run = _ended(run.pk)
    assert run.status == RunStatus.FAILED, (run.error, run.outcome)
    assert "did not converge" in run.error and "keeps running on h1" in run.outcome
    # every step of the plan was applied, the later ones by the adopted monitor
    assert _steps(run) == [100, 200, 400]
    resumed = _resumed_at(run.pk)
    later = list(run.samples.filter(at__gt=resumed).exclude(note="").values_list("note", flat=True))
    assert any("raised to" in n for n in later) and any("aborting" in n for n in later), later
    assert lab_guests.where(guest) == {"h1": "running"}
    assert not hv.locate(lab_hosts["h1"].uri, guest.uuid).job_active
    assert http("10.78.0.72", "/cgi-bin/bootid") == boot_id


def test_an_adopted_move_is_cancelled_within_seconds_and_the_inventory_keeps_the_vm_on_its_source(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    ip = "10.78.0.73"
    guest = define_linux(lab_guests, "h1", ip)
    boot_id = http(ip, "/cgi-bin/bootid")
    item = plan_item(people, lab_hosts, guest, "h2", bandwidth_mib_s=2, auto_converge=False)
    mover = workers.start(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)
    run = start_item(people["alice"], item)
    wait_for(lambda: MigrationRun.objects.get(pk=run.pk).samples.filter(bytes_processed__gt=0).exists(), timeout=120)
    run.refresh_from_db()
    horse = int(run.worker.rsplit(":", 1)[1])
    assert horse != mover.pid
    os.kill(horse, signal.SIGKILL)  # only the work horse: its worker sees it die and adopts the run at once
    wait_for(lambda: _resumed_at(run.pk), timeout=60)
    assert mover.poll() is None
    # the incoming half on h2 is paused and transient: a sync of h2 leaves the VM where it runs
    assert lab_guests.where(guest).get("h2") == "3"  # VIR_DOMAIN_PAUSED
    assert sync_host(lab_hosts["h2"].pk).ok and sync_host(lab_hosts["h1"].pk).ok
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    assert vm.host.name == "h1" and vm.state == "running"
    request_cancel(people["alice"], MigrationRun.objects.get(pk=run.pk))
    run = _ended(run.pk, timeout=60)
    assert run.status == RunStatus.CANCELLED, (run.status, run.error, run.outcome)
    assert "keeps running on h1" in run.outcome
    assert lab_guests.where(guest) == {"h1": "running"}
    assert not hv.locate(lab_hosts["h1"].uri, guest.uuid).job_active
    assert http(ip, "/cgi-bin/bootid") == boot_id


def test_a_worker_killed_during_post_copy_is_adopted_and_the_move_finishes_on_the_destination(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    guest, boot_id = _busy(lab_guests, "10.78.0.74")
    item = plan_item(
        people,
        lab_hosts,
        guest,
        "h2",
        bandwidth_mib_s=8,
        max_downtime_ms=400,
        auto_converge=False,
        postcopy_allowed=True,
        on_no_convergence="postcopy",
    )
    workers.start(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)
    workers.start(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)
    workers.start_watcher(VMPORTAL_RUN_LEASE_SECONDS=LONG_LEASE)
    run = start_item(people["alice"], item)
    wait_for(lambda: MigrationRun.objects.get(pk=run.pk).samples.filter(phase="postcopy").exists(), timeout=300)
    workers.kill(workers.owner(MigrationRun.objects.get(pk=run.pk).worker))
    wait_for(lambda: _resumed_at(run.pk) or MigrationRun.objects.get(pk=run.pk).status in TERMINAL_RUN_STATES)
    run = _ended(run.pk)
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.outcome)
    assert lab_guests.where(guest) == {"h2": "running"}
    assert VirtualMachine.objects.get(uuid=guest.uuid).host.name == "h2"
    assert wait_for(lambda: http("10.78.0.74", "/cgi-bin/bootid"), timeout=30) == boot_id
