"""The append-only audit log (enforced by the database), its page and export, and logins."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse

from migrations_app.models import AuditLogEntry
from migrations_app.services import auditlog
from tests.base import PASSWORD
from tests.workflow.conftest import login, pending

pytestmark = pytest.mark.django_db


def read_csv(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def entry(world: dict[str, Any]) -> AuditLogEntry:
    pending(world)
    return AuditLogEntry.objects.filter(verb="plan.pending_approval").get()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE migrations_app_auditlogentry SET actor_name = 'mallory' WHERE id = %s",
        "UPDATE migrations_app_auditlogentry SET comment = comment WHERE id = %s",
        "DELETE FROM migrations_app_auditlogentry WHERE id = %s",
    ],
)
def test_the_database_refuses_to_change_or_delete_a_log_row(entry: AuditLogEntry, sql: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [entry.pk])
    stored = AuditLogEntry.objects.get(pk=entry.pk)
    assert (stored.actor_name, stored.comment) == (entry.actor_name, entry.comment)


def test_the_orm_refuses_too(entry: AuditLogEntry) -> None:
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    with pytest.raises(ValueError, match="append-only"):
        entry.delete()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditLogEntry.objects.filter(pk=entry.pk).update(verb="x")  # a queryset update reaches the trigger


def test_an_action_on_a_page_records_who_and_from_where(client: Client, world: dict[str, Any]) -> None:
    plan = pending(world)
    login(client, world["carol"])
    client.post(
        reverse("migrations_app:plan_decide", args=[plan.pk]),
        {"decision": "approve", "comment": "Fine."},
        REMOTE_ADDR="192.0.2.7",
    )
    row = AuditLogEntry.objects.get(verb="plan.approved")
    assert (row.actor, row.source_address, row.before, row.after["status"]) == (
        world["carol"],
        "192.0.2.7",
        {"status": "pending_approval"},
        "approved",
    )


def test_logins_and_failed_logins_are_logged(client: Client, world: dict[str, Any]) -> None:
    client.post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="198.51.100.1")
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="198.51.100.1")
    failed = AuditLogEntry.objects.get(verb="auth.login_failed")
    ok = AuditLogEntry.objects.get(verb="auth.login")
    assert (failed.target_repr, failed.actor, failed.source_address) == ("alice", None, "198.51.100.1")
    assert (ok.actor, ok.source_address) == (world["alice"], "198.51.100.1")


def test_login_locks_out_after_the_configured_number_of_failures_and_the_lockout_is_logged(
    client: Client, world: dict[str, Any]
) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    url = reverse("login")
    for _ in range(limit):
        response = client.post(url, {"username": "alice", "password": "guess"}, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    # locked: even the right password is refused now, from that address
    response = client.post(url, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 429 and "_auth_user_id" not in client.session
    lockout = AuditLogEntry.objects.get(verb="auth.locked_out")
    assert (lockout.target_repr, lockout.source_address, lockout.after["failures"]) == ("alice", "203.0.113.9", limit)
    assert AuditLogEntry.objects.filter(verb="auth.login_failed").count() == limit + 1
    # another address is not locked out (a guesser cannot lock the real user out everywhere)
    response = client.post(url, {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="203.0.113.10")
    assert response.status_code == 302


def test_auditors_filter_and_export_the_log(
    client: Client, world: dict[str, Any], django_assert_max_num_queries: Any
) -> None:
    for _ in range(3):
        pending(world)
    auditlog.record_event(world["alice"], "note", "test", "x", comment='=HYPERLINK("http://evil")')
    login(client, world["dave"])
    with django_assert_max_num_queries(12):
        page = client.get(reverse("audit_log"), {"verb": "plan.pending", "actor": "alice"}).content.decode()
    assert page.count("plan.pending_approval") == 3 and "plan.create" not in page
    response = client.get(reverse("audit_log"), {"verb": "plan.", "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    rows = read_csv(response)
    assert len(rows) == AuditLogEntry.objects.filter(verb__startswith="plan.").count()
    assert {r["verb"] for r in rows} >= {"plan.create", "plan.pending_approval"}
    assert rows[0]["at"] >= rows[-1]["at"]  # newest first
    exported = read_csv(client.get(reverse("audit_log"), {"verb": "note", "format": "csv"}))
    assert exported[0]["comment"].startswith("'=")  # a spreadsheet shows it, it does not run it
    bad = client.get(reverse("audit_log"), {"since": "not a date"})
    assert bad.status_code == 200 and "Enter a valid date/time" in bad.content.decode()
