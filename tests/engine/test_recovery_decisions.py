"""The recovery decision and the live engine's failure handling over plain inputs, without the lab.

`whereabouts` and `live_failure` are pure. `reconcile.resolve` and `LiveMove.fail_safely` are driven
with a small in-memory stand-in for the adapter's locate / completed-stats / clean-up calls, over
test-driver hosts in the database; the lab tests (test_recovery.py, test_control.py) prove the real
behaviour against libvirt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from inventory.hypervisor import HostUnreachable
from inventory.hypervisor import migrate as hv
from inventory.models import VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.choices import RunStatus
from migrations_app.engine import live
from migrations_app.engine.recovery import Whereabouts, live_failure, whereabouts
from migrations_app.models import MigrationRun
from migrations_app.services import reconcile
from tests.base import domain_xml, node_file_host, write_node_file
from tests.live.conftest import make_plan, make_run

SRC, DST = "test:///src", "test:///dst"
VM_XML = domain_xml("rec-1", str(uuid.UUID(int=5150)), team="payments")


def at(uri: str, state: str = "", *, reachable: bool = True, job: bool = False) -> hv.DomainLocation:
    """A location as `hv.locate` reports it: state "" means the UUID is not on that host."""
    return hv.DomainLocation(uri, reachable, exists=bool(state), state=state, job_active=job)


# ---- pure ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        (at(SRC, reachable=False), at(DST, "running"), Whereabouts.UNREACHABLE),
        (at(SRC, "running"), at(DST, reachable=False), Whereabouts.UNREACHABLE),
        (at(SRC), at(DST, "running"), Whereabouts.MOVED),
        (at(SRC, "shutoff"), at(DST, "running"), Whereabouts.MOVED),
        (at(SRC, "running"), at(DST, "running"), Whereabouts.BOTH),
        (at(SRC, "running"), at(DST), Whereabouts.ON_SOURCE),
        (at(SRC, "running"), at(DST, "paused"), Whereabouts.ON_SOURCE),
        (at(SRC, "shutoff"), at(DST), Whereabouts.NOT_RUNNING),
        (at(SRC, "paused"), at(DST, "paused"), Whereabouts.NOT_RUNNING),
        (at(SRC), at(DST), Whereabouts.NOT_RUNNING),
    ],
)
def test_whereabouts(source: hv.DomainLocation, destination: hv.DomainLocation, expected: Whereabouts) -> None:
    assert whereabouts(source, destination) == expected


def test_live_failure_names_who_aborted() -> None:
    limits = {"max_downtime_ms": 2000, "max_move_s": 900}
    cancel = live_failure("cancel", "aborted by user", **limits)
    assert cancel.status == RunStatus.CANCELLED and "Cancelled" in cancel.message
    policy = live_failure("policy", "aborted", **limits)
    assert policy.status == RunStatus.FAILED and "did not converge" in policy.message and "2000 ms" in policy.message
    timeout = live_failure("timeout", "aborted", **limits)
    assert timeout.status == RunStatus.FAILED and "900 s" in timeout.message
    plain = live_failure("", "unable to connect to the destination", **limits)
    assert plain == type(plain)(RunStatus.FAILED, "unable to connect to the destination")


# ---- resolve and fail_safely with an in-memory adapter -----------------------------------------------------


@dataclass
class FakeHosts:
    """What each host says about each UUID; clean-ups and stats reads are recorded."""

    where: dict[str, hv.DomainLocation] = field(default_factory=dict)
    cleaned: list[tuple[str, list[dict[str, str]]]] = field(default_factory=list)
    unreachable_cleanup: bool = False
    stats: hv.JobStats | None = None

    def locate(self, uri: str, uuid: str, timeout: float = 15.0) -> hv.DomainLocation:
        return self.where.get(uri) or at(uri)

    def completed_stats(self, uri: str, uuid: str, timeout: float = 15.0) -> hv.JobStats | None:
        return self.stats

    def cleanup_destination(
        self, uri: str, uuid: str, volumes: list[dict[str, str]], timeout: float = 15.0
    ) -> list[str]:
        if self.unreachable_cleanup:
            raise HostUnreachable("no route to host")
        self.cleaned.append((uri, volumes))
        return [v["name"] for v in volumes]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeHosts:
    hosts = FakeHosts()
    for name in ("locate", "completed_stats", "cleanup_destination"):
        monkeypatch.setattr(hv, name, getattr(hosts, name))
    return hosts


@pytest.fixture
def run(db: None, people: dict[str, Any]) -> MigrationRun:
    src = node_file_host("rec-src", [VM_XML])
    dst = node_file_host("rec-dst", [])
    for host in (src, dst):
        assert sync_host(host.pk).ok
    vm = VirtualMachine.objects.get(name="rec-1")
    plan = make_plan(people["alice"], people["payments"], [vm], dst)
    created = make_run(
        plan.items.get(),
        pending_cleanup={"host": dst.pk, "uuid": str(vm.uuid), "volumes": [{"pool": "local", "name": "rec-1.qcow2"}]},
    )
    return MigrationRun.objects.select_related("source", "destination", "vm").get(pk=created.pk)


def _place(fake: FakeHosts, run: MigrationRun, source: str, destination: str, **kw: Any) -> None:
    """What the stand-in reports; the test-driver hosts the inventory syncs from agree with it."""
    write_node_file("rec-src", [VM_XML] if source else [])
    write_node_file("rec-dst", [VM_XML] if destination and not source else [])
    fake.where = {run.source.uri: at(run.source.uri, source), run.destination.uri: at(run.destination.uri, destination)}
    if kw.get("source_down"):
        fake.where[run.source.uri] = at(run.source.uri, reachable=False)


def test_resolve_a_vm_that_moved_records_the_move_and_the_figures(fake: FakeHosts, run: MigrationRun) -> None:
    _place(fake, run, "", "running")
    fake.stats = hv.JobStats(active=False, downtime_ms=42, raw={"downtime": 42})
    assert reconcile.resolve(run)["decision"] == "succeeded"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.downtime_ms == 42.0 and run.pending_cleanup == {}
    assert "finished while no worker watched it" in run.outcome
    assert VirtualMachine.objects.get(pk=run.vm_id).host_id == run.destination_id
    assert fake.cleaned == []  # never removes anything from where the VM now runs


def test_resolve_a_vm_still_on_the_source_cleans_the_destination(fake: FakeHosts, run: MigrationRun) -> None:
    _place(fake, run, "running", "")
    assert reconcile.resolve(run)["decision"] == RunStatus.FAILED
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "keeps running on rec-src" in run.outcome
    assert fake.cleaned == [(run.destination.uri, [{"pool": "local", "name": "rec-1.qcow2"}])]
    assert run.pending_cleanup == {}
    assert VirtualMachine.objects.get(pk=run.vm_id).host_id == run.source_id


def test_resolve_a_cancelled_run_on_the_source_is_cancelled(fake: FakeHosts, run: MigrationRun) -> None:
    MigrationRun.objects.filter(pk=run.pk).update(cancel_requested=True)
    run.refresh_from_db()
    _place(fake, run, "running", "")
    assert reconcile.resolve(run)["decision"] == RunStatus.CANCELLED


def test_resolve_keeps_the_clean_up_pending_when_the_destination_does_not_answer(
    fake: FakeHosts, run: MigrationRun
) -> None:
    _place(fake, run, "running", "")
    fake.unreachable_cleanup = True
    reconcile.resolve(run)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.pending_cleanup["volumes"] == [
        {"pool": "local", "name": "rec-1.qcow2"}
    ]


def test_resolve_touches_nothing_when_the_vm_runs_on_both(fake: FakeHosts, run: MigrationRun) -> None:
    _place(fake, run, "running", "running")
    assert reconcile.resolve(run)["decision"] == "both"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "An admin must decide" in run.outcome and fake.cleaned == []


def test_resolve_waits_for_a_host_that_does_not_answer(fake: FakeHosts, run: MigrationRun) -> None:
    _place(fake, run, "", "running", source_down=True)
    assert reconcile.resolve(run)["decision"] == "unreachable"
    run.refresh_from_db()
    assert run.status == RunStatus.TRANSFERRING and "Waiting for rec-src" in run.phase_detail


def test_resolve_never_starts_a_vm_that_runs_nowhere(fake: FakeHosts, run: MigrationRun) -> None:
    _place(fake, run, "shutoff", "")
    assert reconcile.resolve(run)["decision"] == "not running"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "does not start it" in run.error and fake.cleaned == []


@pytest.mark.parametrize(
    ("aborted_by", "source", "destination", "status", "cleaned"),
    [
        ("cancel", "running", "", RunStatus.CANCELLED, True),
        ("policy", "running", "", RunStatus.FAILED, True),
        ("", "running", "paused", RunStatus.FAILED, True),
        ("", "", "running", RunStatus.SUCCEEDED, False),  # the error came after the switch
        ("timeout", "running", "running", RunStatus.FAILED, False),  # runs on both: nothing removed
    ],
)
def test_live_failure_handling(
    fake: FakeHosts,
    run: MigrationRun,
    aborted_by: str,
    source: str,
    destination: str,
    status: str,
    cleaned: bool,
) -> None:
    _place(fake, run, source, destination)
    move = live.LiveMove(run)
    move.aborted_by = aborted_by
    move.fail_safely(None, hv.MigrationFailed("the job failed", raw="raw error"))  # type: ignore[arg-type]
    run.refresh_from_db()
    assert run.status == status, (run.error, run.outcome)
    assert bool(fake.cleaned) == cleaned
    moved = VirtualMachine.objects.get(pk=run.vm_id).host_id == run.destination_id
    assert moved == (status == RunStatus.SUCCEEDED)
