"""B-FANOUT: 200 websocket clients watch one run; a worker process publishes 100 progress events.

Everything is real: a daphne server (the portal's ASGI application) on a loopback port, 200 websocket
connections with a real session cookie (asyncio `websockets` clients in this process), the Redis
channel layer, and a separate worker process that stores and publishes samples with
`events.record_sample` (tests/live/publish_from_worker.py). Latency is publish→receive: from `sent_at` (stamped when the message is handed
to the channel layer) to the moment the client has parsed it. Three rounds, each judged on the target:
the worker publishing at the rate a move's monitor does (2 events/s), ten times that (20/s), and as
fast as it can write samples (a burst: 20,000 websocket messages within about a second).
Target: every message delivered to every client; p95 ≤ 200 ms.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

CLIENTS = 200
EVENTS = 100
TARGET_P95_MS = 200.0
ROUNDS = (("monitor rate 2/s", 0.5), ("paced 20/s", 0.05), ("burst", 0.0))
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _world() -> tuple[int, str]:
    """A user, a host pair, a VM, a plan and a running run; returns (run id, session cookie value)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from inventory.models import Host, Team, VirtualMachine
    from migrations_app.models import MigrationPlan, MigrationRun, PlanItem

    user = get_user_model().objects.update_or_create(username="bench-fanout", defaults={"is_active": True})[0]
    team = Team.objects.get_or_create(slug="bench-fanout", defaults={"name": "Fanout"})[0]
    team.members.add(user)
    src = Host.objects.get_or_create(name="bench-fanout-a", defaults={"uri": "test:///bench-fanout-a"})[0]
    dst = Host.objects.get_or_create(name="bench-fanout-b", defaults={"uri": "test:///bench-fanout-b"})[0]
    vm = VirtualMachine.objects.create(uuid=uuid.uuid4(), name="fanout-vm", host=src, team=team, state="running")
    plan = MigrationPlan.objects.create(name="fanout", requester=user, team=team, mode="live", status="approved")
    item = PlanItem.objects.create(plan=plan, vm=vm, source=src, destination=dst, mode="live")
    run = MigrationRun.objects.create(item=item, vm=vm, source=src, destination=dst, mode="live", status="transferring")
    client = Client()
    client.force_login(user)
    return run.pk, client.cookies["sessionid"].value


def _server(port: int) -> subprocess.Popen[bytes]:
    log = open(os.devnull, "wb")  # noqa: SIM115  (handed to the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vmportal.asgi:application"],
        cwd=REPO,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("daphne exited") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("daphne did not start in 60 s")


async def _round(port: int, run_id: int, cookie: str, interval: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws/runs/{run_id}/"
    headers = {"Cookie": f"sessionid={cookie}"}
    latencies: list[float] = []
    received = [0] * CLIENTS
    total = [0]
    done = asyncio.Event()
    expected = CLIENTS * EVENTS
    first_sample: list[int] = []

    async def client(n: int, ws: Any) -> None:
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if message.get("type") != "run.progress":
                continue
            latencies.append((now - message["sent_at"]) * 1000)
            received[n] += 1
            total[0] += 1
            if total[0] >= expected:
                done.set()
            if received[n] >= EVENTS:
                return

    sockets = []
    for _ in range(CLIENTS):
        ws = await connect(url, additional_headers=headers, origin=f"http://127.0.0.1:{port}", max_queue=None)  # type: ignore[arg-type]
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot", snapshot
        first_sample.append(len(snapshot["samples"]))
        sockets.append(ws)
    tasks = [asyncio.create_task(client(n, ws)) for n, ws in enumerate(sockets)]
    publisher = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.live.publish_from_worker",
        str(run_id),
        str(EVENTS),
        str(interval),
        "0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await publisher.communicate()
    try:
        await asyncio.wait_for(done.wait(), timeout=120)
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    for ws in sockets:
        await ws.close()
    delivered = sum(received)
    ordered = sorted(latencies)
    return {
        "delivered": delivered,
        "expected": expected,
        "publisher": out.decode().strip(),
        "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1) if ordered else None,
        "max_ms": round(ordered[-1], 1) if ordered else None,
    }


def run() -> list[dict[str, Any]]:
    from migrations_app.models import ProgressSample

    port = _free_port()
    server = _server(port)
    results = []
    try:
        for name, interval in ROUNDS:
            run_id, cookie = _world()
            outcome = asyncio.run(_round(port, run_id, cookie, interval))
            stored = ProgressSample.objects.filter(run_id=run_id).count()
            results.append(
                {
                    "name": f"B-FANOUT {name}",
                    "inputs": {
                        "clients": CLIENTS,
                        "events": EVENTS,
                        "interval_s": interval,
                        "server": "daphne, 1 process",
                    },
                    "unit": "ms",
                    **outcome,
                    "stored_samples": stored,
                    "target": f"all delivered; p95 <= {TARGET_P95_MS} ms",
                    "pass": outcome["delivered"] == outcome["expected"]
                    and stored == EVENTS
                    and outcome["p95_ms"] is not None
                    and outcome["p95_ms"] <= TARGET_P95_MS,
                }
            )
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    return results
