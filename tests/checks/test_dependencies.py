"""Dependency checks fire on the lab: passthrough devices, identity, pinning, TPM, application groups."""

from __future__ import annotations

import pytest

from inventory.models import VirtualMachine
from migrations_app.services.plans import update_item
from tests.checks.conftest import Planner, outcomes, redefine
from tests.labguests import LabGuests

pytestmark = [pytest.mark.django_db, pytest.mark.lab]

# The lab has no device to pass through; a stopped domain with the element is the most real thing:
# libvirt accepts the definition and only needs the device when the guest starts.
PCI_HOSTDEV = (
    "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
    "<address domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/></source></hostdev>"
)


def test_dep_hostdev_blocks_live_and_warns_cold(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", nics=[], devices_xml=PCI_HOSTDEV, start=False)
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    assert live["DEP-HOSTDEV"].severity == "block" and "pci 0x0000:0x00:0x1f" in live["DEP-HOSTDEV"].message
    _mode, cold = outcomes(plan_move(guest, "h2", mode="cold"))
    assert cold["DEP-HOSTDEV"].severity == "warn"


def test_dep_identity_warns_about_sysinfo_and_host_smbios(lab_guests: LabGuests, plan_move: Planner) -> None:
    sysinfo = "<sysinfo type='smbios'><system><entry name='serial'>LICENSED-123</entry></system></sysinfo>"
    guest = lab_guests.define("h1", nics=[], domain_extra_xml=sysinfo, start=False)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    assert results["DEP-IDENTITY"].severity == "warn" and results["DEP-IDENTITY"].source["sysinfo"] is True
    host_smbios = lab_guests.define("h1", nics=[], start=False)
    redefine(lab_guests, host_smbios, lambda xml: xml.replace("</os>", "<smbios mode='host'/></os>"))
    _mode, results = outcomes(plan_move(host_smbios, "h2", mode="cold"))
    assert results["DEP-IDENTITY"].severity == "warn" and "mode='host'" in results["DEP-IDENTITY"].message


def test_dep_pinning_blocks_pinning_to_a_cpu_the_destination_lacks(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define(
        "h1", nics=[], domain_extra_xml="<cputune><vcpupin vcpu='0' cpuset='7'/></cputune>", start=False
    )
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    pinning = results["DEP-PINNING"]
    assert pinning.severity == "block" and "CPU 7" in pinning.message, pinning.message
    assert pinning.destination["cpus"] < 8
    fits = lab_guests.define(
        "h1", nics=[], domain_extra_xml="<cputune><vcpupin vcpu='0' cpuset='0'/></cputune>", start=False
    )
    _mode, results = outcomes(plan_move(fits, "h2", mode="cold"))
    assert results["DEP-PINNING"].severity == "pass"


def test_dep_tpm_warns_about_a_tpm(lab_guests: LabGuests, plan_move: Planner) -> None:
    # swtpm is not installed here, so libvirt refuses an emulated TPM; a passthrough TPM can be defined
    # (stopped) and carries the same risk for secrets sealed to it.
    tpm = "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>"
    guest = lab_guests.define("h1", nics=[], devices_xml=tpm, start=False)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    assert results["DEP-TPM"].severity == "warn"
    assert results["DEP-TPM"].source == [{"model": "tpm-tis", "backend": "passthrough"}]


def test_dep_group_warns_when_an_application_is_split_across_waves(
    lab_guests: LabGuests, plan_move: Planner, people: dict
) -> None:
    web = lab_guests.define("h1", nics=[], start=False)
    db = lab_guests.define("h1", nics=[], start=False)
    plan = plan_move([web, db], "h2", mode="cold")
    VirtualMachine.objects.filter(uuid__in=[web.uuid, db.uuid]).update(app="shop")
    _mode, same_wave = outcomes(plan, web.name)
    assert same_wave["DEP-GROUP"].severity == "pass"
    update_item(people["alice"], plan.items.get(vm__uuid=db.uuid), wave=2)
    _mode, split = outcomes(plan, web.name)
    assert split["DEP-GROUP"].severity == "warn" and "shop" in split["DEP-GROUP"].message
    assert split["DEP-GROUP"].source["waves"] == {"1": [web.name], "2": [db.name]}
