"""The live pages' script in a real browser against a real daphne: hypervisor strings from websocket
payloads stay text, a lost connection is shown and retried with back-off, and a reconnect brings a fresh
snapshot with what happened meanwhile."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from migrations_app import events
from migrations_app.choices import RunStatus
from migrations_app.engine.progress import Sample
from migrations_app.models import MigrationRun
from migrations_app.services import runs
from tests.live.conftest import HOSTILE, build_fleet
from tests.ui.live_server import Processes, free_port
from tests.ui.test_browser import assert_inert, log_in, watch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(transactional_db: None) -> Iterator[tuple[str, int, Processes]]:
    procs = Processes()
    port = free_port()
    procs.daphne(port)
    try:
        yield f"http://127.0.0.1:{port}", port, procs
    finally:
        procs.stop()


@pytest.fixture
def fleet(people: dict[str, Any]) -> dict[str, Any]:
    return build_fleet(people)


class Base:
    def __init__(self, url: str) -> None:
        self.url = url


def publish_in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Publishing is synchronous code; this thread runs Playwright's event loop, so do it from another."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def call() -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def sample(percent: float, note: str = "") -> Sample:
    return Sample(
        elapsed_s=100 + percent,
        phase="memory",
        percent=percent,
        bytes_processed=int(percent) << 20,
        bytes_remaining=(100 - int(percent)) << 20,
        bytes_total=100 << 20,
        throughput_bps=50e6,
        dirty_rate_bps=1e6,
        iteration=2,
        eta_s=3.0,
        note=note,
    )


def test_hypervisor_strings_from_the_websocket_stay_text(
    page: Page, server: tuple[str, int, Processes], fleet: dict[str, Any]
) -> None:
    base = server[0]
    seen = watch(page)
    log_in(page, Base(base), "alice")  # type: ignore[arg-type]

    # the fleet's "moving now" rows are rebuilt by the script from the snapshot: the hostile name is text
    expect(page.locator("[data-live=fleet] [data-live-status]")).to_have_text("● Live")
    row = page.locator(f"tr[data-run='{fleet['hostile_run'].pk}']")
    expect(row.locator("td").first).to_have_text(HOSTILE)
    assert_inert(page)

    # the run page: the name in the heading (server) and a validation message and error arriving as deltas
    run = fleet["hostile_run"]
    page.goto(f"{base}{reverse('runs:run_detail', args=[run.pk])}")
    expect(page.locator("[data-live-status]")).to_have_text("● Live")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Moving {HOSTILE}")
    publish_in_thread(
        events.validation_result,
        run.pk,
        {"check_id": "VAL-<b>X</b>", "severity": "warn", "message": f"{HOSTILE} answers <svg onload=alert(2)>"},
        {"status": "running", "warned": 1},
    )
    expect(page.locator("[data-validation-table] tbody tr")).to_have_count(1)
    expect(page.locator("[data-validation-table] tbody tr")).to_contain_text(f"{HOSTILE} answers <svg onload=alert(2)>")
    expect(page.locator("[data-validation-table] code")).to_have_text("VAL-<b>X</b>")
    expect(page.locator("[data-field=validation_summary]")).to_have_text("running · 1 warned")
    fresh = MigrationRun.objects.get(pk=run.pk)
    publish_in_thread(runs.finish, fresh, RunStatus.FAILED, error=f"libvirt: domain '{HOSTILE}' <img src=y>")
    expect(page.locator("[data-field=error]")).to_have_text(f"libvirt: domain '{HOSTILE}' <img src=y>")
    assert_inert(page)
    assert seen["dialogs"] == [] and seen["errors"] == []


def test_a_lost_connection_is_shown_retried_and_followed_by_a_fresh_snapshot(
    page: Page, server: tuple[str, int, Processes], fleet: dict[str, Any]
) -> None:
    base, port, procs = server
    run = fleet["pay_run"]
    seen = watch(page)
    log_in(page, Base(base), "alice")  # type: ignore[arg-type]
    page.goto(f"{base}{reverse('runs:run_detail', args=[run.pk])}")
    live = page.locator("[data-live=run]")
    status = page.locator("[data-live-status]")
    expect(status).to_have_text("● Live")
    expect(live).to_have_attribute("data-snapshots", "1")
    publish_in_thread(events.record_sample, run, sample(55.0), lease_seconds=30)
    expect(page.locator("[data-field=percent]")).to_have_text("55%")

    # the server goes away: the page says so and keeps trying
    daphne = procs.procs[0][0]
    procs.halt(daphne)
    expect(status).to_have_text(re.compile(r"^Disconnected — reconnecting in \d+ s"))
    expect(status).to_have_attribute("data-state", "disconnected")

    # meanwhile the move goes on and ends (durable rows only: nobody is listening)
    publish_in_thread(events.record_sample, run, sample(80.0), lease_seconds=30)
    fresh = MigrationRun.objects.get(pk=run.pk)
    publish_in_thread(runs.finish, fresh, RunStatus.SUCCEEDED, outcome="Running on live-dst.", downtime_ms=17.0)

    # the server comes back on the same address: the page reconnects by itself and reads everything again
    procs.daphne(port)
    expect(status).to_have_text("● Live", timeout=40_000)
    expect(live).to_have_attribute("data-snapshots", "2")
    expect(page.locator("[data-field=status_label]")).to_have_text("Succeeded")
    expect(page.locator("[data-field=downtime]")).to_have_text("17 ms")
    expect(page.locator("[data-field=outcome]")).to_have_text("Running on live-dst.")
    expect(page.locator("[data-chart-note]")).to_have_text("22 samples shown.")
    assert seen["errors"] == []


def test_the_report_charts_are_drawn_from_the_page_data(
    page: Page, server: tuple[str, int, Processes], fleet: dict[str, Any]
) -> None:
    from tests.live.conftest import make_run

    item = fleet["pay_plan"].items.order_by("pk")[0]
    for downtime in (8.0, 40.0, 45.0, 250.0):
        make_run(item, status=RunStatus.SUCCEEDED, downtime_ms=downtime)
    make_run(item, status=RunStatus.FAILED)
    seen = watch(page)
    log_in(page, Base(server[0]), "alice")  # type: ignore[arg-type]
    page.goto(f"{server[0]}{reverse('runs:history')}")
    expect(page.locator("[data-chart=success] canvas")).to_have_count(1)
    expect(page.locator("[data-chart=downtime] canvas")).to_have_count(1)
    expect(page.locator(".page-head")).to_contain_text("4 of 5 ended runs succeeded")
    assert seen["errors"] == []
    from tests.ui.test_browser import shot

    shot(page, "history")
