"""The one place that writes run progress and state changes and publishes them to the channel layer.

A run's messages go to its own group `migration-run-<id>`, to its plan's group `migration-plan-<id>`
and (progress and state only) to the fleet group; plan messages go to the plan's group and new
notifications to `notifications-user-<id>`. Consumers (migrations_app.consumers) only authorise,
subscribe and forward; the message format is described there. Every message carries `sent_at` (epoch
seconds when it was handed to the channel layer). A channel layer that is down never stops a migration:
publishing failures are logged and the durable rows stay the source of truth.
"""

from __future__ import annotations

import logging
import time
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


def plan_group_name(plan_id: int) -> str:
    return f"migration-plan-{plan_id}"


#: every fleet dashboard: runs' progress and state (each consumer forwards only the runs its user may see)
FLEET_GROUP = "fleet"
FLEET_KINDS = frozenset({"progress", "state"})

#: run id -> plan id; a run never changes plan, so this is looked up once per run and process
_plan_of_run: dict[int, int] = {}


def _plan_id(run_id: int) -> int | None:
    if run_id not in _plan_of_run:
        plan_id = MigrationRun.objects.filter(pk=run_id).values_list("item__plan_id", flat=True).first()
        if plan_id is None:
            return None
        if len(_plan_of_run) > 10_000:
            _plan_of_run.clear()
        _plan_of_run[run_id] = plan_id
    return _plan_of_run[run_id]


async def _group_send(layer: Any, groups: list[str], message: dict[str, Any]) -> None:
    for group in groups:
        await layer.group_send(group, message)


def _send(groups: list[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_group_send)(layer, groups, {**message, "sent_at": time.time()})
    except Exception:  # the channel layer is best effort; the database row is the record
        log.warning("publishing %s to %s failed", message.get("type"), groups, exc_info=True)


def publish(run_id: int, kind: str, payload: dict[str, Any]) -> None:
    """Send one message to the run's groups after the surrounding transaction commits."""

    def send() -> None:
        groups = [group_name(run_id)]
        plan_id = _plan_id(run_id)
        if plan_id is not None:
            groups.append(plan_group_name(plan_id))
        if kind in FLEET_KINDS:
            groups.append(FLEET_GROUP)
        _send(groups, {"type": f"run.{kind}", "run": run_id, **payload})

    transaction.on_commit(send)


def publish_group(group: str, message_type: str, payload: dict[str, Any]) -> None:
    """Send one message to one group (a plan's, a user's notifications) after commit."""
    transaction.on_commit(lambda: _send([group], {"type": message_type, **payload}))


def publish_plan(plan_id: int, kind: str, payload: dict[str, Any]) -> None:
    """Send one message to the plan's group after the surrounding transaction commits (`plan.<kind>`)."""
    transaction.on_commit(
        lambda: _send([plan_group_name(plan_id)], {"type": f"plan.{kind}", "plan": plan_id, **payload})
    )


def plan_changed(plan: Any, *, before: str = "", reason: str = "") -> None:
    """A plan's status changed (saved by the caller, in its transaction): tell its watchers."""
    publish_plan(
        plan.pk,
        "state",
        {"status": plan.status, "status_label": plan.get_status_display(), "before": before, "reason": reason},
    )


def approval_recorded(plan_id: int, approval: dict[str, Any]) -> None:
    """An approval decision was stored: `approval` = {"approver", "decision", "comment", "at"} as text."""
    publish_plan(plan_id, "approval", {"approval": approval})


def validation_result(run_id: int, result: dict[str, Any], report: dict[str, Any] | None = None) -> None:
    """One post-migration validation result was stored: `result` = {"check_id", "severity", "message",
    "evidence"}; `report` = {"status", "passed", "warned", "failed"} so far (see migrations_app.consumers)."""
    publish(run_id, "validation", {"result": result, "report": report or {}})


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
                "sample": row.pk,
                "elapsed_s": sample.elapsed_s,
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
    if "phase_detail" in fields:
        fields["phase_detail"] = _detail(fields["phase_detail"])
    for key, value in fields.items():
        setattr(run, key, value)
    with transaction.atomic():
        MigrationRun.objects.filter(pk=run.pk).update(**fields)
        publish(run.pk, "state", state_payload(run))


def transition(run: MigrationRun, expected: str, **fields: Any) -> bool:
    """Save the fields only if the run is still in status `expected` (e.g. queued → preflight, which exactly
    one worker may do); then re-read the run and publish its new state. Returns whether it changed."""
    with transaction.atomic():
        changed = MigrationRun.objects.filter(pk=run.pk, status=expected).update(**fields)
        if changed:
            run.refresh_from_db()
            publish(run.pk, "state", state_payload(run))
    return bool(changed)


def _detail(text: str) -> str:
    """A phase detail as the column holds it (a libvirt message quoted in it can be long)."""
    limit = MigrationRun._meta.get_field("phase_detail").max_length or 200
    return text if len(text) <= limit else text[: limit - 1] + "…"


def advance(run: MigrationRun, status: str, detail: str, **fields: Any) -> bool:
    """Move a run to `status` unless a cancel was requested meanwhile; publish the new state.

    Returns False (and changes nothing) when the run is being cancelled: the caller stops or rolls back.
    """
    with transaction.atomic():
        changed = (
            MigrationRun.objects.filter(pk=run.pk, cancel_requested=False)
            .exclude(status=RunStatus.CANCELLING)
            .update(status=status, phase_detail=_detail(detail), **fields)
        )
        run.refresh_from_db()
        if changed:
            publish(run.pk, "state", state_payload(run))
    return bool(changed)


def state_payload(run: MigrationRun) -> dict[str, Any]:
    return {
        "status": run.status,
        "status_label": run.get_status_display(),
        "phase_detail": run.phase_detail,
        "percent": run.percent,
        "downtime_ms": run.downtime_ms,
        "error": run.error,
        "outcome": run.outcome,
    }


def queue_changed(run_id: int, position: int | None) -> None:
    publish(run_id, "queue", {"position": position})
