"""Shared by B-LIVE and B-DOWNTIME: interleaved live moves of the same guest, through vmportal (A) and
with `virsh migrate --live --p2p --persistent --undefinesource` (B), on the real lab.

A moves the guest h1 → h2 through the engine, timed as the user waits for it: from the worker picking the
run up until the run is finished (completed job stats read, the VM row and inventory updated, the run
row terminal). B moves it back h2 → h1 with virsh, timed until the command exits, with the network
renamed the same way (the lab's networks differ per host). The measurements are made once per process
and shared by both benchmarks.

No pair is dropped: a move that fails, a guest that stops answering after a move (Debian 12's QEMU 7.2
under TCG has a dirty-bitmap bug that oopses a busy guest now and then, see lab/NOTES.md) and a move
without a downtime figure are each counted and reported with the reason; the busy guest is then
replaced by a fresh one for the next pair.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAIRS = 5
LINUX_IP = "10.78.0.66"
DIRTY_MB_S = 50
SOURCE, DEST = "h1", "h2"
APP_NETWORK = {"h1": "app-net", "h2": "app-lan", "h3": "applan"}
LINK_BYTES = 512 * 1024 * 1024

_cache: dict[str, Any] = {}


@dataclass
class Measured:
    guest: str
    memory_mib: int
    portal_s: list[float] = field(default_factory=list)
    virsh_s: list[float] = field(default_factory=list)
    portal_downtime_ms: list[float] = field(default_factory=list)
    virsh_downtime_ms: list[float] = field(default_factory=list)
    limit_ms: int = 300
    inputs: dict[str, Any] = field(default_factory=dict)
    #: one entry per failed pair: {"pair": n, "side": "vmportal" | "virsh", "reason": …}
    failures: list[dict[str, Any]] = field(default_factory=list)
    pairs: int = 0
    #: completed moves for which libvirt reported no downtime figure
    portal_downtime_missing: int = 0
    virsh_downtime_missing: int = 0
    #: medians per engine step over the reported vmportal moves (seconds; see StepClock)
    portal_steps: dict[str, float] = field(default_factory=dict)


class StepClock:
    """Where a vmportal move's time goes: wraps the engine's steps with timers while a move runs (the
    timing of the move itself is unchanged; each wrapper adds a perf_counter pair). Steps that run more
    than once in a move (locate, sync_host) are summed."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.moves: list[dict[str, float]] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, attr: str, step: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # a step this version of the engine does not have
            return
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.current[step] = clock.current.get(step, 0.0) + time.perf_counter() - t0

        self._undo.append((owner, attr, original))
        setattr(owner, attr, timed)

    def install(self) -> None:
        from inventory.hypervisor import migrate as hv
        from migrations_app.engine import live, runstate, shared
        from migrations_app.validation import phase

        for owner, attr, step in (
            (runstate, "try_claim", "claim"),
            (live.LiveMove, "recheck", "preflight_recheck"),
            (phase, "take_baseline", "validation_baseline"),
            (hv.LiveMigration, "__init__", "open_source_conn"),
            (hv.LiveMigration, "prepare", "prepare"),
            (live.LiveMove, "transfer", "transfer_incl_monitor"),
            (hv.LiveMigration, "run", "migrateToURI3"),
            (hv.LiveMigration, "completed", "completed_stats"),
            (hv, "locate", "locate_both"),
            (live, "record_moved", "record_moved"),
            (shared, "record_whereabouts", "record_vm_row"),
            (shared, "sync_host", "host_syncs"),
            (phase, "run_phase", "validation_phase"),
            (runstate, "finish", "finish"),
        ):
            self._wrap(owner, attr, step)

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def start(self) -> None:
        self.current = {}

    def stop(self, total: float) -> None:
        self.current["total"] = total
        self.moves.append({k: round(v, 4) for k, v in self.current.items()})

    def medians(self) -> dict[str, float]:
        import statistics

        keys = {k for m in self.moves for k in m}
        return {k: round(statistics.median(m.get(k, 0.0) for m in self.moves), 4) for k in sorted(keys)}


class MoveFailed(Exception):
    """One move of a pair failed; the message says why."""


def lab() -> dict[str, Any]:
    from tests.base import lab_up

    return lab_up()


def _hosts(lab_state: dict[str, Any]) -> dict[str, Any]:
    from inventory.models import Host, StoragePool
    from inventory.services.hosts import register_host

    hosts = {}
    for entry in lab_state["hosts"]:
        host = Host.objects.filter(name=entry["name"]).first()
        if host is None:
            host = register_host(
                None, name=entry["name"], uri=entry["uri"], migration_uri=entry["migration_uri"], sync=False
            )
        hosts[entry["name"]] = host
    _sync(hosts)
    StoragePool.objects.filter(name="shared").update(shared_by_admin=True)
    return hosts


