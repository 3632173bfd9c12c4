"""The websocket consumers through the whole ASGI stack (origin check, session auth, routing) on the Redis
channel layer, with real session cookies: who is refused before accept, snapshot first, deltas after,
progress from another process, hostile names as text, reconnects that miss nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from migrations_app import events
from migrations_app.choices import RunStatus
from migrations_app.engine.progress import Sample
from migrations_app.models import MigrationRun
from migrations_app.services import runs
from tests.base import REPO
from tests.live.conftest import HOSTILE, process_env, session_cookie
from vmportal.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 10


def socket(path: str, user: Any = None, origin: str = "http://127.0.0.1:8000") -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        headers.append((b"cookie", f"sessionid={session_cookie(user)}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


def run_async(func: Callable[[], Awaitable[None]]) -> None:
    async_to_sync(func)()


async def refused(path: str, user: Any = None, origin: str = "http://127.0.0.1:8000") -> int | None:
    comm = await database_sync_to_async(socket)(path, user, origin)
    connected, code = await comm.connect(timeout=TIMEOUT)
    await comm.disconnect()
    assert connected is False, path
    return code


async def receive(comm: WebsocketCommunicator, kind: str, run_id: int | None = None) -> dict[str, Any]:
    """The next message of `kind` (for `run_id`), skipping others."""
    while True:
        message = await comm.receive_json_from(timeout=TIMEOUT)
        if message["type"] == kind and (run_id is None or message.get("run") == run_id):
            return message


def sample(i: int) -> Sample:
    return Sample(
        elapsed_s=50.0 + i,
        phase="memory",
        percent=60.0 + i,
        bytes_processed=300 << 20,
        bytes_remaining=200 << 20,
        bytes_total=500 << 20,
        throughput_bps=80e6,
        dirty_rate_bps=2e6,
        iteration=3,
        eta_s=2.5,
    )


def test_anonymous_users_are_refused_before_accept(fleet: dict[str, Any]) -> None:
    async def body() -> None:
        for path in ("/ws/fleet/", f"/ws/plans/{fleet['pay_plan'].pk}/", f"/ws/runs/{fleet['pay_run'].pk}/"):
            assert await refused(path) == 4401

    run_async(body)


def test_other_teams_are_refused_before_accept(fleet: dict[str, Any]) -> None:
    async def body() -> None:
        bob, eve = fleet["bob"], fleet["eve"]
        assert await refused(f"/ws/runs/{fleet['pay_run'].pk}/", bob) == 4403
        assert await refused(f"/ws/plans/{fleet['pay_plan'].pk}/", bob) == 4403
        assert await refused(f"/ws/runs/{fleet['ana_run'].pk}/", eve) == 4403
        assert await refused("/ws/runs/999999/", fleet["carol"]) == 4403  # no such run, even for an admin
        # a page of another site may not open a socket with the user's cookie
        assert await refused(f"/ws/runs/{fleet['pay_run'].pk}/", fleet["alice"], "http://evil.example") is not None

    run_async(body)


def test_the_snapshot_arrives_first_then_deltas(fleet: dict[str, Any]) -> None:
    run = fleet["pay_run"]

    async def body() -> None:
        comm = await database_sync_to_async(socket)(f"/ws/runs/{run.pk}/", fleet["alice"])
        assert (await comm.connect(timeout=TIMEOUT))[0]
        first = await comm.receive_json_from(timeout=TIMEOUT)
        assert first["type"] == "snapshot" and first["scope"] == "run"
        assert first["run"]["id"] == run.pk and first["run"]["vm"] == "pay-1"
        assert first["run"]["percent"] == 42.0
        assert len(first["samples"]) == 20 and first["latest"]["iteration"] == 1
        assert [p["key"] for p in first["timeline"]] == [
            "queued",
            "preflight",
            "backup",
            "transfer",
            "cutover",
            "validation",
        ]
        assert {p["key"]: p["state"] for p in first["timeline"]}["transfer"] == "current"
        assert first["validation"] is None  # the slot post-migration validation fills

        await database_sync_to_async(events.record_sample)(run, sample(1), lease_seconds=30)
        progress = await receive(comm, "run.progress", run.pk)
        assert progress["percent"] == 61.0 and progress["elapsed_s"] == 51.0 and progress["sent_at"] > 0
        await database_sync_to_async(events.validation_result)(
            run.pk,
            {"check_id": "VAL-PING", "severity": "pass", "message": f"answers on {HOSTILE}", "evidence": {}},
            {"status": "running", "passed": 1},
        )
        validation = await receive(comm, "run.validation", run.pk)
        assert validation["result"]["message"] == f"answers on {HOSTILE}"
        await comm.disconnect()

    run_async(body)


def test_progress_published_by_a_separate_worker_process_arrives(fleet: dict[str, Any]) -> None:
    run = fleet["pay_run"]

    async def body() -> None:
        comm = await database_sync_to_async(socket)(f"/ws/runs/{run.pk}/", fleet["alice"])
        plan = await database_sync_to_async(socket)(f"/ws/plans/{fleet['pay_plan'].pk}/", fleet["alice"])
        for c in (comm, plan):
            assert (await c.connect(timeout=TIMEOUT))[0]
            assert (await c.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
        worker = subprocess.run(  # noqa: ASYNC221  (the worker runs to its end; the messages wait in Redis)
            [sys.executable, "-m", "tests.live.publish_from_worker", str(run.pk), "5"],
            cwd=REPO,
            env=await database_sync_to_async(process_env)(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert worker.returncode == 0, worker.stderr
        seen = [await receive(comm, "run.progress", run.pk) for _ in range(5)]
        assert [m["iteration"] for m in seen] == [1, 2, 3, 4, 5]
        assert (
            seen[0]["note"].startswith("from worker pid ")
            and seen[0]["note"] != f"from worker pid {__import__('os').getpid()}"
        )
        final = await receive(comm, "run.state", run.pk)
        assert final["status"] == RunStatus.SUCCEEDED and final["downtime_ms"] == 21.0
        # the plan's watchers get the same run's messages in their own group
        assert (await receive(plan, "run.progress", run.pk))["iteration"] == 1
        assert (await receive(plan, "run.state", run.pk))["status"] == RunStatus.SUCCEEDED
        for c in (comm, plan):
            await c.disconnect()

    run_async(body)


def test_a_hostile_vm_name_arrives_as_text(fleet: dict[str, Any]) -> None:
    run = fleet["hostile_run"]

    async def body() -> None:
        comm = await database_sync_to_async(socket)(f"/ws/runs/{run.pk}/", fleet["alice"])
        assert (await comm.connect(timeout=TIMEOUT))[0]
        raw = await comm.receive_from(timeout=TIMEOUT)
        snapshot = json.loads(raw)
        assert snapshot["run"]["vm"] == HOSTILE  # the exact string, to be put in the page as text
        assert snapshot["run"]["queue_position"] == 1
        await comm.disconnect()

        fleet_socket = await database_sync_to_async(socket)("/ws/fleet/", fleet["alice"])
        assert (await fleet_socket.connect(timeout=TIMEOUT))[0]
        first = await fleet_socket.receive_json_from(timeout=TIMEOUT)
        assert HOSTILE in {r["vm"] for r in first["runs"]}
        await fleet_socket.disconnect()

    run_async(body)


def test_the_fleet_forwards_only_the_runs_a_user_may_see(fleet: dict[str, Any]) -> None:
    pay, ana = fleet["pay_run"], fleet["ana_run"]

    async def body() -> None:
        bob = await database_sync_to_async(socket)("/ws/fleet/", fleet["bob"])
        carol = await database_sync_to_async(socket)("/ws/fleet/", fleet["carol"])
        for c in (bob, carol):
            assert (await c.connect(timeout=TIMEOUT))[0]
        bob_first = await bob.receive_json_from(timeout=TIMEOUT)
        carol_first = await carol.receive_json_from(timeout=TIMEOUT)
        assert {r["id"] for r in bob_first["runs"]} == {ana.pk}
        assert {r["id"] for r in carol_first["runs"]} == {pay.pk, ana.pk, fleet["hostile_run"].pk}
        assert {h["name"] for h in bob_first["hosts"]} == {"live-src", "live-dst"}

        await database_sync_to_async(events.record_sample)(pay, sample(2), lease_seconds=30)
        await database_sync_to_async(events.record_sample)(ana, sample(3), lease_seconds=30)
        assert (await receive(carol, "run.progress"))["run"] == pay.pk
        assert (await receive(carol, "run.progress"))["run"] == ana.pk
        assert (await receive(bob, "run.progress"))["run"] == ana.pk  # alice's run never reached bob

        # a run that ends changes the bars of its hosts: fresh capacity rows follow the state
        fresh = await database_sync_to_async(MigrationRun.objects.get)(pk=ana.pk)
        await database_sync_to_async(runs.finish)(fresh, RunStatus.SUCCEEDED, outcome="moved")
        assert (await receive(bob, "run.state", ana.pk))["status"] == RunStatus.SUCCEEDED
        hosts = await receive(bob, "hosts")
        assert {h["name"] for h in hosts["hosts"]} == {"live-src", "live-dst"}
        for c in (bob, carol):
            await c.disconnect()

    run_async(body)


def test_a_reconnecting_browser_gets_a_fresh_snapshot_and_misses_nothing(fleet: dict[str, Any]) -> None:
    run = fleet["pay_run"]

    async def body() -> None:
        comm = await database_sync_to_async(socket)(f"/ws/runs/{run.pk}/", fleet["alice"])
        assert (await comm.connect(timeout=TIMEOUT))[0]
        assert len((await comm.receive_json_from(timeout=TIMEOUT))["samples"]) == 20
        await comm.disconnect()
        # while the browser is away: two samples and the end of the move
        for i in (4, 5):
            await database_sync_to_async(events.record_sample)(run, sample(i), lease_seconds=30)
        fresh = await database_sync_to_async(MigrationRun.objects.get)(pk=run.pk)
        await database_sync_to_async(runs.finish)(fresh, RunStatus.SUCCEEDED, outcome="moved", downtime_ms=12.0)

        again = await database_sync_to_async(socket)(f"/ws/runs/{run.pk}/", fleet["alice"])
        assert (await again.connect(timeout=TIMEOUT))[0]
        snapshot = await again.receive_json_from(timeout=TIMEOUT)
        assert snapshot["type"] == "snapshot"
        assert len(snapshot["samples"]) == 22 and snapshot["samples"][-1]["elapsed_s"] == 55.0
        assert snapshot["run"]["status"] == RunStatus.SUCCEEDED and snapshot["run"]["downtime_ms"] == 12.0
        assert all(p["state"] in ("done", "skipped") for p in snapshot["timeline"])
        # and a browser that suspects it missed something may ask for another
        await again.send_json_to({"type": "snapshot"})
        await again.receive_nothing(timeout=0.1)  # too soon after the first: ignored
        await database_sync_to_async(__import__("time").sleep)(0.5)
        await again.send_json_to({"type": "snapshot"})
        assert (await again.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
        await again.disconnect()

    run_async(body)


def test_plan_watchers_get_a_snapshot_with_progress_and_plan_messages(fleet: dict[str, Any]) -> None:
    plan = fleet["pay_plan"]

    async def body() -> None:
        comm = await database_sync_to_async(socket)(f"/ws/plans/{plan.pk}/", fleet["carol"])
        assert (await comm.connect(timeout=TIMEOUT))[0]
        first = await comm.receive_json_from(timeout=TIMEOUT)
        assert first["scope"] == "plan" and first["plan"]["status"] == "approved"
        by_vm = {i["vm"]: i for i in first["items"]}
        assert by_vm["pay-1"]["run"]["percent"] == 42.0
        assert by_vm[HOSTILE]["run"]["status"] == RunStatus.QUEUED
        assert first["approvals"] == []
        await database_sync_to_async(events.approval_recorded)(
            plan.pk, {"approver": "carol", "decision": "approved", "comment": "ok <b>", "at": "2026-11-30T10:00:00Z"}
        )
        assert (await receive(comm, "plan.approval"))["approval"]["comment"] == "ok <b>"
        plan.status = "running"
        await database_sync_to_async(events.plan_changed)(plan)
        assert (await receive(comm, "plan.state"))["status_label"] == "Running"
        await comm.disconnect()

    run_async(body)
