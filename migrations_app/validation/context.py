"""What the post-migration checks look at: the run's plan, the guest as it was before the move, and
the guest as both hosts, its console and its agent show it now. Read lazily and once per validation.

Everything comes through libvirt (inventory.hypervisor.guest) or from the run's own rows; the
console is watched in a thread from the start of the validation so that its window overlaps the
other checks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from inventory.hypervisor import guest as hvg
from inventory.hypervisor.guest import AgentFacts, ConsoleCapture, DomainView


@dataclass(frozen=True)
class ProbeSpec:
    kind: str  # tcp, http
    address: str
    port: int
    path: str = "/"
    expect_status: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "http":
            return f"HTTP {self.path or '/'} on port {self.port} answers {self.expect_status or 200}"
        return f"TCP port {self.port} open"


@dataclass(frozen=True)
class Waits:
    """How long checks wait for the guest (a cold move's guest is still booting)."""

    agent_s: float = 5.0  # for the guest agent to answer
    console_s: float = 3.0  # console watched at least this long, and this long after the agent answered
    console_max_s: float = 60.0
    probe_s: float = 5.0  # each probe is retried this long


def domain_summary(view: DomainView) -> dict[str, Any]:
    """The parts of a domain the checks compare, as plain data (stored as the report's baseline)."""
    info = view.domain
    if info is None:
        return {}
    return {
        "state": view.state,
        "vcpus": info.vcpus,
        "memory": info.memory,
        "cpu_model": info.cpu_model,
        "machine_type": info.machine_type,
        "has_agent": info.has_guest_agent,
        "disks": [
            {"target": d.target, "format": d.format, "size": view.disk_sizes.get(d.target), "source": d.source}
            for d in info.disks
            if d.device in ("disk", "lun") and d.source
        ],
        "nics": [{"mac": n.mac, "network": n.network or n.bridge, "filter": n.filter} for n in info.nics],
        "seclabels": sorted(view.seclabels),
    }


@dataclass
class ValidationContext:
    uuid: str
    mode: str  # live, cold
    source_uri: str
    destination_uri: str
    source_name: str
    destination_name: str
    baseline: dict[str, Any]
    network_map: dict[str, str]  # mac -> destination network
    storage_map: dict[str, dict[str, str]]  # target -> {"pool", "format"}
    pool_paths: dict[str, str]  # destination pool name -> its directory
    transfers: list[dict[str, Any]]  # cold: each copied disk's verified transfer report
    downtime_ms: float | None
    max_downtime_ms: int | None
    postcopy: bool
    seconds_since_move: float | None  # from the switch-over to the start of the validation
    probes: list[ProbeSpec]
    waits: Waits = field(default_factory=Waits)
    timeout: float = 15.0
    _console_thread: threading.Thread | None = None
    _console: ConsoleCapture | None = None
    _console_started: float = 0.0
    _agent_done_at: float | None = None
    #: seconds the checks spent in their deliberate waits, by kind ("agent", "console", "probes"): what
    #: the validation's time is made of beside its own work (reported with the report's time)
    waited: dict[str, float] = field(default_factory=dict)

    def note_wait(self, kind: str, seconds: float) -> None:
        self.waited[kind] = self.waited.get(kind, 0.0) + max(0.0, seconds)

    # ---- the guest before the move --------------------------------------------------------------------

    @property
    def before(self) -> dict[str, Any]:
        return dict(self.baseline.get("domain") or {})

    @property
    def agent_before(self) -> dict[str, Any] | None:
        agent = self.baseline.get("agent")
        return agent if isinstance(agent, dict) else None

    @property
    def has_agent(self) -> bool:
        return bool(self.before.get("has_agent")) and self.expect_running

    @property
    def expect_running(self) -> bool:
        """The VM ran before the move (a stopped VM is moved stopped, and nothing in it can be read)."""
        return self.before.get("state", "running") == "running"

    # ---- both hosts now -------------------------------------------------------------------------------

    @cached_property
    def dest(self) -> DomainView:
        return hvg.read_domain(self.destination_uri, self.uuid, self.timeout)

    @cached_property
    def source(self) -> DomainView:
        return hvg.read_domain(self.source_uri, self.uuid, self.timeout)

    def dest_now(self) -> DomainView:
        """A fresh read (after waits, the guest may have changed state)."""
        return hvg.read_domain(self.destination_uri, self.uuid, self.timeout)

    # ---- the guest agent ------------------------------------------------------------------------------

    @cached_property
    def agent_after(self) -> AgentFacts | None:
        """The agent's answer on the destination (None when the VM has no agent channel)."""
        if not self.has_agent:
            self._agent_done_at = time.monotonic()
            return None
        try:
            facts = hvg.agent_facts(self.destination_uri, self.uuid, self.timeout, wait_s=self.waits.agent_s)
        finally:
            self._agent_done_at = time.monotonic()
        self.note_wait("agent", facts.ping_s)  # waiting for the agent to answer (a booting guest's agent later)
        return facts

    @cached_property
    def kernel_log(self) -> tuple[str | None, str]:
        if not self.has_agent or self.agent_after is None or not self.agent_after.answered:
            return None, "the guest agent does not answer"
        return hvg.guest_kernel_log(self.destination_uri, self.uuid, self.timeout)

    # ---- the console ----------------------------------------------------------------------------------

    def start_console(self) -> None:
        """Watch the destination's console from now until the window closes (see `console`)."""
        if self._console_thread is not None or not self.expect_running:
            return
        self._console_started = time.monotonic()

        def enough() -> bool:
            now = time.monotonic()
            if now - self._console_started < self.waits.console_s:
                return False
            return self._agent_done_at is not None and now - self._agent_done_at >= self.waits.console_s

        def target() -> None:
            self._console = hvg.watch_console(
                self.destination_uri, self.uuid, self.waits.console_max_s, self.timeout, stop=enough
            )

        self._console_thread = threading.Thread(target=target, name="validation-console", daemon=True)
        self._console_thread.start()

    @property
    def console(self) -> ConsoleCapture:
        """What the console showed during the window: at least `console_s`, and `console_s` beyond the
        agent's answer (a guest that breaks shortly after booting shows it there)."""
        self.start_console()
        _ = self.agent_after
        if self._console_thread is None:
            return ConsoleCapture("", 0.0, "the VM is not running")
        joined = time.monotonic()
        self._console_thread.join(self.waits.console_max_s + self.timeout + 5)
        self.note_wait("console", time.monotonic() - joined)  # the rest of the console's window
        return self._console or ConsoleCapture("", 0.0, "the console could not be read in time")
