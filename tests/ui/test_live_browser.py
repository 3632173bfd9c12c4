"""End to end on the real lab, in a real browser, through a real ASGI server (daphne: pages and websockets)
and a real RQ worker process: an app owner plans a move of a lab VM, sees the audit, submits it; the run
starts; the owner's open plan page and run page follow the move to the end without a reload.

Screenshots of the run page mid-move and at the end are saved in var/test-output/live/ (printed at the end).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from inventory.models import Host, Network, StoragePool, VirtualMachine
from inventory.services.hosts import register_host
from inventory.services.sync import sync_host
from migrations_app.choices import PlanStatus, RunStatus
from migrations_app.models import MigrationPlan, MigrationRun, NetworkMapping
from tests.base import PASSWORD, REPO, make_personas
from tests.labguests import DiskSpec, LabGuests, NicSpec
from tests.ui.conftest import VIEWPORT
from tests.ui.live_server import Processes, free_port

pytestmark = [pytest.mark.lab]
OUTPUT = REPO / "var" / "test-output" / "live"


@pytest.fixture
def portal(transactional_db: None) -> Iterator[tuple[str, Processes]]:
    procs = Processes()
    port = free_port()
    procs.start(
        "manage.py",
        "rqworker",
        "--with-scheduler",
        "--worker-class",
        "migrations_app.worker.ReconcilingWorker",
        "audits",
        "default",
        "migrations",
    )
    procs.daphne(port)
    try:
        yield f"http://127.0.0.1:{port}", procs
    finally:
        procs.stop()


@pytest.fixture
def lab_world(lab: dict[str, Any], lab_guests: LabGuests, transactional_db: None) -> dict[str, Any]:
    """h1 and h2 registered and synced with the admins' network mapping; a running guest of alice's team with
    96 MiB written on a local disk."""
    people = make_personas()
    guest = lab_guests.define(
        "h1",
        name="shop-web-01",
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=160, write_mib=96)],
        nics=[NicSpec("app-net")],
        memory_mib=64,
    )
    hosts = {
        e["name"]: register_host(None, name=e["name"], uri=e["uri"], migration_uri=e["migration_uri"], sync=False)
        for e in lab["hosts"]
    }
    for name in ("h1", "h2"):
        assert sync_host(hosts[name].pk).ok
        StoragePool.objects.filter(host=hosts[name], name="shared").update(shared_by_admin=True)
    NetworkMapping.objects.create(
        source=Network.objects.get(host=hosts["h1"], name="app-net"),
        destination=Network.objects.get(host=hosts["h2"], name="app-lan"),
    )
    return {**people, "hosts": hosts, "guest": guest, "vm": VirtualMachine.objects.get(uuid=guest.uuid)}


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}{reverse('login')}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".who")).to_contain_text(username)


def shot(page: Page, name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_an_owner_plans_a_move_and_watches_it_live_to_the_end(
    browser: Browser, portal: tuple[str, Processes], lab_world: dict[str, Any]
) -> None:
    base, procs = portal
    vm = lab_world["vm"]
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # the owner plans the live move of her VM (its disk is copied): to h2, at most 16 MiB/s so it lasts a few
    # seconds, backup first
    log_in(page, base, "alice")
    page.goto(f"{base}{reverse('migrations_app:plan_create')}?vm={vm.pk}")
    expect(page.locator(f"input[name=vms][value='{vm.pk}']")).to_be_checked()
    page.locator("#id_destination").select_option(label="h2")
    page.locator("#id_mode").select_option("live")
    page.locator("#id_bandwidth_mib_s").fill("16")
    page.get_by_role("button", name="Create plan and run the audit").click()

    # the audit runs on the worker; the plan page shows it, grouped by area
    expect(page.get_by_role("button", name="Submit for approval")).to_be_visible(timeout=120_000)
    expect(page.locator("details.area").first).to_be_visible()
    assert "Ready to submit" in page.locator(".page-head").inner_text()
    shot(page, "plan-audited")
    page.get_by_role("button", name="Submit for approval").click()
    expect(page.locator(".page-head")).to_contain_text("Waiting for approval")
    plan = MigrationPlan.objects.get(items__vm=vm)
    assert plan.status == PlanStatus.PENDING_APPROVAL

    # the plan page stays open from here on: no reload until the end
    expect(page.locator("[data-live=plan] [data-live-status]")).to_have_text("● Live")
    page.evaluate("window.__sameDocument = true")
    row = page.locator(f"tr[data-item='{plan.items.get().pk}']")
    expect(row.locator("[data-field=status_label]")).to_have_text("Not started")

    # an approver approves the plan in a second browser context; with no window set, the approved plan starts
    # at once on the workers (re-audited first)
    approver = browser.new_context(viewport=VIEWPORT)
    approver.set_default_timeout(30_000)
    carol = approver.new_page()
    carol.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(carol, base, "carol")
    carol.goto(f"{base}{reverse('migrations_app:approval_queue')}")
    carol.get_by_role("link", name=plan.name).first.click()
    carol.get_by_label("Comment (required, shown to the team)").fill("Fine for today: local disk, 16 MiB/s cap.")
    carol.get_by_role("button", name="Approve", exact=True).click()
    expect(carol.locator(".messages, .page-head").first).to_be_visible()
    deadline = time.monotonic() + 120
    while not MigrationRun.objects.filter(item__plan=plan).exists():
        if time.monotonic() > deadline:
            plan.refresh_from_db()
            raise AssertionError(f"no run started: plan {plan.status} {plan.status_reason}\n{procs.logs()}")
        time.sleep(0.25)
    run = MigrationRun.objects.get(item__plan=plan)
    # the owner's open plan page hears of the approval without a reload
    expect(page.locator("[data-approvals] li")).to_contain_text("Fine for today")

    # the run page, opened by the owner from the plan page's live row
    expect(row.locator("a[data-field=run_link]")).to_have_attribute("href", f"/runs/{run.pk}/")
    run_page = context.new_page()
    run_page.on("pageerror", lambda exc: errors.append(str(exc)))
    run_page.goto(f"{base}{reverse('runs:run_detail', args=[run.pk])}")
    expect(run_page.locator("[data-live-status]")).to_have_text("● Live")

    # mid-move: transferring, with figures and a chart drawn from live samples
    try:
        expect(run_page.locator("[data-field=status_label]")).to_have_text("Transferring", timeout=120_000)
    except AssertionError:
        failed = MigrationRun.objects.get(pk=run.pk)
        raise AssertionError(f"{failed.status}: {failed.error} {failed.error_raw}\n{procs.logs()}") from None
    # the first sample of a job may carry no rate yet (libvirt reports one once memory has been sent); on a busy
    # machine the next one can be several seconds later
    expect(run_page.locator("[data-field=throughput]")).not_to_have_text("—", timeout=60_000)
    expect(run_page.locator("[data-run-chart] canvas")).to_have_count(1)
    seen_percent = [int(row.locator("progress[data-field=progress]").evaluate("p => p.value"))]
    mid = shot(run_page, "run-mid-move")
    # no validation yet: its results arrive after the switch-over
    run_page.evaluate("window.__sameDocument = true")
    expect(run_page.locator("[data-validation] [data-validation-table] tbody tr")).to_have_count(0)
    assert MigrationRun.objects.get(pk=run.pk).status not in (RunStatus.SUCCEEDED, RunStatus.FAILED)
    for _ in range(20):
        seen_percent.append(int(row.locator("progress[data-field=progress]").evaluate("p => p.value")))
        if seen_percent[-1] >= 99:
            break
        time.sleep(0.25)

    # the end: both open pages say so, without a reload
    expect(run_page.locator("[data-field=status_label]")).to_have_text("Succeeded", timeout=180_000)
    expect(run_page.locator("[data-field=downtime]")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(run_page.locator("[data-cancel-form]")).to_be_hidden()
    expect(run_page.locator("[data-field=duration]")).to_have_text(re.compile(r"^\d+\.\d s$"))  # re-read at the end
    phases = run_page.locator("[data-timeline] li").evaluate_all("els => els.map(e => e.className)")
    assert set(phases) == {"phase phase-done"}, phases  # the backup was taken, so nothing is skipped
    # the validation report filled in check by check, on the same document
    checks = run_page.locator("[data-validation] [data-validation-table] tbody tr")
    expect(checks).to_have_count(12, timeout=30_000)
    expect(run_page.locator("[data-validation] [data-validation-table]")).to_be_visible()
    expect(checks.first).to_contain_text("VAL-RUNNING")
    expect(run_page.locator("[data-validation] [data-field=validation_summary]")).to_contain_text(
        re.compile(r"^(passed|warned)")
    )
    assert run_page.evaluate("window.__sameDocument") is True
    end = shot(run_page, "run-finished")
    expect(row.locator("[data-field=status_label]")).to_have_text("Succeeded")
    expect(row.locator("[data-field=percent]")).to_have_text("100%")
    expect(row.locator("[data-field=duration]")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(page.locator(".page-head [data-field=plan_status]")).to_have_text("Succeeded")  # the plan follows its run
    assert page.evaluate("window.__sameDocument") is True  # the plan page was never reloaded
    assert seen_percent == sorted(seen_percent), seen_percent  # never backwards
    shot(page, "plan-finished")

    finished = MigrationRun.objects.get(pk=run.pk)
    assert finished.status == RunStatus.SUCCEEDED, (finished.error, procs.logs())
    assert VirtualMachine.objects.get(pk=vm.pk).host == Host.objects.get(name="h2")
    assert errors == []
    print(f"\nscreenshots: {mid} {end} {OUTPUT / 'plan-audited.png'} {OUTPUT / 'plan-finished.png'}")
    context.close()
    approver.close()