def _sync(hosts: dict[str, Any]) -> None:
    from inventory.services.sync import sync_host

    for name in (SOURCE, DEST):
        sync_host(hosts[name].pk)


def _team() -> Any:
    from django.contrib.auth import get_user_model

    from inventory.models import Team

    team = Team.objects.get_or_create(slug="payments", defaults={"name": "Payments"})[0]
    user = get_user_model().objects.get_or_create(username="bench-live")[0]
    return team, user


def _portal_move(
    hosts: dict[str, Any], guest_uuid: str, team: Any, user: Any, clock: StepClock | None = None, **options: Any
) -> tuple[float, float | None]:
    """One move through vmportal; returns (seconds from the worker picking the run up until the run is
    finished, downtime ms or None when libvirt reported none)."""
    from inventory.models import VirtualMachine
    from migrations_app.engine import live
    from migrations_app.models import MigrationPlan, PlanItem
    from migrations_app.services.plans import default_storage_map
    from migrations_app.services.runs import start_item

    _sync(hosts)  # untimed: the VM row must say where the VM is
    vm = VirtualMachine.objects.get(uuid=guest_uuid)
    dest = hosts[DEST]
    plan = MigrationPlan.objects.create(
        name="bench", requester=user, team=team, mode="live", status="approved", **options
    )
    item = PlanItem.objects.create(
        plan=plan,
        vm=vm,
        source=vm.host,
        destination=dest,
        mode="live",
        network_map={nic.mac: APP_NETWORK[DEST] for nic in vm.nics.all()},
        storage_map=default_storage_map(vm, dest),
    )
    run = start_item(user, item)
    if clock is not None:
        clock.start()
    start = time.perf_counter()
    live.execute(run.pk)  # returns once the run row is terminal and the inventory follows the VM
    seconds = time.perf_counter() - start
    if clock is not None:
        clock.stop(seconds)
    run.refresh_from_db()
    vm.refresh_from_db()
    if run.status != "succeeded":
        raise MoveFailed(f"vmportal: {run.status}: {run.error} {run.outcome}".strip())
    if vm.host_id != dest.pk:
        raise MoveFailed(f"vmportal: the run succeeded but the VM row still says {vm.host}")
    return seconds, run.downtime_ms


def _virsh_move(lab_state: dict[str, Any], name: str) -> tuple[float, float | None]:
    """The baseline, back DEST → SOURCE; returns (seconds, downtime ms from `domjobinfo --completed`, or
    None when it reports none)."""
    uris = {h["name"]: h for h in lab_state["hosts"]}
    src, dst = uris[DEST], uris[SOURCE]
    xml = subprocess.run(
        ["virsh", "-c", src["uri"], "dumpxml", "--migratable", name], check=True, capture_output=True, text=True
    ).stdout
    xml = xml.replace(f"network='{APP_NETWORK[DEST]}'", f"network='{APP_NETWORK[SOURCE]}'")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as fh:
        fh.write(xml)
        fh.flush()
        args = ["virsh", "-c", src["uri"], "migrate", "--live", "--p2p", "--persistent", "--undefinesource"]
        args += ["--xml", fh.name, "--persistent-xml", fh.name, name, dst["migration_uri"]]
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise MoveFailed(f"virsh migrate: {done.stderr.strip() or done.returncode}")
    info = subprocess.run(
        ["virsh", "-c", dst["uri"], "domjobinfo", "--completed", name], capture_output=True, text=True
    ).stdout
    downtime = None
    for line in info.splitlines():
        if line.startswith("Total downtime:"):
            downtime = float(line.split(":", 1)[1].split()[0])
    return seconds, downtime


