"""Backup and process checks: backup, power state, other plans, change window and freezes, inventory age."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_rq
import pytest
from django.utils import timezone

from inventory import jobs as inventory_jobs
from inventory.models import Host
from migrations_app.checks import AuditEnvironment, CheckContext, run_check
from migrations_app.checks.registry import REGISTRY
from migrations_app.models import Prediction
from migrations_app.services.audits import run_audit
from migrations_app.services.plans import latest_audit
from tests.checks.conftest import Planner, outcomes, sync, vm_of
from tests.labguests import LabGuests

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


def test_bak_recent_blocks_without_a_backup_and_passes_when_the_run_takes_one(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    sync(*lab_hosts.values())  # the other hosts' pools are known
    guest = lab_guests.define("h1", nics=[], start=False)
    _mode, without = outcomes(plan_move(guest, "h2", mode="cold", fresh_backup=False))
    assert without["BAK-RECENT"].severity == "block" and "No verified backup known" in without["BAK-RECENT"].message
    _mode, fresh = outcomes(plan_move(guest, "h2", mode="cold", fresh_backup=True))
    assert fresh["BAK-RECENT"].severity == "pass" and "take" in fresh["BAK-RECENT"].message
    # the lab's hosts each have a pool named 'backup': a fresh backup of h1's VM goes to another host's
    assert fresh["BAK-RECENT"].source["location"] in ("h2/backup", "h3/backup")
    assert fresh["BAK-RECENT"].source["survives the VM's host"] is True


def test_proc_state_blocks_a_stopped_vm_live_only(lab_guests: LabGuests, plan_move: Planner) -> None:
    stopped = lab_guests.define("h1", nics=[], start=False)
    _mode, live = outcomes(plan_move(stopped, "h2", mode="live"))
    assert live["PROC-STATE"].severity == "block" and live["PROC-STATE"].source["state"] == "shutoff"
    _mode, cold = outcomes(plan_move(stopped, "h2", mode="cold"))
    assert cold["PROC-STATE"].severity == "pass"
    running = lab_guests.define("h1", nics=[], start=True)
    _mode, ok = outcomes(plan_move(running, "h2", mode="live"))
    assert ok["PROC-STATE"].severity == "pass"


def test_proc_busy_blocks_a_vm_already_in_another_active_plan(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", nics=[], start=False)
    first = plan_move(guest, "h2", mode="cold")
    _mode, results = outcomes(first)
    assert results["PROC-BUSY"].severity == "pass"
    second = plan_move(guest, "h2", mode="cold")
    _mode, results = outcomes(second)
    assert results["PROC-BUSY"].severity == "block" and first.name in results["PROC-BUSY"].message
    assert results["PROC-BUSY"].source["other plans"][0]["plan"] == first.pk


def test_proc_window_blocks_in_a_freeze_and_warns_about_an_ended_window(
    lab_guests: LabGuests, plan_move: Planner, settings: Any
) -> None:
    now = timezone.now()
    guest = lab_guests.define("h1", nics=[], start=False)
    window = {"window_start": now + timedelta(days=1), "window_end": now + timedelta(days=1, hours=2)}
    # a freeze is a setting (VMPORTAL_CHANGE_FREEZES): START/END pairs
    settings.CHANGE_FREEZES = [(now + timedelta(hours=12), now + timedelta(days=3))]
    _mode, frozen = outcomes(plan_move(guest, "h2", mode="cold", **window))
    assert frozen["PROC-WINDOW"].severity == "block" and "freeze" in frozen["PROC-WINDOW"].message
    settings.CHANGE_FREEZES = []
    _mode, fine = outcomes(plan_move(guest, "h2", mode="cold", **window))
    assert fine["PROC-WINDOW"].severity == "info"  # fits, but there is no prediction to compare with yet
    plan = plan_move(guest, "h2", mode="cold", **window)
    plan.window_start, plan.window_end = now - timedelta(hours=3), now - timedelta(hours=1)
    plan.save()
    _mode, ended = outcomes(plan)
    assert ended["PROC-WINDOW"].severity == "warn" and "ended" in ended["PROC-WINDOW"].message


def test_proc_window_warns_when_the_prediction_does_not_fit(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    now = timezone.now()
    guest = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move(
        guest, "h2", mode="cold", window_start=now + timedelta(hours=1), window_end=now + timedelta(hours=2)
    )
    item = plan.items.select_related("vm__host", "destination").get()
    from inventory.hypervisor.facts import FactsReader

    with FactsReader() as reader:
        env = AuditEnvironment(reader, plan)
        env.load([item.vm], [item])
        env.predictions[item.pk] = {"cold": Prediction(item=item, mode="cold", duration_s=3 * 3600)}
        ctx = CheckContext(env, vm_of(guest), "cold", item.destination, item, item.network_map, item.storage_map)
        outcome = run_check(REGISTRY["PROC-WINDOW"], ctx)
    assert outcome.severity == "warn" and "180.0 min" in outcome.message
    assert outcome.source["predicted s"] == 3 * 3600


def test_proc_fresh_queues_a_sync_of_a_stale_host(
    lab_guests: LabGuests,
    plan_move: Planner,
    lab_hosts: dict[str, Host],
    django_capture_on_commit_callbacks: Any,
) -> None:
    queue = django_rq.get_queue(inventory_jobs.SYNC_QUEUE)
    queue.empty()
    guest = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move(guest, "h2", mode="cold")
    _mode, fresh = outcomes(plan)
    assert fresh["PROC-FRESH"].severity == "pass"
    Host.objects.filter(pk=lab_hosts["h2"].pk).update(last_sync_at=timezone.now() - timedelta(hours=2))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            summary = run_audit(latest_audit(plan).pk)  # type: ignore[union-attr]
        assert summary["resyncs"] == [lab_hosts["h2"].pk]
        result = latest_audit(plan).results.get(check_id="PROC-FRESH")  # type: ignore[union-attr]
        assert result.severity == "info" and "h2" in result.message
        assert [j.args for j in queue.jobs] == [(lab_hosts["h2"].pk,)]
    finally:
        queue.empty()


def test_bak_recent_passes_with_a_recent_verified_backup(
    lab_guests: LabGuests, plan_move: Planner, lab_hosts: dict[str, Host]
) -> None:
    from migrations_app.models import Backup, BackupState

    guest = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move(guest, "h2", mode="cold", fresh_backup=False)
    vm = vm_of(guest)
    old = timezone.now() - timedelta(days=30)
    common = {
        "vm": vm,
        "vm_name": vm.name,
        "vm_uuid": vm.uuid,
        "host": lab_hosts["h1"],
        "pool": "local",
        "method": "copy",
    }
    Backup.objects.create(**common, state=BackupState.READY, verified=True, created_at=old)  # too old
    Backup.objects.create(**common, state=BackupState.FAILED, verified=False)  # not usable
    _mode, results = outcomes(plan)
    assert results["BAK-RECENT"].severity == "block"
    # beside the disk on the VM's own host: a backup, but one lost with the host
    Backup.objects.create(**common, state=BackupState.READY, verified=True)
    _mode, results = outcomes(plan)
    assert results["BAK-RECENT"].severity == "warn", results["BAK-RECENT"].message
    assert "only recent backup" in results["BAK-RECENT"].message and "own host h1" in results["BAK-RECENT"].message
    assert results["BAK-RECENT"].source["location"] == "h1/local"
    # on shared storage: it survives the host
    shared = {**common, "pool": "shared", "created_at": timezone.now() - timedelta(minutes=5)}
    Backup.objects.create(**shared, state=BackupState.READY, verified=True, on_shared_storage=True)
    _mode, results = outcomes(plan)
    assert results["BAK-RECENT"].severity == "pass" and results["BAK-RECENT"].source["location"] == "h1/shared"
    # on another host: passes and says where the latest safe one is, beside the newest
    Backup.objects.create(
        **{**common, "host": lab_hosts["h2"], "pool": "backup"}, state=BackupState.READY, verified=True
    )
    Backup.objects.create(**common, state=BackupState.READY, verified=True)  # newer, but on h1 again
    _mode, results = outcomes(plan)
    assert results["BAK-RECENT"].severity == "pass" and results["BAK-RECENT"].source["location"] == "h2/backup"
    assert "h2/backup" in results["BAK-RECENT"].message and results["BAK-RECENT"].source["newest"] == "h1/local"
