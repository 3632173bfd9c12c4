"""Which runs the watcher adopts: those whose lease ran out, and before that those whose owner is known
dead — RQ failed its job (the work horse was killed) or its process is gone. A run whose owner lives and
renews its lease is left alone, and so is one whose job Redis lost (no evidence either way)."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import timedelta
from typing import Any

import django_rq
import pytest
from django.utils import timezone
from rq.job import JobStatus

from inventory.models import VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.jobs import MIGRATION_QUEUE
from migrations_app.models import MigrationPlan, MigrationRun, PlanItem
from migrations_app.services import reconcile
from tests.base import domain_xml, node_file_host

pytestmark = pytest.mark.django_db


def _noop() -> None:
    return None


@pytest.fixture
def run_factory(people: dict[str, Any]) -> Any:
    uuids = iter(f"dddddddd-0000-0000-0000-{i:012d}" for i in range(1, 50))
    domains = []
    chosen = [next(uuids) for _ in range(6)]
    for i, uuid in enumerate(chosen):
        domains.append(domain_xml(f"vm-{i}", uuid, mac=f"52:54:00:00:03:{i:02x}"))
    source = node_file_host("orph-src", domains)
    destination = node_file_host("orph-dst", [])
    assert sync_host(source.pk).ok
    plan = MigrationPlan.objects.create(name="p", requester=people["alice"], team=people["payments"], mode="live")
    free = iter(chosen)

    def make(**fields: Any) -> MigrationRun:
        vm = VirtualMachine.objects.get(uuid=next(free))
        item = PlanItem.objects.create(plan=plan, vm=vm, source=source, destination=destination, mode="live")
        defaults = {"status": "transferring", "lease_until": timezone.now() + timedelta(minutes=10)}
        return MigrationRun.objects.create(
            item=item, vm=vm, source=source, destination=destination, mode="live", **{**defaults, **fields}
        )

    return make


def test_orphans_are_found_by_lease_by_a_dead_process_and_by_rq_failing_the_job(run_factory: Any) -> None:
    here = socket.gethostname()
    dead = subprocess.Popen(["true"])  # noqa: S607
    dead.wait()
    queue = django_rq.get_queue(MIGRATION_QUEUE)
    failed_job = queue.enqueue(_noop)
    failed_job.set_status(JobStatus.FAILED)
    live_job = queue.enqueue(_noop)  # queued: still waiting for a worker, nobody is dead
    healthy = run_factory(worker=f"{here}:{os.getpid()}", job_id=live_job.id)
    expired = run_factory(lease_until=timezone.now() - timedelta(seconds=1), worker=f"{here}:1")
    pid_gone = run_factory(worker=f"{here}:{dead.pid}")
    job_failed = run_factory(worker="elsewhere:123", job_id=failed_job.id)
    lost_job = run_factory(worker="elsewhere:123", job_id="not-in-redis")
    adopt_waiting = run_factory(worker="waiting for a worker to adopt it", job_id=live_job.id)
    found = {run_id for run_id, _ in reconcile.orphaned()}
    assert found == {expired.pk, pid_gone.pk, job_failed.pk}
    assert not found & {healthy.pk, lost_job.pk, adopt_waiting.pk}
    queue.empty()


def test_cancel_during_pre_flight_ends_the_run_cancelled_before_anything_is_touched(
    run_factory: Any, people: dict[str, Any]
) -> None:
    from migrations_app.engine.live import LiveMove
    from migrations_app.services.runs import request_cancel

    run = run_factory(status="preflight")
    request_cancel(people["alice"], run)
    run.refresh_from_db()
    assert run.status == "cancelling" and run.cancel_requested
    LiveMove(MigrationRun.objects.select_related("source", "destination", "vm").get(pk=run.pk)).perform()
    run.refresh_from_db()
    assert run.status == "cancelled" and "nothing changed" in run.outcome


def test_a_run_whose_worker_died_in_the_backup_phase_ends_failed_with_its_backup_marked_failed(
    run_factory: Any,
) -> None:
    from migrations_app.models import Backup

    run = run_factory(status="backup", lease_until=timezone.now() - timedelta(seconds=1), worker="elsewhere:1")
    backup = Backup.objects.create(
        vm=run.vm, vm_name=run.vm.name, vm_uuid=run.vm.uuid, host=run.source, run=run, method="push"
    )
    assert {"run": run.pk, "decision": "failed"} in reconcile.adopt_orphans()
    run.refresh_from_db()
    backup.refresh_from_db()
    assert run.status == "failed" and "keeps running on orph-src" in run.outcome
    assert backup.state == "failed" and "worker stopped" in backup.error
