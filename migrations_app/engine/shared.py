"""What the live and cold engines (and the crash recovery) share: the libvirt timeout, where each disk
goes, removing what a move left on the destination, and recording that the VM moved."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction

from inventory.hypervisor import HostUnreachable, HypervisorError, InvalidURI
from inventory.hypervisor import migrate as hv
from inventory.models import Host, StoragePool, VirtualMachine
from inventory.services.hosts import check_migration_uri
from inventory.services.sync import sync_host
from migrations_app import auditlog, rules
from migrations_app.choices import TERMINAL_RUN_STATES
from migrations_app.engine import runstate
from migrations_app.engine.spec import RunSpec
from migrations_app.models import MigrationRun

log = logging.getLogger(__name__)


class RunRefused(Exception):
    """The run cannot start as planned (mapping missing, VM not running…); nothing was changed."""


def libvirt_timeout() -> float:
    """Seconds a libvirt connection may take to open (VMPORTAL_LIBVIRT_CONNECT_TIMEOUT, always set)."""
    return float(settings.LIBVIRT_CONNECT_TIMEOUT)


def remember(run: MigrationRun, **values: Any) -> None:
    """Keep working state on the run (`scratch`, apart from its specification); it survives a crash."""
    run.scratch = {**(run.scratch or {}), **values}
    MigrationRun.objects.filter(pk=run.pk).update(scratch=run.scratch)


def execute(
    run_id: int,
    perform: Callable[[MigrationRun], None],
    after_crash: Callable[[MigrationRun, Exception, str], None],
    *,
    job_id: str = "inline",
    worker: str | None = None,
) -> dict[str, Any]:
    """Claim one run and perform it (either engine). A crash in our own code keeps its traceback and is
    handed to `after_crash` unless the run already ended. Returns a small summary for the RQ job result."""
    run = runstate.try_claim(run_id, job_id=job_id, worker=worker or runstate.worker_identity())
    if run is None:
        return {"run": run_id, "claimed": False}
    try:
        perform(run)
    except Exception as exc:
        log.exception("run %s crashed", run_id)
        run.refresh_from_db()
        if run.status not in TERMINAL_RUN_STATES:
            after_crash(run, exc, traceback.format_exc()[-8000:])
    run.refresh_from_db()
    return {"run": run_id, "claimed": True, "status": run.status, "downtime_ms": run.downtime_ms}


def placements(run: MigrationRun) -> dict[str, hv.DiskPlacement]:
    """Where each disk of the run's VM goes on the destination (its storage map), and whether it is copied
    (`rules.disk_copied`). Raises RunRefused when a disk has no pool there."""
    storage_map = RunSpec.of(run.options).storage_map
    destination = run.destination
    dest_pools = {p.name: p for p in StoragePool.objects.filter(host=destination, present=True)}
    result = {}
    for disk in run.vm.disks.select_related("pool"):
        if disk.device not in ("disk", "lun") or not disk.source:
            continue
        choice = storage_map.get(disk.target) or {}
        pool_name = rules.destination_pool(storage_map, disk.target, disk.pool.name if disk.pool else "")
        dest_pool = dest_pools.get(pool_name)
        if dest_pool is None:
            raise RunRefused(f"Disk {disk.target} has no storage pool mapped on {destination}.")
        result[disk.target] = hv.DiskPlacement(
            target=disk.target,
            pool=dest_pool.name,
            copy=rules.disk_copied(
                disk.pool.name if disk.pool else "", bool(disk.pool and disk.pool.shared), pool_name, dest_pool.shared
            ),
            format=choice.get("format", "keep") or "keep",
        )
    return result


def cleanup(run: MigrationRun) -> tuple[str, dict[str, Any]]:
    """Remove what the move left on the destination. Returns (words, what is still pending)."""
    pending: dict[str, Any] = dict(run.pending_cleanup or {})
    if not pending:
        return "", {}
    host = Host.objects.get(pk=pending["host"])
    try:
        removed = hv.cleanup_destination(host.uri, pending["uuid"], pending.get("volumes", []))
    except HostUnreachable:
        return f"What it created on {host} will be removed when {host} answers again.", pending
    except HypervisorError as exc:
        return f"Cleaning {host} failed ({exc.message}); it will be retried.", pending
    return (f"Removed from {host}: {', '.join(removed)}." if removed else ""), {}


def record_moved(run: MigrationRun) -> None:
    """The VM row follows the VM: host and state, then a sync of both hosts for the details (disks, NICs)."""
    with transaction.atomic():
        vm = VirtualMachine.objects.select_for_update().get(pk=run.vm_id)
        before = vm.host_id
        VirtualMachine.objects.filter(pk=vm.pk).update(host=run.destination_id, state="running", present=True)
        auditlog.record(
            None,
            "vm.move",
            vm,
            before={"host": str(Host.objects.get(pk=before))},
            after={"host": str(run.destination), "run": run.pk},
        )
    for host_id in (run.destination_id, run.source_id):
        try:
            sync_host(host_id)
        except Exception:  # the row is already right; a sync failure only delays details
            log.warning("sync after run %s failed", run.pk, exc_info=True)


def peer_uri(host: Host) -> str:
    """What the source daemon dials: checked again against the allow-list right before libvirt gets it."""
    try:
        return check_migration_uri(host.migration_uri or host.uri)
    except InvalidURI as exc:
        raise RunRefused(f"The migration URI of {host} is not allowed: {exc.message}") from None
