"""A VM with nothing wrong passes every check, live over shared storage and cold with a local copy."""

from __future__ import annotations

import pytest

from migrations_app.checks import REGISTRY
from tests.checks.conftest import Planner, outcomes, severities
from tests.labguests import DiskSpec, LabGuests, NicSpec

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


def test_a_clean_running_vm_on_shared_storage_passes_every_check_live(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    guest = lab_guests.define(
        "h1", disks=[DiskSpec(pool="shared", format="qcow2", cache="none")], nics=[NicSpec("app-net")], start=True
    )
    mode, results = outcomes(plan_move(guest, "h2", mode="auto"))
    assert mode == "live"
    assert set(results) == set(REGISTRY)
    found = severities(results)
    # PROC-WINDOW: no change window is set, which is information, not a problem.
    assert {cid: s for cid, s in found.items() if s != "pass"} == {"PROC-WINDOW": "info"}, {
        cid: results[cid].message for cid, s in found.items() if s != "pass"
    }
    assert results["HC-CPU"].destination["comparison"] in ("identical", "superset")
    assert results["NET-MAPPED"].destination["mapping"][guest.macs[0]]["network"] == "app-lan"


def test_a_clean_stopped_vm_on_local_storage_passes_cold_with_its_disk_copied(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    guest = lab_guests.define("h1", disks=[DiskSpec(pool="local", format="qcow2")], start=False)
    mode, results = outcomes(plan_move(guest, "h2", mode="auto"))
    assert mode == "cold"  # live needs a running VM (PROC-STATE); cold does not
    found = severities(results)
    assert {cid: s for cid, s in found.items() if s not in ("pass",)} == {
        "PROC-WINDOW": "info",
        "STO-SHARED": "info",
    }, {cid: results[cid].message for cid, s in found.items() if s != "pass"}
    assert results["STO-SHARED"].source["vda"]["copied"] is True
    assert results["STO-SPACE"].destination["local"]["available"] > 0
