"""Copying a stopped domain's disks to another host with QEMU's own block mirror (the fast cold path).

libvirt offers one way to have QEMU copy disks between hosts: storage migration, in which the source
QEMU mirrors each disk over NBD into a destination QEMU that writes it into its own volume. Here it is
used for a *stopped* domain:

1. a **carrier** is started on the source, **paused** (`VIR_DOMAIN_START_PAUSED`): a transient
   domain named `vmportal-copy-<VM UUID>` with only the disks to copy (on virtio), 32 MiB of RAM and
   no other device. QEMU opens the disks, but no instruction runs, so nothing writes to them. The VM's
   own definition is never started: its RAM (which a paused domain's migration would still carry),
   NICs and other devices play no part;
2. the carrier is migrated peer-to-peer, not live, with `VIR_MIGRATE_NON_SHARED_DISK` for its disks
   and a destination XML that names volumes created beforehand on the destination (any format QEMU
   writes, so a raw disk becomes qcow2 on the way), and `VIR_MIGRATE_PAUSED`, so it stays paused
   there too; being transient, it vanishes from the source;
3. the carrier on the destination is destroyed as soon as it has arrived there (libvirt's Finish
   phase is over), while the source daemon still stops its own QEMU: the volumes keep what the mirror
   wrote. The VM is left defined and stopped on the source, exactly as before.

Where the time goes (B-COLD, lab, QEMU 10 under libvirt 9.0): libvirt takes ~0.3 s to start a paused
QEMU, devices or not, and at least 200 ms to stop one (it polls the process every 0.2 s); the copy pays
two starts and two stops (the two stops overlap), the rest is the mirror's own copy of the allocated
data (unallocated areas travel as write-zeroes requests).

What guarantees the copy: the migration only finishes after every mirror job has reached the
"ready" state (all blocks written to the destination's NBD server, over TCP, and flushed there) and
has been completed while the guest was paused; any failure of a mirror fails the migration
(`VIR_MIGRATE_ABORT_ON_ERROR`). The caller checks the destination volumes' virtual sizes afterwards.

A host pair on which this does not work (no NBD storage migration, a device that cannot start, a
domain that must not be started) raises `MirrorUnavailable` before any disk byte moved, and the
caller falls back to its stream copy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import libvirt

from .connection import DEFAULT_TIMEOUT_S, _open, call, state_name, translate
from .domxml import CARRIER_PREFIX, parse_xml
from .errors import HypervisorError, OperationFailed, Unsupported
from .migrate import JobStats, _stats, migration_error, rewrite_xml

log = logging.getLogger(__name__)

POLL_S = 0.2
FINISH_POLL_S = 0.02  # at the end of the copy: watching for the carrier's arrival on the destination
FINISHING_S = 2.0
#: the carrier domains that hold the disks during a copy (CARRIER_PREFIX): transient, paused, named after
#: the VM's UUID
CARRIER_MEMORY_MIB = 32
_CARRIER_NS = uuid_mod.UUID("d7db6934-caaf-48d5-944f-4be42f03b1be")


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
    #: "arrived" (the carrier waits paused on the destination, which starts stopping it), "migrated"
    #: (migrateToURI3 returned), "destroyed". Readings are POLL_S apart, FINISH_POLL_S at the end.
    timeline: dict[str, float] = field(default_factory=dict)
    started_wall: float = 0.0  # time.time() at the start, to line the steps up with the hosts' logs
    carrier: str = ""  # the carrier domain's name (its QEMU logs are named after it)


def carrier_name(uuid: str) -> str:
    """The name of the copy's carrier domain for the VM `uuid` (the same on both hosts)."""
    return f"{CARRIER_PREFIX}{uuid}"


def is_carrier(name: str) -> bool:
    return name.startswith(CARRIER_PREFIX)


