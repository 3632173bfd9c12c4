"""RQ entry points of the inventory. They take ids, call one service, return a plain dict."""

from __future__ import annotations

import django_rq
from rq import Retry

from inventory.models import Host
from inventory.services import sync

SYNC_QUEUE = "sync"
SYNC_TIMEOUT = 600  # seconds; a sync of thousands of VMs on a slow link still fits


def sync_host(host_id: int) -> dict[str, object]:
    """Sync one host. Idempotent, so it may be retried."""
    return sync.sync_host(host_id).as_dict()


def sync_all_hosts() -> list[int]:
    """Queue a sync of every enabled host (the schedule calls this)."""
    ids = list(Host.objects.filter(enabled=True).values_list("pk", flat=True))
    for host_id in ids:
        enqueue_sync(host_id)
    return ids


def enqueue_sync(host_id: int) -> str:
    """Queue one host's sync; call it inside `transaction.on_commit` when a row was just written."""
    job = django_rq.get_queue(SYNC_QUEUE).enqueue(
        sync_host,
        host_id,
        job_timeout=SYNC_TIMEOUT,
        retry=Retry(max=2, interval=[10, 30]),
        description=f"sync host {host_id}",
    )
    return job.id
