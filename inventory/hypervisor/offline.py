"""Copying a stopped domain's disks to another host with QEMU's own block mirror (the fast cold path).

libvirt offers one way to have QEMU copy disks between hosts: storage migration, in which the source
QEMU mirrors each disk over NBD into a destination QEMU that writes it into its own volume. Here it is
used for a *stopped* domain:

1. the domain is started on its source **paused** (`VIR_DOMAIN_START_PAUSED`): QEMU opens the disks,
   but no guest instruction runs, so nothing writes to them;
2. it is migrated peer-to-peer, not live, with `VIR_MIGRATE_NON_SHARED_DISK` for the disks to copy and
   a destination XML that names volumes created beforehand on the destination (any format QEMU
   writes, so a raw or vmdk disk becomes qcow2 on the way) and the mapped networks, and
   `VIR_MIGRATE_PAUSED`, so it stays paused there too;
3. the transient copy on the destination is destroyed: the volumes keep what the mirror wrote. The
   source domain is left defined and stopped, exactly as before.

What guarantees the copy: the migration only finishes after every mirror job has reached the
"ready" state (all blocks written to the destination's NBD server, over TCP) and has been completed
while the guest was paused; any failure of a mirror fails the migration (`VIR_MIGRATE_ABORT_ON_ERROR`).
The caller checks the destination volumes' virtual sizes afterwards.

A host pair on which this does not work (no NBD storage migration, a device that cannot start, a
domain that must not be started) raises `MirrorUnavailable` before any disk byte moved, and the
caller falls back to its stream copy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import libvirt

from .connection import DEFAULT_TIMEOUT_S, _open, call, state_name, translate
from .errors import HypervisorError, OperationFailed, Unsupported
from .migrate import JobStats, _stats, migration_error, rewrite_xml

log = logging.getLogger(__name__)

POLL_S = 0.2


class MirrorUnavailable(OperationFailed):
    """This path cannot be used for this domain or host pair; nothing was copied."""


@dataclass(frozen=True)
class MirrorDisk:
    target: str  # device name (vda)
    path: str  # the pre-created destination volume
    format: str  # its format (qcow2, raw)


@dataclass(frozen=True)
class MirrorResult:
    seconds: float
    start_s: float  # starting QEMU paused on the source
    migrate_s: float  # the mirror and the (tiny) memory transfer
    destroy_s: float  # stopping the paused copy on the destination
    stats: JobStats | None
    #: seconds from the start of the call to the end of each step, in order: "connected",
    #: "started_paused", "migrate_called", "disk_progress" (first reading with disk bytes copied; the
    #: destination QEMU is up and the mirror runs), "disk_done" (first reading with nothing left),
    #: "migrated" (migrateToURI3 returned), "destroyed". Readings are POLL_S apart.
    timeline: dict[str, float] = field(default_factory=dict)
    started_wall: float = 0.0  # time.time() at the start, to line the steps up with the hosts' logs


def mirror_stopped_domain(
    source_uri: str,
    destination_uri: str,
    peer_uri: str,
    uuid: str,
    disks: list[MirrorDisk],
    network_map: dict[str, str],
    *,
    tick: Callable[[JobStats | None], None] | None = None,
    bandwidth_mib_s: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> MirrorResult:
    """Copy the disks of the stopped domain `uuid` into the pre-created destination volumes.

    `tick(stats)` is called every POLL_S while the copy runs; if it raises, the job is aborted and the
    exception propagates (after the source domain was stopped again). `bandwidth_mib_s` caps the
    copy (libvirt applies the migration bandwidth to the disk mirror too). On any failure, the paused
    source domain and any paused copy on the destination are destroyed: both hosts are left as before
    (the destination volumes are the caller's to remove).
    """
    started = time.monotonic()
    started_wall = time.time()
    timeline: dict[str, float] = {}

    def mark(step: str) -> None:
        timeline.setdefault(step, round(time.monotonic() - started, 3))

    conn = _open(source_uri, timeout)
    mark("connected")
    dest = None
    dom = None
    started_here = False
    try:
        dom = call(lambda: conn.lookupByUUIDString(uuid), "finding the VM on the source")
        if dom.isActive():
            raise MirrorUnavailable("The VM is running; the block-mirror copy is only for stopped VMs.")
        try:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            started_here = True
        except libvirt.libvirtError as exc:
            raise MirrorUnavailable(
                f"The VM could not be started paused on the source for the copy: {exc.get_error_message()}",
                raw=str(exc),
            ) from None
        start_s = time.monotonic() - started
        mark("started_paused")
        try:
            xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        except libvirt.libvirtError as exc:
            raise translate(exc, "reading the VM's definition") from None
        dest_xml, unmapped = rewrite_xml(xml, network_map, {d.target: (d.path, d.format) for d in disks})
        if unmapped:
            raise OperationFailed(f"NIC(s) {', '.join(unmapped)} have no destination network mapped.")
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
            libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: [d.target for d in disks],
        }
        if bandwidth_mib_s:
            # libvirt caps the disk mirror with the migration bandwidth too
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib_s)
        flags = (
            libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_NON_SHARED_DISK
            | libvirt.VIR_MIGRATE_PAUSED
            | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        )
        migrate_started = time.monotonic()
        outcome: dict[str, BaseException] = {}

        def migrate() -> None:
            try:
                dom.migrateToURI3(peer_uri, params, flags)
            except libvirt.libvirtError as exc:
                outcome["error"] = migration_error(exc)
            except BaseException as exc:  # noqa: BLE001  (re-raised by the caller's thread)
                outcome["error"] = exc

        worker = threading.Thread(target=migrate, name=f"mirror-{uuid}", daemon=True)
        worker.start()
        mark("migrate_called")
        last: JobStats | None = None
        try:
            while worker.is_alive():
                worker.join(POLL_S)
                if not worker.is_alive():
                    break
                with suppress(libvirt.libvirtError):
                    last = _stats(dom.jobStats(0))
                if last is not None and last.disk_processed:
                    mark("disk_progress")
                    if last.disk_total and last.disk_processed >= last.disk_total:
                        mark("disk_done")
                if tick is not None:
                    tick(last)
        except BaseException:
            with suppress(libvirt.libvirtError):
                dom.abortJob()
            worker.join(60)
            raise
        if "error" in outcome:
            error = outcome["error"]
            if isinstance(error, Unsupported):
                # the host pair does not offer storage migration: nothing was copied
                raise MirrorUnavailable(f"QEMU's block mirror is not available here: {error.message}", raw=error.raw)
            raise error
        migrate_s = time.monotonic() - migrate_started
        mark("migrated")
        completed = None
        with suppress(libvirt.libvirtError):
            completed = _stats(
                {"type": libvirt.VIR_DOMAIN_JOB_COMPLETED, **dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)}
            )
        destroy_started = time.monotonic()
        dest = _open(destination_uri, timeout)
        _destroy(dest, uuid, "the paused copy on the destination")
        destroy_s = time.monotonic() - destroy_started
        mark("destroyed")
        return MirrorResult(
            seconds=round(time.monotonic() - started, 3),
            start_s=round(start_s, 3),
            migrate_s=round(migrate_s, 3),
            destroy_s=round(destroy_s, 3),
            stats=completed or last,
            timeline=timeline,
            started_wall=started_wall,
        )
    except BaseException:
        # leave both hosts as they were: nothing of the copy runs anywhere
        if dom is not None and started_here:
            with suppress(libvirt.libvirtError):
                if dom.isActive() and state_name(dom.state()[0]) == "paused":
                    dom.destroy()
        with suppress(HypervisorError):
            if dest is None:
                dest = _open(destination_uri, timeout)
            _destroy(dest, uuid, "the paused copy on the destination")
        raise
    finally:
        for c in (conn, dest):
            if c is not None:
                with suppress(libvirt.libvirtError):
                    c.close()


def _destroy(conn: libvirt.virConnect, uuid: str, what: str) -> None:
    """Destroy a transient paused domain (it vanishes); nothing if it is not there."""
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        raise translate(exc, f"finding {what}") from None
    if dom.isPersistent():
        raise OperationFailed(f"{what} is a defined domain; it is not destroyed by the copy.")
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise translate(exc, f"stopping {what}") from None


def clear_leftovers(source_uri: str, destination_uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """After a worker died during a block-mirror copy: destroy the domain it left paused on the source
    (no guest code ever ran in it) and its paused transient copy on the destination. Returns what was
    done, in words; hosts that do not answer are left for a later pass."""
    done = []
    for uri, where in ((destination_uri, "destination"), (source_uri, "source")):
        try:
            conn = _open(uri, timeout)
        except HypervisorError:
            continue
        try:
            dom = conn.lookupByUUIDString(uuid)
            if dom.isActive() and state_name(dom.state()[0]) == "paused":
                if where == "destination" and dom.isPersistent():
                    continue  # not the copy's transient domain
                dom.destroy()
                done.append(f"stopped the paused copy on the {where}")
        except libvirt.libvirtError:
            pass
        finally:
            with suppress(libvirt.libvirtError):
                conn.close()
    return done
