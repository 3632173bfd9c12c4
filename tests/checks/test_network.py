"""Network checks and name clashes fire on the lab."""

from __future__ import annotations

import contextlib
import secrets

import libvirt
import pytest

from migrations_app.checks.registry import OTHER_TEAMS
from tests.checks.conftest import Planner, outcomes
from tests.labguests import LabGuests, NicSpec

pytestmark = [pytest.mark.django_db, pytest.mark.lab]


def test_net_mapped_blocks_a_nic_on_a_network_the_destination_lacks(lab_guests: LabGuests, plan_move: Planner) -> None:
    # h2 has no backup segment, so backup-net has no mapping there
    guest = lab_guests.define("h1", nics=[NicSpec("app-net"), NicSpec("backup-net")], start=False)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    mapped = results["NET-MAPPED"]
    assert mapped.severity == "block", mapped.message
    assert guest.macs[1] in mapped.message and "backup-net" in mapped.message
    assert mapped.destination["mapping"][guest.macs[0]] == {"network": "app-lan", "exists": True, "active": True}
    assert mapped.destination["mapping"][guest.macs[1]]["network"] == ""


def test_a_mac_and_a_name_already_used_on_the_destination_block(lab_guests: LabGuests, plan_move: Planner) -> None:
    guest = lab_guests.define("h1", nics=[NicSpec("app-net")], start=False)
    same_mac = lab_guests.define("h2", nics=[NicSpec("app-lan", mac=guest.macs[0])], team="", start=False)
    same_name = lab_guests.define("h2", name=guest.name, nics=[], team="", start=False)
    _mode, results = outcomes(plan_move(guest, "h2", mode="cold"))
    assert results["NET-MAC"].severity == "block"
    assert results["NET-MAC"].destination[OTHER_TEAMS] == {guest.macs[0]: same_mac.name}
    assert same_mac.name not in results["NET-MAC"].message
    assert results["RES-NAME"].severity == "block"
    assert results["RES-NAME"].destination[OTHER_TEAMS][0]["uuid"] == same_name.uuid


def test_net_type_blocks_a_macvtap_nic_live_and_warns_cold(lab_guests: LabGuests, plan_move: Planner) -> None:
    # defined stopped: a macvtap interface on the host's eth0 needs the device at start only
    guest = lab_guests.define("h1", nics=[NicSpec("eth0", type="direct")], start=False)
    _mode, live = outcomes(plan_move(guest, "h2", mode="live"))
    assert live["NET-TYPE"].severity == "block" and "direct" in live["NET-TYPE"].message
    assert live["NET-MAPPED"].severity == "pass"  # a direct NIC has no network to map
    _mode, cold = outcomes(plan_move(guest, "h2", mode="cold"))
    assert cold["NET-TYPE"].severity == "warn"


def test_net_filter_blocks_until_the_filter_exists_on_the_destination(
    lab_guests: LabGuests, plan_move: Planner
) -> None:
    name = f"vmportal-test-{secrets.token_hex(3)}"
    xml = f"<filter name='{name}' chain='root'><rule action='accept' direction='inout'><all/></rule></filter>"
    lab_guests.conn("h1").nwfilterDefineXML(xml)
    try:
        guest = lab_guests.define("h1", nics=[NicSpec("app-net", filter=name)], start=False)
        _mode, missing = outcomes(plan_move(guest, "h2", mode="cold"))
        assert missing["NET-FILTER"].severity == "block" and name in missing["NET-FILTER"].message
        lab_guests.conn("h2").nwfilterDefineXML(xml)
        _mode, present = outcomes(plan_move(guest, "h2", mode="cold", owner="alice"))
        assert present["NET-FILTER"].severity == "pass"
    finally:
        for host in ("h1", "h2"):
            with contextlib.suppress(libvirt.libvirtError):
                lab_guests.conn(host).nwfilterLookupByName(name).undefine()
