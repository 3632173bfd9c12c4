"""The one place that writes run progress and state changes and publishes them to the channel layer.

Run messages go to the group `migration-run-<id>`, plan state changes to `migration-plan-<id>` and
new notifications to `notifications-user-<id>`; consumers (a later concern) only authorise,
subscribe and forward. A channel layer that is down never stops a migration: publishing failures are
logged and the durable rows stay the source of truth.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from migrations_app.choices import RunStatus
from migrations_app.engine.progress import Sample
from migrations_app.models import MigrationRun, ProgressSample

log = logging.getLogger(__name__)


def group_name(run_id: int) -> str:
    return f"migration-run-{run_id}"


def publish(run_id: int, kind: str, payload: dict[str, Any]) -> None:
    """Send one message to the run's group after the surrounding transaction commits."""
    publish_group(group_name(run_id), f"run.{kind}", {"run": run_id, **payload})


def publish_group(group: str, message_type: str, payload: dict[str, Any]) -> None:
    """Send one message to a group (a run's, a plan's, a user's notifications) after commit."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(group, {"type": message_type, **payload})
        except Exception:  # the channel layer is best effort; the database row is the record
            log.warning("publishing %s to %s failed", message_type, group, exc_info=True)

    transaction.on_commit(send)


def record_sample(run: MigrationRun, sample: Sample, *, lease_seconds: int) -> ProgressSample:
    """Store one progress sample, copy its figures onto the run, renew the lease, publish.

    The lease renewal rides on the sample write, so a worker that keeps reporting keeps its run.
    """
    now = timezone.now()
    with transaction.atomic():
        row = ProgressSample.objects.create(
            run=run,
            at=now,
            elapsed_s=sample.elapsed_s,
            phase=sample.phase,
            percent=sample.percent,
            bytes_processed=sample.bytes_processed,
            bytes_remaining=sample.bytes_remaining,
            bytes_total=sample.bytes_total,
            throughput_bps=sample.throughput_bps,
            dirty_rate_bps=sample.dirty_rate_bps,
            iteration=sample.iteration,
            eta_s=sample.eta_s,
            downtime_limit_ms=sample.downtime_limit_ms,
            note=sample.note[:200],
        )
        MigrationRun.objects.filter(pk=run.pk).update(
            percent=sample.percent,
            bytes_processed=sample.bytes_processed,
            bytes_remaining=sample.bytes_remaining,
            bytes_total=sample.bytes_total,
            heartbeat_at=now,
            lease_until=now + timedelta(seconds=lease_seconds),
        )
        publish(
            run.pk,
            "progress",
            {
                "phase": sample.phase,
                "percent": sample.percent,
                "bytes_processed": sample.bytes_processed,
                "bytes_remaining": sample.bytes_remaining,
                "bytes_total": sample.bytes_total,
                "throughput_bps": sample.throughput_bps,
                "dirty_rate_bps": sample.dirty_rate_bps,
                "iteration": sample.iteration,
                "eta_s": sample.eta_s,
                "downtime_limit_ms": sample.downtime_limit_ms,
                "note": sample.note,
            },
        )
    return row


def heartbeat(run_id: int, *, lease_seconds: int) -> None:
    now = timezone.now()
    MigrationRun.objects.filter(pk=run_id).update(heartbeat_at=now, lease_until=now + timedelta(seconds=lease_seconds))


def run_changed(run: MigrationRun, **fields: Any) -> None:
    """Save the given fields of a run (status, phase detail, outcome…) and publish the new state."""
    for key, value in fields.items():
        setattr(run, key, value)
    with transaction.atomic():
        MigrationRun.objects.filter(pk=run.pk).update(**fields)
        publish(run.pk, "state", state_payload(run))


def advance(run: MigrationRun, status: str, detail: str, **fields: Any) -> bool:
    """Move a run to `status` unless a cancel was requested meanwhile; publish the new state.

    Returns False (and changes nothing) when the run is being cancelled: the caller stops or rolls back.
    """
    with transaction.atomic():
        changed = (
            MigrationRun.objects.filter(pk=run.pk, cancel_requested=False)
            .exclude(status=RunStatus.CANCELLING)
            .update(status=status, phase_detail=detail, **fields)
        )
        run.refresh_from_db()
        if changed:
            publish(run.pk, "state", state_payload(run))
    return bool(changed)


def state_payload(run: MigrationRun) -> dict[str, Any]:
    return {
        "status": run.status,
        "phase_detail": run.phase_detail,
        "percent": run.percent,
        "downtime_ms": run.downtime_ms,
        "error": run.error,
        "outcome": run.outcome,
    }


def queue_changed(run_id: int, position: int | None) -> None:
    publish(run_id, "queue", {"position": position})
