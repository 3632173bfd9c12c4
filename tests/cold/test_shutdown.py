"""The shutdown step of a cold move: graceful (ACPI) when the guest cooperates, forced only if allowed."""

from __future__ import annotations

from typing import Any

import pytest

from inventory.models import Host
from migrations_app.choices import RunStatus
from migrations_app.engine import cold
from migrations_app.services.runs import start_item
from tests.cold.conftest import cold_item
from tests.engine.linux import define_linux, http, wait_for
from tests.labguests import LabGuests, NicSpec

pytestmark = [pytest.mark.lab]


def test_a_linux_guest_shuts_down_gracefully_and_boots_on_the_destination(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.71"
    guest = define_linux(lab_guests, "h1", ip)
    old_boot = http(ip, "/cgi-bin/bootid")
    item = cold_item(people, lab_hosts, guest, "h2", shutdown_timeout_s=60, allow_force_off=False)
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error, run.outcome)
    assert "The VM was shut down;" in run.outcome  # not forced off
    assert run.scratch["cold"]["shutdown"] == "shut down"
    assert lab_guests.where(guest) == {"h2": "running"}
    new_boot = wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=90)
    assert new_boot and new_boot != old_boot  # a cold move boots the guest again, now on h2


def test_a_guest_that_ignores_the_shutdown_keeps_running_when_forcing_is_not_allowed(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define("h1", memory_mib=64, nics=[NicSpec(network="app-net")])  # SeaBIOS only
    item = cold_item(people, lab_hosts, guest, "h2", shutdown_timeout_s=5, allow_force_off=False)
    run = start_item(people["alice"], item)
    cold.execute(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "did not shut down within 5 s" in run.error and "does not allow forcing" in run.error
    assert "keeps running on h1" in run.outcome
    assert lab_guests.where(guest) == {"h1": "running"}