def _carrier_target(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"vd{letters}"


def carrier_xml(vm_xml: str, uuid: str, targets: list[str]) -> tuple[str, dict[str, str]]:
    """A transient domain that carries only the disks `targets` of the VM defined by `vm_xml`: same
    domain type, architecture, machine and emulator, CARRIER_MEMORY_MIB of RAM, no NIC, no balloon, no
    USB, each disk on virtio as vda, vdb… Returns the XML and VM target → carrier target."""
    root = parse_xml(vm_xml)
    os_type = root.find("os/type")
    devices = root.find("devices")
    if os_type is None or devices is None:
        raise MirrorUnavailable("The VM's definition has no <os> or <devices>; it cannot carry its disks.")
    carrier = Element("domain", type=root.get("type", "qemu"))
    SubElement(carrier, "name").text = carrier_name(uuid)
    SubElement(carrier, "uuid").text = str(uuid_mod.uuid5(_CARRIER_NS, uuid))
    SubElement(carrier, "memory", unit="MiB").text = str(CARRIER_MEMORY_MIB)
    SubElement(carrier, "vcpu").text = "1"
    os_el = SubElement(carrier, "os")
    SubElement(os_el, "type", {k: v for k, v in os_type.attrib.items() if k in ("arch", "machine")}).text = "hvm"
    if root.find("features/acpi") is not None:
        # as the VM has it (libvirt 9.0 passes -no-acpi otherwise, which QEMU 9+ refuses on x86)
        SubElement(SubElement(carrier, "features"), "acpi")
    out = SubElement(carrier, "devices")
    emulator = (devices.findtext("emulator") or "").strip()
    if emulator:
        SubElement(out, "emulator").text = emulator
    names: dict[str, str] = {}
    for disk in devices.findall("disk"):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev not in targets or dev in names:
            continue
        names[dev] = _carrier_target(len(names))
        copy = SubElement(out, "disk", {k: v for k, v in disk.attrib.items() if k in ("type", "device")})
        copy.set("device", "disk")
        driver = disk.find("driver")
        if driver is not None:
            # format only: the VM's cache, io or throttling settings are not the copy's
            SubElement(copy, "driver", {k: v for k, v in driver.attrib.items() if k in ("name", "type")})
        for child in disk:
            if child.tag in ("source", "backingStore", "auth", "encryption"):
                copy.append(child)
        SubElement(copy, "target", dev=names[dev], bus="virtio")
    missing = [t for t in targets if t not in names]
    if missing:
        raise MirrorUnavailable(f"The VM has no disk {', '.join(missing)} to copy.")
    SubElement(out, "controller", type="usb", model="none")
    SubElement(out, "memballoon", model="none")
    return tostring(carrier, encoding="unicode"), names


def mirror_stopped_domain(
    source_uri: str,
    destination_uri: str,
    peer_uri: str,
    uuid: str,
    disks: list[MirrorDisk],
    *,
    tick: Callable[[JobStats | None], None] | None = None,
    bandwidth_mib_s: int | None = None,
    destination_driver: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> MirrorResult:
    """Copy the disks of the stopped domain `uuid` into the pre-created destination volumes.

    `tick(stats)` is called every POLL_S while the copy runs; if it raises, the job is aborted and the
    exception propagates (after the carrier was stopped again). `bandwidth_mib_s` caps the copy
    (libvirt applies the migration bandwidth to the disk mirror too). `destination_driver`: disk
    driver attributes (cache, io…) for the destination QEMU's writes (libvirt's defaults when None). On any failure, the
    carrier on the source and any copy of it on the destination are destroyed: both hosts are left as
    before (the destination volumes are the caller's to remove).
    """
    started = time.monotonic()
    started_wall = time.time()
    timeline: dict[str, float] = {}

    def mark(step: str) -> None:
        timeline.setdefault(step, round(time.monotonic() - started, 3))

    conn = _open(source_uri, timeout)
    mark("connected")
    name = carrier_name(uuid)
    dest = None
    carrier = None
    try:
        dom = call(lambda: conn.lookupByUUIDString(uuid), "finding the VM on the source")
        if dom.isActive():
            raise MirrorUnavailable("The VM is running; the block-mirror copy is only for stopped VMs.")
        try:
            vm_xml = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            raise translate(exc, "reading the VM's definition") from None
        xml, targets = carrier_xml(vm_xml, uuid, [d.target for d in disks])
        _destroy(conn, name, "a carrier left on the source")
        try:
            carrier = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as exc:
            raise MirrorUnavailable(
                f"The VM's disks could not be opened by a paused QEMU on the source for the copy: "
                f"{exc.get_error_message()}",
                raw=str(exc),
            ) from None
        start_s = time.monotonic() - started
        mark("started_paused")
        try:
            migratable = carrier.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
        except libvirt.libvirtError as exc:
            raise translate(exc, "reading the carrier's definition") from None
        dest_xml, _none = rewrite_xml(migratable, {}, {targets[d.target]: (d.path, d.format) for d in disks})
        if destination_driver:
            dest_xml = _with_driver(dest_xml, destination_driver)
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
            libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: [targets[d.target] for d in disks],
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
        # the destination connection is open before the copy: its carrier is stopped as soon as it has
        # arrived, while the source daemon is still stopping its own QEMU (each stop costs libvirt at
        # least one 200 ms wait for the process to go)
        dest = _open(destination_uri, timeout)
        migrate_started = time.monotonic()
        outcome: dict[str, BaseException] = {}
        moving = carrier

        def migrate() -> None:
            try:
                moving.migrateToURI3(peer_uri, params, flags)
            except libvirt.libvirtError as exc:
                outcome["error"] = migration_error(exc)
            except BaseException as exc:  # noqa: BLE001  (re-raised by the caller's thread)
                outcome["error"] = exc

        worker = threading.Thread(target=migrate, name=f"mirror-{uuid}", daemon=True)
        worker.start()
        mark("migrate_called")
        last: JobStats | None = None
        stopper: _Stopper | None = None
        # the copy is about to end (under FINISHING_S to go at the rate so far, or done): from then on the
        # destination is watched every FINISH_POLL_S for the carrier's arrival
        finishing = False
        first: tuple[float, int] | None = None  # (when, bytes) of the first reading with progress
        next_tick = time.monotonic() + POLL_S
        try:
            while worker.is_alive():
                worker.join(FINISH_POLL_S if finishing else POLL_S)
                if not worker.is_alive():
                    break
                now = time.monotonic()
                if finishing:
                    if stopper is None and _arrived(dest, name):
                        mark("arrived")
                        stopper = _Stopper(dest, name)
                    if now < next_tick:
                        continue
                reading = None
                with suppress(libvirt.libvirtError):
                    reading = _stats(carrier.jobStats(0))
                if reading is None or not reading.active:
                    finishing = finishing or first is not None  # the job is ending
                else:
                    last = reading
                if reading is not None and reading.disk_processed and reading.disk_total:
                    mark("disk_progress")
                    left = reading.disk_total - reading.disk_processed
                    if first is None:
                        first = (now, reading.disk_processed)
                    rate = (reading.disk_processed - first[1]) / max(now - first[0], 1e-3)
                    if left <= 0:
                        mark("disk_done")
                    finishing = finishing or left <= 0 or (rate > 0 and left / rate < FINISHING_S)
                next_tick = now + POLL_S
                if tick is not None:
                    tick(last)
        except BaseException:
            with suppress(libvirt.libvirtError):
                carrier.abortJob()
            worker.join(60)
            if stopper is not None:
                stopper.wait()
            raise
        migrate_s = time.monotonic() - migrate_started
        mark("migrated")
        if "error" in outcome:
            if stopper is not None:
                stopper.wait()
            error = outcome["error"]
            if isinstance(error, Unsupported):
                # the host pair does not offer storage migration: nothing was copied
                raise MirrorUnavailable(f"QEMU's block mirror is not available here: {error.message}", raw=error.raw)
            raise error
        completed = None
        with suppress(libvirt.libvirtError):
            completed = _stats(
                {"type": libvirt.VIR_DOMAIN_JOB_COMPLETED, **carrier.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)}
            )
        destroy_started = time.monotonic()
        if stopper is not None:
            stopper.wait()
            if stopper.error is not None:
                raise stopper.error
        else:
            _destroy(dest, name, "the carrier on the destination")
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
            carrier=name,
        )
    except BaseException:
        # leave both hosts as they were: nothing of the copy runs anywhere
        with suppress(HypervisorError):
            _destroy(conn, name, "the carrier on the source")
        with suppress(HypervisorError):
            if dest is None:
                dest = _open(destination_uri, timeout)
            _destroy(dest, name, "the carrier on the destination")
        raise
    finally:
        for c in (conn, dest):
            if c is not None:
                with suppress(libvirt.libvirtError):
                    c.close()


