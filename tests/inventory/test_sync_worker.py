"""The worker class runs sync jobs in its own process and forks a work horse for every other queue.

The worker is started as the product starts it (`manage.py rqworker … sync default`, the class from
settings.RQ), on the test database and the tests' Redis database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import django_rq
import pytest
from rq.job import Job

from inventory import jobs
from inventory.models import Host, VirtualMachine
from migrations_app import worker as worker_module
from migrations_app.worker import ReconcilingWorker
from tests.base import REPO, domain_xml, node_file_host
from tests.engine.conftest import worker_env


def stuck(seconds: float) -> str:
    """A job that RQ's SIGALRM timeout cannot end (as a libvirt call blocked in C)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        time.sleep(seconds)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    return "done"


def inherited_database_socket() -> bool:
    """Run in a work horse: whether it was forked with the worker's database connection open."""
    from django.db import connection

    return connection.connection is not None


@pytest.fixture
def queues():  # type: ignore[no-untyped-def]
    qs = [django_rq.get_queue(name) for name in (jobs.SYNC_QUEUE, "default")]
    for q in qs:
        q.empty()
    yield qs
    for q in qs:
        q.empty()


@pytest.mark.django_db(transaction=True)
def test_sync_jobs_run_in_the_worker_process_and_other_jobs_in_a_work_horse(queues) -> None:  # type: ignore[no-untyped-def]
    sync_queue, default_queue = queues
    a = node_file_host("inproc-a", [domain_xml("inproc-vm-a", "dddddddd-0000-0000-0000-000000000001")])
    b = node_file_host("inproc-b", [domain_xml("inproc-vm-b", "dddddddd-0000-0000-0000-000000000002")])
    first = jobs.enqueue_sync(a.pk)
    # a sync of a host that no longer exists fails; the jobs after it still run on a usable connection
    broken = sync_queue.enqueue(jobs.sync_host, 999_999_999)
    second = jobs.enqueue_sync(b.pk)
    in_sync = sync_queue.enqueue(os.getpid)
    in_default = default_queue.enqueue(os.getpid)
    # forked after the sync jobs used the worker's connection
    socket_in_horse = default_queue.enqueue(inherited_database_socket)

    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "manage.py", "rqworker", "--burst", jobs.SYNC_QUEUE, "default"],
        cwd=REPO,
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]

    def job(job_id: str) -> Job:
        return Job.fetch(job_id, connection=sync_queue.connection)

    assert job(first).is_finished and job(second).is_finished
    assert job(broken.id).is_failed
    assert set(VirtualMachine.objects.values_list("name", flat=True)) == {"inproc-vm-a", "inproc-vm-b"}
    assert Host.objects.filter(last_sync_at__isnull=True).count() == 0
    # the sync queue's job ran in the worker process itself, the default queue's in a forked work horse
    assert job(in_sync.id).return_value() == proc.pid
    assert job(in_default.id).return_value() not in (proc.pid, None)
    assert job(socket_in_horse.id).return_value() is False


def test_an_in_process_job_stuck_past_its_timeout_ends_the_worker(queues, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sync_queue = queues[0]
    stops: list[str] = []
    monkeypatch.setattr(worker_module, "HARD_TIMEOUT_GRACE_S", 0)
    monkeypatch.setattr(worker_module, "_hard_stop", lambda job_id, seconds: stops.append(job_id))
    job = sync_queue.enqueue(stuck, 2.5, job_timeout=1)
    ReconcilingWorker([sync_queue], connection=sync_queue.connection).execute_job(job, sync_queue)
    assert stops == [job.id]


def test_a_short_in_process_job_leaves_no_watchdog_behind(queues, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sync_queue = queues[0]
    stops: list[str] = []
    monkeypatch.setattr(worker_module, "HARD_TIMEOUT_GRACE_S", 0)
    monkeypatch.setattr(worker_module, "_hard_stop", lambda job_id, seconds: stops.append(job_id))
    job = sync_queue.enqueue(stuck, 0.1, job_timeout=1)
    ReconcilingWorker([sync_queue], connection=sync_queue.connection).execute_job(job, sync_queue)
    time.sleep(1.5)
    assert job.get_status(refresh=True) == "finished"
    assert stops == []


def test_without_a_work_horse_killing_the_horse_does_nothing(queues) -> None:  # type: ignore[no-untyped-def]
    w = ReconcilingWorker([queues[0]], connection=queues[0].connection)
    assert w.horse_pid == 0
    w.kill_horse()  # would signal the worker's own process group if it did anything


def test_the_heartbeat_of_an_in_process_job_outlasts_its_timeout(queues) -> None:  # type: ignore[no-untyped-def]
    sync_queue, default_queue = queues
    w = ReconcilingWorker(queues, connection=sync_queue.connection)
    in_process = sync_queue.enqueue(os.getpid, job_timeout=600)
    forked = default_queue.enqueue(os.getpid, job_timeout=600)
    assert w.get_heartbeat_ttl(in_process) >= 600
    assert w.get_heartbeat_ttl(forked) < 600
