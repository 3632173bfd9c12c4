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
