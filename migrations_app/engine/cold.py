"""One cold move, end to end, on a worker.

claim → check the mapping → tag the domain → graceful shutdown (force off only if the plan allows)
→ backup (when the plan asks for a fresh one) → convert foreign disk formats on the source → copy
every disk (chunked, checksummed, resumable, verified) → define the rewritten XML on the destination
→ start → post-move checks (running there, every disk present) → only then undefine the source,
whose disk files are kept (RetainedDisk) until the retention ends or an admin releases them.

From the moment the VM is shut down, any failure or a cancel rolls back (engine.rollback): the
destination's copy is removed and the source is started again as it was. What happened is written
on the run in words. The state needed for that is kept in `run.scratch["cold"]`, so the reconciler
can finish a rollback if the worker dies.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from inventory.hypervisor import HypervisorError, OperationFailed, offline
from inventory.hypervisor import lifecycle as hvl
from inventory.hypervisor import migrate as hv
from inventory.hypervisor.names import safe_file_name
from inventory.hypervisor.storage import VolumeHost
from inventory.models import Host, VirtualMachine
from migrations_app import events
from migrations_app.choices import RunStatus, ValidationStatus
from migrations_app.engine import backup as backups
from migrations_app.engine import rollback, shared
from migrations_app.engine import runstate as runs
from migrations_app.engine.backup import retain_until
from migrations_app.engine.progress import Sample
from migrations_app.engine.rollback import cold_state
from migrations_app.engine.shared import RunRefused, peer_uri, placements, record_moved
from migrations_app.engine.shared import libvirt_timeout as _timeout
from migrations_app.engine.spec import RunSpec
from migrations_app.engine.transfer import DEFAULT_CHUNK, DiskCopy, TransferFailed, TransferReport
from migrations_app.models import MigrationRun, RetainedDisk
from migrations_app.validation import phase as validation

log = logging.getLogger(__name__)

#: formats a destination runs; anything else found on a source (vmdk, vhdx, vpc…) is converted
NATIVE_FORMATS = ("qcow2", "raw")
SAMPLE_EVERY_S = 0.5


class Cancelled(Exception):
    """A cancel was requested; the move stops and rolls back."""


class ValidationFailed(OperationFailed):
    """A VAL-* check failed on the destination; the move rolls back."""


def chunk_size() -> int:
    return int(settings.COLD_CHUNK_BYTES or DEFAULT_CHUNK)


def copy_path(jobs: list[DiskJob]) -> str:
    """ "mirror" (QEMU's block mirror, the fast path) unless configured otherwise or nothing is copied."""
    if settings.COLD_COPY == "stream" or not any(j.copy for j in jobs):
        return "stream"
    return "mirror"


def execute(run_id: int, *, job_id: str = "inline", worker: str | None = None) -> dict[str, Any]:
    """Claim and perform one cold run. Returns a small summary for the RQ job result."""
    return shared.execute(run_id, lambda run: ColdMove(run).perform(), _after_crash, job_id=job_id, worker=worker)


def _after_crash(run: MigrationRun, exc: Exception, trace: str) -> None:
    """A crash in our own code: roll back (the VM may already be stopped), keeping the traceback."""
    rollback.roll_back(run, reason=f"The worker hit an internal error: {exc}", raw=trace)


@dataclass
class DiskJob:
    target: str
    source_path: str
    source_pool: str
    source_format: str
    format: str
    pool: str
    copy: bool
    copy_from: str = ""  # the source file or its converted staging copy
    size: int = 0
    destination_path: str = ""
    report: TransferReport | None = None


@dataclass
class Totals:
    total: int = 0
    done_before: int = 0  # bytes of disks already finished
    started: float = field(default_factory=time.monotonic)
    last_sample: float = 0.0
    high: int = 0
    note: str = ""


class ColdMove:
    def __init__(self, run: MigrationRun) -> None:
        self.run = run
        self.source: Host = run.source
        self.destination: Host = run.destination
        self.vm: VirtualMachine = run.vm
        self.uuid = str(self.vm.uuid)
        self.spec = RunSpec.of(run.options)
        self.timeout = _timeout()
        self.totals = Totals()
        self.stopping_at = time.monotonic()

    # ---- state helpers -----------------------------------------------------------------------------

    def advance(self, status: str, detail: str, **fields: Any) -> None:
        """Move forward unless a cancel was requested meanwhile (then stop: the caller rolls back)."""
        if not events.advance(self.run, status, detail, **fields):
            raise Cancelled()

    def check(self) -> None:
        """Called between chunks and while waiting: renew the lease, stop on cancel."""
        events.heartbeat(self.run.pk, lease_seconds=runs.LEASE_SECONDS)
        if MigrationRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists():
            raise Cancelled()

    def remember(self, **values: Any) -> None:
        """Keep rollback state on the run (survives a worker crash)."""
        shared.remember(self.run, cold={**cold_state(self.run), **values})

    # ---- the move ----------------------------------------------------------------------------------

    def perform(self) -> None:
        try:
            disk_places = placements(self.run)
        except RunRefused as exc:
            runs.finish(self.run, RunStatus.FAILED, error=str(exc), outcome="Nothing was changed.")
            return
        if self.run.cancel_requested:
            runs.finish(self.run, RunStatus.CANCELLED, outcome="Cancelled before the move started; nothing changed.")
            return
        network_map = self.spec.live_network_map()
        try:
            hv.tag_domain(self.source.uri, self.uuid, str(self.run.pk), self.timeout)
            defn = hvl.definition(self.source.uri, self.uuid, self.timeout)
        except HypervisorError as exc:
            runs.finish(
                self.run, RunStatus.FAILED, error=exc.message, error_raw=exc.raw, outcome="Nothing was changed."
            )
            return
        _xml, unmapped = hv.rewrite_xml(defn.xml, network_map, {})
        if unmapped:
            runs.finish(
                self.run,
                RunStatus.FAILED,
                error=f"NIC(s) {', '.join(unmapped)} have no destination network mapped.",
                outcome="Nothing was changed.",
            )
            return
        try:
            jobs = self.disk_jobs(defn, disk_places)
        except RunRefused as exc:
            runs.finish(self.run, RunStatus.FAILED, error=str(exc), outcome="Nothing was changed.")
            return
        self.remember(was_running=defn.running, source_xml=defn.xml, shut_down=False, staging=[], started=False)
        validation.take_baseline(self.run)  # the guest as it is before the move, for the VAL-* checks
        pending = {"host": self.destination.pk, "uuid": self.uuid, "volumes": []}
        try:
            self.advance(RunStatus.PREFLIGHT, "Shutting the VM down", pending_cleanup=pending)
            grace = self.spec.shutdown_timeout_s
            self.stopping_at = time.monotonic()
            how = hvl.shutdown(
                self.source.uri,
                self.uuid,
                grace_s=grace,
                force=self.spec.allow_force_off,
                tick=self.check,
                timeout=self.timeout,
            )
        except Cancelled:
            self.cancelled_before_stop(defn.running)
            return
        except HypervisorError as exc:
            still = "keeps running" if self.source_running() else "is stopped"
            runs.finish(
                self.run,
                RunStatus.FAILED,
                error=exc.message,
                error_raw=exc.raw,
                outcome=f"The VM {still} on {self.source}; nothing was copied.",
                pending_cleanup={},
            )
            return
        self.remember(shut_down=defn.running, shutdown=how, shutdown_s=round(time.monotonic() - self.stopping_at, 3))
        try:
            self.after_shutdown(defn, jobs, network_map, how)
        except Cancelled:
            rollback.roll_back(self.run, reason="Cancelled during the move.", cancelled=True)
        except ValidationFailed as exc:
            rollback.roll_back(self.run, reason=exc.message, status=RunStatus.FAILED)
        except HypervisorError as exc:
            rollback.roll_back(self.run, reason=exc.message, raw=exc.raw)
        except Exception as exc:
            log.exception("cold run %s failed", self.run.pk)
            rollback.roll_back(self.run, reason=f"The move failed: {exc}", raw=traceback.format_exc()[-8000:])

    def source_running(self) -> bool:
        try:
            return hvl.is_running(self.source.uri, self.uuid, self.timeout)
        except HypervisorError:
            return False

    def cancelled_before_stop(self, was_running: bool) -> None:
        # the shutdown request may already have reached the guest; put it back the way it was
        note = ""
        if was_running and not self.source_running():
            try:
                hvl.start(self.source.uri, self.uuid, self.timeout)
                note = " It had begun to shut down and was started again."
            except HypervisorError as exc:
                note = f" It had shut down and could not be started again: {exc.message}"
        runs.finish(
            self.run,
            RunStatus.CANCELLED,
            outcome=f"Cancelled while shutting down; nothing was copied.{note}",
            pending_cleanup={},
        )

    def disk_jobs(self, defn: hvl.Definition, placements: dict[str, hv.DiskPlacement]) -> list[DiskJob]:
        jobs = []
        for disk in defn.disks:
            placement = placements.get(disk.target)
            if placement is None:
                continue
            fmt = disk.format if placement.format in ("", "keep") else placement.format
            if fmt not in NATIVE_FORMATS:
                fmt = "qcow2"
            copy = placement.copy or fmt != disk.format
            if copy and not disk.writable:
                raise RunRefused(f"Disk {disk.target} is read-only or shareable; it is not copied by a cold move.")
            pool_name = ""
            jobs.append(
                DiskJob(
                    target=disk.target,
                    source_path=disk.path,
                    source_pool=pool_name,
                    source_format=disk.format,
                    format=fmt,
                    pool=placement.pool,
                    copy=copy,
                )
            )
        return jobs

    def after_shutdown(self, defn: hvl.Definition, jobs: list[DiskJob], network_map: dict[str, str], how: str) -> None:
        backup_note = ""
        if self.spec.fresh_backup:
            self.advance(RunStatus.BACKUP, "Backing up the definition and disks")
            taken = backups.take(self.vm, self.source, run=self.run, check=self.check)
            backup_note = f" Backup {taken.pk} taken first ({taken.total_bytes} bytes, verified)."
        src = VolumeHost(self.source.uri, self.timeout)
        dst = VolumeHost(self.destination.uri, self.timeout)
        try:
            self.advance(RunStatus.TRANSFERRING, "Preparing the disks")
            started = converted = time.monotonic()
            path = copy_path(jobs)
            if path == "mirror":
                try:
                    self.mirror_disks(src, dst, jobs)
                except offline.MirrorUnavailable as exc:
                    if settings.COLD_COPY == "mirror":
                        raise
                    self.mirror_fallback(dst, jobs, exc)
                    path = "stream"
            if path == "stream":
                self.prepare_disks(src, dst, jobs)
                converted = time.monotonic()
                self.copy_disks(src, dst, jobs)
            # the copy phase as B-COLD measures it: conversion + copy + end-to-end verification
            self.remember(
                copy_path=path,
                convert_s=round(converted - started, 3),
                copy_phase_s=round(time.monotonic() - started, 3),
            )
        finally:
            src.close()
            dst.close()
        self.cutover(defn, jobs, network_map)
        self.verify_and_finish(jobs, how, backup_note)

    def mirror_disks(self, src: VolumeHost, dst: VolumeHost, jobs: list[DiskJob]) -> None:
        """The fast path (inventory.hypervisor.offline): a paused carrier domain holding the VM's disks
        started on the source and the disks mirrored by QEMU into volumes created here in their final
        format — conversion and copy in one pass, no staging file, no read-back (the mirror's
        completion is the guarantee)."""
        copied = [j for j in jobs if j.copy]
        foreign = [f"{j.target} ({j.source_format})" for j in copied if j.source_format not in NATIVE_FORMATS]
        if foreign:
            # libvirt refuses storage migration of other formats ("The … format used by non-shared storage
            # is not supported"); the stream path converts them on the source first
            raise offline.MirrorUnavailable(
                f"QEMU's block mirror copies only raw and qcow2 disks through libvirt; {', '.join(foreign)} is not."
            )
        raw = [j.target for j in copied if j.format == "raw"]
        if raw:
            # measured with QEMU 10 and libvirt 9.0: the mirror writes a raw destination file in full (zeros
            # included; libvirt only offers zero detection for it from 10.9 on), while the stream copy keeps
            # it sparse. qcow2 destinations stay sparse either way (zero clusters).
            raise offline.MirrorUnavailable(
                f"QEMU's block mirror would write the raw destination of {', '.join(raw)} in full."
            )
        volumes: list[dict[str, str]] = []
        capacities: dict[str, int] = {}
        creating = time.monotonic()
        for job in copied:
            info = src.info(job.source_path)
            job.source_pool = info.pool
            job.size = info.physical
            capacities[job.target] = info.capacity
            base = os.path.splitext(os.path.basename(job.source_path))[0]
            target = dst.create(job.pool, f"{base}.{job.format}", info.capacity, job.format)
            job.destination_path = target.path
            volumes.append({"pool": job.pool, "name": target.name, "path": target.path})
            pending = {"host": self.destination.pk, "uuid": self.uuid, "volumes": volumes}
            MigrationRun.objects.filter(pk=self.run.pk).update(pending_cleanup=pending)
            self.run.pending_cleanup = pending
        volumes_s = time.monotonic() - creating
        self.totals.total = sum(capacities.values())
        self.advance(
            RunStatus.TRANSFERRING,
            f"Copying {', '.join(j.target for j in copied)} with QEMU's block mirror "
            f"(a paused QEMU on {self.source} holds the disks: no guest code runs)",
        )
        self.remember(mirror_started=True)

        result = offline.mirror_stopped_domain(
            self.source.uri,
            self.destination.uri,
            peer_uri(self.destination),
            self.uuid,
            [offline.MirrorDisk(j.target, j.destination_path, j.format) for j in copied],
            tick=self.mirror_tick,
            bandwidth_mib_s=self.spec.bandwidth_mib_s,
            timeout=self.timeout,
        )
        checking = time.monotonic()
        reports = []
        for job in copied:
            dst.refresh_pool_of(job.destination_path)
            info = dst.info(job.destination_path)
            if info.capacity != capacities[job.target] or info.format != job.format:
                raise TransferFailed(
                    f"The copy of {job.target} is a {info.format} volume of {info.capacity} bytes; "
                    f"expected {job.format} of {capacities[job.target]} bytes."
                )
            job.report = TransferReport(
                source=job.source_path,
                destination=job.destination_path,
                size=info.physical,
                data_bytes=info.allocation,
                # the data the mirror wrote: QEMU sends unallocated areas as write-zeroes requests, not bytes
                # (B-COLD reads the link's counters: what crosses it is this allocation, not the virtual size)
                bytes_sent=info.allocation,
                verified=True,
                seconds=result.migrate_s,
                method="mirror",
            )
            reports.append({"target": job.target, "format": job.format, **job.report.as_dict()})
        # where the copy phase's time went (B-COLD prints it)
        self.remember(
            mirror_started=False,
            mirror={
                "volumes_s": round(volumes_s, 3),
                "start_s": result.start_s,
                "migrate_s": result.migrate_s,
                "destroy_s": result.destroy_s,
                "check_s": round(time.monotonic() - checking, 3),
                "timeline": result.timeline,
                "started_wall": result.started_wall,
                "carrier": result.carrier,
            },
        )
        shared.remember(self.run, transfers=reports)
        self.sample(self.totals.total, final=True, note="copied by QEMU's block mirror")
        MigrationRun.objects.filter(pk=self.run.pk).update(transferred_at=timezone.now())

    def mirror_tick(self, stats: hv.JobStats | None) -> None:
        """Each progress reading of the block-mirror job: honour a cancel, publish the bytes copied."""
        self.check()
        if stats is not None and stats.disk_total:
            self.totals.total = max(self.totals.total, stats.disk_total)
            self.totals.high = max(self.totals.high, stats.disk_processed)
            self.sample(self.totals.high)

    def mirror_fallback(self, dst: VolumeHost, jobs: list[DiskJob], exc: offline.MirrorUnavailable) -> None:
        """The block mirror cannot be used here: remove its empty volumes, copy through streams."""
        for job in jobs:
            if job.destination_path:
                dst.delete(job.destination_path)
                job.destination_path = ""
        pending = {"host": self.destination.pk, "uuid": self.uuid, "volumes": []}
        MigrationRun.objects.filter(pk=self.run.pk).update(pending_cleanup=pending)
        self.run.pending_cleanup = pending
        self.remember(mirror_started=False, mirror_unavailable=exc.message)
        self.advance(RunStatus.TRANSFERRING, f"{exc.message} Copying through libvirt streams instead")

    def prepare_disks(self, src: VolumeHost, dst: VolumeHost, jobs: list[DiskJob]) -> None:
        """Convert foreign formats on the source, create the destination files, size the copy."""
        staging: list[str] = []
        volumes: list[dict[str, str]] = []
        for job in jobs:
            if not job.copy:
                continue
            info = src.info(job.source_path)
            job.source_pool = info.pool
            job.copy_from = job.source_path
            if job.format != job.source_format:
                self.advance(
                    RunStatus.TRANSFERRING, f"Converting {job.target} from {job.source_format} to {job.format}"
                )
                converted = src.convert(
                    job.source_path,
                    info.pool,
                    safe_file_name(f"vmportal-run{self.run.pk}", f"{job.target}.{job.format}"),
                    job.format,
                )
                staging.append(converted.path)
                self.remember(staging=staging)
                job.copy_from = converted.path
                job.size = converted.physical
            else:
                job.size = info.physical
            base = os.path.splitext(os.path.basename(job.source_path))[0]
            target = dst.create_target(job.pool, f"{base}.{job.format}")
            job.destination_path = target.path
            volumes.append({"pool": job.pool, "name": target.name, "path": target.path})
            # written before any byte moves: a worker that dies from here on leaves enough to clean up
            pending = {"host": self.destination.pk, "uuid": self.uuid, "volumes": volumes}
            MigrationRun.objects.filter(pk=self.run.pk).update(pending_cleanup=pending)
            self.run.pending_cleanup = pending
        self.totals.total = sum(j.size for j in jobs if j.copy)

    def copy_disks(self, src: VolumeHost, dst: VolumeHost, jobs: list[DiskJob]) -> None:
        reports = []
        for job in jobs:
            if not job.copy:
                continue
            self.advance(RunStatus.TRANSFERRING, f"Copying {job.target} ({job.size} bytes of file)")
            copy = DiskCopy(
                src,
                job.copy_from,
                dst,
                job.destination_path,
                chunk_size=chunk_size(),
                progress=self.progress,
                check=self.check,
            )
            job.report = copy.run()
            self.totals.done_before += job.size
            dst.refresh_pool_of(job.destination_path)
            reports.append({"target": job.target, "format": job.format, **job.report.as_dict()})
            shared.remember(self.run, transfers=reports)
        self.sample(self.totals.total, final=True, note="copy verified")
        MigrationRun.objects.filter(pk=self.run.pk).update(transferred_at=timezone.now())
        for path in cold_state(self.run).get("staging", []):
            src.delete(path)
        self.remember(staging=[])

    def progress(self, done: int, report: TransferReport) -> None:
        note = ""
        if report.resumed_at and self.totals.note != str(report.resumed_at):
            self.totals.note = str(report.resumed_at)
            note = f"resumed at chunk {report.resumed_at[-1]} after a connection fault"
        # never backwards: a resume that steps back re-covers bytes already reported
        self.totals.high = max(self.totals.high, self.totals.done_before + done)
        self.sample(self.totals.high, note=note)

    def sample(self, done: int, *, final: bool = False, note: str = "") -> None:
        now = time.monotonic()
        if not final and not note and now - self.totals.last_sample < SAMPLE_EVERY_S:
            return
        self.totals.last_sample = now
        elapsed = now - self.totals.started
        total = max(self.totals.total, done)
        throughput = done / elapsed if elapsed > 0 else None
        remaining = total - done
        events.record_sample(
            self.run,
            Sample(
                elapsed_s=round(elapsed, 3),
                phase="done" if final else "disk",
                percent=round(100.0 * done / total, 2) if total else 100.0,
                bytes_processed=done,
                bytes_remaining=remaining,
                bytes_total=total,
                throughput_bps=throughput,
                dirty_rate_bps=None,
                iteration=None,
                eta_s=round(remaining / throughput, 1) if throughput and remaining else None,
                note=note,
            ),
            lease_seconds=runs.LEASE_SECONDS,
        )

    def cutover(self, defn: hvl.Definition, jobs: list[DiskJob], network_map: dict[str, str]) -> None:
        self.advance(RunStatus.CUTOVER, f"Defining and starting the VM on {self.destination}")
        paths = {j.target: (j.destination_path, j.format) for j in jobs if j.copy}
        xml, _unmapped = hv.rewrite_xml(defn.xml, network_map, paths)
        self.check()
        hvl.define(self.destination.uri, xml, self.timeout)
        self.remember(defined=True)
        if defn.running:
            starting = time.monotonic()
            hvl.start(self.destination.uri, self.uuid, self.timeout)
            now = time.monotonic()
            # the VM's downtime: from the shutdown request to running on the destination
            downtime_s = now - self.stopping_at
            self.remember(started=True, start_s=round(now - starting, 3), downtime_s=round(downtime_s, 3))
            MigrationRun.objects.filter(pk=self.run.pk).update(downtime_ms=round(downtime_s * 1000))

    def verify_and_finish(self, jobs: list[DiskJob], how: str, backup_note: str) -> None:
        # ---- validation phase: the source is removed only when the VAL-* checks pass ----
        self.advance(RunStatus.VERIFYING, f"Validating the VM on {self.destination}")
        was_running = bool(cold_state(self.run).get("was_running"))
        self.run.refresh_from_db()
        report = validation.run_phase(self.run)
        if report.status == ValidationStatus.FAILED:
            raise ValidationFailed(validation.failure_summary(report))
        # ---- end of validation phase ----
        # the checks passed: the old definition goes, its disks stay until retention ends
        hvl.undefine(self.source.uri, self.uuid, self.timeout)
        until = retain_until()
        for job in jobs:
            if job.copy:
                RetainedDisk.objects.create(
                    vm=self.vm,
                    run=self.run,
                    host=self.source,
                    target=job.target,
                    pool=job.source_pool,
                    path=job.source_path,
                    format=job.source_format,
                    size=job.size,
                    retain_until=until,
                )
        record_moved(self.run)
        if not was_running:
            VirtualMachine.objects.filter(pk=self.vm.pk).update(state="shutoff")
        sent = sum(j.report.bytes_sent for j in jobs if j.report)
        resent = sum(j.report.bytes_resent for j in jobs if j.report)
        converted = [f"{j.target} {j.source_format}→{j.format}" for j in jobs if j.copy and j.format != j.source_format]
        outcome = (
            f"{'Running' if was_running else 'Defined (stopped, as before)'} on {self.destination}. "
            f"The VM was {how}; {sent} bytes of data copied"
            + (f" ({resent} re-sent after faults)" if resent else "")
            + (
                ", copied by QEMU's block mirror (complete when every block was acknowledged)"
                if cold_state(self.run).get("copy_path") == "mirror"
                else ", every disk verified by checksum"
            )
            + (f"; converted {', '.join(converted)}" if converted else "")
            + f". The source definition was removed; its disks are kept on {self.source} until "
            f"{until:%Y-%m-%d}. Validation {report.get_status_display().lower()} in "
            f"{(report.duration_ms or 0) / 1000:.1f} s.{backup_note}"
        )
        runs.finish(
            self.run,
            RunStatus.SUCCEEDED,
            outcome=outcome,
            pending_cleanup={},
            percent=100.0,
        )
