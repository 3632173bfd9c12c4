"""Fault campaign: moves of a busy guest, each with a random fault at a random moment, and a table of what
happened. Whatever the fault, the VM ends on exactly one host, running, with the guest alive (the same
boot), and the run's final state tells the truth (succeeded ⇔ on the destination).

`make test` runs a few moves; `make chaos` runs VMPORTAL_CHAOS_MOVES (30) of them. VMPORTAL_CHAOS_SEED
repeats a campaign.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from inventory.hypervisor import migrate as hv
from inventory.models import Host, VirtualMachine
from migrations_app.choices import TERMINAL_RUN_STATES, RunStatus
from migrations_app.models import MigrationRun
from migrations_app.services import reconcile
from migrations_app.services.runs import RunError, request_cancel, start_item
from tests.base import labctl, services_to_myself
from tests.engine.conftest import Workers, plan_item, sync
from tests.engine.linux import define_linux, http, wait_for
from tests.engine.test_faults import _restart_postgresql, _restart_redis
from tests.labguests import Guest, LabGuests

pytestmark = [pytest.mark.lab]

IP = "10.78.0.76"
MOVES = int(os.environ.get("VMPORTAL_CHAOS_MOVES", "4"))
FAULTS = ["kill worker", "kill work horse", "cancel", "destination daemon", "redis", "postgresql"]


@dataclass
class Row:
    move: int
    fault: str
    phase: str
    final: str
    where: str
    alive: bool
    ok: bool
    note: str = ""
    reaction_s: float | None = None


def _db(fn: Any) -> Any:
    """A read from the test process that rides out a database restart."""
    for _ in range(60):
        try:
            return fn()
        except Exception:
            connection.close()
            time.sleep(1)
    return fn()


def _alive(boot_id: str) -> tuple[bool, str]:
    """Whether the guest still answers with the boot it had before the campaign, and if not, what it said."""
    answer = ""

    def same_boot() -> bool:
        nonlocal answer
        answer = http(IP, "/cgi-bin/bootid")
        return answer == boot_id

    try:
        wait_for(same_boot, timeout=30)
        return True, ""
    except AssertionError:
        return False, f"guest answered boot id {answer[:36]!r}" if answer else "guest does not answer"


def _inject(fault: str, run_id: int, workers: Workers, destination: str) -> str:
    """Inject one fault; returns a word on how it went."""
    run = _db(lambda: MigrationRun.objects.get(pk=run_id))
    if run.status in TERMINAL_RUN_STATES:
        return "move ended before the fault"
    if fault == "kill worker":
        if ":" not in run.worker or not run.worker.rsplit(":", 1)[1].isdigit():
            return "no worker to kill"
        workers.kill(workers.owner(run.worker))
    elif fault == "kill work horse":
        if ":" not in run.worker or not run.worker.rsplit(":", 1)[1].isdigit():
            return "no work horse to kill"
        os.kill(int(run.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    elif fault == "cancel":
        try:
            request_cancel(None, run)
        except RunError as exc:
            return f"cancel refused: {exc}"
    elif fault == "destination daemon":
        labctl("stop-host", destination)
        time.sleep(random.uniform(1, 5))  # noqa: S311
        labctl("start-host", destination)
    elif fault == "redis":
        _restart_redis()  # the caller holds PostgreSQL and Redis to itself
    elif fault == "postgresql":
        _restart_postgresql()
    return ""


def _supervise(ctx: dict[str, Any]) -> None:
    """What scripts/supervise does for `make run`: a worker or the watcher that died is started again."""
    workers: Workers = ctx["workers"]
    ctx["movers"] = [p if p.poll() is None else workers.start() for p in ctx["movers"]]
    if ctx["watcher"].poll() is not None:
        ctx["watcher"] = workers.start_watcher()


def _run(run_id: int) -> MigrationRun:
    return _db(lambda: MigrationRun.objects.get(pk=run_id))


def _move(n: int, rng: random.Random, ctx: dict[str, Any]) -> Row:
    guest, lab_guests, lab_hosts, workers = ctx["guest"], ctx["lab_guests"], ctx["lab_hosts"], ctx["workers"]
    sync(lab_hosts)  # the inventory as the next plan would see it
    source = VirtualMachine.objects.get(uuid=guest.uuid).host.name
    destination = rng.choice([h for h in ("h1", "h2", "h3") if h != source])
    fault = ctx["faults"][(n - 1) % len(ctx["faults"])]
    postcopy = rng.random() < 0.4
    item = plan_item(
        ctx["people"],
        lab_hosts,
        guest,
        destination,
        bandwidth_mib_s=rng.choice([16, 24, 32]),
        max_downtime_ms=rng.choice([200, 400]),
        auto_converge=False,
        postcopy_allowed=postcopy,
        on_no_convergence="postcopy" if postcopy else "abort",
    )
    # a restart of PostgreSQL or Redis waits until no other test session uses them, then falls mid-move
    exclusive = services_to_myself() if fault in ("redis", "postgresql") else contextlib.nullcontext()
    with exclusive:
        run_id = start_item(ctx["people"]["alice"], item).pk
        wait_for(lambda: _run(run_id).status != RunStatus.QUEUED, timeout=60, interval=0.05)
        time.sleep(rng.uniform(0.2, 4.0))
        current = _run(run_id)
        last = current.samples.order_by("-pk").values_list("phase", flat=True).first()
        phase = current.status + (f"/{last}" if last and current.status == RunStatus.TRANSFERRING else "")
        injected = timezone.now()
        note = _inject(fault, run_id, workers, destination)
        _supervise(ctx)
        wait_for(lambda: _run(run_id).status in TERMINAL_RUN_STATES, timeout=600)
    final = _run(run_id)
    reconcile.reconcile()  # leftovers on a destination that was down are removed now
    where = lab_guests.where(guest)
    running = [h for h, state in where.items() if state == "running"]
    alive, why_dead = _alive(ctx["boot_id"])
    expected = destination if final.status == RunStatus.SUCCEEDED else source
    ok = len(where) == 1 and running == [expected] and alive
    if ok:
        ok = not hv.locate(lab_hosts[running[0]].uri, guest.uuid).job_active
    place = ",".join(f"{h}:{state}" for h, state in where.items())
    row = Row(
        n, fault, phase, final.status, place, alive, ok, " ".join(filter(None, [note or final.error[:80], why_dead]))
    )
    # how soon the portal reacted: a killed worker's move adopted, a cancelled move ended
    if fault.startswith("kill"):
        resumed = final.samples.filter(at__gt=injected, note__contains="monitor resumed").values_list("at", flat=True)
        reacted = resumed.first() or final.finished_at
    elif fault == "cancel":
        reacted = final.finished_at
    else:
        reacted = None
    if reacted is not None and not note:
        row.reaction_s = round((reacted - injected).total_seconds(), 1)
    return row


def test_fault_campaign(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    seed = int(os.environ.get("VMPORTAL_CHAOS_SEED") or random.randrange(1 << 30))  # noqa: S311
    rng = random.Random(seed)  # noqa: S311  (fault choice, not secrets)
    movers = [workers.start() for _ in range(2)]
    watcher = workers.start_watcher()
    guest: Guest = define_linux(lab_guests, "h1", IP)
    boot_id = http(IP, "/cgi-bin/bootid")
    assert "dirty started" in http(IP, "/cgi-bin/dirty?12,16")
    ctx = {
        "guest": guest,
        "lab_guests": lab_guests,
        "lab_hosts": lab_hosts,
        "workers": workers,
        "people": people,
        "boot_id": boot_id,
        "movers": movers,
        # every fault in turn from a random start, each at a random moment: a few moves still see several
        "faults": rng.sample(FAULTS, len(FAULTS)),
        "watcher": watcher,
    }
    rows: list[Row] = []
    for n in range(1, MOVES + 1):
        rows.append(_move(n, rng, ctx))
        if not rows[-1].ok:
            break
    print(f"\nfault campaign, seed {seed}: {len(rows)} moves")
    print(f"{'#':>3}  {'fault':<20} {'phase':<24} {'final':<11} {'where':<14} {'alive':<5} ok   {'react s':>7}  note")
    for r in rows:
        reaction = f"{r.reaction_s:>7.1f}" if r.reaction_s is not None else f"{'-':>7}"
        print(
            f"{r.move:>3}  {r.fault:<20} {r.phase:<24} {r.final:<11} {r.where:<14} {'yes' if r.alive else 'NO':<5} "
            f"{'ok ' if r.ok else 'BAD'}  {reaction}  {r.note}"
        )
    bad = [r for r in rows if not r.ok]
    assert not bad and len(rows) == MOVES, bad
