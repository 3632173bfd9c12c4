"""On the real lab, from the command line: an approver evacuates lab host h3 with `vmportal evacuate`, a
second approver approves with `vmportal approve`, and `vmportal watch` follows the moves with its progress
bars until the plan ends; every guest of the evacuation's team has left h3 (one live, one cold), and the
demo guest the portal may not plan (it belongs to no team known here) is reported with the reason and left
alone. Real daphne, real RQ worker with its scheduler, real libvirt daemons."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from api import tokens
from inventory.models import Host, Network, StoragePool, Team, VirtualMachine
from inventory.permissions import APPROVERS
from inventory.services.accounts import ensure_roles
from inventory.services.hosts import register_host
from inventory.services.sync import sync_host
from migrations_app.choices import PlanStatus
from migrations_app.models import MigrationPlan, MigrationRun, NetworkMapping
from tests.base import REPO
from tests.labguests import DiskSpec, LabGuests, NicSpec
from tests.live.conftest import process_env
from tests.ui.live_server import Processes, free_port

pytestmark = [pytest.mark.lab]
VMPORTAL = REPO / ".venv" / "bin" / "vmportal"


@pytest.fixture
def portal(transactional_db: None) -> Iterator[str]:
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
        yield f"http://127.0.0.1:{port}"
    finally:
        print(procs.logs()[-6000:])
        procs.stop()


@pytest.fixture
def lab_world(lab: dict[str, Any], lab_guests: LabGuests, transactional_db: None) -> dict[str, Any]:
    ensure_roles()
    team = Team.objects.create(slug="evac", name="Evacuation tests")
    users = get_user_model().objects
    ada, ben = users.create_user("ada", password="x" * 12), users.create_user("ben", password="x" * 12)
    for user in (ada, ben):
        user.groups.add(Group.objects.get(name=APPROVERS))
    live = lab_guests.define("h3", name="evac-live", team="evac", nics=[NicSpec("applan")], memory_mib=48)
    cold = lab_guests.define(
        "h3",
        name="evac-cold",
        team="evac",
        nics=[NicSpec("applan")],
        disks=[DiskSpec(pool="local", format="qcow2", capacity_mib=16, write_mib=2)],
        memory_mib=48,
        start=False,
    )
    hosts = {
        e["name"]: register_host(None, name=e["name"], uri=e["uri"], migration_uri=e["migration_uri"], sync=False)
        for e in lab["hosts"]
    }
    for host in hosts.values():
        assert sync_host(host.pk).ok
        StoragePool.objects.filter(host=host, name="shared").update(shared_by_admin=True)
    for name, network in (("h1", "app-net"), ("h2", "app-lan")):
        NetworkMapping.objects.create(
            source=Network.objects.get(host=hosts["h3"], name="applan"),
            destination=Network.objects.get(host=hosts[name], name=network),
        )
    return {
        "ada": tokens.create(ada, "evacuation")[1],
        "ben": tokens.create(ben, "approvals")[1],
        "guests": [live, cold],
        "team": team,
        "hosts": hosts,
    }


def vmportal(url: str, token: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**process_env(), "VMPORTAL_URL": url, "VMPORTAL_TOKEN": token, "COLUMNS": "160"}
    result = subprocess.run(  # noqa: S603
        [str(VMPORTAL), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    print(f"$ vmportal {' '.join(args)}\n{result.stdout}{result.stderr}")
    return result


def test_a_host_is_evacuated_from_the_command_line(portal: str, lab_world: dict[str, Any], lab: dict[str, Any]) -> None:
    names = {g.name for g in lab_world["guests"]}
    on_h3 = set(VirtualMachine.objects.filter(host__name="h3", present=True).values_list("name", flat=True))
    assert names <= on_h3
    others = on_h3 - names  # demo guests: their teams are not known to this portal, so nobody may plan them

    evacuated = vmportal(portal, lab_world["ada"], "evacuate", "h3", "--submit")
    assert evacuated.returncode == 0, evacuated.stdout + evacuated.stderr
    assert Host.objects.get(name="h3").maintenance
    for other in others:
        assert other in evacuated.stdout and "belongs to no team" in evacuated.stdout
    plan = MigrationPlan.objects.get(team=lab_world["team"])
    assert plan.status == PlanStatus.PENDING_APPROVAL, plan.status_reason
    assert "Waves:" in evacuated.stdout
    items = {i.vm.name: i for i in plan.items.select_related("vm", "destination")}
    assert set(items) == names and all(i.destination and i.destination.name in ("h1", "h2") for i in items.values())
    assert {items["evac-live"].mode, items["evac-cold"].mode} == {"live", "cold"}

    approved = vmportal(portal, lab_world["ben"], "approve", str(plan.pk), "--comment", "Maintenance of h3.")
    assert approved.returncode == 0, approved.stderr
    watched = vmportal(portal, lab_world["ada"], "watch", str(plan.pk), "--interval", "0.5")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "evac-live →" in watched.stdout and "evac-cold →" in watched.stdout and "100.0%" in watched.stdout
    assert f"Plan {plan.pk} succeeded" in watched.stdout

    # h3 holds none of them any more; each runs (or is defined) where the plan sent it
    runs = {r.vm.name: r for r in MigrationRun.objects.filter(item__plan=plan).select_related("vm", "destination")}
    assert {r.status for r in runs.values()} == {"succeeded"}
    uris = {h["name"]: h["uri"] for h in lab["hosts"]}
    h3 = libvirt.open(uris["h3"])
    try:
        active_on_h3 = {h3.lookupByID(i).name() for i in h3.listDomainsID()}
        defined_on_h3 = set(h3.listDefinedDomains())
    finally:
        h3.close()
    assert not names & active_on_h3 and not names & defined_on_h3, (active_on_h3, defined_on_h3)
    for guest in lab_world["guests"]:
        destination = runs[guest.name].destination.name
        conn = libvirt.open(uris[destination])
        try:
            dom = conn.lookupByUUIDString(guest.uuid)
            assert dom.isActive() == (guest.name == "evac-live")
        finally:
            conn.close()
    assert not VirtualMachine.objects.filter(host__name="h3", present=True, name__in=names).exists()
