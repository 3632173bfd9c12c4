"""Sync as an RQ job, run by a real (non-forking) worker against the tests' own Redis database."""

from __future__ import annotations

import django_rq
import pytest
from rq import SimpleWorker

from inventory import jobs
from inventory.choices import Reachability
from inventory.models import Host, VirtualMachine
from tests.base import domain_xml, node_file_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def queue():  # type: ignore[no-untyped-def]
    q = django_rq.get_queue(jobs.SYNC_QUEUE)
    q.empty()
    yield q
    q.empty()


def test_a_queued_sync_job_updates_the_inventory(queue) -> None:  # type: ignore[no-untyped-def]
    host = node_file_host("queued", [domain_xml("job-vm", "cccccccc-0000-0000-0000-000000000001")])
    job_id = jobs.enqueue_sync(host.pk)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    job = queue.fetch_job(job_id)
    assert job is not None and job.is_finished, job.latest_result() if job else None
    assert job.return_value()["created"] == 1
    assert VirtualMachine.objects.filter(host=host, name="job-vm").exists()
    host.refresh_from_db()
    assert host.reachability == Reachability.REACHABLE


def test_the_schedule_queues_every_enabled_host(queue) -> None:  # type: ignore[no-untyped-def]
    a = node_file_host("sched-a", [])
    node_file_host("sched-b", [])
    Host.objects.filter(name="sched-b").update(enabled=False)
    assert jobs.sync_all_hosts() == [a.pk]
    assert queue.count == 1
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    a.refresh_from_db()
    assert a.last_sync_at is not None
    assert Host.objects.get(name="sched-b").last_sync_at is None


def test_the_cron_configuration_registers_the_sync() -> None:
    from rq import cron

    import vmportal.cron  # noqa: F401  (registers on import)

    assert any(entry["func"] is jobs.sync_all_hosts for entry in cron._job_data_registry)
