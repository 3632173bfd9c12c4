"""Cancel and the convergence policy, with a real Linux guest on the lab."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from inventory.models import Host
from migrations_app.choices import RunStatus
from migrations_app.engine import live
from migrations_app.models import MigrationRun
from migrations_app.services.runs import request_cancel, start_item
from tests.engine.conftest import plan_item
from tests.engine.linux import define_linux, http, wait_for
from tests.labguests import LabGuests

pytestmark = [pytest.mark.lab]


def _in_thread(run_id: int) -> threading.Thread:
    def target() -> None:
        from django.db import connection

        try:
            live.execute(run_id)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_cancel_during_a_slow_live_move_leaves_the_vm_running_on_the_source(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.61"
    guest = define_linux(lab_guests, "h1", ip)
    boot_id = http(ip, "/cgi-bin/bootid")
    item = plan_item(people, lab_hosts, guest, "h2", bandwidth_mib_s=2, auto_converge=False)
    run = start_item(people["alice"], item)
    thread = _in_thread(run.pk)
    wait_for(lambda: MigrationRun.objects.get(pk=run.pk).samples.filter(bytes_processed__gt=0).count() >= 2)
    run.refresh_from_db()
    assert run.status == RunStatus.TRANSFERRING and run.percent < 100
    # the fleet dashboard shows the move in flight
    client = Client()
    client.force_login(people["alice"])
    page = client.get(reverse("inventory:dashboard")).content.decode()
    moving = page[page.index('id="moving-title"') :]
    moving = moving[: moving.index("</section>")]
    assert guest.name in moving and "<table data-moving>" in moving
    assert "data-moving-empty hidden" in moving
    request_cancel(people["alice"], run)
    thread.join(timeout=120)
    assert not thread.is_alive()
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, (run.error, run.outcome)
    assert "keeps running on h1" in run.outcome
    assert lab_guests.where(guest) == {"h1": "running"}
    assert http(ip, "/cgi-bin/bootid") == boot_id


def _busy_guest(lab_guests: LabGuests, ip: str) -> tuple[Any, str]:
    guest = define_linux(lab_guests, "h1", ip)
    boot_id = http(ip, "/cgi-bin/bootid")
    # 16 MiB rewritten at ~40 MB/s: far more than the 8 MiB/s cap below can carry in any downtime allowed
    assert "dirty started" in http(ip, "/cgi-bin/dirty?40,16")
    return guest, boot_id


def _steps(run: MigrationRun) -> list[float]:
    limits = [s for s in run.samples.order_by("at", "pk").values_list("downtime_limit_ms", flat=True) if s]
    return sorted(set(limits), key=limits.index)


def test_a_guest_that_does_not_converge_switches_to_postcopy_and_keeps_its_boot_id(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.62"
    guest, boot_id = _busy_guest(lab_guests, ip)
    item = plan_item(
        people,
        lab_hosts,
        guest,
        "h2",
        bandwidth_mib_s=8,
        max_downtime_ms=400,
        auto_converge=False,
        postcopy_allowed=True,
        on_no_convergence="postcopy",
    )
    run = start_item(people["alice"], item)
    live.execute(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.error_raw, run.outcome)
    assert lab_guests.where(guest) == {"h2": "running"}
    assert _steps(run) == [100, 200, 400]
    notes = list(run.samples.exclude(note="").values_list("note", flat=True))
    assert any("post-copy" in n for n in notes), notes
    assert run.samples.filter(phase="postcopy").exists() or "post-copy" in run.outcome
    assert wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=30) == boot_id


def test_a_guest_that_does_not_converge_is_aborted_and_keeps_running_on_the_source(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.63"
    guest, boot_id = _busy_guest(lab_guests, ip)
    item = plan_item(
        people,
        lab_hosts,
        guest,
        "h2",
        bandwidth_mib_s=8,
        max_downtime_ms=400,
        auto_converge=False,
        postcopy_allowed=False,
        on_no_convergence="abort",
    )
    run = start_item(people["alice"], item)
    live.execute(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED, (run.error, run.outcome)
    assert "did not converge" in run.error and "keeps running on h1" in run.outcome
    assert lab_guests.where(guest) == {"h1": "running"}
    assert _steps(run) == [100, 200, 400]
    notes = list(run.samples.exclude(note="").values_list("note", flat=True))
    assert any("raised to 200 ms" in n for n in notes) and any("raised to 400 ms" in n for n in notes)
    assert any("aborting" in n for n in notes), notes
    assert http(ip, "/cgi-bin/bootid") == boot_id
