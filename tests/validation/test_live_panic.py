"""A live move of the lab's Linux guest that panics a few seconds after arriving on the destination:
VAL-CONSOLE fails with the panic lines read from the console, the run ends `failed` with the VM left
where it is, and the one-click move back is offered — a plan audited, submitted by the VM's team,
approved by another person, and run back to the source.

A live move does not restart the guest, so the boot-time trigger of the cold test cannot arm this panic;
the guest is told to panic (its /cgi-bin/crash: `echo c > /proc/sysrq-trigger` one second later) at the
moment it has arrived — when the validation phase starts on the destination."""

from __future__ import annotations

import threading
from typing import Any

import django_rq
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from inventory.models import Host, Network, VirtualMachine
from migrations_app.choices import PlanStatus, RunStatus, ValidationStatus
from migrations_app.engine import live
from migrations_app.jobs import MIGRATION_QUEUE
from migrations_app.models import AuditLogEntry, MigrationPlan, MigrationRun, ValidationReport
from migrations_app.plan_jobs import START_QUEUE, start_plan
from migrations_app.services import approvals, plans
from migrations_app.services.audits import run_audit
from migrations_app.services.configuration import ensure_network_mapping
from migrations_app.services.runs import start_item
from tests.base import PASSWORD
from tests.engine.conftest import plan_item, sync
from tests.engine.linux import define_linux, http, wait_for
from tests.labguests import LabGuests
from vmportal.access import Denied

pytestmark = [pytest.mark.lab]


def _panic_on_arrival(run: MigrationRun, ip: str, answers: list[str]) -> threading.Thread:
    """Tell the guest to panic as soon as the validation of `run` has started on the destination."""

    def arm() -> None:
        try:
            wait_for(
                lambda: ValidationReport.objects.filter(run_id=run.pk, status=ValidationStatus.RUNNING).exists(),
                timeout=300,
                interval=0.05,
            )
            answers.append(http(ip, "/cgi-bin/crash"))
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=arm, name="panic-on-arrival", daemon=True)
    thread.start()
    return thread


def test_guest_that_panics_after_a_live_move_fails_console_and_is_offered_the_move_back(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    ip = "10.78.0.135"
    guest = define_linux(lab_guests, "h1", ip, agent=True, nic_filter="lab-clean-traffic", team="payments")
    item = plan_item(people, lab_hosts, guest, "h2", max_downtime_ms=500)
    # the admins' network mapping back from h2 (as `make run` maps the lab), which a move back plan uses
    ensure_network_mapping(
        people["carol"],
        Network.objects.get(host=lab_hosts["h2"], name="app-lan"),
        Network.objects.get(host=lab_hosts["h1"], name="app-net"),
    )
    # the plan as the scheduler leaves it when it starts its runs, so that it follows them
    MigrationPlan.objects.filter(pk=item.plan_id).update(status=PlanStatus.RUNNING)
    run = start_item(people["alice"], item)
    answers: list[str] = []
    arming = _panic_on_arrival(run, ip, answers)
    live.execute(run.pk)
    arming.join(10)
    run.refresh_from_db()
    assert answers == ["crashing"], "the guest was told to panic once it had arrived"

    # VAL-CONSOLE fails with the panic lines the console showed; the run fails and says what was done
    assert run.status == RunStatus.FAILED, (run.error, run.outcome)
    report = run.validation
    assert report.status == ValidationStatus.FAILED
    console = report.results.get(check_id="VAL-CONSOLE")
    assert console.outcome == "fail", console.message
    lines = console.evidence["found"]["lines"]
    assert any("Kernel panic" in line for line in lines), console.evidence
    assert "Kernel panic" in console.message
    assert console.evidence["found"]["state"].startswith("crashed")
    assert "VAL-CONSOLE" in run.error
    assert "move back" in run.outcome and "left running on h2" in run.outcome
    # a live move leaves the VM where it is (no automatic rollback): crashed on h2, the inventory agrees
    assert set(lab_guests.where(guest)) == {"h2"}
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    assert vm.host.name == "h2"
    assert AuditLogEntry.objects.filter(verb="run.failed", target_id=str(run.pk)).exists()
    assert MigrationPlan.objects.get(pk=item.plan_id).status == PlanStatus.FAILED

    # the run page offers the one-click move back; one click makes an audited plan h2 → h1
    alice = Client()
    assert alice.login(username="alice", password=PASSWORD)
    page = alice.get(reverse("runs:run_detail", args=[run.pk])).content.decode()
    assert "Plan the move back to h1" in page and "VAL-CONSOLE" in page
    response = alice.post(reverse("runs:run_move_back", args=[run.pk]))
    report.refresh_from_db()
    back = report.move_back_plan
    assert back is not None and response.status_code == 302 and response["Location"] == back.get_absolute_url()
    back_item = back.items.get()
    assert (back_item.source_id, back_item.destination_id, back.mode) == (
        lab_hosts["h2"].pk,
        lab_hosts["h1"].pk,
        "live",
    )
    assert AuditLogEntry.objects.filter(verb="run.move_back", target_id=str(run.pk)).exists()

    # the owners restart the panicked guest where it is, as the remediation says, then send the plan
    # through the audit and to another person for approval, and it runs back
    dom = lab_guests.conn("h2").lookupByUUIDString(guest.uuid)
    dom.destroy()
    dom.create()
    wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=90)
    sync(lab_hosts, "h1", "h2")
    audit = plans.latest_audit(back)
    assert audit is not None
    run_audit(audit.pk)
    back.refresh_from_db()
    # the move back keeps the original plan's options, "no fresh backup" included: BAK-RECENT blocks
    # (the lab guest has no backup) and only an approver can accept that, with a reason
    blocks = set(audit.results.filter(severity="block").values_list("check_id", flat=True))
    assert (back.status, blocks) == (PlanStatus.BLOCKED, {"BAK-RECENT"}), audit.results.filter(severity="block")
    plans.record_override(people["carol"], back, "Moving back the VM that panicked; it has no disks to lose.")
    back.refresh_from_db()
    assert back.status == PlanStatus.READY
    plans.submit(people["alice"], back)
    with pytest.raises(Denied):  # four eyes: never the requester
        approvals.approve(people["alice"], back, "my own plan")
    approvals.approve(people["carol"], back, "Move it back to where it ran without trouble.")
    back.refresh_from_db()
    assert back.status == PlanStatus.SCHEDULED, back.status
    try:
        start_plan(back.pk)  # what the start job does on a worker: re-audit, then the runs
        back_run = MigrationRun.objects.get(item__plan=back)
        live.execute(back_run.pk)
    finally:
        for queue in (MIGRATION_QUEUE, START_QUEUE):
            django_rq.get_queue(queue).empty()  # the jobs no worker runs in this test
    back_run.refresh_from_db()
    assert back_run.status == RunStatus.SUCCEEDED, (back_run.error, back_run.outcome)
    assert back_run.validation.status == ValidationStatus.PASSED
    assert lab_guests.where(guest) == {"h1": "running"}
    assert VirtualMachine.objects.get(uuid=guest.uuid).host.name == "h1"
