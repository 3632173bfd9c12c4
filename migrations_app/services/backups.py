"""Backups as the rest of the portal sees them: take, verify, restore, list, prune; retained source disks.

Retention: every backup expires `VMPORTAL_BACKUP_RETENTION_DAYS` days (default 14) after it was taken,
and a cold move keeps the source's disks for the same period; `prune()` (scheduled) removes what has
expired. Where the files live and how they are made: migrations_app.engine.backup.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from inventory.hypervisor import HypervisorError
from inventory.hypervisor.storage import VolumeHost
from inventory.models import Host, VirtualMachine
from inventory.permissions import require_admin
from migrations_app.engine import backup as engine
from migrations_app.engine.shared import libvirt_timeout
from migrations_app.models import Backup, BackupState, RetainedDisk
from migrations_app.services import auditlog

log = logging.getLogger(__name__)

retention_days = engine.retention_days
BackupFailed = engine.BackupFailed
Restored = engine.Restored


def latest_verified_backup(vm: VirtualMachine, max_age: timedelta) -> Backup | None:
    """The newest verified, ready backup of this VM younger than `max_age` (BAK-RECENT reads this)."""
    return (
        Backup.objects.filter(
            vm_uuid=vm.uuid,
            state=BackupState.READY,
            verified=True,
            created_at__gte=timezone.now() - max_age,
        )
        .order_by("-created_at", "-pk")
        .first()
    )


def backups_of(vm: VirtualMachine) -> QuerySet[Backup]:
    """Backups to list on the VM's page, newest first (pruned ones excluded)."""
    return Backup.objects.filter(vm_uuid=vm.uuid).exclude(state=BackupState.PRUNED).select_related("host")


def retained_disks_of(vm: VirtualMachine) -> QuerySet[RetainedDisk]:
    """Source disks a cold move of this VM keeps (not yet released)."""
    return RetainedDisk.objects.filter(vm=vm, released_at__isnull=True).select_related("host")


def take_backup(actor: Any, vm: VirtualMachine) -> Backup:
    """Back up a VM now, where it is (outside of any move)."""
    backup = engine.take(vm, vm.host)
    auditlog.record(
        actor, "backup.take", backup, after={"vm": vm.name, "host": str(vm.host), "bytes": backup.total_bytes}
    )
    return backup


def verify_backup(backup: Backup) -> bool:
    return engine.verify(backup)


def restore_backup(
    actor: Any,
    backup: Backup,
    host: Host,
    *,
    pool: str = "local",
    network_map: dict[str, str] | None = None,
    name: str = "",
    start: bool = True,
) -> Restored:
    restored = engine.restore(backup, host, pool=pool, network_map=network_map, name=name, start=start)
    auditlog.record(
        actor, "backup.restore", backup, after={"host": host.name, "name": restored.name, "uuid": restored.uuid}
    )
    return restored


retain_until = engine.retain_until


def release_retained_disk(actor: Any, disk: RetainedDisk) -> bool:
    """An admin frees a kept source disk before its retention ends: the volume is removed."""
    require_admin(actor, "release kept disks")
    if disk.released_at is not None:
        return False
    _remove_retained(disk, getattr(actor, "username", "") or "admin")
    auditlog.record(actor, "disk.release", disk, after={"path": disk.path, "host": str(disk.host)})
    return True


def _remove_retained(disk: RetainedDisk, by: str) -> None:
    if disk.host is not None:
        store = VolumeHost(disk.host.uri, libvirt_timeout())
        try:
            store.delete(disk.path)
        finally:
            store.close()
    RetainedDisk.objects.filter(pk=disk.pk).update(released_at=timezone.now(), released_by=by[:150])


def prune(now: datetime | None = None) -> dict[str, int]:
    """Remove expired backups and retained disks whose retention has ended. Hosts that do not answer
    are skipped and tried again on the next pass."""
    now = now or timezone.now()
    pruned = released = 0
    for backup in Backup.objects.filter(state=BackupState.READY, expires_at__lt=now).select_related("host"):
        try:
            engine.delete_files(backup)
        except HypervisorError as exc:
            log.info("pruning backup %s postponed: %s", backup.pk, exc.message)
            continue
        Backup.objects.filter(pk=backup.pk).update(state=BackupState.PRUNED)
        auditlog.record(None, "backup.prune", backup, after={"files": len(backup.disks)})
        pruned += 1
    for disk in RetainedDisk.objects.filter(released_at__isnull=True, retain_until__lt=now).select_related("host"):
        try:
            _remove_retained(disk, "retention")
        except HypervisorError as exc:
            log.info("releasing retained disk %s postponed: %s", disk.pk, exc.message)
            continue
        released += 1
    return {"backups": pruned, "retained_disks": released}
