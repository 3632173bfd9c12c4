"""CSV plans against a libvirt test-driver inventory: 300 VMs import, audit and split into waves; a CSV
with bad rows is refused as a whole, every bad row reported with its line number."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest
from rest_framework.test import APIClient

from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import AuditStatus
from migrations_app.models import AuditLogEntry, MigrationPlan
from migrations_app.services import audits as audit_services
from migrations_app.services import bulk
from migrations_app.services import plans as plan_services
from tests.api.conftest import token_client
from tests.base import domain_xml, node_file_host

pytestmark = pytest.mark.django_db

SOURCES, PER_SOURCE, DESTINATIONS = 6, 50, 4


def guest_domain(name: str, uuid: str, mac: str) -> str:
    """A guest the test driver's hosts can take: its hosts offer i686 guests without machine types."""
    return domain_xml(name, uuid, team="payments", mac=mac).replace(
        "<type arch='x86_64' machine='pc'>", "<type arch='i686'>"
    )


def credit_free_memory(hosts: Any, free: int = 16 * 1024**3) -> None:
    """The test driver reports no free memory at all; its hosts are credited with `free` through a negative
    reserve, which the audit's memory check and the wave planner both count."""
    hosts.update(memory_reserve=-free)


def vm_uuid(source: int, index: int) -> str:
    return f"cccccccc-{source:04x}-0000-0000-{index:012x}"


@pytest.fixture
def fleet(people: dict[str, Any]) -> dict[str, Any]:
    hosts = []
    for s in range(SOURCES):
        domains = [
            guest_domain(f"web-{s}-{i}", vm_uuid(s, i), f"52:54:00:5{s}:{i // 256:02x}:{i % 256:02x}")
            for i in range(PER_SOURCE)
        ]
        hosts.append(node_file_host(f"csv-src-{s}", domains))
    for d in range(DESTINATIONS):
        hosts.append(node_file_host(f"csv-dst-{d}", []))
    for host in hosts:
        assert sync_host(host.pk).ok
    # room for everyone: many vCPUs per core on the test driver's 4-core hosts
    Host.objects.filter(name__startswith="csv-dst-").update(cpu_overcommit=100, max_incoming=4)
    credit_free_memory(Host.objects.filter(name__startswith="csv-dst-"))
    Host.objects.filter(name__startswith="csv-src-").update(max_outgoing=3)
    assert VirtualMachine.objects.count() == SOURCES * PER_SOURCE
    return people


def good_csv() -> str:
    lines = ["vm,destination,mode,window,group"]
    for s in range(SOURCES):
        for i in range(PER_SOURCE):
            key = vm_uuid(s, i) if i % 2 else f"web-{s}-{i}"  # names and UUIDs both work
            destination = "auto" if i % 3 == 0 else f"csv-dst-{(s + i) % DESTINATIONS}"
            group = f"app-{s}-{i // 3}" if i < 18 else ""  # groups of three VMs on one source (its limit)
            lines.append(f"{key},{destination},auto,,{group}")
    return "\n".join(lines) + "\n"


def test_a_300_vm_csv_imports_audits_and_splits_into_waves(fleet: dict[str, Any]) -> None:
    client: APIClient = token_client(fleet["alice"])
    response = client.post("/api/v1/plans/import-csv/", {"csv": good_csv(), "name": "big move"}, format="json")
    assert response.status_code == 201, response.json()
    plan = MigrationPlan.objects.get(pk=response.json()["id"])
    assert plan.items.count() == SOURCES * PER_SOURCE and plan.name == "big move"
    assert VirtualMachine.objects.get(name="web-0-4").app == "app-0-1"
    audit = plan_services.latest_audit(plan)
    assert audit is not None
    summary = audit_services.run_audit(audit.pk)
    assert summary["status"] == AuditStatus.DONE, summary
    plan.refresh_from_db()
    items = list(plan.items.select_related("vm", "source", "destination"))
    assert all(i.destination is not None for i in items), [i.destination_reason for i in items if not i.destination]
    waves = plan.wave_plan["waves"]
    assert plan.wave_plan["problems"] == {}, plan.wave_plan["problems"]
    assert sum(w["items"] for w in waves) == len(items)
    # every wave respects the hosts' limits; every group is in one wave; the timeline runs forward
    per_wave: dict[int, list[Any]] = defaultdict(list)
    for item in items:
        per_wave[item.wave].append(item)
    assert len(per_wave) == len(waves) >= len(items) / (SOURCES * 3)
    for wave_items in per_wave.values():
        for host, n in Counter(i.source_id for i in wave_items).items():
            assert n <= 3, host
        for host, n in Counter(i.destination_id for i in wave_items).items():
            assert n <= 4, host
    groups: dict[str, set[int]] = defaultdict(set)
    for item in items:
        if item.vm.app:
            groups[item.vm.app].add(item.wave)
    assert len(groups) == SOURCES * 6 and all(len(w) == 1 for w in groups.values())
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(waves, waves[1:], strict=False))
    assert plan.wave_plan["total_s"] == waves[-1]["end_s"] > 0
    shown = client.get(f"/api/v1/plans/{plan.pk}/waves/").json()
    assert shown["waves"] == waves


