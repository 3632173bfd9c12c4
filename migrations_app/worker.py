"""The RQ worker class for vmportal: reconciles orphaned runs before it takes its first job.

Use it with `manage.py rqworker --worker-class migrations_app.worker.ReconcilingWorker …` (or set
`RQ["WORKER_CLASS"]`), so that a worker restarted after a crash first finishes the records of the moves
its predecessor left behind.

Jobs of the sync queue run in the worker process itself; every other job (moves, audits, plan starts, the
periodic jobs of the default queue) runs in a forked work horse, as RQ's Worker does. A fork, a fresh
database connection and a work horse's exit per job cost about as much as syncing a small host, and a sync
needs none of what the fork protects: it is idempotent (a sync cut short is finished by the next one,
queued every VMPORTAL_SYNC_INTERVAL seconds), it holds no libvirt job that outlives it, and it leaves no
run to adopt. What the fork gives that still matters is kept:
- a hard timeout: a sync stuck in a libvirt call (which RQ's SIGALRM cannot interrupt) ends the whole
  worker process when the job's timeout plus a grace period is over; the supervisor (scripts/supervise,
  systemd's Restart=always) starts it again and RQ marks the job abandoned;
- clean state: database connections that are broken or too old are closed before and after each job
  (Django does this around each request; a worker has no requests), and all of them before a work horse
  is forked (it must not share the worker's database socket).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.db import close_old_connections, connections
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, Worker

from inventory.jobs import SYNC_QUEUE

log = logging.getLogger(__name__)


#: queues whose jobs run in the worker process (no work horse): idempotent jobs only
IN_PROCESS_QUEUES = frozenset({SYNC_QUEUE})
#: seconds past a job's own timeout before a stuck in-process job ends the worker process
HARD_TIMEOUT_GRACE_S = 30


def _hard_stop(job_id: str, seconds: int) -> None:
    log.critical("job %s still runs %d s after it started (past its timeout): ending this worker", job_id, seconds)
    logging.shutdown()
    os._exit(70)


class ReconcilingWorker(Worker):
    def work(self, *args: Any, **kwargs: Any) -> bool:
        from migrations_app.services.reconcile import reconcile

        try:
            results = reconcile()
            if results:
                log.info("reconciled at worker start: %s", results)
        except Exception:  # a reconcile problem must not keep the worker from starting
            log.exception("reconcile at worker start failed")
        finally:
            # the work horses are forked from this process; they must not share its database socket
            connections.close_all()
        return super().work(*args, **kwargs)

    def handle_work_horse_killed(self, job: Any, retpid: Any, ret_val: Any, rusage: Any) -> None:
        """RQ saw the work horse die (SIGKILL, out of memory…): the run it drove is adopted now, not when
        its lease runs out (a libvirt job that outlives the horse gets an adopt job that resumes its
        monitor)."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        from migrations_app.services.reconcile import adopt_orphans

        try:
            results = adopt_orphans()
            if results:
                log.info("adopted after the work horse died: %s", results)
        except Exception:
            log.exception("adopting after the work horse died failed")
        finally:
            connections.close_all()

    # ---- in-process jobs (the sync queue) ---------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        if queue.name not in IN_PROCESS_QUEUES:
            # the work horse must not inherit the database socket an in-process job left open
            connections.close_all()
            super().execute_job(job, queue)
            return
        limit = int(job.timeout or queue.DEFAULT_TIMEOUT) + HARD_TIMEOUT_GRACE_S
        watchdog = threading.Timer(limit, _hard_stop, args=(job.id, limit))
        watchdog.daemon = True
        close_old_connections()
        watchdog.start()
        try:
            SimpleWorker.execute_job(self, job, queue)  # type: ignore[arg-type]
        finally:
            watchdog.cancel()
            close_old_connections()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        if job.origin in IN_PROCESS_QUEUES:
            # no work horse to watch, so no heartbeat while the job runs: the first must outlast it
            return SimpleWorker.get_heartbeat_ttl(self, job, working_time)  # type: ignore[arg-type]
        return super().get_heartbeat_ttl(job, working_time)

    def kill_horse(self, *args: Any, **kwargs: Any) -> None:
        if not self.horse_pid:  # an in-process job: there is no horse (pid 0 would be our own group)
            return
        super().kill_horse(*args, **kwargs)
