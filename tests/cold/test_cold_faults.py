"""Faults during a cold copy: an injected failure and a cancel roll back; a daemon restart resumes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from inventory.models import Host
from migrations_app.choices import RunStatus
from migrations_app.engine import cold, transfer
from migrations_app.models import MigrationRun
from migrations_app.services.runs import request_cancel, start_item
from tests.base import labctl
from tests.cold.conftest import FaultHook, cold_item, forget_later
from tests.labguests import DiskSpec, Guest, LabGuests, NicSpec

pytestmark = [pytest.mark.lab]

MiB = 1024 * 1024


def _guest(lab_guests: LabGuests, *, capacity_mib: int = 64, write_mib: int = 16) -> Guest:
    return lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=capacity_mib, write_mib=write_mib)],
        nics=[NicSpec(network="app-net")],
    )


def _assert_rolled_back(lab_guests: LabGuests, guest: Guest, destination: str) -> None:
    """Source running again, nothing of the move left on the destination."""
    assert lab_guests.where(guest) == {"h1": "running"}
    pool = lab_guests.conn(destination).storagePoolLookupByName("local")
    pool.refresh(0)
    assert not [v for v in pool.listVolumes() if v.startswith(guest.name)]
    source_pool = lab_guests.conn("h1").storagePoolLookupByName("local")
    source_pool.refresh(0)
    assert not [v for v in source_pool.listVolumes() if v.startswith("vmportal-run")]


def test_a_failure_injected_during_the_copy_rolls_back(
    lab_guests: LabGuests,
    lab_hosts: dict[str, Host],
    people: dict[str, Any],
    fault_hook: FaultHook,
    monkeypatch: Any,
    settings: Any,
) -> None:
    settings.COLD_CHUNK_BYTES = 4 * MiB
    guest = _guest(lab_guests)
    item = cold_item(people, lab_hosts, guest, "h2", formats={"vda": "qcow2"})

    def fail(copy: transfer.DiskCopy, index: int) -> None:
        if index == 1:
            raise OSError("injected: the storage network went away")

    fault_hook(fail)
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    forget_later(lab_guests, guest, f"{guest.name}-vda.qcow2")
    assert run.status == RunStatus.ROLLED_BACK, (run.error, run.outcome)
    assert "injected" in run.error
    assert "running again on h1" in run.outcome and "Removed from h2" in run.outcome, run.outcome
    assert run.pending_cleanup == {}
    assert run.samples.filter(bytes_processed__gt=0).exists()  # it really was copying
    _assert_rolled_back(lab_guests, guest, "h2")
    assert lab_guests.conn("h1").lookupByUUIDString(guest.uuid).isPersistent()


def test_cancel_during_a_cold_copy_rolls_back_cleanly(
    lab_guests: LabGuests,
    lab_hosts: dict[str, Host],
    people: dict[str, Any],
    fault_hook: FaultHook,
    monkeypatch: Any,
    settings: Any,
) -> None:
    settings.COLD_CHUNK_BYTES = 4 * MiB
    guest = _guest(lab_guests)
    item = cold_item(people, lab_hosts, guest, "h2")
    run = start_item(people["alice"], item)
    seen: dict[str, Any] = {}

    def cancel_from_elsewhere(copy: transfer.DiskCopy, index: int) -> None:
        if index != 1:
            return

        def target() -> None:
            from django.db import connection

            try:
                row = MigrationRun.objects.get(pk=run.pk)
                seen["status"] = row.status
                request_cancel(people["alice"], row)
            finally:
                connection.close()

        worker = threading.Thread(target=target)
        worker.start()
        worker.join()

    fault_hook(cancel_from_elsewhere)
    cold.execute(run.pk)
    run.refresh_from_db()
    forget_later(lab_guests, guest, f"{guest.name}-vda.raw")
    assert seen["status"] == RunStatus.TRANSFERRING
    assert run.status == RunStatus.CANCELLED, (run.error, run.outcome)
    assert run.outcome.startswith("Cancelled. Rolled back: the VM is running again on h1"), run.outcome
    assert run.error == "" and run.pending_cleanup == {}
    _assert_rolled_back(lab_guests, guest, "h2")


def test_a_copy_interrupted_by_restarting_the_destination_daemon_resumes_and_verifies(
    lab_guests: LabGuests,
    lab_hosts: dict[str, Host],
    people: dict[str, Any],
    fault_hook: FaultHook,
    monkeypatch: Any,
    settings: Any,
) -> None:
    settings.COLD_CHUNK_BYTES = 4 * MiB
    guest = _guest(lab_guests, capacity_mib=320, write_mib=256)
    item = cold_item(people, lab_hosts, guest, "h3")
    restarted = threading.Event()
    restarter: list[threading.Thread] = []

    def restart_h3(copy: transfer.DiskCopy, index: int) -> None:
        if index != 8 or restarter:
            return

        # from another thread, while the copy carries on: the daemon dies in the middle of a chunk
        def restart() -> None:
            labctl("stop-host", "h3")
            time.sleep(1.0)
            labctl("start-host", "h3")
            restarted.set()

        restarter.append(threading.Thread(target=restart))
        restarter[0].start()

    fault_hook(restart_h3)
    try:
        run = start_item(people["alice"], item)
        cold.execute(run.pk)
    finally:
        for thread in restarter:
            thread.join(timeout=60)
        labctl("start-host", "h3", check=False)
    run.refresh_from_db()
    forget_later(lab_guests, guest, f"{guest.name}-vda.raw")
    assert restarted.is_set()
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw, run.outcome)
    report = run.scratch["transfers"][0]
    print(
        f"\ncopy of a {report['size']} B file ({report['data_bytes']} B data) across a daemon restart: "
        f"faults {report['faults']}, resumed at chunk(s) {report['resumed_at']}, data sent {report['bytes_sent']} B, "
        f"re-sent {report['bytes_resent']} B, read back to resume/verify {report['bytes_verified']} B, verified {report['verified']}"
    )
    assert report["faults"] >= 1 and report["resumed_at"] and report["verified"]
    assert report["resumed_at"][0] >= 8  # not started over
    assert report["bytes_resent"] <= 2 * report["chunk_size"] < report["data_bytes"] // 10
    assert report["bytes_sent"] - report["bytes_resent"] <= report["data_bytes"] + 4096
    assert lab_guests.where(guest) == {"h3": "running"}
    assert run.samples.filter(note__contains="resumed").exists()


class WorkerDied(BaseException):
    """Stands in for the worker process dying: nothing in the engine catches it."""


def test_a_cold_run_whose_worker_died_mid_copy_is_rolled_back_by_the_reconciler(
    lab_guests: LabGuests,
    lab_hosts: dict[str, Host],
    people: dict[str, Any],
    fault_hook: FaultHook,
    monkeypatch: Any,
    settings: Any,
) -> None:
    from django.utils import timezone

    from migrations_app.services import reconcile

    settings.COLD_CHUNK_BYTES = 4 * MiB
    guest = _guest(lab_guests)
    item = cold_item(people, lab_hosts, guest, "h2")

    def die(copy: transfer.DiskCopy, index: int) -> None:
        if index == 1:
            raise WorkerDied()

    fault_hook(die)
    run = start_item(people["alice"], item)
    with pytest.raises(WorkerDied):
        cold.execute(run.pk)
    fault_hook(None)
    forget_later(lab_guests, guest, f"{guest.name}-vda.raw")
    run.refresh_from_db()
    assert run.status == RunStatus.TRANSFERRING
    assert lab_guests.where(guest) == {"h1": "5"}  # shut off on the source, half copied
    MigrationRun.objects.filter(pk=run.pk).update(lease_until=timezone.now())  # the lease ran out
    results = reconcile.reconcile()
    assert {"run": run.pk, "decision": "rolled back"} in results
    run.refresh_from_db()
    assert run.status == RunStatus.ROLLED_BACK, (run.error, run.outcome)
    assert "running again on h1" in run.outcome
    _assert_rolled_back(lab_guests, guest, "h2")