def _arrived(conn: libvirt.virConnect, name: str) -> bool:
    """The carrier has arrived on the destination: it waits paused there (libvirt's Finish phase sets
    that state) and the incoming migration job has ended (Finish has let go of the domain, and of its
    QEMU). Only then may it be stopped without disturbing the migration."""
    try:
        dom = conn.lookupByName(name)
        state, reason = dom.state()
        if state != libvirt.VIR_DOMAIN_PAUSED or reason != libvirt.VIR_DOMAIN_PAUSED_USER:
            return False
        return bool(dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE)
    except libvirt.libvirtError:
        return False


class _Stopper:
    """Destroys the carrier on the destination in a thread of its own; `wait()` for it, then `error`."""

    def __init__(self, conn: libvirt.virConnect, name: str) -> None:
        self.error: HypervisorError | None = None
        self._thread = threading.Thread(target=self._run, args=(conn, name), name=f"stop-{name}", daemon=True)
        self._thread.start()

    def _run(self, conn: libvirt.virConnect, name: str) -> None:
        try:
            _destroy(conn, name, "the carrier on the destination")
        except HypervisorError as exc:
            self.error = exc

    def wait(self) -> None:
        self._thread.join(DEFAULT_TIMEOUT_S * 4)


def _with_driver(xml: str, attrs: dict[str, str]) -> str:
    root = parse_xml(xml)
    for driver in root.findall("devices/disk/driver"):
        for key, value in attrs.items():
            driver.set(key, value)
    return tostring(root, encoding="unicode")


