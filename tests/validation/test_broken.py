"""The validation component run against deliberately broken real domain states on the lab, without a
full move each: a NIC on the wrong network, a missing network filter, the source still running, an
unmounted data disk, a probe to a closed port, downtime above the plan's limit."""

from __future__ import annotations

import base64
import json
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from inventory.models import Host, VirtualMachine
from migrations_app.choices import Mode, RunStatus
from migrations_app.models import MigrationPlan, MigrationRun, PlanItem, Probe
from migrations_app.validation import Waits
from migrations_app.validation import phase as validation
from tests.engine.conftest import sync
from tests.engine.linux import define_linux
from tests.labguests import LabGuests, NicSpec

pytestmark = [pytest.mark.lab]

#: short waits: these guests are up already, and nothing here boots
QUICK = Waits(agent_s=5.0, console_s=1.0, console_max_s=20.0, probe_s=1.0)


def _run(
    people: dict[str, Any], hosts: dict[str, Host], uuid: str, source: str, destination: str, **options: Any
) -> MigrationRun:
    """A live run record from `source` to `destination` as if its move had just switched over."""
    vm = VirtualMachine.objects.get(uuid=uuid)
    downtime_ms = options.pop("downtime_ms", 20.0)
    plan = MigrationPlan.objects.create(
        name="validate", requester=people["alice"], team=people["payments"], mode=Mode.LIVE
    )
    item = PlanItem.objects.create(
        plan=plan, vm=vm, source=hosts[source], destination=hosts[destination], mode=Mode.LIVE
    )
    return MigrationRun.objects.create(
        item=item,
        vm=vm,
        source=hosts[source],
        destination=hosts[destination],
        mode=Mode.LIVE,
        status=RunStatus.VERIFYING,
        options={"max_downtime_ms": 300, **options},
        downtime_ms=downtime_ms,
    )


def _outcomes(report: Any) -> dict[str, str]:
    return dict(report.results.values_list("check_id", "outcome"))


def _failed(report: Any) -> set[str]:
    return {cid for cid, outcome in _outcomes(report).items() if outcome == "fail"}


def test_wrong_network_missing_filter_and_a_running_source_each_fail_their_check(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    # the VM as it ran on h1: its NIC on the app segment, behind a network filter
    source = lab_guests.define("h1", nics=[NicSpec(network="app-net", filter="lab-clean-traffic")])
    sync(lab_hosts, "h1")
    run = _run(people, lab_hosts, source.uuid, "h1", "h3", network_map={source.macs[0]: "applan"})
    validation.take_baseline(run)
    lab_guests.conn("h1").lookupByUUIDString(source.uuid).destroy()  # switched over: the source stops
    # its copy on h3, broken on purpose: the NIC on the backup segment instead of the mapped app network,
    # and without the filter
    xml = lab_guests.conn("h1").lookupByUUIDString(source.uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    xml = xml.replace("<source network='app-net'/>", "<source network='backup-lan'/>")
    xml = xml.replace("<filterref filter='lab-clean-traffic'/>", "")
    assert "backup-lan" in xml and "filterref" not in xml
    lab_guests.conn("h3").defineXML(xml).create()

    report = validation.run_phase(run, QUICK)
    assert _failed(report) == {"VAL-NICS", "VAL-SECURITY"}, _outcomes(report)
    nics = report.results.get(check_id="VAL-NICS")
    assert nics.evidence["expected"][source.macs[0]]["network"] == "applan"
    assert nics.evidence["found"][source.macs[0]]["network"] == "backup-lan"
    security = report.results.get(check_id="VAL-SECURITY")
    assert "lost its network filter lab-clean-traffic" in security.message
    assert report.results.get(check_id="VAL-SOURCE").outcome == "pass"

    # the source starts again while the copy runs: split brain
    lab_guests.conn("h1").lookupByUUIDString(source.uuid).create()
    report = validation.run_phase(run, QUICK)
    assert "VAL-SOURCE" in _failed(report)
    assert report.results.get(check_id="VAL-SOURCE").evidence["found"] == "running"
    assert report.status == "failed"


def _agent_exec(dom: libvirt.virDomain, *argv: str) -> None:
    cmd = {"execute": "guest-exec", "arguments": {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}}
    pid = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), 5, 0))["return"]["pid"]
    for _ in range(50):
        status = json.loads(
            libvirt_qemu.qemuAgentCommand(
                dom, json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}}), 5, 0
            )
        )["return"]
        if status.get("exited"):
            assert status.get("exitcode") == 0, base64.b64decode(status.get("err-data", "")).decode()
            return
    raise AssertionError(f"{argv} did not finish")


def test_unmounted_data_disk_fails_agent_and_a_closed_port_fails_probes_and_downtime_over_the_limit(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.134"
    # the guest runs on h2 as after a live move from h1 (where it is no longer defined)
    guest = define_linux(lab_guests, "h2", ip, network="app-lan", agent=True, data_disk=True)
    sync(lab_hosts, "h2")
    run = _run(people, lab_hosts, guest.uuid, "h1", "h2", downtime_ms=450.0)
    # the baseline as the source would have given it before the move: the same guest, read through libvirt
    run.source = lab_hosts["h2"]
    validation.take_baseline(run)
    run.source = lab_hosts["h1"]
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    Probe.objects.create(vm=vm, kind="tcp", port=80)
    closed = Probe.objects.create(vm=vm, kind="tcp", address=ip, port=8081)

    report = validation.run_phase(run, QUICK)
    assert _failed(report) == {"VAL-PROBES", "VAL-DOWNTIME"}, _outcomes(report)
    probes = report.results.get(check_id="VAL-PROBES")
    assert f"{ip}:8081" in probes.message and "1 of 2" in probes.message
    downtime = report.results.get(check_id="VAL-DOWNTIME")
    assert downtime.evidence == {"expected": {"limit_ms": 300}, "found": {"downtime_ms": 450.0}}
    assert report.results.get(check_id="VAL-AGENT").outcome == "pass"

    # the data disk is unmounted in the guest (through its agent); the closed port is no longer probed
    _agent_exec(lab_guests.conn("h2").lookupByUUIDString(guest.uuid), "/bin/umount", "/data")
    closed.delete()
    MigrationRun.objects.filter(pk=run.pk).update(downtime_ms=20.0)
    run.refresh_from_db()
    report = validation.run_phase(run, QUICK)
    assert _failed(report) == {"VAL-AGENT"}, _outcomes(report)
    agent = report.results.get(check_id="VAL-AGENT")
    assert "/data is no longer mounted" in agent.message
    assert agent.evidence["expected"]["filesystems"] == ["/data"] and agent.evidence["found"]["filesystems"] == []
