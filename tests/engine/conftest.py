"""Fixtures for the live-migration engine tests on the real lab."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import django_rq
import pytest
from django.conf import settings
from django.db import connection

from inventory.models import Host, StoragePool, VirtualMachine
from inventory.services.hosts import register_host
from inventory.services.sync import sync_host
from migrations_app.jobs import MIGRATION_QUEUE
from migrations_app.models import MigrationPlan, PlanItem
from migrations_app.services.plans import default_network_map, default_storage_map
from tests.base import REPO, make_personas
from tests.labguests import Guest

#: the app segment's network on each lab host (named differently on purpose)
APP_NETWORK = {"h1": "app-net", "h2": "app-lan", "h3": "applan"}


@pytest.fixture
def lab_hosts(lab: dict[str, Any], transactional_db: None) -> dict[str, Host]:
    """The three lab hosts registered and synced, with the shared pool marked shared as an admin would."""
    django_rq.get_queue(MIGRATION_QUEUE).empty()
    hosts = {}
    for entry in lab["hosts"]:
        hosts[entry["name"]] = register_host(
            None, name=entry["name"], uri=entry["uri"], migration_uri=entry["migration_uri"], sync=False
        )
    return hosts


@pytest.fixture
def people(transactional_db: None) -> dict[str, Any]:
    return make_personas()


def sync(hosts: dict[str, Host], *names: str) -> None:
    for name in names or tuple(hosts):
        assert sync_host(hosts[name].pk).ok, name
        StoragePool.objects.filter(host=hosts[name], name="shared").update(shared_by_admin=True)


def plan_item(
    people: dict[str, Any], hosts: dict[str, Host], guest: Guest, destination: str, **options: Any
) -> PlanItem:
    """A plan with one item for `guest`, with the default network and storage maps, made directly (no audit)."""
    sync(hosts)
    # the backup phase before a move has its own tests; these are about the live move itself
    options.setdefault("fresh_backup", False)
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    dest = Host.objects.prefetch_related("networks", "pools").get(pk=hosts[destination].pk)
    plan = MigrationPlan.objects.create(
        name=f"move {guest.name}",
        requester=people["alice"],
        team=people["payments"],
        mode="live",
        status="approved",
        **options,
    )
    return PlanItem.objects.create(
        plan=plan,
        vm=vm,
        source=vm.host,
        destination=dest,
        mode="live",
        # what an admin's network mapping would give: the app segment under the destination's name
        network_map={mac: APP_NETWORK[destination] for mac in default_network_map(vm, dest)},
        storage_map=default_storage_map(vm, dest),
    )


# ---- worker subprocesses ---------------------------------------------------------------------------


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a worker process on the test database and the tests' Redis database."""
    parts = urlsplit(settings.DATABASE_URL)
    env = dict(os.environ)
    env.update(
        VMPORTAL_DATABASE_URL=urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}")),
        VMPORTAL_REDIS_URL=settings.REDIS_URL,
        VMPORTAL_TESTING="1",
        **extra,
    )
    return env


class Workers:
    """RQ worker processes (each in its own process group, so the work horse it forks dies with it)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []

    def start(self, *, burst: bool = False, **env: str) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "manage.py",
            "rqworker",
            "--worker-class",
            "migrations_app.worker.ReconcilingWorker",
            MIGRATION_QUEUE,
        ]
        if burst:
            args.append("--burst")
        # the log goes to a file: a pipe nobody reads would block a chatty worker
        log = tempfile.NamedTemporaryFile(prefix="vmportal-worker-", suffix=".log", delete=False)
        self.logs.append(log.name)
        proc = subprocess.Popen(  # noqa: S603
            args, cwd=REPO, env=worker_env(**env), start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs.append(proc)
        return proc

    def start_watcher(self, **env: str) -> subprocess.Popen[bytes]:
        """`manage.py watch_runs`, which adopts a run within seconds of its worker's death."""
        log = tempfile.NamedTemporaryFile(prefix="vmportal-watcher-", suffix=".log", delete=False)
        self.logs.append(log.name)
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "manage.py", "watch_runs", "--interval", "1"],
            cwd=REPO,
            env=worker_env(**env),
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def owner(self, worker: str) -> subprocess.Popen[bytes]:
        """The worker process whose work horse (or itself) is `worker` ("host:pid", as a run records it)."""
        pid = int(worker.rsplit(":", 1)[1])
        for proc in self.procs:
            if proc.pid == pid or pid in self.children(proc.pid):
                return proc
        raise AssertionError(f"no worker of this test runs {worker}")

    @staticmethod
    def children(pid: int) -> list[int]:
        """Processes whose parent is `pid` (RQ's work horse puts itself in a process group of its own)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
        return found

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the worker and to its work horse (the process that really runs the job)."""
        for pid in [*self.children(proc.pid), proc.pid]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                # SIGTERM would wait for a running move; the lab_guests clean-up aborts any left over
                self.kill(proc, signal.SIGKILL)
        for path in self.logs:
            os.unlink(path)


@pytest.fixture
def workers() -> Iterator[Workers]:
    pool = Workers()
    try:
        yield pool
    finally:
        pool.stop_all()
