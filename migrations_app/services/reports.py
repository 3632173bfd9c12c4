"""History and reports of migration runs: filters, success rate over time, downtime distribution, export.

All functions take a queryset the caller already limited to what the user may see
(`vmportal.access.visible_runs`) and add filters and aggregates to it; each is one query.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from migrations_app.choices import TERMINAL_RUN_STATES, RunStatus
from migrations_app.models import MigrationRun

#: outcomes people filter by; "in progress" is every state that is not terminal
OUTCOMES = {
    "succeeded": [RunStatus.SUCCEEDED],
    "failed": [RunStatus.FAILED],
    "rolled_back": [RunStatus.ROLLED_BACK],
    "cancelled": [RunStatus.CANCELLED],
}
OUTCOME_CHOICES = [
    ("", "Any outcome"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("rolled_back", "Rolled back"),
    ("cancelled", "Cancelled"),
    ("active", "In progress"),
]
#: downtime buckets (upper bounds in ms) of the distribution; the last one is open
DOWNTIME_BUCKETS_MS = [10, 25, 50, 100, 200, 300, 500, 1000, 5000, 30000, 120000]


def bucket_label(index: int) -> str:
    def fmt(ms: int) -> str:
        return f"{ms // 1000} s" if ms >= 1000 else f"{ms} ms"

    if index == 0:
        return f"< {fmt(DOWNTIME_BUCKETS_MS[0])}"
    if index == len(DOWNTIME_BUCKETS_MS):
        return f"≥ {fmt(DOWNTIME_BUCKETS_MS[-1])}"
    return f"{fmt(DOWNTIME_BUCKETS_MS[index - 1])}–{fmt(DOWNTIME_BUCKETS_MS[index])}"


def filter_runs(runs: QuerySet[MigrationRun], f: dict[str, Any]) -> QuerySet[MigrationRun]:
    """Apply the history filters: q (VM name), outcome, mode, host (source or destination name), team
    (slug), since / until (dates, inclusive, on when the run was queued, in the portal's time zone)."""
    if f.get("q"):
        runs = runs.filter(vm__name__icontains=f["q"])
    outcome = f.get("outcome")
    if outcome == "active":
        runs = runs.exclude(status__in=TERMINAL_RUN_STATES)
    elif outcome in OUTCOMES:
        runs = runs.filter(status__in=OUTCOMES[outcome])
    if f.get("mode"):
        runs = runs.filter(mode=f["mode"])
    if f.get("host"):
        runs = runs.filter(Q(source__name=f["host"]) | Q(destination__name=f["host"]))
    if f.get("team"):
        runs = runs.filter(item__plan__team__slug=f["team"])
    tz = timezone.get_current_timezone()
    if f.get("since"):
        runs = runs.filter(queued_at__gte=datetime.combine(f["since"], time.min, tzinfo=tz))
    if f.get("until"):
        runs = runs.filter(queued_at__lt=datetime.combine(f["until"] + timedelta(days=1), time.min, tzinfo=tz))
    return runs


def success_by_day(runs: QuerySet[MigrationRun]) -> list[dict[str, Any]]:
    """Per day (of finishing) with at least one ended run: ended, succeeded, success rate in percent."""
    rows = (
        runs.filter(status__in=TERMINAL_RUN_STATES, finished_at__isnull=False)
        .annotate(day=TruncDate("finished_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(ended=Count("id"), succeeded=Count("id", filter=Q(status=RunStatus.SUCCEEDED)))
        .order_by("day")
    )
    return [
        {
            "day": row["day"].isoformat() if isinstance(row["day"], date) else str(row["day"]),
            "ended": row["ended"],
            "succeeded": row["succeeded"],
            "rate": round(100 * row["succeeded"] / row["ended"], 1),
        }
        for row in rows
    ]


def downtime_histogram(runs: QuerySet[MigrationRun]) -> list[dict[str, Any]]:
    """How many succeeded runs paused their VM for how long (libvirt's figure; cold moves: the whole stop)."""
    bounds = [0, *DOWNTIME_BUCKETS_MS]
    aggregates = {}
    for index, low in enumerate(bounds):
        cond = Q(downtime_ms__gte=low) if index else Q(downtime_ms__gte=0)
        if index < len(DOWNTIME_BUCKETS_MS):
            cond &= Q(downtime_ms__lt=DOWNTIME_BUCKETS_MS[index])
        aggregates[f"b{index}"] = Count("id", filter=cond)
    counts = runs.filter(status=RunStatus.SUCCEEDED, downtime_ms__isnull=False).aggregate(**aggregates)
    return [{"label": bucket_label(i), "count": counts[f"b{i}"]} for i in range(len(bounds))]


def totals(runs: QuerySet[MigrationRun]) -> dict[str, int]:
    return runs.aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=Q(status=RunStatus.SUCCEEDED)),
        ended=Count("id", filter=Q(status__in=TERMINAL_RUN_STATES)),
    )


# ---- export ---------------------------------------------------------------------------------------------

EXPORT_FIELDS = [
    "id",
    "vm",
    "vm_uuid",
    "plan",
    "team",
    "source",
    "destination",
    "mode",
    "status",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_s",
    "downtime_ms",
    "bytes_total",
    "outcome",
    "error",
]


def export_rows(runs: QuerySet[MigrationRun]) -> Iterator[dict[str, Any]]:
    """Every matching run as a flat dict (streamed from the database in chunks)."""
    rows = runs.order_by("-queued_at", "-pk").values(
        "pk",
        "vm__name",
        "vm__uuid",
        "item__plan__name",
        "item__plan__team__name",
        "source__name",
        "destination__name",
        "mode",
        "status",
        "queued_at",
        "started_at",
        "finished_at",
        "elapsed_ms",
        "downtime_ms",
        "bytes_total",
        "outcome",
        "error",
    )
    for r in rows.iterator(chunk_size=2000):
        duration = r["elapsed_ms"] / 1000 if r["elapsed_ms"] else None
        if duration is None and r["started_at"] and r["finished_at"]:
            duration = (r["finished_at"] - r["started_at"]).total_seconds()
        yield {
            "id": r["pk"],
            "vm": r["vm__name"],
            "vm_uuid": str(r["vm__uuid"]),
            "plan": r["item__plan__name"],
            "team": r["item__plan__team__name"],
            "source": r["source__name"],
            "destination": r["destination__name"],
            "mode": r["mode"],
            "status": r["status"],
            "queued_at": _iso(r["queued_at"]),
            "started_at": _iso(r["started_at"]),
            "finished_at": _iso(r["finished_at"]),
            "duration_s": round(duration, 3) if duration is not None else None,
            "downtime_ms": r["downtime_ms"],
            "bytes_total": r["bytes_total"],
            "outcome": r["outcome"],
            "error": r["error"],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR would make it a formula."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    for row in rows:
        writer.writerow([csv_cell(row[f]) for f in EXPORT_FIELDS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_chunks(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for n, row in enumerate(rows):
        yield ("," if n else "") + "\n" + json.dumps(row)
    yield "\n]\n"
