"""Hypervisor compatibility checks fire on the lab: formats, CPU, firmware, and a host of another kind."""

from __future__ import annotations

import pytest

from inventory.models import Host
from migrations_app.checks.registry import Outcome
from tests.base import write_node_file
from tests.checks.conftest import Planner, outcomes, redefine, sync
from tests.labguests import DiskSpec, LabGuests

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


def _sev(o: Outcome) -> str:
    return str(o.severity)


def test_hc_format_blocks_a_vmdk_disk_live_and_plans_a_conversion_cold(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    guest = lab_guests.define("h1", disks=[DiskSpec(pool="local", format="vmdk", bus="ide", target="hda")], start=False)
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    assert _sev(live["HC-FORMAT"]) == "block" and "vmdk" in live["HC-FORMAT"].message
    assert live["HC-FORMAT"].source == {"hda": "vmdk"}
    _mode, cold = outcomes(plan_move(guest, "h2", mode="cold"))
    assert _sev(cold["HC-FORMAT"]) == "info" and "converted" in cold["HC-FORMAT"].message
    mode, auto = outcomes(plan_move(guest, "h2", mode="auto"))
    assert mode == "cold" and _sev(auto["HC-FORMAT"]) == "info"


def test_hc_format_passes_qcow2_and_raw(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", disks=[DiskSpec(format="qcow2"), DiskSpec(format="raw", target="vdb")], start=False)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    assert _sev(results["HC-FORMAT"]) == "pass"


def test_hc_cpu_blocks_host_passthrough_live_when_the_destination_cannot_offer_it(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    # Stopped: under TCG this lab cannot run host-passthrough, and domain capabilities say so.
    guest = lab_guests.define("h1", cpu_xml="<cpu mode='host-passthrough'/>", nics=[], start=False)
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    assert _sev(live["HC-CPU"]) == "block", live["HC-CPU"].message
    assert "host-passthrough" in live["HC-CPU"].message
    assert live["HC-CPU"].destination["host-passthrough supported"] is False
    _mode, cold = outcomes(plan_move(guest, "h2", mode="cold"))
    assert _sev(cold["HC-CPU"]) == "warn"


def test_hc_cpu_blocks_a_cpu_model_the_destination_cannot_provide(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define(
        "h1", cpu_xml="<cpu mode='custom' match='exact'><model>Skylake-Server</model></cpu>", nics=[], start=False
    )
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    assert _sev(live["HC-CPU"]) == "block"
    assert live["HC-CPU"].destination["comparison"] == "incompatible"
    assert live["HC-CPU"].source["model"] == "Skylake-Server"


def test_hc_firmware_blocks_a_uefi_guest_when_the_destination_has_no_loader(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    guest = lab_guests.define("h1", nics=[], start=False)
    loader = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    redefine(
        lab_guests,
        guest,
        lambda xml: xml.replace("</os>", f"<loader readonly='yes' type='pflash'>{loader}</loader></os>"),
    )
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    firmware = results["HC-FIRMWARE"]
    assert _sev(firmware) == "block", firmware.message
    assert firmware.source["loader"] == loader and firmware.destination["loaders"] == []


def test_checks_towards_a_host_of_another_kind(lab_guests: LabGuests, plan_move: Planner) -> None:
    """The libvirt test driver as destination: an i686 'Test' hypervisor with no machine types, no
    domain capabilities and no CPU comparison — the closest thing to a foreign host this lab has."""
    other = Host.objects.create(name="foreign", uri=write_node_file("checks-foreign", []))
    sync(other)
    guest = lab_guests.define("h1", start=True)
    _mode, results = outcomes(plan_move(guest, other, mode="live"))
    assert _sev(results["HC-ARCH"]) == "block" and results["HC-ARCH"].destination["host arch"] == "i686"
    assert _sev(results["HC-MACHINE"]) == "block"
    assert results["HC-MACHINE"].source.startswith("pc")
    assert _sev(results["HC-VERSION"]) == "block"
    assert results["HC-VERSION"].destination["hypervisor"].startswith("TEST")
    # no CPU comparison on that driver: cannot decide, so warn (never a false block)
    assert _sev(results["HC-CPU"]) == "warn" and "Cannot decide" in results["HC-CPU"].message
    assert _sev(results["HC-FIRMWARE"]) == "pass"
    assert _sev(results["NET-FILTER"]) == "pass"  # no filters used; the driver's lack of them does not matter