def _destroy(conn: libvirt.virConnect, name: str, what: str) -> None:
    """Destroy a transient carrier domain (it vanishes); nothing if it is not there."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return
        raise translate(exc, f"finding {what}") from None
    if dom.isPersistent() or not is_carrier(name):
        raise OperationFailed(f"{what} is a defined domain; it is not destroyed by the copy.")
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise translate(exc, f"stopping {what}") from None


def clear_leftovers(source_uri: str, destination_uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """After a worker died during a block-mirror copy: destroy the carrier it left paused on either
    host (no guest code ever runs in one). Copies started before carriers existed ran the VM itself
    paused; such a paused VM on the source, or a paused transient copy of it on the destination, is
    destroyed too. Returns what was done, in words; hosts that do not answer are left for a later pass."""
    done = []
    for uri, where in ((destination_uri, "destination"), (source_uri, "source")):
        try:
            conn = _open(uri, timeout)
        except HypervisorError:
            continue
        try:
            with suppress(HypervisorError):
                try:
                    conn.lookupByName(carrier_name(uuid))
                except libvirt.libvirtError:
                    pass
                else:
                    _destroy(conn, carrier_name(uuid), f"the carrier on the {where}")
                    done.append(f"stopped the copy's paused carrier on the {where}")
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
