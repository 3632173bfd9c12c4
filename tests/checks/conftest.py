"""Shared fixtures for the audit tests: the lab hosts registered and synced, default network mappings,
and helpers that plan a move of a throw-away lab guest and run the catalogue over it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import libvirt
import pytest

from inventory.models import Host, Network, StoragePool, VirtualMachine
from inventory.services.hosts import register_host
from inventory.services.sync import sync_host
from migrations_app.checks import Outcome
from migrations_app.models import MigrationPlan, NetworkMapping
from migrations_app.services.audits import evaluate_plan
from migrations_app.services.plans import create_plan
from tests.labguests import Guest, LabGuests

#: default mappings an admin keeps between the lab's per-host network names
MAPPINGS = [
    ("h1", "app-net", "h2", "app-lan"),
    ("h1", "app-net", "h3", "applan"),
    ("h1", "backup-net", "h3", "backup-lan"),
    ("h2", "app-lan", "h1", "app-net"),
]


def sync(*hosts: Host) -> None:
    """Sync hosts, marking the lab's shared pool shared as `manage.py register_lab` does."""
    for host in hosts:
        result = sync_host(host.pk)
        assert result.ok, (host.name, result.error)
        StoragePool.objects.filter(host=host, name="shared").update(shared_by_admin=True)


@pytest.fixture
def lab_hosts(lab: dict[str, Any], people: dict[str, Any]) -> dict[str, Host]:
    """h1 and h2 registered and synced, with default network mappings (h3 registered, not synced:
    other tests stop it at times)."""
    hosts = {
        e["name"]: register_host(None, name=e["name"], uri=e["uri"], migration_uri=e["migration_uri"], sync=False)
        for e in lab["hosts"]
    }
    sync(hosts["h1"], hosts["h2"])
    for src_host, src, dst_host, dst in MAPPINGS:
        source = Network.objects.filter(host=hosts[src_host], name=src).first()
        destination = Network.objects.filter(host=hosts[dst_host], name=dst).first()
        if source and destination:
            NetworkMapping.objects.create(source=source, destination=destination)
    return hosts


def vm_of(guest: Guest) -> VirtualMachine:
    return VirtualMachine.objects.select_related("host").get(uuid=guest.uuid)


Planner = Callable[..., MigrationPlan]


@pytest.fixture
def plan_move(lab_hosts: dict[str, Host], people: dict[str, Any]) -> Planner:
    """plan_move(guest or [guests], "h2", mode="live", owner="alice", **options) → a draft plan.

    The source hosts are synced first so the guests are in the inventory.
    """

    def make(
        guests: Guest | list[Guest], destination: str | Host | None, mode: str = "live", **options: Any
    ) -> MigrationPlan:
        owner = people[options.pop("owner", "alice")]
        group = guests if isinstance(guests, list) else [guests]
        sync(*{lab_hosts[g.host] for g in group})
        vms = [vm_of(g) for g in group]
        options.setdefault("fresh_backup", True)
        if destination is None:
            return create_plan(
                owner, vm_ids=[v.pk for v in vms], destinations={v.pk: None for v in vms}, mode=mode, **options
            )
        dest = destination if isinstance(destination, Host) else lab_hosts[destination]
        return create_plan(owner, vm_ids=[v.pk for v in vms], destination_id=dest.pk, mode=mode, **options)

    return make


def outcomes(plan: MigrationPlan, vm_name: str | None = None) -> tuple[str, dict[str, Outcome]]:
    """(resolved mode, check id → outcome) for one item of the plan, read fresh from the lab."""
    audited, _env = evaluate_plan(plan)
    entry = audited[0] if vm_name is None else next(a for a in audited if a.item.vm.name == vm_name)
    return entry.mode, {cid: outcome for cid, (_check, outcome) in entry.results.items()}


def severities(results: dict[str, Outcome]) -> dict[str, str]:
    return {cid: str(o.severity) for cid, o in results.items()}


def redefine(lab_guests: LabGuests, guest: Guest, edit: Callable[[str], str]) -> None:
    """Rewrite a stopped guest's definition (for elements `LabGuests.define` has no parameter for)."""
    conn = lab_guests.conn(guest.host)
    dom = conn.lookupByUUIDString(guest.uuid)
    conn.defineXML(edit(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