def link_bandwidth(lab_state: dict[str, Any]) -> float:
    """MiB/s of one TCP stream from h1's namespace to h2's, the path a migration's data takes."""
    hosts = {h["name"]: h for h in lab_state["hosts"]}
    port = 5299
    receiver = (
        "import socket,time,sys\n"
        f"s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{hosts[DEST]['address']}',{port}));s.listen(1)\n"
        "c,_=s.accept();n=0;t=None\n"
        "while True:\n"
        "    b=c.recv(1<<20)\n"
        "    if t is None: t=time.perf_counter()\n"
        "    if not b: break\n"
        "    n+=len(b)\n"
        "print(n/(time.perf_counter()-t)/1048576)\n"
    )
    sender = (
        "import socket,time\n"
        f"s=socket.create_connection(('{hosts[DEST]['address']}',{port}));b=b'x'*(1<<20)\n"
        f"for _ in range({LINK_BYTES >> 20}): s.sendall(b)\n"
        "s.close()\n"
    )
    recv = subprocess.Popen(
        ["ip", "netns", "exec", hosts[DEST]["netns"], "python3", "-c", receiver], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    subprocess.run(["ip", "netns", "exec", hosts[SOURCE]["netns"], "python3", "-c", sender], check=True)
    out, _ = recv.communicate(timeout=120)
    return round(float(out.strip()), 1)


def _answers(ip: str, boot_id: str) -> str:
    """'' when the Linux guest still answers with the same boot id, else why not."""
    from tests.engine.linux import http

    try:
        now = http(ip, "/cgi-bin/bootid", timeout=5)
    except OSError as exc:
        return f"the guest stopped answering after the move ({exc}); QEMU 7.2 TCG dirty-bitmap bug suspected"
    return "" if now == boot_id else "the guest rebooted during the move (oops/panic)"


def measure() -> dict[str, Any]:
    """Run both cases once per process: {"idle": Measured, "busy": Measured, "link_mib_s": float}."""
    if _cache:
        return _cache
    from bench.common import setup_django

    setup_django()
    from tests.engine.linux import define_linux, http
    from tests.labguests import DiskSpec, LabGuests, NicSpec

    lab_state = lab()
    hosts = _hosts(lab_state)
    team, user = _team()
    guests = LabGuests(lab_state)
    # like the virsh baseline: no auto-converge, QEMU's default downtime limit, no backup before the move
    options = {"auto_converge": False, "max_downtime_ms": 300, "fresh_backup": False}

    def busy_guest() -> Any:
        guest = define_linux(guests, SOURCE, LINUX_IP, memory_mib=512)
        http(LINUX_IP, f"/cgi-bin/dirty?{DIRTY_MB_S}")
        return guest

    def idle_guest() -> Any:
        return guests.define(
            SOURCE,
            memory_mib=512,
            disks=[DiskSpec(pool="shared", capacity_mib=64)],
            nics=[NicSpec(APP_NETWORK[SOURCE])],
        )

    def retire(guest: Any) -> None:
        for host in (SOURCE, DEST):
            conn = guests.conn(host)
            try:
                dom = conn.lookupByUUIDString(guest.uuid)
            except Exception:  # noqa: S112 (not on this host)
                continue
            with contextlib.suppress(Exception):
                dom.destroy()
            with contextlib.suppress(Exception):
                dom.undefine()

    clock = StepClock()
    clock.install()
    try:
        results = {}
        for key in ("idle", "busy"):
            clock.moves = []
            memory = 512
            fresh = idle_guest if key == "idle" else busy_guest
            guest = fresh()
            m = Measured(guest=key, memory_mib=memory, limit_ms=options["max_downtime_ms"])
            m.inputs = {"memory_mib": memory, "pairs": PAIRS, **options}
            if key == "busy":
                m.inputs["dirty_mb_s"] = DIRTY_MB_S
            for pair in range(PAIRS + 1):  # pair 0 warms up and is not reported
                boot_id = http(LINUX_IP, "/cgi-bin/bootid") if key == "busy" else ""
                side = "vmportal"
                try:
                    portal = _portal_move(hosts, guest.uuid, team, user, clock, **options)
                    if boot_id and (why := _answers(LINUX_IP, boot_id)):
                        raise MoveFailed(f"vmportal: {why}")
                    side = "virsh"
                    virsh = _virsh_move(lab_state, guest.name)
                    if boot_id and (why := _answers(LINUX_IP, boot_id)):
                        raise MoveFailed(f"virsh: {why}")
                except (MoveFailed, RuntimeError, subprocess.SubprocessError) as exc:
                    if pair:
                        m.pairs += 1
                        m.failures.append({"pair": pair, "side": side, "reason": str(exc)[:500]})
                    retire(guest)
                    guest = fresh()
                    continue
                if not pair:
                    clock.moves.pop()  # the warm-up move
                    continue
                m.pairs += 1
                m.portal_s.append(portal[0])
                m.virsh_s.append(virsh[0])
                if portal[1] is None:
                    m.portal_downtime_missing += 1
                else:
                    m.portal_downtime_ms.append(float(portal[1]))
                if virsh[1] is None:
                    m.virsh_downtime_missing += 1
                else:
                    m.virsh_downtime_ms.append(float(virsh[1]))
            m.portal_steps = clock.medians()
            results[key] = m
        _cache.update(results)
        _cache["link_mib_s"] = link_bandwidth(lab_state)
    finally:
        clock.uninstall()
        guests.cleanup()
        import django_rq

        from migrations_app.jobs import MIGRATION_QUEUE

        django_rq.get_queue(MIGRATION_QUEUE).empty()  # the engine queued jobs nobody runs in a benchmark
    Path(tempfile.gettempdir(), "vmportal-livebench.json").write_text(
        json.dumps({k: v.__dict__ if isinstance(v, Measured) else v for k, v in _cache.items()})
    )
    return _cache
