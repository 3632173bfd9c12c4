"""Taking and restoring backups (definition + every writable disk), through libvirt only.

Where backups live: migrations_app.backupplace decides (one rule). A VM whose disks are all on shared
storage is backed up beside each disk, on that storage; any other VM's backup goes by default to the
pool named VMPORTAL_BACKUP_POOL (`backup`) on another host, so that it survives the loss of the VM's
host; failing that to shared storage on the VM's host, and only as a last resort beside each disk on
the VM's own host (BAK-RECENT warns about such a backup). Restores copy from there to any host with
the same chunked, verified transfer as cold moves.

- Running VM: push-mode backup job (`backupBegin`), the guest keeps running. QEMU writes the files on
  the domain's own host, beside each disk; when the backup belongs elsewhere, each file is then copied
  there by `DiskCopy` (per-chunk checksums, read back from the destination) and the local file removed.
  Otherwise the files are read back through libvirt and fingerprinted, which is also the check that
  they are complete.
- Stopped VM: each disk file is copied into its place by `DiskCopy` (per-chunk checksums, verified end
  to end).
"""

from __future__ import annotations

import logging
import secrets
import uuid as uuid_lib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from inventory.choices import Reachability
from inventory.hypervisor import HypervisorError, OperationFailed
from inventory.hypervisor import lifecycle as hvl
from inventory.hypervisor.migrate import rewrite_xml
from inventory.hypervisor.names import safe_file_name
from inventory.hypervisor.storage import VolumeHost
from inventory.models import Host, StoragePool, VirtualMachine
from migrations_app import backupplace
from migrations_app.backupplace import BackupPlace
from migrations_app.engine.shared import libvirt_timeout as _timeout
from migrations_app.engine.spec import adapter_network_map
from migrations_app.engine.transfer import DEFAULT_CHUNK, DiskCopy, TransferReport, read_digest
from migrations_app.models import Backup, BackupMethod, BackupState, MigrationRun

log = logging.getLogger(__name__)

PREFIX = "vmportal-backup"


def retention_days() -> int:
    return int(settings.BACKUP_RETENTION_DAYS)


def retain_until() -> datetime:
    """Until when what a move keeps (source disks, backups) is retained."""
    return timezone.now() + timedelta(days=retention_days())


class BackupFailed(OperationFailed):
    """No usable backup was made; whatever it had written was removed."""


Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def place_for(vm: VirtualMachine, host: Host, disk_pools: list[str]) -> BackupPlace:
    """Where a backup of `vm` (on `host`, with disks in the named pools there) goes by default."""
    pools = list(StoragePool.objects.filter(present=True, active=True))
    own = {p.name: p for p in pools if p.host_id == host.pk}
    disks_shared = bool(disk_pools) and all(name in own and own[name].shared for name in disk_pools)
    usable = set(
        Host.objects.filter(enabled=True).exclude(reachability=Reachability.UNREACHABLE).values_list("pk", flat=True)
    )
    return backupplace.choose(host.pk, disks_shared, pools, usable)


