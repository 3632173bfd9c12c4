"""Reading the audit log (search, CSV export) and the client address it records. Entries are written by
`migrations_app.auditlog` (re-exported here as `record`, `record_event`, `source_address`)."""

from __future__ import annotations

import csv
import ipaddress
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db import models
from django.http import HttpRequest

from migrations_app.auditlog import record, record_event, source_address  # noqa: F401  (the writer)
from migrations_app.models import AuditLogEntry


def client_address(request: HttpRequest) -> str | None:
    """The client's address as the login rate limit sees it (one rule for both), if it is an IP address."""
    from axes.helpers import get_client_ip_address

    address = get_client_ip_address(request)
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


# ---- reading ---------------------------------------------------------------------------------------


def search(
    *,
    actor: str = "",
    verb: str = "",
    target_type: str = "",
    target_id: str = "",
    text: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> models.QuerySet[AuditLogEntry]:
    """Entries matching every given filter, newest first."""
    entries = AuditLogEntry.objects.all()
    if actor:
        entries = entries.filter(actor_name__iexact=actor)
    if verb:
        entries = entries.filter(verb__startswith=verb)
    if target_type:
        entries = entries.filter(target_type=target_type)
    if target_id:
        entries = entries.filter(target_id=target_id)
    if text:
        entries = entries.filter(models.Q(target_repr__icontains=text) | models.Q(comment__icontains=text))
    if since is not None:
        entries = entries.filter(at__gte=since)
    if until is not None:
        entries = entries.filter(at__lt=until)
    return entries.order_by("-at", "-id")


CSV_FIELDS = [
    "at",
    "actor_name",
    "verb",
    "target_type",
    "target_id",
    "target_repr",
    "before",
    "after",
    "comment",
    "source_address",
]


class _Echo:
    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else "" if value is None else str(value)
    # a spreadsheet must not run a cell that came from a user as a formula
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_rows(entries: models.QuerySet[AuditLogEntry]) -> Iterator[str]:
    """The entries as CSV lines, streamed (the log can be long)."""
    import json

    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_FIELDS)
    for row in entries.values_list(*CSV_FIELDS).iterator(chunk_size=2000):
        values = [json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for v in row]
        yield writer.writerow([_cell(v) for v in values])
