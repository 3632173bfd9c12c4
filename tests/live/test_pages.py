"""Run page, plan progress, fleet dashboard, history and reports: who sees what, query counts that do not
grow with the data, cancel with confirmation, exports that are complete and safe in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.models import Host, VirtualMachine
from migrations_app.choices import RunStatus
from migrations_app.models import MigrationRun
from migrations_app.services import live
from tests.base import PASSWORD
from tests.live.conftest import HOSTILE, make_plan, make_run

pytestmark = pytest.mark.django_db
MAX_QUERIES = 15


def login(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def queries(client: Client, url: str) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries), response


def body(response: Any) -> str:
    return (
        "".join(chunk.decode() for chunk in response.streaming_content)
        if response.streaming
        else response.content.decode()
    )


# ---- run page ---------------------------------------------------------------------------------------------


def test_the_run_page_shows_the_figures_and_the_live_hooks(fleet: dict[str, Any]) -> None:
    run = fleet["pay_run"]
    n, response = queries(login(fleet["alice"]), reverse("runs:run_detail", args=[run.pk]))
    html = response.content.decode()
    assert "Moving pay-1" in html
    assert f'data-live-url="/ws/runs/{run.pk}/"' in html
    assert "vendor/uplot/uPlot.iife.min.js" in html and "js/live.js" in html
    assert "42%" in html and "20 samples" in html
    assert "Cancel the move" in html  # a run in flight, seen by its owner
    assert "data-validation" in html  # the slot post-migration validation fills
    assert n <= MAX_QUERIES


def test_the_run_page_reads_a_bounded_number_of_rows_whatever_the_length_of_the_run(fleet: dict[str, Any]) -> None:
    client = login(fleet["carol"])
    short = fleet["pay_run"]
    long = make_run(fleet["ana_plan"].items.get(), status=RunStatus.SUCCEEDED, samples=3000, downtime_ms=31.0)
    n_short, _ = queries(client, reverse("runs:run_detail", args=[short.pk]))
    n_long, response = queries(client, reverse("runs:run_detail", args=[long.pk]))
    assert n_short == n_long <= MAX_QUERIES
    assert "31 ms" in response.content.decode()
    points, latest = live.chart_samples(long.pk)
    assert latest is not None
    assert len(points) <= live.MAX_POINTS + 1
    assert points[0]["elapsed_s"] == 0.0 and points[-1]["elapsed_s"] == 2999 * 0.5 == latest["elapsed_s"]
    assert [p["elapsed_s"] for p in points] == sorted(p["elapsed_s"] for p in points)


def test_other_teams_get_404_for_a_run(fleet: dict[str, Any]) -> None:
    url = reverse("runs:run_detail", args=[fleet["pay_run"].pk])
    assert login(fleet["bob"]).get(url).status_code == 404
    assert login(fleet["eve"]).get(url).status_code == 404
    assert Client().get(url).status_code == 302  # to the login page
    assert login(fleet["dave"]).get(url).status_code == 200  # auditors read everything


def test_a_hostile_vm_name_is_escaped_on_the_run_page(fleet: dict[str, Any]) -> None:
    html = login(fleet["alice"]).get(reverse("runs:run_detail", args=[fleet["hostile_run"].pk])).content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert HOSTILE not in html


def test_cancel_needs_the_confirmation_and_the_right_person(fleet: dict[str, Any]) -> None:
    run = fleet["hostile_run"]  # queued: cancelled at once
    url = reverse("runs:run_cancel", args=[run.pk])
    assert login(fleet["bob"]).post(url, {"confirm": "yes"}).status_code == 404
    assert login(fleet["dave"]).post(url, {"confirm": "yes"}).status_code == 403  # auditors only read
    alice = login(fleet["alice"])
    alice.post(url, {})
    assert MigrationRun.objects.get(pk=run.pk).status == RunStatus.QUEUED
    response = alice.post(url, {"confirm": "yes"}, follow=True)
    assert MigrationRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED
    html = response.content.decode()
    assert "Cancel requested" in html and "Cancel the move" not in html
    assert "Cancelled before it started." in html


# ---- plan page and fleet dashboard -------------------------------------------------------------------------


def test_the_plan_page_shows_progress_with_predicted_and_measured_figures(fleet: dict[str, Any]) -> None:
    plan = fleet["pay_plan"]
    done = make_run(plan.items.order_by("pk")[0], status=RunStatus.SUCCEEDED, downtime_ms=18.0, elapsed_ms=2500)
    n, response = queries(login(fleet["alice"]), reverse("migrations_app:plan_detail", args=[plan.pk]))
    html = response.content.decode()
    assert f'data-live-url="/ws/plans/{plan.pk}/"' in html
    assert f'data-run="{done.pk}"' in html and "2.5 s" in html and "18 ms" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and HOSTILE not in html
    assert n <= MAX_QUERIES


def test_the_plan_page_queries_do_not_grow_with_items_and_runs(fleet: dict[str, Any]) -> None:
    client = login(fleet["carol"])
    small = fleet["ana_plan"]
    make_run(small.items.get(), status=RunStatus.FAILED)  # a finished run: its validation report is read too
    vms = list(VirtualMachine.objects.all())
    big = make_plan(fleet["alice"], fleet["payments"], vms, fleet["dst"], "big")
    for item in big.items.all():
        make_run(item, samples=2)
        make_run(item, status=RunStatus.FAILED)
    n_small, _ = queries(client, reverse("migrations_app:plan_detail", args=[small.pk]))
    n_big, _ = queries(client, reverse("migrations_app:plan_detail", args=[big.pk]))
    assert n_small == n_big <= MAX_QUERIES


def test_the_fleet_dashboard_lists_only_visible_runs_in_flight(fleet: dict[str, Any]) -> None:
    n, response = queries(login(fleet["bob"]), reverse("inventory:dashboard"))
    html = response.content.decode()
    assert 'data-live-url="/ws/fleet/"' in html
    assert f'data-run="{fleet["ana_run"].pk}"' in html
    assert f'data-run="{fleet["pay_run"].pk}"' not in html and "pay-1" not in html
    assert f'data-host="{fleet["src"].pk}"' in html
    assert n <= MAX_QUERIES


def test_the_fleet_dashboard_queries_do_not_grow_with_hosts_and_runs(fleet: dict[str, Any]) -> None:
    client = login(fleet["carol"])
    n_before, _ = queries(client, reverse("inventory:dashboard"))
    for i in range(20):
        Host.objects.create(name=f"extra-{i}", uri=f"test:///extra-{i}")
    for item in fleet["pay_plan"].items.all():
        make_run(item, status=RunStatus.SUCCEEDED)
    n_after, _ = queries(client, reverse("inventory:dashboard"))
    assert n_before == n_after <= MAX_QUERIES


# ---- history and reports -------------------------------------------------------------------------------


@pytest.fixture
def history(fleet: dict[str, Any]) -> dict[str, Any]:
    pay_item = fleet["pay_plan"].items.order_by("pk")[0]
    ana_item = fleet["ana_plan"].items.get()
    for downtime in (5.0, 30.0, 250.0):
        make_run(pay_item, status=RunStatus.SUCCEEDED, downtime_ms=downtime)
    make_run(pay_item, status=RunStatus.FAILED, error='=HYPERLINK("http://x")')
    make_run(ana_item, status=RunStatus.SUCCEEDED, downtime_ms=40.0)
    return fleet


def test_history_lists_visible_runs_with_charts_and_filters(history: dict[str, Any]) -> None:
    alice = login(history["alice"])
    n, response = queries(alice, reverse("runs:history"))
    html = response.content.decode()
    assert "6 runs" in html  # alice's 2 in flight + 4 ended; bob's are not hers
    assert 'data-chart="success"' in html and 'data-chart="downtime"' in html
    assert "3 of 4 ended runs succeeded" in html
    assert n <= MAX_QUERIES
    html = alice.get(reverse("runs:history"), {"outcome": "failed"}).content.decode()
    assert "1 run match" in html
    html = alice.get(reverse("runs:history"), {"since": "2030-01-01"}).content.decode()
    assert "0 runs match" in html
    html = alice.get(reverse("runs:history"), {"since": "2030-01-02", "until": "2030-01-01"}).content.decode()
    assert "“Until” is before “since”." in html


def test_history_queries_do_not_grow_with_runs(history: dict[str, Any]) -> None:
    client = login(history["carol"])
    n_before, _ = queries(client, reverse("runs:history"))
    item = history["ana_plan"].items.get()
    for _ in range(60):
        make_run(item, status=RunStatus.SUCCEEDED, downtime_ms=120.0)
    n_after, _ = queries(client, reverse("runs:history"))
    assert n_before == n_after <= MAX_QUERIES


def test_downtime_distribution_and_success_rate(history: dict[str, Any]) -> None:
    from migrations_app.services import reports
    from vmportal import access

    runs = access.visible_runs(history["carol"])
    buckets = {b["label"]: b["count"] for b in reports.downtime_histogram(runs)}
    assert buckets["< 10 ms"] == 1 and buckets["25 ms–50 ms"] == 2 and buckets["200 ms–300 ms"] == 1
    assert sum(buckets.values()) == 4
    (today,) = reports.success_by_day(runs.filter(item__plan=history["pay_plan"]))
    assert (today["ended"], today["succeeded"], today["rate"]) == (4, 3, 75.0)


def test_csv_export_is_complete_filtered_and_safe_in_a_spreadsheet(history: dict[str, Any]) -> None:
    response = login(history["alice"]).get(reverse("runs:export_csv"))
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert len(rows) == 6
    assert {r["team"] for r in rows} == {"Payments"}
    assert HOSTILE in {r["vm"] for r in rows}
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert failed["error"].startswith("'=HYPERLINK")  # never a formula
    filtered = login(history["alice"]).get(reverse("runs:export_csv"), {"outcome": "succeeded"})
    assert len(list(csv.DictReader(io.StringIO(body(filtered))))) == 3


def test_json_export_parses_and_keeps_names_as_text(history: dict[str, Any]) -> None:
    response = login(history["carol"]).get(reverse("runs:export_json"), {"mode": "live"})
    rows = json.loads(body(response))
    assert len(rows) == 8
    assert {"id", "vm", "downtime_ms", "duration_s", "status"} <= set(rows[0])
    assert HOSTILE in {r["vm"] for r in rows}
    assert json.loads(body(login(history["eve"]).get(reverse("runs:export_json")))) == []  # in no team


def test_an_audited_plan_of_many_vms_folds_passed_checks_and_keeps_its_queries(fleet: dict[str, Any]) -> None:
    from migrations_app.models import Audit, CheckResult, Prediction

    vms = list(VirtualMachine.objects.all())
    extra = VirtualMachine.objects.bulk_create(
        VirtualMachine(uuid=uuid.uuid4(), name=f"many-{i}", host=fleet["src"], team=fleet["payments"]) for i in range(5)
    )
    plan = make_plan(fleet["alice"], fleet["payments"], [*vms, *extra], fleet["dst"], "many")
    audit = Audit.objects.create(plan=plan, status="done", worst="warn")
    items = list(plan.items.all())
    CheckResult.objects.bulk_create(
        CheckResult(audit=audit, item=item, check_id=check, area="network", severity=severity, message=f"{check} ok")
        for item in items
        for check, severity in (("NET-MAPPED", "pass"), ("NET-MTU", "pass" if item != items[0] else "warn"))
    )
    Prediction.objects.bulk_create(
        Prediction(audit=audit, item=item, mode="live", duration_s=3.5, downtime_ms=20) for item in items
    )
    for item in items:
        make_run(item, samples=2)
    n, response = queries(login(fleet["carol"]), reverse("migrations_app:plan_detail", args=[plan.pk]))
    html = response.content.decode()
    assert f"{len(items)} of {len(items)} VMs" in html  # NET-MAPPED folded into one line
    assert f"{len(items) - 1} of {len(items)} VMs" in html  # NET-MTU passes folded…
    assert "NET-MTU ok" in html and html.count('class="sev-row-warn"') == 1  # …its warning listed on its own
    assert "3.5 s" in html  # predicted time from the audit's predictions, next to the measured one
    assert n <= MAX_QUERIES
