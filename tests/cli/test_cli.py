"""The `vmportal` command, as installed in the virtualenv, against a real server (daphne) and a real RQ
worker (the audits), with personal tokens; the inventory is the libvirt test driver."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from api import tokens
from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import PlanStatus, RunStatus
from migrations_app.models import MigrationPlan, MigrationRun
from migrations_app.services import plans as plan_services
from tests.base import REPO, make_personas, node_file_host
from tests.bulk.test_csv_plans import credit_free_memory, guest_domain
from tests.ui.live_server import Processes, free_port, process_env

VMPORTAL = REPO / ".venv" / "bin" / "vmportal"


@pytest.fixture
def portal(transactional_db: None) -> Iterator[str]:
    procs = Processes()
    port = free_port()
    procs.start("manage.py", "rqworker", "audits")
    procs.daphne(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop()


@pytest.fixture
def fleet(transactional_db: None) -> dict[str, Any]:
    people = make_personas()
    src = node_file_host(
        "cli-src",
        [guest_domain(f"pay-{i}", f"dddddddd-0000-0000-0000-00000000000{i}", f"52:54:00:61:00:0{i}") for i in (1, 2, 3)]
        + [
            guest_domain("ana-1", "dddddddd-0000-0000-0000-000000000009", "52:54:00:61:00:09").replace(
                "payments", "analytics"
            )
        ],
    )
    dst = node_file_host("cli-dst", [])
    for host in (src, dst):
        assert sync_host(host.pk).ok
    Host.objects.filter(pk=dst.pk).update(cpu_overcommit=100)
    credit_free_memory(Host.objects.filter(pk=dst.pk))
    return {**people, "tokens": {n: tokens.create(people[n], "cli")[1] for n in ("alice", "bob", "carol", "dave")}}


def vmportal(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**process_env(), "VMPORTAL_URL": url, "VMPORTAL_TOKEN": token, "COLUMNS": "200"}
    return subprocess.run([str(VMPORTAL), *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_command_is_installed_and_needs_a_token(portal: str, fleet: dict[str, Any]) -> None:
    assert VMPORTAL.exists(), "scripts/bootstrap installs the console script"
    missing = vmportal(portal, "", "vms")
    assert missing.returncode == 2 and "/account/tokens/" in missing.stderr
    bad = vmportal(portal, "vmp_nope", "vms")
    assert bad.returncode == 1 and "not valid" in bad.stderr
    down = vmportal("http://127.0.0.1:9", fleet["tokens"]["alice"], "vms")
    assert down.returncode == 1 and "Cannot reach" in down.stderr


def test_vms_are_listed_with_the_users_permissions(portal: str, fleet: dict[str, Any]) -> None:
    alice = vmportal(portal, fleet["tokens"]["alice"], "vms")
    assert alice.returncode == 0, alice.stderr
    assert "3 VMs" in alice.stdout and "pay-2" in alice.stdout and "ana-1" not in alice.stdout
    carol = vmportal(portal, fleet["tokens"]["carol"], "vms", "--host", "cli-src")
    assert "4 VMs" in carol.stdout and "ana-1" in carol.stdout


def test_a_csv_plan_is_audited_by_the_worker_shown_with_waves_submitted_and_approved(
    portal: str, fleet: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("vm,destination\npay-1,cli-dst\nnope,cli-dst\npay-2,nowhere\n")
    refused = vmportal(portal, fleet["tokens"]["alice"], "plan-csv", str(bad))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "no VM 'nope'" in refused.stderr and "no host 'nowhere'" in refused.stderr
    assert " 3 " in refused.stderr and " 4 " in refused.stderr and not MigrationPlan.objects.exists()

    good = tmp_path / "good.csv"
    good.write_text("vm,destination,mode,group\npay-1,cli-dst,cold,shop\npay-2,auto,cold,shop\npay-3,cli-dst,cold,\n")
    made = vmportal(portal, fleet["tokens"]["alice"], "plan-csv", str(good), "--name", "cli plan", "--wait")
    assert made.returncode == 0, made.stdout + made.stderr
    plan = MigrationPlan.objects.get(name="cli plan")
    assert plan.status == PlanStatus.READY, plan.status_reason
    assert "Waves:" in made.stdout and "ready" in made.stdout
    waves = {i.vm.name: i.wave for i in plan.items.select_related("vm")}
    assert waves["pay-1"] == waves["pay-2"]  # the application group moves together
    assert VirtualMachine.objects.get(name="pay-2").app == "shop"

    shown = vmportal(portal, fleet["tokens"]["alice"], "audit", str(plan.pk))
    assert shown.returncode == 0 and "Waves:" in shown.stdout
    assert vmportal(portal, fleet["tokens"]["bob"], "audit", str(plan.pk)).returncode == 2  # not bob's: 404
    submitted = vmportal(portal, fleet["tokens"]["alice"], "submit", str(plan.pk))
    assert submitted.returncode == 0 and "pending_approval" in submitted.stdout
    own = vmportal(portal, fleet["tokens"]["alice"], "approve", str(plan.pk), "--comment", "mine")
    assert own.returncode == 2 and "403" in own.stderr
    approved = vmportal(portal, fleet["tokens"]["carol"], "approve", str(plan.pk), "--comment", "Fine by me.")
    assert approved.returncode == 0, approved.stderr
    plan.refresh_from_db()
    assert plan.status in (PlanStatus.APPROVED, PlanStatus.SCHEDULED, PlanStatus.RUNNING)


def test_watch_draws_progress_until_the_plan_ends(portal: str, fleet: dict[str, Any]) -> None:
    vm = VirtualMachine.objects.get(name="pay-1")
    plan = plan_services.create_plan(fleet["alice"], vm_ids=[vm.pk], destination_id=Host.objects.get(name="cli-dst").pk)
    item = plan.items.get()
    MigrationRun.objects.create(
        item=item,
        vm=vm,
        source=item.source,
        destination=Host.objects.get(name="cli-dst"),
        mode="cold",
        status=RunStatus.SUCCEEDED,
        percent=100,
        finished_at=timezone.now(),
    )
    MigrationPlan.objects.filter(pk=plan.pk).update(status=PlanStatus.SUCCEEDED, status_reason="1 of 1 VM moved.")
    watched = vmportal(portal, fleet["tokens"]["alice"], "watch", str(plan.pk))
    assert watched.returncode == 0, watched.stderr
    assert "pay-1 → cli-dst (cold)" in watched.stdout and "100.0%" in watched.stdout
    assert "succeeded: 1 of 1 VM moved." in watched.stdout
    assert vmportal(portal, fleet["tokens"]["bob"], "watch", str(plan.pk)).returncode == 2


def test_evacuation_from_the_command_line_is_for_admins(portal: str, fleet: dict[str, Any]) -> None:
    refused = vmportal(portal, fleet["tokens"]["alice"], "evacuate", "cli-src")
    assert refused.returncode == 2 and "403" in refused.stderr
    assert not Host.objects.get(name="cli-src").maintenance
    done = vmportal(portal, fleet["tokens"]["carol"], "evacuate", "cli-src")
    assert "is in maintenance" in done.stdout, done.stdout + done.stderr
    assert Host.objects.get(name="cli-src").maintenance
    assert MigrationPlan.objects.filter(name__startswith="Evacuate cli-src").count() == 2
