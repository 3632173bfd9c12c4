"""The RQ worker class for vmportal: reconciles orphaned runs before it takes its first job.

Use it with `manage.py rqworker --worker-class migrations_app.worker.ReconcilingWorker …` (or set
`RQ["WORKER_CLASS"]`), so that a worker restarted after a crash first finishes the records of the moves
its predecessor left behind.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections
from rq.worker import Worker

log = logging.getLogger(__name__)


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
