"""On the real lab, from the command line: an approver evacuates lab host h3 with `vmportal evacuate`, a
second approver approves with `vmportal approve`, and `vmportal watch` follows the moves with its progress
bars until the plans end; h3 is left empty (libvirt lists no domain on it): the test's guests (one live,
one cold) and the lab's demo guest batch-01 all moved. Afterwards the demo guests are moved back to h3
the same way, so the shared lab is left as it was found. Real daphne, real RQ worker with its scheduler,
real libvirt daemons.

Every VM on h3 belongs to a team the portal knows, as in a portal set up by `make run` (the demo guests
carry the demo teams' tags): a plan belongs to one team, so a VM of no team cannot be planned and an
evacuation reports it ("belongs to no team") instead of moving it (tests/bulk cover that report).
"""

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
from inventory.services.hosts import assign_team, register_host, update_host
from inventory.services.sync import sync_host
from migrations_app.choices import PlanStatus
from migrations_app.models import MigrationPlan, MigrationRun, NetworkMapping
from migrations_app.services import backups
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
    # the teams the guests on h3 carry exist (the lab's demo guests carry the demo teams' tags); a guest
    # without a tag is assigned to a team by an admin, as the evacuation's report asks
    unowned = VirtualMachine.objects.filter(host=hosts["h3"], present=True, team__isnull=True)
    for tag in set(unowned.exclude(team_tag="").values_list("team_tag", flat=True)):
        Team.objects.get_or_create(slug=tag, defaults={"name": tag.title()})
    assert sync_host(hosts["h3"].pk).ok
    assign_team(ada, list(unowned.filter(team_tag="")), team)
    assert not VirtualMachine.objects.filter(host=hosts["h3"], present=True, team__isnull=True).exists()
    for name, network in (("h1", "app-net"), ("h2", "app-lan")):
        NetworkMapping.objects.create(
            source=Network.objects.get(host=hosts["h3"], name="applan"),
            destination=Network.objects.get(host=hosts[name], name=network),
        )
        # and back, for the demo guests' way home
        NetworkMapping.objects.create(
            source=Network.objects.get(host=hosts[name], name=network),
            destination=Network.objects.get(host=hosts["h3"], name="applan"),
        )
    return {
        "ada_user": ada,
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


def domains_on(uri: str) -> dict[str, bool]:
    """name → active, for every domain (running or only defined) libvirt lists on the host."""
    conn = libvirt.open(uri)
    try:
        return {dom.name(): bool(dom.isActive()) for dom in conn.listAllDomains(0)}
    finally:
        conn.close()


def backup_volumes(uris: dict[str, str], names: set[str]) -> set[tuple[str, str, str]]:
    """(host, pool, volume) of every backup of these guests in the lab (engine.backup names them so)."""
    prefixes = tuple(f"vmportal-backup-{n}-" for n in names)
    found = set()
    for host, uri in uris.items():
        conn = libvirt.open(uri)
        try:
            for pool in conn.listAllStoragePools(0):
                if pool.isActive():
                    pool.refresh(0)
                    found |= {(host, pool.name(), v) for v in pool.listVolumes() if prefixes and v.startswith(prefixes)}
        finally:
            conn.close()
    return found


def remove_backup_volumes(uris: dict[str, str], names: set[str], keep: set[tuple[str, str, str]]) -> None:
    """Remove the backups of these (demo) guests, but those in `keep`."""
    for host, pool, volume in sorted(backup_volumes(uris, names) - keep):
        conn = libvirt.open(uris[host])
        try:
            conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).delete(0)
        finally:
            conn.close()


def approve_and_watch(url: str, world: dict[str, Any], plan: MigrationPlan, comment: str) -> None:
    approved = vmportal(url, world["ben"], "approve", str(plan.pk), "--comment", comment)
    assert approved.returncode == 0, approved.stderr
    watched = vmportal(url, world["ada"], "watch", str(plan.pk), "--interval", "0.5")
    placed = [(i.vm.name, str(i.destination), i.storage_map) for i in plan.items.select_related("vm", "destination")]
    assert watched.returncode == 0, (watched.stdout, watched.stderr, placed)
    assert "100.0%" in watched.stdout and f"Plan {plan.pk} succeeded" in watched.stdout
    for item in plan.items.select_related("vm"):
        assert f"{item.vm.name} →" in watched.stdout


