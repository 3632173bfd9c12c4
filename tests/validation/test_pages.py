"""Validation reports on the run page, the plan page (worst first), the printable report and JSON;
the one-click move back; probes edited by the VM's team only. No lab: reports are stored rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from inventory.models import VirtualMachine
from migrations_app.choices import RunStatus, ValidationStatus
from migrations_app.models import AuditLogEntry, MigrationPlan, MigrationRun, Probe, ValidationReport, ValidationResult
from migrations_app.services import live
from migrations_app.validation import REGISTRY
from tests.base import PASSWORD
from tests.live.conftest import HOSTILE, fleet  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

#: the post-migration catalogue of CHECKS.md, in its order
CATALOGUE = [
    "VAL-RUNNING",
    "VAL-SOURCE",
    "VAL-PERSIST",
    "VAL-SHAPE",
    "VAL-DISKS",
    "VAL-NICS",
    "VAL-SECURITY",
    "VAL-AGENT",
    "VAL-CONSOLE",
    "VAL-CONTINUITY",
    "VAL-DOWNTIME",
    "VAL-PROBES",
]


def login(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def test_every_post_migration_check_of_the_catalogue_is_registered() -> None:
    assert sorted(REGISTRY) == sorted(CATALOGUE)
    assert all(check.title for check in REGISTRY.values())


def failed_report(run: MigrationRun) -> ValidationReport:
    """A finished live run whose validation failed VAL-CONSOLE (with a hostile line) and passed the rest."""
    now = timezone.now()
    MigrationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, mode="live", downtime_ms=25.0, finished_at=now, error="Validation failed: VAL-CONSOLE"
    )
    VirtualMachine.objects.filter(pk=run.vm_id).update(host=run.destination)
    report = ValidationReport.objects.create(
        run=run,
        status=ValidationStatus.FAILED,
        started_at=now,
        finished_at=now,
        duration_ms=2345.0,
        waits={"agent": 12.0, "console": 1500.0, "probes": 0.0, "total": 1512.0},
    )
    for i, check_id in enumerate(REGISTRY):
        bad = check_id == "VAL-CONSOLE"
        ValidationResult.objects.create(
            report=report,
            check_id=check_id,
            outcome="fail" if bad else ("warn" if check_id == "VAL-PROBES" else "pass"),
            message=f"Kernel panic {HOSTILE}" if bad else f"{check_id} fine",
            evidence={"expected": None, "found": {"lines": [f"Kernel panic - not syncing {HOSTILE}"]} if bad else 1},
            at=now + timedelta(milliseconds=i),
        )
    return report


def test_run_page_report_page_and_json_show_the_results_with_evidence(fleet: dict[str, Any]) -> None:  # noqa: F811
    run = fleet["pay_run"]
    failed_report(run)
    client = login(fleet["alice"])
    html = client.get(reverse("runs:run_detail", args=[run.pk])).content.decode()
    assert "VAL-CONSOLE" in html and "sev-fail" in html
    assert HOSTILE not in html and "&lt;img src=x" in html  # escaped
    assert "Plan the move back" in html
    page = client.get(reverse("runs:run_validation", args=[run.pk])).content.decode()
    assert "Validation report" in page and "2345 ms" in page
    # the validation's time, split into the checks' deliberate waits and their own work
    assert "1512 ms of it waiting for the guest on purpose" in page and "console window 1500 ms" in page
    assert "833 ms the validation's own work" in page
    assert "Kernel panic - not syncing" in page and HOSTILE not in page
    data = client.get(reverse("runs:run_validation_json", args=[run.pk])).json()
    assert data["validation"]["status"] == "failed" and data["validation"]["failed"] == 1
    assert data["validation"]["duration_ms"] == 2345.0 and data["validation"]["overhead_ms"] == 833.0
    assert data["validation"]["waits_ms"] == {"agent": 12.0, "console": 1500.0, "probes": 0.0, "total": 1512.0}
    assert [r["check_id"] for r in data["validation"]["results"]] == list(REGISTRY)
    assert data["run"]["downtime_ms"] == 25.0 and data["run"]["error"].startswith("Validation failed")
    snap = live.run_snapshot(run.pk)["validation"]
    assert snap is not None and snap["duration_ms"] == 2345.0
    # another team's run: 404 for every form of the report
    other = login(fleet["bob"])
    for name in ("runs:run_detail", "runs:run_validation", "runs:run_validation_json"):
        assert other.get(reverse(name, args=[run.pk])).status_code == 404


def test_plan_page_shows_each_runs_results_worst_first_in_a_bounded_number_of_queries(fleet: dict[str, Any]) -> None:  # noqa: F811
    run = fleet["pay_run"]
    failed_report(run)
    client = login(fleet["alice"])
    url = fleet["pay_plan"].get_absolute_url()
    with CaptureQueriesContext(connection) as ctx:
        html = client.get(url).content.decode()
    cell = html[html.index("validation-list") :]
    assert cell.index("VAL-CONSOLE") < cell.index("VAL-PROBES") < cell.index("VAL-RUNNING")  # fail, warn, pass
    before = len(ctx.captured_queries)
    failed_report(fleet["hostile_run"])
    with CaptureQueriesContext(connection) as ctx:
        client.get(url)
    assert len(ctx.captured_queries) == before  # a second report costs no query more


def test_move_back_is_one_click_creates_an_audited_plan_once_and_only_for_the_team(fleet: dict[str, Any]) -> None:  # noqa: F811
    run = fleet["pay_run"]
    report = failed_report(run)
    url = reverse("runs:run_move_back", args=[run.pk])
    assert login(fleet["bob"]).post(url).status_code == 404  # not his team's run
    assert login(fleet["dave"]).post(url).status_code == 403  # auditors change nothing
    response = login(fleet["alice"]).post(url)
    report.refresh_from_db()
    plan = report.move_back_plan
    assert plan is not None and response.status_code == 302 and response["Location"] == plan.get_absolute_url()
    item = plan.items.get()
    assert (item.source_id, item.destination_id, plan.mode) == (run.destination_id, run.source_id, "live")
    assert plan.requester == fleet["alice"] and plan.audits.exists()  # audited like any other plan
    assert AuditLogEntry.objects.filter(verb="run.move_back", target_id=str(run.pk)).exists()
    assert AuditLogEntry.objects.filter(verb="plan.create", target_id=str(plan.pk)).exists()
    login(fleet["alice"]).post(url)  # offered once
    assert MigrationPlan.objects.filter(name__startswith="Move pay-1 back").count() == 1


def test_probes_are_edited_by_the_vms_team_only(fleet: dict[str, Any]) -> None:  # noqa: F811
    vm = fleet["vm:pay-1"]
    url = reverse("runs:vm_probes", args=[vm.pk])
    alice = login(fleet["alice"])
    response = alice.post(
        url, {"kind": "http", "address": "10.0.0.5", "port": "8080", "path": "/health", "expect_status": "204"}
    )
    assert response.status_code == 302
    probe = Probe.objects.get(vm=vm)
    assert (probe.kind, probe.port, probe.path, probe.expect_status) == ("http", 8080, "/health", 204)
    bad = alice.post(url, {"kind": "tcp", "address": "10.0.0.5; rm", "port": "70000"})
    assert bad.status_code == 200 and Probe.objects.filter(vm=vm).count() == 1  # a clear error, nothing saved
    assert login(fleet["bob"]).get(url).status_code == 404
    assert login(fleet["bob"]).post(reverse("runs:probe_delete", args=[probe.pk])).status_code == 404
    assert login(fleet["dave"]).post(url, {"kind": "tcp", "port": "22"}).status_code == 403
    assert "Add a probe" not in login(fleet["dave"]).get(url).content.decode()
    assert alice.post(reverse("runs:probe_delete", args=[probe.pk])).status_code == 302
    assert not Probe.objects.filter(vm=vm).exists()
    assert AuditLogEntry.objects.filter(verb__in=["probe.create", "probe.delete"]).count() == 2