def test_a_csv_with_bad_rows_is_refused_as_a_whole_with_every_bad_row(fleet: dict[str, Any]) -> None:
    text = "\n".join(
        [
            "vm,destination,mode,window,group",
            "web-0-0,csv-dst-0,live,,shop",  # 2: fine
            "no-such-vm,csv-dst-0,live,,",  # 3
            "web-0-1,csv-dst-9,live,,",  # 4: no such host
            "web-0-2,csv-src-0,live,,",  # 5: its own host
            "web-0-3,auto,sideways,,",  # 6: bad mode
            "web-0-4,auto,live,tomorrow,",  # 7: bad window
            "web-0-0,auto,live,,",  # 8: duplicate of line 2
            f"{vm_uuid(0, 5)},auto,live,,{'x' * 101}",  # 9: group too long
            "web-0-6,auto,live,,",  # 10: fine
        ]
    )
    client = token_client(fleet["alice"])
    response = client.post("/api/v1/plans/import-csv/", {"csv": text}, format="json")
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["code"] == "csv_invalid"
    lines = [row["line"] for row in body["rows"]]
    assert lines == [3, 4, 5, 6, 7, 8, 9], body["rows"]
    messages = {row["line"]: row["message"] for row in body["rows"]}
    assert "no VM 'no-such-vm'" in messages[3] and "no host 'csv-dst-9'" in messages[4]
    assert "already on csv-src-0" in messages[5] and "sideways" in messages[6] and "window" in messages[7]
    assert "line 2" in messages[8] and "100 characters" in messages[9]
    assert not MigrationPlan.objects.exists()
    assert VirtualMachine.objects.get(name="web-0-0").app == ""  # nothing half-imported
    assert not AuditLogEntry.objects.filter(verb__startswith="vm.").exists()


def test_csv_header_and_team_rules(fleet: dict[str, Any]) -> None:
    alice = fleet["alice"]
    with pytest.raises(bulk.CSVError) as refused:
        bulk.import_csv(alice, "name,host\nweb-0-0,x\n")
    assert refused.value.rows[0][0] == 1 and "'vm' is required" in refused.value.rows[0][1]
    with pytest.raises(bulk.CSVError) as refused:
        bulk.import_csv(alice, "vm,colour\nweb-0-0,red\n")
    assert "colour" in refused.value.rows[0][1]
    with pytest.raises(bulk.CSVError) as refused:
        bulk.import_csv(fleet["bob"], "vm\nweb-0-0\n")  # another team's VM is as good as unknown
    assert refused.value.rows == [(2, "no VM 'web-0-0' (or it is missing, or not your team's).")]
    with pytest.raises(bulk.CSVError) as refused:
        bulk.import_csv(alice, "vm,mode\nweb-0-0,live\nweb-0-1,cold\n")
    assert refused.value.rows[0][0] == 3 and "one plan has one mode" in refused.value.rows[0][1]
    plan = bulk.import_csv(alice, "vm,window\r\nweb-0-0,2030-01-01T22:00Z/2030-01-02T04:00Z\r\n", name="windowed")
    assert plan.window_start is not None and plan.window_end is not None and plan.name == "windowed"


def test_text_the_csv_module_cannot_read_is_refused_with_its_line(people: dict[str, Any]) -> None:
    """A bare carriage return ends a line (as in CSV files written elsewhere); a field the csv module
    refuses (longer than its limit) is a CSVError naming its line, never a server error."""
    with pytest.raises(bulk.CSVError) as caught:
        bulk.parse_csv(people["alice"], "T\u00db\r\u007f")
    assert caught.value.rows[0][0] == 1
    text = "vm\r" + "x" * 200_000
    with pytest.raises(bulk.CSVError) as caught:
        bulk.parse_csv(people["alice"], text)
    assert "not CSV" in caught.value.rows[0][1]