def take(
    vm: VirtualMachine,
    host: Host,
    *,
    run: MigrationRun | None = None,
    check: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> Backup:
    """Back up the VM where it is now (push backup if it runs, a copy if it is stopped), into the place
    `backupplace` chooses for it."""
    uuid = str(vm.uuid)
    defn = hvl.definition(host.uri, uuid, _timeout())
    disks = [d for d in defn.disks if d.writable]
    local = VolumeHost(host.uri, _timeout())
    try:
        sources = {d.target: local.info(d.path) for d in disks}
    finally:
        local.close()
    place = place_for(vm, host, [info.pool for info in sources.values()])
    place_host = host if place.host_id == host.pk else Host.objects.get(pk=place.host_id)
    backup = Backup.objects.create(
        vm=vm,
        vm_name=defn.name,
        vm_uuid=vm.uuid,
        host=place_host,
        pool=place.pool or backupplace.BESIDE_EACH_DISK,
        on_shared_storage=place.shared,
        run=run,
        method=BackupMethod.PUSH if defn.running else BackupMethod.COPY,
        vm_was_running=defn.running,
        definition_xml=defn.xml,
    )
    written: list[str] = []  # on the backup's host
    staged: list[str] = []  # push backup files on the VM's host that are copied elsewhere
    source_store = VolumeHost(host.uri, _timeout())
    store = source_store if place_host.pk == host.pk else VolumeHost(place_host.uri, _timeout())

    def name(target: str, fmt: str) -> str:
        return safe_file_name(PREFIX, defn.name, f"b{backup.pk}", f"{target}.{fmt}")

    def pool_of(target: str) -> str:
        return place.pool or sources[target].pool

    try:
        entries: list[dict[str, Any]] = []
        if disks and defn.running:
            # QEMU writes a push backup beside each disk; a backup that belongs elsewhere is moved there
            in_place = store is source_store and not place.pool
            targets = {d.target: f"{d.path.rsplit('/', 1)[0]}/{name(d.target, 'qcow2')}" for d in disks}
            (written if in_place else staged).extend(targets.values())

            def tick(stats: dict[str, Any]) -> None:
                if check is not None:
                    check()
                if progress is not None:
                    progress(int(stats.get("disk_processed", 0)), int(stats.get("disk_total", 0)))

            hvl.push_backup(host.uri, uuid, targets, tick=tick, timeout=_timeout())
            for path in targets.values():
                source_store.refresh_pool_of(path)  # the files QEMU wrote become volumes
            sent = 0
            for disk in disks:
                path = targets[disk.target]
                info = source_store.info(path)
                if info.capacity != sources[disk.target].capacity:
                    raise BackupFailed(
                        f"The backup of {disk.target} has a virtual size of {info.capacity} bytes, "
                        f"the disk {sources[disk.target].capacity}."
                    )
                if in_place:
                    digest, size, data = read_digest(store, path, DEFAULT_CHUNK)
                    sent += data
                    entries.append(_entry(disk.target, info.format, info.capacity, size, info.pool, path, digest))
                    continue
                dest = store.create_target(pool_of(disk.target), name(disk.target, info.format))
                written.append(dest.path)
                report = _copy(source_store, path, store, dest.path, check, progress)
                sent += report.bytes_sent
                entries.append(
                    _entry(disk.target, info.format, info.capacity, report.size, dest.pool, dest.path, report.digest)
                )
                source_store.delete(path)
                staged.remove(path)
            backup.bytes_sent = sent
        elif disks:
            for disk in disks:
                source = sources[disk.target]
                target = store.create_target(pool_of(disk.target), name(disk.target, source.format))
                written.append(target.path)
                report = _copy(source_store, disk.path, store, target.path, check, progress)
                backup.bytes_sent += report.bytes_sent
                entries.append(
                    _entry(
                        disk.target,
                        source.format,
                        source.capacity,
                        report.size,
                        target.pool,
                        target.path,
                        report.digest,
                    )
                )
        now = timezone.now()
        backup.disks = entries
        backup.total_bytes = sum(int(e["size"]) for e in entries)
        backup.state = BackupState.READY
        backup.verified = True
        backup.verified_at = now
        backup.finished_at = now
        backup.expires_at = now + timedelta(days=retention_days())
        backup.save()
        return backup
    except BaseException as exc:
        for files, where in ((written, store), (staged, source_store)):
            for path in files:
                with suppress(HypervisorError):
                    where.delete(path)
        message = exc.message if isinstance(exc, HypervisorError) else str(exc) or type(exc).__name__
        Backup.objects.filter(pk=backup.pk).update(
            state=BackupState.FAILED, error=message[:2000], finished_at=timezone.now()
        )
        if isinstance(exc, HypervisorError) and not isinstance(exc, BackupFailed):
            raise BackupFailed(f"The backup failed: {exc.message}", raw=exc.raw) from exc
        raise
    finally:
        source_store.close()
        store.close()


def _entry(target: str, fmt: str, capacity: int, size: int, pool: str, path: str, digest: str) -> dict[str, Any]:
    return {
        "target": target,
        "format": fmt,
        "capacity": capacity,
        "size": size,
        "pool": pool,
        "volume": path.rsplit("/", 1)[-1],
        "path": path,
        "sha256": digest,
        "chunk_size": DEFAULT_CHUNK,
    }


def _copy(
    source: VolumeHost,
    source_path: str,
    destination: VolumeHost,
    destination_path: str,
    check: Callable[[], None] | None,
    progress: Progress | None,
) -> TransferReport:
    def report_progress(done: int, report: TransferReport) -> None:
        if progress is not None:
            progress(done, report.size)

    return DiskCopy(source, source_path, destination, destination_path, progress=report_progress, check=check).run()


def verify(backup: Backup) -> bool:
    """Read every file of the backup back and compare it with the recorded fingerprint."""
    if backup.host is None or backup.state != BackupState.READY:
        return False
    store = VolumeHost(backup.host.uri, _timeout())
    try:
        ok = all(
            read_digest(store, d["path"], int(d.get("chunk_size") or DEFAULT_CHUNK))[0] == d["sha256"]
            for d in backup.disks
        )
    except HypervisorError:
        ok = False
    finally:
        store.close()
    Backup.objects.filter(pk=backup.pk).update(verified=ok, verified_at=timezone.now())
    backup.verified = ok
    return ok


@dataclass(frozen=True)
class Restored:
    uuid: str
    name: str
    host: str
    disks: list[dict[str, Any]]


def _random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def restore(
    backup: Backup,
    host: Host,
    *,
    pool: str = "local",
    network_map: dict[str, str] | None = None,
    name: str = "",
    start: bool = True,
) -> Restored:
    """Restore a backup onto `host` as a new VM (new name, UUID and MACs, so it can run beside the
    original): disks copied into `pool` with verification, NICs on `network_map` (MAC → network), started.

    Anything it created is removed again if a step fails.
    """
    if backup.state != BackupState.READY or backup.host is None:
        raise BackupFailed("Only a ready backup can be restored.")
    new_uuid = str(uuid_lib.uuid4())
    new_name = name or f"{backup.vm_name}-restore-{backup.pk}"
    source = VolumeHost(backup.host.uri, _timeout())
    target = VolumeHost(host.uri, _timeout())
    created: list[str] = []
    defined = False
    try:
        paths: dict[str, tuple[str, str]] = {}
        disks = []
        for disk in backup.disks:
            volume = target.create_target(pool, safe_file_name(new_name, f"{disk['target']}.{disk['format']}"))
            created.append(volume.path)
            report = DiskCopy(source, disk["path"], target, volume.path).run()
            if report.digest != disk["sha256"] and int(disk.get("chunk_size") or DEFAULT_CHUNK) == report.chunk_size:
                raise BackupFailed(f"The backup file of {disk['target']} no longer matches its checksum.")
            target.refresh_pool_of(volume.path)
            paths[disk["target"]] = (volume.path, disk["format"])
            disks.append({"target": disk["target"], "path": volume.path, "pool": pool, "format": disk["format"]})
        xml, _unmapped = rewrite_xml(backup.definition_xml, adapter_network_map(network_map), paths)
        macs = {m.lower(): _random_mac() for m in _macs(backup.definition_xml)}
        xml = hvl.rename_for_restore(xml, name=new_name, uuid=new_uuid, macs=macs)
        hvl.define(host.uri, xml, _timeout())
        defined = True
        if start:
            hvl.start(host.uri, new_uuid, _timeout())
        return Restored(uuid=new_uuid, name=new_name, host=host.name, disks=disks)
    except BaseException:
        if defined:
            with suppress(HypervisorError):
                hvl.destroy(host.uri, new_uuid, _timeout())
            with suppress(HypervisorError):
                hvl.undefine(host.uri, new_uuid, _timeout())
        for path in created:
            with suppress(HypervisorError):
                target.delete(path)
        raise
    finally:
        source.close()
        target.close()


def _macs(xml: str) -> list[str]:
    from inventory.hypervisor.domxml import parse_xml

    return [m.get("address", "") for m in parse_xml(xml).iter("mac") if m.get("address")]


def delete_files(backup: Backup) -> list[str]:
    """Remove a backup's files from its host. Returns the paths removed."""
    if backup.host is None:
        return []
    removed = []
    store = VolumeHost(backup.host.uri, _timeout())
    try:
        for disk in backup.disks:
            if store.delete(disk["path"]):
                removed.append(disk["path"])
    finally:
        store.close()
    return removed


def _until_no_job(run: MigrationRun, limit_s: float = 60.0) -> None:
    """An aborted backup job really ends: asked again while the source still reports a job."""
    import time

    from inventory.hypervisor.migrate import abort_job, locate

    uuid = str(run.vm.uuid)
    end = time.monotonic() + limit_s
    while locate(run.source.uri, uuid, _timeout()).job_active and time.monotonic() < end:
        with suppress(HypervisorError):
            abort_job(run.source.uri, uuid, _timeout())
        time.sleep(0.5)


class BackupCancelled(Exception):
    """The run was cancelled while its backup was being taken."""


def run_phase(run: MigrationRun, advance: Callable[[str, str], None]) -> bool:
    """The BACKUP phase of a live run whose plan asks for a fresh backup: taken while the guest runs.

    Returns False when the run ended here (backup failed or cancel requested); nothing was changed
    on either host then.
    """
    from migrations_app import events
    from migrations_app.choices import RunStatus
    from migrations_app.engine import runstate as runs

    advance(RunStatus.BACKUP, "Backing up the definition and disks (the VM keeps running)")
    if run.status == RunStatus.CANCELLING:
        runs.finish(run, RunStatus.CANCELLED, outcome="Cancelled before the move started; nothing changed.")
        return False

    def heartbeat() -> None:
        """Between readings of the backup job: renew the lease, stop on cancel (the job is aborted)."""
        runs.retrying_db(lambda: events.heartbeat(run.pk, lease_seconds=runs.LEASE_SECONDS))
        if MigrationRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
            raise BackupCancelled

    try:
        take(run.vm, run.source, run=run, check=heartbeat)
    except BackupCancelled:
        _until_no_job(run)
        runs.finish(
            run,
            RunStatus.CANCELLED,
            outcome=f"Cancelled during the backup: its job was aborted and its files removed; the VM stays on {run.source}.",
        )
        return False
    except HypervisorError as exc:
        runs.finish(
            run,
            RunStatus.FAILED,
            error=f"The fresh backup the plan asks for could not be taken: {exc.message}",
            error_raw=exc.raw,
            outcome=f"Nothing was moved; the VM stays on {run.source}.",
        )
        return False
    return True
