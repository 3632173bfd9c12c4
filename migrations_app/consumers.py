"""Websocket consumers of the live pages: the fleet, one plan, one run.

Each consumer authorises on connect through `vmportal.access` (the same rules as the pages) and
closes *before* accepting when the user may not see the object (the handshake is refused: HTTP 403),
joins one group, sends a snapshot built from the durable rows, then forwards the deltas that
`migrations_app.events` publishes. A browser that reconnects gets a fresh snapshot, so it misses nothing.

Messages to the browser (JSON objects; every delta carries `sent_at`, epoch seconds of publication):

- `{"type": "snapshot", "scope": "run"|"plan"|"fleet", ...}` — first, after every (re)connect and when
  the browser asks for one with `{"type": "snapshot"}` (at most twice a second). Run: `run`, `phases`,
  `timeline`, `latest`, `samples` (chart points), `validation`. Plan: `plan`, `phases`, `items`,
  `history`, `approvals`. Fleet: `hosts`, `runs`. See `migrations_app.services.live`.
- `{"type": "run.progress", "run": id, "phase", "percent", "bytes_processed", "bytes_remaining",
  "bytes_total", "throughput_bps", "dirty_rate_bps", "iteration", "eta_s", "downtime_limit_ms", "note"}`
- `{"type": "run.state", "run": id, "status", "phase_detail", "percent", "downtime_ms", "error", "outcome"}`
- `{"type": "run.queue", "run": id, "position"}`
- `{"type": "run.validation", "run": id, "result": {"check_id", "severity" (= "outcome": pass, info, warn,
  fail), "message", "evidence": {"expected", "found"}, "remediation", "at", "duration_ms"},
  "report": {"status": "running"|"passed"|"warned"|"failed", "passed", "warned", "failed"}}` — post-
  migration validation results one by one as they are stored (run and plan pages; the snapshot's
  `validation` holds the same shape with all `results` so far). The last message of a validation has an
  empty `result` and the final `report` (with `duration_ms`).
- `{"type": "plan.state", "plan": id, "status", "status_label"}` and
  `{"type": "plan.approval", "plan": id, "approval": {"approver", "decision", "comment", "at"}}`
- `{"type": "hosts", "hosts": [...]}` (fleet) — fresh capacity rows when a run ends and every
  `FLEET_REFRESH_SECONDS`.

Every string may come from a hypervisor: scripts put it in the page as text, never as markup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from inventory.permissions import sees_everything
from migrations_app import events
from migrations_app.choices import TERMINAL_RUN_STATES
from migrations_app.models import MigrationRun
from migrations_app.services import live
from vmportal import access

#: close codes (sent before accept, so browsers see a refused handshake)
NOT_SIGNED_IN = 4401
NOT_ALLOWED = 4403
#: the shortest interval between two snapshots a browser may ask for
SNAPSHOT_INTERVAL_S = 0.5


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Authorise, join one group, snapshot, forward. Subclasses say which object, group and snapshot."""

    group = ""

    def object_id(self) -> int | None:
        return None

    def authorise(self, user: Any, object_id: int | None) -> bool:
        raise NotImplementedError

    def group_for(self, object_id: int | None) -> str:
        raise NotImplementedError

    def snapshot(self, object_id: int | None) -> dict[str, Any]:
        raise NotImplementedError

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        self.user = user
        self.key = self.object_id()
        if not await database_sync_to_async(self.authorise)(user, self.key):
            await self.close(code=NOT_ALLOWED)
            return
        await self.accept()
        # join before reading the rows: a change committed meanwhile arrives after the snapshot as a delta
        self.group = self.group_for(self.key)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_snapshot()

    async def send_snapshot(self) -> None:
        self.last_snapshot = time.monotonic()
        await self.send_json(await database_sync_to_async(self.snapshot)(self.key))

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "snapshot":
            if time.monotonic() - self.last_snapshot >= SNAPSHOT_INTERVAL_S:
                await self.send_snapshot()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own dispatch closes stale database connections before every message, in a thread,
        which costs more than forwarding a delta to a browser. These handlers reach the database only
        through `database_sync_to_async`, which closes stale connections itself, so that hop is skipped."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    # channel-layer message types (`run.progress` → run_progress …)
    run_progress = run_state = run_queue = run_validation = forward
    plan_state = plan_approval = forward


class RunConsumer(LiveConsumer):
    def object_id(self) -> int | None:
        return int(self.scope["url_route"]["kwargs"]["run_id"])

    def authorise(self, user: Any, object_id: int | None) -> bool:
        return object_id is not None and access.may_watch_run(user, object_id)

    def group_for(self, object_id: int | None) -> str:
        return events.group_name(int(object_id or 0))

    def snapshot(self, object_id: int | None) -> dict[str, Any]:
        return live.run_snapshot(int(object_id or 0))


class PlanConsumer(LiveConsumer):
    def object_id(self) -> int | None:
        return int(self.scope["url_route"]["kwargs"]["plan_id"])

    def authorise(self, user: Any, object_id: int | None) -> bool:
        return object_id is not None and access.may_watch_plan(user, object_id)

    def group_for(self, object_id: int | None) -> str:
        return events.plan_group_name(int(object_id or 0))

    def snapshot(self, object_id: int | None) -> dict[str, Any]:
        return live.plan_snapshot(int(object_id or 0))


FLEET_REFRESH_SECONDS = settings.FLEET_REFRESH_SECONDS


class FleetConsumer(LiveConsumer):
    """Hosts for everyone signed in; runs only those the user may see (each run checked once)."""

    refresher: asyncio.Task[None] | None = None

    def authorise(self, user: Any, object_id: int | None) -> bool:
        self.sees_all = sees_everything(user)
        self.visible: dict[int, bool] = {}
        return access.may_watch_fleet(user)

    def group_for(self, object_id: int | None) -> str:
        return events.FLEET_GROUP

    def snapshot(self, object_id: int | None) -> dict[str, Any]:
        return live.fleet_snapshot(access.visible_runs(self.user))

    async def connect(self) -> None:
        await super().connect()
        if self.group:
            self.refresher = asyncio.ensure_future(self.refresh_hosts())

    async def disconnect(self, code: int) -> None:
        if self.refresher is not None:
            self.refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refresher
        await super().disconnect(code)

    async def refresh_hosts(self) -> None:
        """Reachability, maintenance and capacity change with syncs too, not only with runs."""
        while True:
            await asyncio.sleep(FLEET_REFRESH_SECONDS)
            await self.send_json({"type": "hosts", "hosts": await database_sync_to_async(live.hosts_payload)()})

    async def forward(self, event: dict[str, Any]) -> None:
        run_id = int(event.get("run", 0))
        if not self.sees_all:
            if run_id not in self.visible:
                self.visible[run_id] = await database_sync_to_async(access.may_watch_run)(self.user, run_id)
            if not self.visible[run_id]:
                return
        await self.send_json(event)
        if event.get("type") == "run.state" and event.get("status") in TERMINAL_RUN_STATES:
            # the VM has left one host and (perhaps) arrived on another: their bars change now
            await self.send_json({"type": "hosts", "hosts": await database_sync_to_async(self.hosts_of)(run_id)})

    run_progress = run_state = forward

    @staticmethod
    def hosts_of(run_id: int) -> list[dict[str, Any]]:
        ends = MigrationRun.objects.filter(pk=run_id).values_list("source_id", "destination_id").first()
        return live.hosts_payload(ends or ())
