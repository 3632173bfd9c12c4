"""B-BUSY: busy-guest moves in a row on the real lab, counted with the guest alive after each.

A small Linux guest rewrites 16 MiB of its memory at ~40 MB/s (as in the engine's convergence tests)
and is moved back and forth between h1 and h2 through the engine, `VMPORTAL_BUSY_RUNS` times (20 by
default) for each of two kinds of move:

- `live`: pre-copy at the link's speed (no bandwidth cap), which converges;
- `postcopy`: capped at 8 MiB/s with a 400 ms downtime limit, which cannot converge, so the engine
  switches to post-copy.

After each move the guest must answer on its address with the boot id it had before (no reboot, no
kernel panic: a lost dirty page typically oopses it) and keep dirtying memory. A reliability count,
not a timing: it reports how many moves of each kind kept the guest alive, and passes only when all did.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.common import setup_django

RUNS = int(os.environ.get("VMPORTAL_BUSY_RUNS", "20"))
LINUX_IP = "10.78.0.67"
HOSTS = ("h1", "h2")
APP_NETWORK = {"h1": "app-net", "h2": "app-lan", "h3": "applan"}
KINDS: dict[str, dict[str, Any]] = {
    "live": {"auto_converge": False, "max_downtime_ms": 300},
    "postcopy": {
        "bandwidth_mib_s": 8,
        "max_downtime_ms": 400,
        "auto_converge": False,
        "postcopy_allowed": True,
        "on_no_convergence": "postcopy",
    },
}


def run() -> list[dict[str, Any]]:
    setup_django()
    from django.contrib.auth import get_user_model

    from inventory.models import Team
    from tests.base import lab_up
    from tests.engine.linux import define_linux, http
    from tests.labguests import LabGuests

    lab = lab_up()
    guests = LabGuests(lab)
    team = Team.objects.get_or_create(slug="payments", defaults={"name": "Payments"})[0]
    user = get_user_model().objects.get_or_create(username="bench-busy")[0]
    try:
        guest = define_linux(guests, "h1", LINUX_IP, memory_mib=256)
        boot_id = http(LINUX_IP, "/cgi-bin/bootid")
        hosts = _hosts(lab)
        return [_kind(kind, opts, hosts, guest, guests, team, user, boot_id) for kind, opts in KINDS.items()]
    finally:
        guests.cleanup()
        import django_rq

        from migrations_app.jobs import MIGRATION_QUEUE

        django_rq.get_queue(MIGRATION_QUEUE).empty()


def _hosts(lab: dict[str, Any]) -> dict[str, Any]:
    from inventory.models import Host
    from inventory.services.hosts import register_host

    hosts = {}
    for entry in lab["hosts"]:
        if entry["name"] in HOSTS:
            hosts[entry["name"]] = Host.objects.filter(name=entry["name"]).first() or register_host(
                None, name=entry["name"], uri=entry["uri"], migration_uri=entry["migration_uri"], sync=False
            )
    return hosts


def _alive(boot_id: str) -> str:
    """'' when the guest answers with its boot id and is dirtying memory, else what is wrong."""
    from tests.engine.linux import http, wait_for

    try:
        now = wait_for(lambda: http(LINUX_IP, "/cgi-bin/bootid"), timeout=30)
    except AssertionError:
        return "does not answer"
    if now != boot_id:
        return f"rebooted (boot id {now})"
    info = http(LINUX_IP, "/cgi-bin/info")
    return "" if "dirty=running" in info else f"no longer dirtying memory: {info!r}"


def _kind(
    kind: str, opts: dict[str, Any], hosts: dict[str, Any], guest: Any, guests: Any, team: Any, user: Any, boot: str
) -> dict[str, Any]:
    from inventory.models import VirtualMachine
    from inventory.services.sync import sync_host
    from migrations_app.engine import live
    from migrations_app.models import MigrationPlan, PlanItem
    from migrations_app.services.plans import default_storage_map
    from migrations_app.services.runs import start_item
    from tests.engine.linux import http

    alive = 0
    failures: list[str] = []
    postcopy_switches = 0
    seconds: list[float] = []
    for i in range(RUNS):
        http(LINUX_IP, "/cgi-bin/dirty?40,16")  # (re)start dirtying: 16 MiB at ~40 MB/s
        for host in hosts.values():
            sync_host(host.pk)
        vm = VirtualMachine.objects.select_related("host").get(uuid=guest.uuid)
        dest = hosts["h2" if vm.host.name == "h1" else "h1"]
        plan = MigrationPlan.objects.create(
            name=f"busy {kind} {i}", requester=user, team=team, mode="live", fresh_backup=False, **opts
        )
        item = PlanItem.objects.create(
            plan=plan,
            vm=vm,
            source=vm.host,
            destination=dest,
            mode="live",
            network_map={nic.mac: APP_NETWORK[dest.name] for nic in vm.nics.all()},
            storage_map=default_storage_map(vm, dest),
        )
        run = start_item(user, item)
        started = time.perf_counter()
        live.execute(run.pk)
        seconds.append(time.perf_counter() - started)
        run.refresh_from_db()
        where = guests.where(guest)
        problem = ""
        if run.status != "succeeded":
            problem = f"run {run.status}: {run.error}"
        elif where != {dest.name: "running"}:
            problem = f"guest is {where}"
        else:
            problem = _alive(boot)
        if kind == "postcopy" and run.samples.filter(phase="postcopy").exists():
            postcopy_switches += 1
        if problem:
            failures.append(f"move {i + 1} to {dest.name}: {problem}")
            if "answer" in problem or "rebooted" in problem or "guest is" in problem:
                break  # the guest is gone: later moves would count nothing
        else:
            alive += 1
        print(f"[b_busy] {kind} {i + 1}/{RUNS}: {problem or 'alive'} ({seconds[-1]:.1f} s)", flush=True)
    result: dict[str, Any] = {
        "name": f"busy_{kind}_moves",
        "inputs": {"runs": RUNS, "dirty": "16 MiB at ~40 MB/s", "memory_mib": 256, **opts},
        "unit": "moves",
        "moves": len(seconds),
        "guest_alive_after": alive,
        "failures": failures,
        "median_move_s": round(sorted(seconds)[len(seconds) // 2], 2) if seconds else None,
        "target": f"guest alive after all {RUNS} moves",
        "pass": alive == RUNS,
    }
    if kind == "postcopy":
        result["switched_to_postcopy"] = postcopy_switches
    return result
