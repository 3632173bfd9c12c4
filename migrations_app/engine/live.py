"""One live move, end to end, on a worker: claim → prepare → migrate (one thread) while a monitor polls
job stats (this thread) → completed stats → VM row and audit log → terminal state.

Whatever goes wrong, the VM is never destroyed or started by this code: a failed or aborted move leaves
it running on the source (libvirt guarantees that for pre-copy), and the destination is cleaned of what
the move created there, unless the VM runs there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from django.utils import timezone

from inventory.hypervisor import HypervisorError
from inventory.hypervisor import migrate as hv
from inventory.models import Host, VirtualMachine
from migrations_app import events
from migrations_app.choices import RunStatus, ValidationStatus
from migrations_app.engine import recovery, shared
from migrations_app.engine import runstate as runs
from migrations_app.engine.progress import ConvergencePolicy, ProgressTracker, Sample
from migrations_app.engine.shared import (  # noqa: F401  (shared by both engines; also known under these names)
    RunRefused,
    cleanup,
    libvirt_timeout,
    peer_uri,
    placements,
    record_moved,
)
from migrations_app.engine.spec import RunSpec
from migrations_app.models import MigrationRun
from migrations_app.validation import phase as validation

log = logging.getLogger(__name__)

POLL_S = 0.5
#: an abort that has not ended the job after this long is sent again
ABORT_AGAIN_S = 2.0
#: until the job appears, poll fast so the first downtime limit is in place before the first iteration ends
FIRST_POLL_S = 0.05


def execute(run_id: int, *, job_id: str = "inline", worker: str | None = None) -> dict[str, Any]:
    """Claim and perform one live run. Returns a small summary for the RQ job result."""
    return shared.execute(run_id, lambda run: LiveMove(run).perform(), _after_crash, job_id=job_id, worker=worker)


def _after_crash(run: MigrationRun, exc: Exception, trace: str) -> None:
    """A crash in our own code: record it, then settle the run the way the reconciler would (a live job
    still running gets its monitor back; then both hosts are asked where the VM is). If even that fails,
    the lease is given up so the scheduled reconciler settles it later."""
    runs.retrying_db(lambda: events.run_changed(run, error_raw=trace), for_s=60)
    try:
        run.refresh_from_db()
        recovery.adopt(run.pk, job_id=run.job_id)
    except Exception:
        log.exception("settling run %s after a crash failed", run.pk)
        events.run_changed(run, lease_until=timezone.now(), phase_detail=f"The worker hit an internal error: {exc}")


def _tls(*hosts: Host) -> bool:
    """Hosts reached over qemu+tls also migrate over TLS (their PKI is already set up)."""
    return any(urlsplit(h.migration_uri or h.uri).scheme == "qemu+tls" or h.uri.startswith("qemu+tls") for h in hosts)


class LiveMove:
    def __init__(self, run: MigrationRun) -> None:
        self.run = run
        self.source: Host = run.source
        self.destination: Host = run.destination
        self.vm: VirtualMachine = run.vm
        self.spec = RunSpec.of(run.options)
        self.timeout = libvirt_timeout()
        self.tracker = ProgressTracker()
        self.policy = ConvergencePolicy(
            max_downtime_ms=self.spec.max_downtime_ms,
            on_no_convergence=self.spec.on_no_convergence,
            postcopy_allowed=self.spec.postcopy_allowed,
        )
        self.aborted_by = ""  # "cancel", "policy", "timeout"
        self.postcopy_started = False
        self.transferred: Any = None
        self.resumed = False  # adopted after the worker that started the job stopped

    # ---- the request -------------------------------------------------------------------------------

    def placements(self) -> dict[str, hv.DiskPlacement]:
        return placements(self.run)

    def request(self) -> hv.MigrationRequest:
        return hv.MigrationRequest(
            uuid=str(self.vm.uuid),
            source_uri=self.source.uri,
            destination_uri=self.destination.uri,
            peer_uri=peer_uri(self.destination),
            network_map=self.spec.live_network_map(),
            disks=self.placements(),
            options=hv.LiveOptions(
                bandwidth_mib_s=self.spec.bandwidth_mib_s,
                auto_converge=self.spec.auto_converge,
                postcopy=self.spec.postcopy_allowed,
                parallel_connections=self.spec.parallel_connections,
                compression=self.spec.compression,
                tls=_tls(self.source, self.destination),
            ),
            run_tag=str(self.run.pk),
            timeout=self.timeout,
        )

    # ---- state helpers -----------------------------------------------------------------------------

    def advance(self, status: str, detail: str, **fields: Any) -> None:
        """Move forward unless a cancel has been requested meanwhile (then keep "cancelling")."""
        events.advance(self.run, status, detail, **fields)

    def cancel_requested(self) -> bool:
        return bool(
            runs.retrying_db(
                lambda: MigrationRun.objects.filter(pk=self.run.pk).values_list("cancel_requested", flat=True).first()
            )
        )

    # ---- the move ----------------------------------------------------------------------------------

    def perform(self) -> None:
        if self.cancel_requested():
            runs.finish(self.run, RunStatus.CANCELLED, outcome="Cancelled before the move started; nothing changed.")
            return
        try:
            request = self.request()
        except RunRefused as exc:
            runs.finish(self.run, RunStatus.FAILED, error=str(exc), outcome="Nothing was changed.")
            return
        # a fresh backup first when the plan asks for one (push mode: the guest keeps running)
        if self.spec.fresh_backup:
            from migrations_app.engine import backup

            if not backup.run_phase(self.run, self.advance):
                return
        # the audit read the destination some time ago: what the move needs there is read again now
        problem = self.recheck(request)
        if problem:
            runs.finish(
                self.run,
                RunStatus.FAILED,
                error=f"Pre-flight re-check on {self.destination}: {problem}.",
                outcome=f"Nothing was moved; the VM stays on {self.source}.",
            )
            return
        validation.take_baseline(self.run)  # the guest as it is before the move, for the VAL-* checks
        try:
            migration = hv.LiveMigration(request)
        except HypervisorError as exc:
            runs.finish(
                self.run,
                RunStatus.FAILED,
                error=f"Could not reach {self.source} to start the move: {exc.message}",
                error_raw=exc.raw,
                outcome="Nothing was changed.",
            )
            return
        with migration:
            try:
                prepared = migration.prepare()
            except HypervisorError as exc:
                runs.finish(
                    self.run, RunStatus.FAILED, error=exc.message, error_raw=exc.raw, outcome="Nothing was changed."
                )
                return
            volumes = [v.as_dict() for v in prepared.created_volumes]
            used = {
                **(self.run.scratch or {}),
                "flags": prepared.flags,
                "params": prepared.params,
                "copy_disks": prepared.copy_disks,
                "downtime_steps_ms": self.policy.steps,
                "peer_uri": request.peer_uri,
            }
            # written before the job starts: a worker that dies from here on leaves the reconciler enough
            # to find the VM and to remove what this move created on the destination
            pending = {"host": self.destination.pk, "uuid": str(self.vm.uuid), "volumes": volumes}
            self.advance(
                RunStatus.TRANSFERRING,
                "Copying disks and memory" if prepared.copy_disks else "Copying memory",
                scratch=used,
                pending_cleanup=pending,
            )
            if self.run.status == RunStatus.CANCELLING:
                self.aborted_by = "cancel"
                self.fail_safely(migration, hv.MigrationAborted("Cancelled before the move started."))
                return
            error = self.transfer(migration)
            if error is None:
                self.succeed(migration)
            else:
                self.fail_safely(migration, error)

    def recheck(self, request: hv.MigrationRequest) -> str:
        """Right before the move: the destination networks the NICs will join still exist, are active and
        have their host bridge. Returns the problem in words, or ""."""
        names = list(request.network_map.values()) + [
            nic.source_network
            for nic in self.vm.nics.all()
            if nic.type == "network" and nic.source_network and nic.mac.lower() not in request.network_map
        ]
        if not names:
            return ""
        try:
            problems = hv.network_problems(self.destination.uri, names, self.timeout)
        except HypervisorError as exc:
            return exc.message
        return "; ".join(problems)

    def transfer(self, migration: hv.LiveMigration) -> HypervisorError | None:
        """Run the job in a thread and watch it from here. Returns the job's error, if any."""
        outcome: dict[str, BaseException] = {}

        def target() -> None:
            try:
                migration.run()
            except BaseException as exc:  # handed to the monitor thread, never lost
                outcome["error"] = exc

        thread = threading.Thread(target=target, name=f"migrate-run-{self.run.pk}", daemon=True)
        thread.start()

        def running(wait_s: float) -> bool:
            thread.join(wait_s)
            return thread.is_alive()

        self.watch(migration, running, time.monotonic())
        thread.join()
        self.transferred = timezone.now()
        error = outcome.get("error")
        if error is None:
            return None
        if isinstance(error, HypervisorError):
            return error
        return hv.MigrationFailed(f"The move failed: {error}", raw=repr(error))

    def watch(self, migration: hv.LiveMigration, running: Callable[[float], bool], started: float) -> None:
        """The one monitor of a live job, for a fresh move and for one adopted after its worker died:
        progress samples, the convergence policy, cancel and the time limit. An abort is sent again
        while the job still runs, so a cancelled move really ends. Returns when the job has ended."""
        downtime_set = self.postcopy_started  # no downtime limit to set once post-copy runs
        note = "monitor resumed after the worker stopped; " if self.resumed else ""
        last_abort = 0.0
        while running(POLL_S if downtime_set else FIRST_POLL_S):
            stats = migration.stats()
            sampled = False
            if stats is not None and stats.active:
                if not downtime_set:
                    downtime_set = migration.set_max_downtime(self.policy.current_limit_ms)
                    if downtime_set:
                        note += f"downtime limit {self.policy.current_limit_ms} ms"
                action = None if self.aborted_by or self.postcopy_started else self.policy.observe(stats)
                if action is not None:
                    note = self.apply(migration, action)
                    last_abort = time.monotonic() if self.aborted_by else last_abort
                if downtime_set:
                    sample = self.tracker.sample(stats, self.policy.current_limit_ms, note)
                    sampled = self.record(sample)
                    note = "" if sampled else note
            if not sampled:
                runs.retrying_db(lambda: events.heartbeat(self.run.pk, lease_seconds=runs.LEASE_SECONDS))
            if self.postcopy_started:
                continue
            if self.aborted_by:
                if time.monotonic() - last_abort > ABORT_AGAIN_S:
                    # the first abort did not end the job (yet): ask again rather than wait for ever
                    migration.abort()
                    last_abort = time.monotonic()
            elif self.cancel_requested():
                self.aborted_by = "cancel"
                migration.abort()
                last_abort = time.monotonic()
            elif time.monotonic() - started > runs.MAX_MOVE_SECONDS:
                self.aborted_by = "timeout"
                migration.abort()
                last_abort = time.monotonic()

    def record(self, sample: Sample) -> bool:
        """One progress sample (renewing the lease); False if the database was unavailable this time."""

        def write() -> bool:
            events.record_sample(self.run, sample, lease_seconds=runs.LEASE_SECONDS)
            return True

        return bool(runs.retrying_db(write))

    # ---- adoption ------------------------------------------------------------------------------------

    def restore(self) -> None:
        """Pick the monitor's state up from what the run recorded: the downtime step reached, post-copy
        started, a policy abort already sent, the percent shown."""
        self.resumed = True
        recorded = self.run.samples.exclude(downtime_limit_ms=None).order_by("-at", "-pk")
        limit = recorded.values_list("downtime_limit_ms", flat=True).first()
        if limit is not None and int(limit) in self.policy.steps:
            self.policy.step_index = self.policy.steps.index(int(limit))
        self.tracker.percent = float(self.run.percent or 0)
        self.postcopy_started = (
            self.run.status == RunStatus.CUTOVER or self.run.samples.filter(phase="postcopy").exists()
        )
        self.tracker.postcopy = self.postcopy_started
        if self.run.samples.filter(note__contains="aborting as the plan says").exists():
            self.policy.finished = True
            self.aborted_by = "policy"

    def resume(self) -> bool:
        """Take over a live job that outlived its worker and finish it the way its first monitor would.
        Returns False when the job could not be reached (the reconciler decides from the hosts then)."""
        self.restore()
        try:
            migration = hv.LiveMigration.attach(self.source.uri, self.destination.uri, str(self.vm.uuid), self.timeout)
        except HypervisorError:
            return False
        since = (timezone.now() - (self.run.started_at or timezone.now())).total_seconds()
        with migration:
            if not migration.job_running():
                return False
            self.advance(self.run.status, "libvirt is still moving the VM; the portal watches it again")

            def running(wait_s: float) -> bool:
                time.sleep(wait_s)
                return migration.job_running()

            self.watch(migration, running, time.monotonic() - max(0.0, since))
            self.transferred = timezone.now()
            uuid = str(self.vm.uuid)
            here = hv.locate(self.destination.uri, uuid, self.timeout)
            there = hv.locate(self.source.uri, uuid, self.timeout)
            if not here.reachable or not there.reachable:
                return False
            if here.running and not there.running:
                self.succeed(migration)
            elif self.aborted_by or there.running:
                error = hv.MigrationFailed("The worker stopped while moving the VM and the move did not complete.")
                self.fail_safely(migration, error)
            else:
                return False
        return True

    def apply(self, migration: hv.LiveMigration, action: Any) -> str:
        if action.kind == "downtime":
            migration.set_max_downtime(action.downtime_ms)
            return action.note
        if action.kind == "postcopy":
            try:
                migration.start_postcopy()
            except HypervisorError as exc:
                self.aborted_by = "policy"
                migration.abort()
                return f"{action.note}; post-copy refused ({exc.message}), aborting"
            self.postcopy_started = True
            self.tracker.postcopy = True
            self.advance(RunStatus.CUTOVER, "Post-copy: the VM runs on the destination while memory follows")
            return action.note
        self.aborted_by = "policy"
        migration.abort()
        return action.note

    # ---- endings -----------------------------------------------------------------------------------

    def succeed(self, migration: hv.LiveMigration) -> None:
        # committed first: "transferred" is when the guest runs on the destination, not when figures arrive
        self.advance(
            RunStatus.VERIFYING,
            "Reading the completed job's figures",
            transferred_at=self.transferred,
            percent=self.tracker.done(),
        )
        completed = migration.completed()
        if completed is not None:
            # the chart ends at 100 % with the figures libvirt reports for the whole job
            final = self.tracker.sample(completed, self.policy.current_limit_ms, "completed")
            events.record_sample(
                self.run,
                replace(final, phase="done", percent=100.0, bytes_remaining=0, eta_s=None),
                lease_seconds=runs.LEASE_SECONDS,
            )
            events.run_changed(
                self.run,
                percent=100.0,
                downtime_ms=completed.downtime_ms,
                setup_ms=completed.setup_ms,
                elapsed_ms=completed.elapsed_ms,
                completed_stats=completed.raw,
                phase_detail="Checking where the VM runs",
            )
        self.run.refresh_from_db()
        here = hv.locate(self.destination.uri, str(self.vm.uuid), self.timeout)
        there = hv.locate(self.source.uri, str(self.vm.uuid), self.timeout)
        if not here.exists:
            runs.finish(
                self.run,
                RunStatus.FAILED,
                error=f"libvirt reported the move as done but the VM is not on {self.destination}.",
                outcome=f"Destination: absent; source: {there.state or 'absent'}. An admin must check.",
            )
            return
        # the VM row follows the VM now; both hosts are re-read while the VM is validated, and the run is
        # finished only after that
        with shared.moved_and_syncing(self.run):
            # ---- validation phase: the run succeeds only when the VAL-* checks pass ----
            self.advance(RunStatus.VERIFYING, f"Validating the VM on {self.destination}")
            report = validation.run_phase(self.run)
        if report.status == ValidationStatus.FAILED:
            runs.finish(
                self.run,
                RunStatus.FAILED,
                error=validation.failure_summary(report),
                outcome=(
                    f"The VM was left running on {self.destination} as it is; a move back to {self.source} "
                    "can be planned from this run's page (audited and approved like any other plan)."
                ),
                pending_cleanup={},
            )
            return
        # ---- end of validation phase ----
        outcome = f"Running on {self.destination}"
        if self.postcopy_started:
            outcome += " after switching to post-copy (libvirt reports no downtime for post-copy moves)"
        elif self.run.downtime_ms is not None:
            outcome += f"; the guest paused for {self.run.downtime_ms:.0f} ms"
        outcome += f"; validation {report.get_status_display().lower()} in {(report.duration_ms or 0) / 1000:.1f} s"
        runs.finish(self.run, RunStatus.SUCCEEDED, outcome=outcome + ".", pending_cleanup={})

    def fail_safely(self, migration: hv.LiveMigration, error: HypervisorError) -> None:
        uuid = str(self.vm.uuid)
        there = hv.locate(self.source.uri, uuid, self.timeout)
        here = hv.locate(self.destination.uri, uuid, self.timeout)
        found = recovery.whereabouts(there, here)
        if found == recovery.Whereabouts.MOVED:
            # the job reported an error after the switch (e.g. while confirming): the VM did move
            record_moved(self.run)
            runs.finish(
                self.run,
                RunStatus.SUCCEEDED,
                transferred_at=self.transferred,
                outcome=f"Running on {self.destination} (libvirt reported: {error.message}).",
                pending_cleanup={},
            )
            return
        failure = recovery.live_failure(
            self.aborted_by, error.message, max_downtime_ms=self.policy.steps[-1], max_move_s=runs.MAX_MOVE_SECONDS
        )
        status, message = failure.status, failure.message
        if there.running:
            where = f"The VM keeps running on {self.source}."
        elif there.exists:
            where = f"The VM is {there.state} on {self.source}; the portal does not start it. An admin must check."
        else:
            where = "The VM was not found on the source. An admin must check."
        if here.exists and here.running:
            where += f" It also runs on {self.destination}: an admin must decide; nothing was removed."
            runs.finish(self.run, status, error=message, error_raw=error.raw, outcome=where)
            return
        cleanup_note, pending = cleanup(self.run)
        runs.finish(
            self.run,
            status,
            error=message if status != RunStatus.CANCELLED else "",
            error_raw=error.raw,
            outcome=f"{message if status == RunStatus.CANCELLED else ''} {where} {cleanup_note}".strip(),
            pending_cleanup=pending,
        )
