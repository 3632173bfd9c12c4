"""What the live pages show: run, plan and fleet snapshots built from the durable rows.

The pages render these on the server, and the websocket consumers send them as the first message after
accept (and again after every reconnect), so a browser that reconnects misses nothing: whatever
happened while it was away is in the rows. Read-only; a bounded number of queries per snapshot,
whatever the number of samples, items, hosts or runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.urls import reverse
from django.utils import timezone

from inventory.models import Host
from inventory.services import capacity
from migrations_app.choices import TERMINAL_RUN_STATES, RunStatus
from migrations_app.engine.spec import RunSpec
from migrations_app.models import (
    AuditLogEntry,
    MigrationPlan,
    MigrationRun,
    PlanItem,
    Prediction,
    ProgressSample,
    ValidationReport,
    ValidationResult,
)

#: host fields that are large and never shown with a run
HOST_BLOBS = ("cpu_xml", "domain_capabilities", "machine_types")
#: the phases a run goes through, in order, with the run states that belong to each
PHASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("queued", "Queued", (RunStatus.QUEUED,)),
    ("preflight", "Pre-flight", (RunStatus.PREFLIGHT,)),
    ("backup", "Backup", (RunStatus.BACKUP,)),
    ("transfer", "Transfer", (RunStatus.TRANSFERRING,)),
    ("cutover", "Cut-over", (RunStatus.CUTOVER,)),
    ("validation", "Validation", (RunStatus.VERIFYING,)),
]
#: ended without the VM moving (the timeline marks the phase it stopped in)
STOPPED_STATES = frozenset({RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED})
#: states in which a run may have a validation report
VALIDATED_STATES = frozenset(
    {RunStatus.VERIFYING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.ROLLING_BACK}
)
#: the most chart points a snapshot carries; longer runs are thinned evenly (first and last kept)
MAX_POINTS = 600
#: runs listed as "moving now" on the fleet dashboard (plus those that ended in the last minutes)
FLEET_RUNS = 50
RECENT_MINUTES = 10


def phases_payload() -> list[dict[str, Any]]:
    return [{"key": key, "label": label, "statuses": [str(s) for s in statuses]} for key, label, statuses in PHASES]


def _phase_index(status: str) -> int:
    for index, (_key, _label, statuses) in enumerate(PHASES):
        if status in statuses:
            return index
    return -1


def reached_index(run: MigrationRun, has_samples: bool) -> int:
    """The furthest phase a run got to, from its state and what it left behind."""
    index = _phase_index(run.status)
    if index >= 0:
        return index
    if run.status == RunStatus.SUCCEEDED:
        return len(PHASES) - 1
    if run.transferred_at:
        return 4
    if has_samples:
        return 3
    return 1 if run.started_at else 0


def timeline(run: MigrationRun, has_samples: bool) -> list[dict[str, str]]:
    """Each phase as done / current / stopped / todo / skipped (a backup the plan did not ask for)."""
    reached = reached_index(run, has_samples)
    backup_asked = RunSpec.of(run.options).fresh_backup
    rows = []
    for index, (key, label, _statuses) in enumerate(PHASES):
        if run.status == RunStatus.SUCCEEDED or index < reached:
            state = "done"
        elif index == reached:
            state = "stopped" if run.status in STOPPED_STATES else "current"
        else:
            state = "todo"
        if key == "backup" and not backup_asked and state != "current":
            state = "skipped"
        rows.append({"key": key, "label": label, "state": state})
    return rows


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def duration_s(run: MigrationRun) -> float | None:
    if run.elapsed_ms:
        return round(run.elapsed_ms / 1000, 3)
    if run.started_at and run.finished_at:
        return round((run.finished_at - run.started_at).total_seconds(), 3)
    return None


def run_row(run: MigrationRun) -> dict[str, Any]:
    """A run as plain data (needs vm, source and destination loaded)."""
    return {
        "id": run.pk,
        "url": reverse("runs:run_detail", args=[run.pk]),
        "vm": run.vm.name,
        "source": run.source.name,
        "destination": run.destination.name,
        "mode": run.mode,
        "status": run.status,
        "status_label": run.get_status_display(),
        "phase_detail": run.phase_detail,
        "percent": run.percent,
        "bytes_total": run.bytes_total,
        "bytes_processed": run.bytes_processed,
        "bytes_remaining": run.bytes_remaining,
        "downtime_ms": run.downtime_ms,
        "duration_s": duration_s(run),
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "outcome": run.outcome,
        "error": run.error,
        "cancel_requested": run.cancel_requested,
        "terminal": run.status in TERMINAL_RUN_STATES,
    }


# ---- run ------------------------------------------------------------------------------------------------

SAMPLE_FIELDS = ("pk", "elapsed_s", "phase", "percent", "throughput_bps", "bytes_remaining", "dirty_rate_bps")


def chart_samples(run_id: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(points for the chart, thinned evenly to MAX_POINTS with the last kept; the latest sample's figures).
    Two queries, whatever the length of the run."""
    samples = ProgressSample.objects.filter(run_id=run_id)
    count = samples.count()
    if count == 0:
        return [], None
    if count > MAX_POINTS:
        step = -(-count // MAX_POINTS)
        keep = [*range(1, count + 1, step)]
        if keep[-1] != count:
            keep.append(count)
        samples = samples.annotate(n=Window(RowNumber(), order_by=[F("at").asc(), F("pk").asc()])).filter(n__in=keep)
    rows = list(samples.order_by("at", "pk").values(*SAMPLE_FIELDS, "iteration", "eta_s", "note"))
    last = rows[-1]
    return [_point(r) for r in rows], {**_point(last), **{k: last[k] for k in ("iteration", "eta_s", "note")}}


def _point(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["pk"],
        "elapsed_s": row["elapsed_s"],
        "phase": row["phase"],
        "percent": row["percent"],
        "throughput_bps": row["throughput_bps"],
        "bytes_remaining": row["bytes_remaining"],
        "dirty_rate_bps": row["dirty_rate_bps"],
    }


def get_run(run_id: int) -> MigrationRun:
    return MigrationRun.objects.select_related("vm", "source", "destination", "item__plan").get(pk=run_id)


def validation_snapshot(run: MigrationRun) -> dict[str, Any] | None:
    """Post-migration validation of the run so far: {"status", "passed", "warned", "failed", "duration_ms",
    "results": [{"check_id", "severity", "message", "evidence", "remediation", "at", …}]} in the order the
    checks ran, or None while there is none. Two queries."""
    from migrations_app.validation.phase import report_payload

    report = ValidationReport.objects.filter(run_id=run.pk).first()
    if report is None:
        return None
    return report_payload(report)


def validations_by_run(run_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Each run's validation results, worst first, with the report's status: one query for any number of
    runs (the plan page)."""
    from migrations_app.validation.phase import counts, result_payload, worst_first

    run_ids = list(run_ids)
    if not run_ids:
        return {}
    rows = ValidationResult.objects.filter(report__run_id__in=run_ids).select_related("report")
    by_run: dict[int, dict[str, Any]] = {}
    for row in rows.order_by("at", "pk"):
        entry = by_run.setdefault(
            row.report.run_id,
            {"status": row.report.status, "status_label": row.report.get_status_display(), "results": []},
        )
        entry["results"].append(result_payload(row))
    for entry in by_run.values():
        entry.update(counts([r["outcome"] for r in entry["results"]]))
        entry["results"] = worst_first(entry["results"])
    return by_run


def run_snapshot(run: MigrationRun | int) -> dict[str, Any]:
    """Everything the run page shows, as of now (a run given as a row needs vm, hosts and plan loaded)."""
    from migrations_app.services.runs import queue_position

    if not isinstance(run, MigrationRun):
        run = get_run(run)
    points, latest = chart_samples(run.pk)
    plan = run.item.plan
    return {
        "type": "snapshot",
        "scope": "run",
        "run": {
            **run_row(run),
            "plan": {"id": plan.pk, "name": plan.name, "url": plan.get_absolute_url()},
            "vm_url": run.vm.get_absolute_url(),
            "queue_position": queue_position(run),
        },
        "phases": phases_payload(),
        "timeline": timeline(run, bool(points)),
        "latest": latest,
        "samples": points,
        "validation": validation_snapshot(run),
        "at": timezone.now().isoformat(),
    }


# ---- plan -----------------------------------------------------------------------------------------------


def latest_runs(item_ids: Iterable[int]) -> dict[int, MigrationRun]:
    """The newest run of each item, in one query."""
    runs = (
        MigrationRun.objects.filter(item_id__in=list(item_ids))
        .select_related("vm", "source", "destination")
        .defer("vm__xml", *(f"{host}__{field}" for host in ("source", "destination") for field in HOST_BLOBS))
        .order_by("item_id", "-queued_at", "-pk")
        .distinct("item_id")
    )
    return {run.item_id: run for run in runs}


def predictions(
    plan: MigrationPlan, items: list[PlanItem], by_item: dict[int, dict[str, Prediction]] | None = None
) -> dict[int, Prediction]:
    """The latest audit's prediction for each item in the mode it will (or did) move in."""
    from migrations_app.services.plans import latest_audit

    if by_item is None:
        audit = latest_audit(plan)
        if audit is None:
            return {}
        by_item = {}
        for prediction in Prediction.objects.filter(audit=audit, item_id__in=[i.pk for i in items]):
            by_item.setdefault(prediction.item_id, {})[prediction.mode] = prediction
    chosen = {}
    for item in items:
        options = by_item.get(item.pk, {})
        mode = item.mode if item.mode in options else next((m for m, p in options.items() if p.recommended), "")
        if mode in options:
            chosen[item.pk] = options[mode]
    return chosen


def item_progress(
    item: PlanItem,
    run: MigrationRun | None,
    prediction: Prediction | None,
    validation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "item": item.pk,
        "vm": item.vm.name,
        "run": run_row(run) if run else None,
        "timeline": timeline(run, run.bytes_total > 0) if run else [],
        "predicted_s": prediction.duration_s if prediction else None,
        "predicted_downtime_ms": prediction.downtime_ms if prediction else None,
        "validation": validation,
    }


def plan_history(plan: MigrationPlan) -> list[dict[str, Any]]:
    """The plan's audit-log entries, newest first (submissions, overrides, approvals, cancels)."""
    entries = AuditLogEntry.objects.filter(target_type=MigrationPlan._meta.label_lower, target_id=str(plan.pk))
    return [
        {"at": e.at, "actor": e.actor_name, "verb": e.verb, "comment": e.comment}
        for e in entries.order_by("-at", "-id")[:50]
    ]


def plan_progress(
    plan: MigrationPlan,
    items: list[PlanItem],
    by_mode: dict[int, dict[str, Prediction]] | None = None,
    runs: dict[int, MigrationRun] | None = None,
) -> list[dict[str, Any]]:
    """Per item (vm loaded): its newest run, phase timeline and predicted figures (from `by_mode`, the latest
    audit's predictions per item and mode, and `runs`, each item's newest run, when the caller has them)."""
    if runs is None:
        runs = latest_runs(i.pk for i in items)
    predicted = predictions(plan, items, by_mode)
    # only runs that got as far as validating can have a report (no query for a plan not that far yet)
    checked = validations_by_run(r.pk for r in runs.values() if r.status in VALIDATED_STATES)
    return [
        item_progress(i, runs.get(i.pk), predicted.get(i.pk), checked.get(runs[i.pk].pk) if i.pk in runs else None)
        for i in items
    ]


def approval_payload(approval: Any) -> dict[str, Any]:
    """One approver's decision as the plan page shows it (`events.approval_recorded` sends the same)."""
    if approval.approver is not None:
        who = approval.approver.get_username()
    else:
        who = f"standard-change policy {approval.policy.name}" if approval.policy else "the portal"
    return {
        "approver": who,
        "decision": approval.get_decision_display(),
        "comment": approval.comment,
        "at": approval.at.isoformat(),
    }


def plan_snapshot(plan_id: int) -> dict[str, Any]:
    plan = MigrationPlan.objects.get(pk=plan_id)
    items = list(plan.items.select_related("vm").order_by("wave", "pk"))
    return {
        "type": "snapshot",
        "scope": "plan",
        "plan": {
            "id": plan.pk,
            "status": plan.status,
            "status_label": plan.get_status_display(),
            "predicted_s": plan.predicted_seconds,
            "predicted_downtime_ms": plan.predicted_downtime_ms,
        },
        "phases": phases_payload(),
        "items": plan_progress(plan, items),
        "history": [{**h, "at": h["at"].isoformat()} for h in plan_history(plan)],
        # decisions of approvers ("plan.approval" deltas add to it)
        "approvals": [approval_payload(a) for a in plan.approvals.select_related("approver", "policy").order_by("at")],
        "at": timezone.now().isoformat(),
    }


# ---- fleet ----------------------------------------------------------------------------------------------


def fleet_runs(visible_runs: Any) -> list[MigrationRun]:
    """Runs in flight first, then those that ended in the last minutes; at most FLEET_RUNS."""
    since = timezone.now() - timedelta(minutes=RECENT_MINUTES)
    active = visible_runs.exclude(status__in=TERMINAL_RUN_STATES) | visible_runs.filter(finished_at__gte=since)
    return list(
        active.select_related("vm", "source", "destination")
        .defer("vm__xml")
        .order_by("finished_at", "-queued_at", "-pk")[:FLEET_RUNS]
    )


def hosts_payload(host_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    hosts = Host.objects.order_by("name")
    if host_ids is not None:
        hosts = hosts.filter(pk__in=list(host_ids))
    return [capacity.usage_payload(row) for row in capacity.usage(hosts)]


def fleet_snapshot(visible_runs: Any) -> dict[str, Any]:
    return {
        "type": "snapshot",
        "scope": "fleet",
        "hosts": hosts_payload(),
        "runs": [run_row(r) for r in fleet_runs(visible_runs)],
        "at": timezone.now().isoformat(),
    }