def test_a_host_is_evacuated_from_the_command_line(
    portal: str, lab_world: dict[str, Any], lab: dict[str, Any], tmp_path: Any
) -> None:
    uris = {h["name"]: h["uri"] for h in lab["hosts"]}
    names = {g.name for g in lab_world["guests"]}
    on_h3 = set(VirtualMachine.objects.filter(host__name="h3", present=True).values_list("name", flat=True))
    assert names <= on_h3 and set(domains_on(uris["h3"])) == on_h3
    others = on_h3 - names  # the lab's demo guests (batch-01)
    # backups of the demo guests are named after this test database's row ids: a session of this test
    # that failed half-way left some behind, and the next backup of the same name would be refused
    remove_backup_volumes(uris, others, keep=set())
    try:
        evacuate_and_go_home(portal, lab_world, uris, names, on_h3, others, tmp_path)
    finally:
        remove_backup_volumes(uris, others, keep=set())  # the backups this test's moves took


def evacuate_and_go_home(
    portal: str,
    lab_world: dict[str, Any],
    uris: dict[str, str],
    names: set[str],
    on_h3: set[str],
    others: set[str],
    tmp_path: Any,
) -> None:
    evacuated = vmportal(portal, lab_world["ada"], "evacuate", "h3", "--submit")
    assert evacuated.returncode == 0, evacuated.stdout + evacuated.stderr
    assert Host.objects.get(name="h3").maintenance
    assert "Cannot move" not in evacuated.stdout and "Waves:" in evacuated.stdout
    plans = list(MigrationPlan.objects.filter(name__startswith="Evacuate h3").order_by("pk"))
    assert {p.status for p in plans} == {PlanStatus.PENDING_APPROVAL}, [p.status_reason for p in plans]
    items = {i.vm.name: i for p in plans for i in p.items.select_related("vm", "destination")}
    assert set(items) == on_h3  # every VM on the host, whichever team it belongs to
    assert all(i.destination and i.destination.name in ("h1", "h2") for i in items.values())
    assert {items["evac-live"].mode, items["evac-cold"].mode} == {"live", "cold"}

    for plan in plans:
        approve_and_watch(portal, lab_world, plan, "Maintenance of h3.")

    runs = {r.vm.name: r for r in MigrationRun.objects.filter(item__plan__in=plans).select_related("vm", "destination")}
    assert set(runs) == on_h3 and {r.status for r in runs.values()} == {"succeeded"}
    # h3 is empty: libvirt lists no domain on it, running or defined
    assert domains_on(uris["h3"]) == {}
    assert not VirtualMachine.objects.filter(host__name="h3", present=True).exists()
    for guest in lab_world["guests"]:
        destination = runs[guest.name].destination.name
        conn = libvirt.open(uris[destination])
        try:
            dom = conn.lookupByUUIDString(guest.uuid)
            assert dom.isActive() == (guest.name == "evac-live")
        finally:
            conn.close()

    # maintenance over: the demo guests go home to h3 the same way (a CSV plan), leaving the lab as found.
    # A cold move keeps the source's disks until retention ends; an admin releases them first (the move
    # home would not overwrite a volume of the same name).
    if others:
        update_host(lab_world["ada_user"], Host.objects.get(name="h3"), maintenance=False)
        for vm in VirtualMachine.objects.filter(name__in=others):
            for disk in backups.retained_disks_of(vm):
                assert backups.release_retained_disk(lab_world["ada_user"], disk)
        csv = tmp_path / "home.csv"
        csv.write_text("vm,destination,mode,window,group\n" + "".join(f"{n},h3,auto,,\n" for n in sorted(others)))
        created = vmportal(portal, lab_world["ada"], "plan-csv", str(csv), "--name", "Back to h3", "--wait")
        assert created.returncode == 0, created.stdout + created.stderr
        home = MigrationPlan.objects.get(name="Back to h3")
        submitted = vmportal(portal, lab_world["ada"], "submit", str(home.pk))
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        approve_and_watch(portal, lab_world, home, "Maintenance of h3 is over.")
        assert set(domains_on(uris["h3"])) == others
        for vm in VirtualMachine.objects.filter(name__in=others):  # the copies the first moves left behind
            for disk in backups.retained_disks_of(vm):
                assert backups.release_retained_disk(lab_world["ada_user"], disk)
