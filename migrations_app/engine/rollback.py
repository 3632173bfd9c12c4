"""Rolling a cold move back: the destination's copy goes, the source comes back as it was.

Used by the cold engine for any failure or cancel after the VM was shut down, and by the reconciler
for a cold run whose worker died. It reads what to undo from the run itself (`pending_cleanup` for
the destination, `options["cold"]` for the source), so it works without the engine's memory.

Order matters: the destination's copy is stopped and removed *before* the source starts, so the VM
never runs twice. A destination domain is only ever stopped if it carries this run's tag (it is the
copy this run defined) and the source is not running.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

from inventory.hypervisor import HostUnreachable, HypervisorError
from inventory.hypervisor import lifecycle as hvl
from inventory.hypervisor import migrate as hv
from inventory.hypervisor.storage import VolumeHost
from migrations_app import events
from migrations_app.choices import RunStatus
from migrations_app.engine import runstate as runs
from migrations_app.engine.shared import cleanup, record_moved
from migrations_app.engine.shared import libvirt_timeout as _timeout
from migrations_app.models import MigrationRun

log = logging.getLogger(__name__)


def cold_state(run: MigrationRun) -> dict[str, Any]:
    """What a cold move keeps for its rollback (`run.scratch["cold"]`; runs queued before the scratch
    field existed kept it in their options)."""
    return dict((run.scratch or {}).get("cold") or (run.options or {}).get("cold") or {})


def roll_back(
    run: MigrationRun, *, reason: str, raw: str = "", cancelled: bool = False, status: str = ""
) -> MigrationRun:
    """Undo a cold move that did not finish, and record the outcome in words. `status`: the run's end
    state after a clean rollback (default `rolled_back`; a failed validation ends `failed`)."""
    run.refresh_from_db()
    uuid = str(run.vm.uuid)
    cold = cold_state(run)
    events.run_changed(
        run, status=RunStatus.ROLLING_BACK, phase_detail="Rolling back: removing the copy, restarting the source"
    )
    done: list[str] = []
    problems: list[str] = []

    # 1. the destination: stop our copy if it runs, then remove its definition and volumes
    here = hv.locate(run.destination.uri, uuid, _timeout())
    there = hv.locate(run.source.uri, uuid, _timeout())
    if here.running or here.state in ("paused", "crashed", "pmsuspended"):  # active in any form
        if here.run_tag == str(run.pk) and not there.running:
            try:
                hvl.destroy(run.destination.uri, uuid, _timeout())
                done.append(f"stopped the copy on {run.destination}")
            except HypervisorError as exc:
                problems.append(f"could not stop the copy on {run.destination}: {exc.message}")
        else:
            problems.append(f"a VM with this UUID runs on {run.destination} and was left alone")
    note, pending = cleanup(run)
    if note:
        done.append(note.rstrip("."))
    if pending:
        problems.append(f"{run.destination} still holds part of the copy (retried by the reconciler)")

    # 2. the source: staging copies made for a format conversion
    staging = list(cold.get("staging") or [])
    if staging:
        store = VolumeHost(run.source.uri, _timeout())
        try:
            for path in staging:
                with suppress(HypervisorError):
                    store.delete(path)
            done.append("removed the converted staging copies on the source")
        finally:
            store.close()

    # 3. the source VM, as it was
    restarted = False
    if cold.get("was_running") and not problems:
        try:
            there = hv.locate(run.source.uri, uuid, _timeout())
            if there.running:
                pass  # never stopped (a failure before the shutdown completed)
            elif there.exists:
                hvl.start(run.source.uri, uuid, _timeout())
                restarted = True
            elif not there.exists:
                problems.append(f"the VM's definition is missing on {run.source}")
        except HostUnreachable as exc:
            problems.append(f"{run.source} cannot be reached to start the VM again ({exc.message})")
        except HypervisorError as exc:
            problems.append(f"starting the VM on {run.source} failed: {exc.message}")
    elif cold.get("was_running"):
        problems.append(f"the VM was not started again on {run.source} because the destination is not clean")

    if restarted:
        state = "running again"
    elif not cold.get("was_running"):
        state = "stopped, as it was"
    else:
        state = "running" if hv.locate(run.source.uri, uuid, _timeout()).running else "not running"

    summary = f"Rolled back: the VM is {state} on {run.source}"
    if done:
        summary += "; " + "; ".join(done)
    summary += "."
    if problems:
        summary += " An admin must check: " + "; ".join(problems) + "."
    cold["rolled_back"] = not problems
    scratch = {**(run.scratch or {}), "cold": cold}
    if problems:
        status = RunStatus.FAILED
    elif cancelled:
        status = RunStatus.CANCELLED
    else:
        status = status or RunStatus.ROLLED_BACK
    return runs.finish(
        run,
        status,
        error="" if cancelled else reason,
        error_raw=raw,
        outcome=(f"Cancelled. {summary}" if cancelled else summary),
        pending_cleanup=pending,
        scratch=scratch,
    )


def resolve(run: MigrationRun) -> dict[str, Any]:
    """The reconciler's decision for a cold run whose worker stopped reporting."""
    uuid = str(run.vm.uuid)
    cold = cold_state(run)
    src = hv.locate(run.source.uri, uuid, _timeout())
    dst = hv.locate(run.destination.uri, uuid, _timeout())
    if not src.reachable or not dst.reachable:
        down = run.source if not src.reachable else run.destination
        events.run_changed(run, phase_detail=f"Waiting for {down} to answer to finish the cold move's record")
        return {"run": run.pk, "decision": "unreachable"}
    if not cold.get("shut_down") and src.running and not dst.running:
        note, pending = cleanup(run)
        runs.finish(
            run,
            RunStatus.CANCELLED if run.cancel_requested else RunStatus.FAILED,
            error="" if run.cancel_requested else "The worker stopped before the VM was shut down.",
            outcome=f"The VM keeps running on {run.source}. {note}".strip(),
            pending_cleanup=pending,
        )
        return {"run": run.pk, "decision": "not started"}
    if dst.running and dst.run_tag == str(run.pk) and not src.running and run.status == RunStatus.VERIFYING:
        # the copy was verified and started; only the record is missing. Leave the source definition
        # (shut off) in place for an admin rather than guess that the checks would have passed.
        record_moved(run)
        runs.finish(
            run,
            RunStatus.SUCCEEDED,
            outcome=(
                f"Running on {run.destination}. The move finished while no worker watched it; the source's "
                "shut-off definition and disks were left in place for an admin."
            ),
            pending_cleanup={},
        )
        return {"run": run.pk, "decision": "succeeded"}
    roll_back(run, reason="The worker stopped during the cold move.", cancelled=run.cancel_requested)
    return {"run": run.pk, "decision": "rolled back"}
