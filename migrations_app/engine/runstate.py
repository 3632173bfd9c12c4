"""The state of migration runs that the engines own: claiming a run under per-host limits, its lease, its
place in the queue, and its end.

Per-host limits (Host.max_outgoing / max_incoming) hold across any number of workers because every
claim happens in one PostgreSQL transaction that first locks the source and destination `Host` rows
(`SELECT … FOR UPDATE`, always in primary-key order so two claims cannot deadlock), then counts the
active runs of those hosts and moves the run from queued to preflight with a conditional UPDATE. Two
workers claiming for the same host are therefore serialised by the row lock, and a run can be claimed
only once. A run that does not fit stays queued without holding a worker.

When a run ends, `run_finished` is sent after the commit; the services connect to it (queue the waiting
runs again, let the plan follow), so the engine never calls up into them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from inventory.models import Host
from migrations_app import auditlog, events
from migrations_app.choices import ACTIVE_RUN_STATES, TERMINAL_RUN_STATES, RunStatus
from migrations_app.models import MigrationRun

#: How long a run stays owned by its worker without a heartbeat. The monitor renews it with every progress
#: sample (about twice a second), so this only has to outlast a pause in writing, not a whole move.
LEASE_SECONDS = settings.RUN_LEASE_SECONDS
#: The longest a live move may take before the engine aborts it (the source keeps the VM).
MAX_MOVE_SECONDS = settings.MAX_MOVE_SECONDS
#: "queued" runs whose job is in the RQ queue carry this job id until a worker picks them up.
DISPATCHED = "dispatched"
#: how long a move's terminal write waits for the database to come back
DB_RETRY_SECONDS = 300

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Sent after the commit of every run's end, with `run_id`; and when a claim found no free slot (`run_id`,
#: `claimed=False`) so the run is queued again later. Receivers: migrations_app.services.runs.
run_finished = Signal()


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def retrying_db(fn: Callable[[], T], *, for_s: float = 0.0) -> T | None:
    """Run a database write (or read) of a move, riding out a database restart: on a lost connection the
    connection is dropped and the call tried again until `for_s` has passed. Returns None if it never
    went through (a monitor then carries on and writes again on its next reading)."""
    end = time.monotonic() + for_s
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise  # the caller's transaction is lost anyway; it decides
            log.warning("database unavailable; will try again", exc_info=True)
            with contextlib.suppress(Exception):
                connection.close()
            if time.monotonic() >= end:
                return None
            time.sleep(1.0)


def lock_hosts(*host_ids: int) -> dict[int, Host]:
    """Lock host rows in primary-key order (the same order everywhere, so never a deadlock)."""
    return {h.pk: h for h in Host.objects.select_for_update().filter(pk__in=set(host_ids)).order_by("pk")}


def active_counts(source_id: int, destination_id: int) -> tuple[int, int]:
    active = MigrationRun.objects.filter(status__in=ACTIVE_RUN_STATES)
    return (
        active.filter(source_id=source_id).count(),
        active.filter(destination_id=destination_id).count(),
    )


def try_claim(run_id: int, *, job_id: str, worker: str) -> MigrationRun | None:
    """Move a queued run to preflight if both hosts have a free slot; None if it must keep waiting
    (or is no longer queued). Serialised per host by the row locks taken first."""
    with transaction.atomic():
        run = MigrationRun.objects.filter(pk=run_id).first()
        if run is None:
            return None
        hosts = lock_hosts(run.source_id, run.destination_id)
        run.refresh_from_db()
        if run.status != RunStatus.QUEUED:
            return None
        outgoing, incoming = active_counts(run.source_id, run.destination_id)
        if outgoing >= hosts[run.source_id].max_outgoing or incoming >= hosts[run.destination_id].max_incoming:
            MigrationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(job_id="")
            transaction.on_commit(lambda: events.queue_changed(run_id, queue_position(run)))
            return None
        now = timezone.now()
        claimed = events.transition(
            run,
            RunStatus.QUEUED,
            status=RunStatus.PREFLIGHT,
            job_id=job_id[:64],
            worker=worker[:200],
            started_at=now,
            heartbeat_at=now,
            lease_until=now + timedelta(seconds=LEASE_SECONDS),
            phase_detail="Checking both hosts",
        )
        if not claimed:
            return None
    return run


def active_run_of(vm: Any) -> MigrationRun | None:
    """The run moving this VM now (claimed, not ended), if any: while there is one, the VM is "moving"."""
    return (
        MigrationRun.objects.filter(vm=vm, status__in=ACTIVE_RUN_STATES)
        .select_related("source", "destination")
        .order_by("-pk")
        .first()
    )


def queue_position(run: MigrationRun) -> int | None:
    """1 for the next queued run that shares a host with this one, 2 for the one after…; None if not queued."""
    if run.status != RunStatus.QUEUED:
        return None
    ahead = (
        MigrationRun.objects.filter(status=RunStatus.QUEUED)
        .filter(Q(source_id=run.source_id) | Q(destination_id=run.destination_id))
        .filter(Q(queued_at__lt=run.queued_at) | Q(queued_at=run.queued_at, pk__lt=run.pk))
        .count()
    )
    return ahead + 1


# ---- ending -------------------------------------------------------------------------------------------


def finish(run: MigrationRun, status: str, *, actor: Any = None, **fields: Any) -> MigrationRun:
    """Record a terminal state with an audit-log row; after the commit `run_finished` lets waiting runs
    have the freed slots and the plan follow."""
    if status not in TERMINAL_RUN_STATES:
        raise ValueError(f"{status} is not a terminal run state")
    before = run.status

    def write() -> MigrationRun:
        return _finish(run, status, before, actor, fields)

    # the end of a move must be recorded even across a database restart
    written = retrying_db(write, for_s=DB_RETRY_SECONDS)
    if written is None:
        raise OperationalError(f"the end of run {run.pk} could not be written")
    return written


def _finish(run: MigrationRun, status: str, before: str, actor: Any, fields: dict[str, Any]) -> MigrationRun:
    with transaction.atomic():
        # the same host locks as a claim: a claim that found no free slot has either already put its run
        # back in the queue (so the dispatch below re-queues it) or will see this run ended
        lock_hosts(run.source_id, run.destination_id)
        events.run_changed(run, status=status, finished_at=timezone.now(), lease_until=None, **fields)
        auditlog.record(
            actor,
            f"run.{status}",
            run,
            before={"status": before},
            after={
                "status": status,
                "outcome": run.outcome,
                "error": run.error,
                "downtime_ms": run.downtime_ms,
                "host": str(run.destination if status == RunStatus.SUCCEEDED else run.source),
            },
        )
        transaction.on_commit(lambda: run_finished.send(sender=MigrationRun, run_id=run.pk))
    return run
