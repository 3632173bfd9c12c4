"""Power and definition of one domain (cold moves, backups, restores), and libvirt's push backup job.

Push-mode backup (`virDomainBackupBegin`) is supported by libvirt 9.0 with QEMU 7.2: QEMU copies
each listed disk into a new file on the domain's own host while the guest keeps running, and the
copy is point-in-time (a copy-before-write filter holds the old contents of blocks the guest
rewrites meanwhile). The job is watched through `jobInfo`/`jobStats` like a migration job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import libvirt

from .connection import DEFAULT_TIMEOUT_S, RUNNING_STATES, call, connect, lookup_domain, state_name, translate
from .domxml import DiskRef, file_disks, parse_xml  # noqa: F401  (DiskRef: part of Definition)
from .errors import HypervisorError, NotFound, OperationFailed

POLL_S = 0.2


class ShutdownTimeout(OperationFailed):
    """The guest did not power off within the grace period and forcing it off is not allowed."""


@dataclass(frozen=True)
class Definition:
    uuid: str
    name: str
    xml: str  # the persistent (inactive) definition
    running: bool
    disks: list[DiskRef]


# One way to open and close a connection, and to find a VM, for the whole adapter.
_conn = connect
_lookup = lookup_domain


#: file-backed disks of a definition (one parser for the whole adapter: domxml)
disks_of = file_disks


def definition(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> Definition:
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        xml = call(
            lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE),
            "reading the VM's definition",
        )
        running = call(lambda: bool(dom.isActive()), "reading the VM's state")
        return Definition(uuid=uuid, name=dom.name(), xml=xml, running=running, disks=disks_of(xml))


def is_running(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        return state_name(dom.state()[0]) in RUNNING_STATES


def shutdown(
    uri: str,
    uuid: str,
    *,
    grace_s: float,
    force: bool,
    tick: Callable[[], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Ask the guest to power off (ACPI); after `grace_s`, power it off if `force`, else raise.

    Returns what happened: "already off", "shut down" or "forced off". `tick` runs while waiting
    (heartbeats); an exception it raises stops the wait (cancel).
    """
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        if not dom.isActive():
            return "already off"
        try:
            dom.shutdown()
        except libvirt.libvirtError as exc:
            # a guest without ACPI refuses the request; the grace period then simply runs out
            if not force:
                raise translate(exc, "asking the guest to shut down") from None
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            if not dom.isActive():
                return "shut down"
            if tick is not None:
                tick()
            time.sleep(POLL_S)
        if not dom.isActive():
            return "shut down"
        if not force:
            raise ShutdownTimeout(
                f"The guest did not shut down within {grace_s:.0f} s and the plan does not allow forcing it off."
            )
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if dom.isActive():
                raise translate(exc, "forcing the VM off") from None
        return "forced off"


def start(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        if not dom.isActive():
            call(dom.create, "starting the VM")


def destroy(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Power a domain off hard; False when it was not running or not there."""
    with _conn(uri, timeout) as conn:
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return False
        if not dom.isActive():
            return False
        call(dom.destroy, "powering the VM off")
        return True


def define(uri: str, xml: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Define (persistently) a domain; returns its name."""
    with _conn(uri, timeout) as conn:
        dom = call(lambda: conn.defineXML(xml), "defining the VM")
        return str(dom.name())


def undefine(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Remove an inactive definition, keeping its disks. False when there was none."""
    with _conn(uri, timeout) as conn:
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            return False
        if dom.isActive():
            raise OperationFailed("The VM is running; its definition is not removed.")
        flags = (
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        )
        call(lambda: dom.undefineFlags(flags), "removing the old definition")
        return True


def exists(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    with _conn(uri, timeout) as conn:
        try:
            conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise translate(exc, "looking up the VM") from None
        return True


def missing_disks(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Disks of the domain's running definition whose files the host cannot find (as volumes)."""
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        missing = []
        for disk in disks_of(call(lambda: dom.XMLDesc(0), "reading the VM's definition")):
            try:
                conn.storageVolLookupByPath(disk.path)
            except libvirt.libvirtError:
                missing.append(f"{disk.target} ({disk.path})")
        return missing


# ---- push backup -------------------------------------------------------------------------------------


def _backup_xml(targets: dict[str, str]) -> str:
    root = Element("domainbackup", mode="push")
    disks = SubElement(root, "disks")
    for dev, path in targets.items():
        disk = SubElement(disks, "disk", name=dev, backup="yes", type="file")
        SubElement(disk, "target", file=path)
        SubElement(disk, "driver", type="qcow2")
    return tostring(root, encoding="unicode")


def push_backup(
    uri: str,
    uuid: str,
    targets: dict[str, str],
    *,
    tick: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_s: float = 6 * 3600,
) -> dict[str, Any]:
    """Run a push-mode backup of the running domain's disks into new qcow2 files (`targets`: disk
    target → file path on the domain's host) and wait for it. Disks not listed are left out.

    Returns the completed job stats. `tick(stats)` runs about five times a second while it copies.
    """
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        wanted = set(targets)
        # every disk of the domain must be named, either backed up or explicitly skipped
        xml = _backup_xml(targets)
        root = parse_xml(xml)
        disks_el = root.find("disks")
        for disk in disks_of(call(lambda: dom.XMLDesc(0), "reading the VM's definition")):
            if disk.target not in wanted and disks_el is not None:
                SubElement(disks_el, "disk", name=disk.target, backup="no")
        xml = tostring(root, encoding="unicode")
        try:
            dom.backupBegin(xml, None, 0)
        except libvirt.libvirtError as exc:
            raise translate(exc, "starting the backup job") from None
        started = time.monotonic()
        while True:
            try:
                stats = dom.jobStats(0)
            except libvirt.libvirtError as exc:
                raise translate(exc, "watching the backup job") from None
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                break
            if tick is not None:
                try:
                    tick(stats)
                except BaseException:
                    with suppress(libvirt.libvirtError):
                        dom.abortJob()
                    raise
            if time.monotonic() - started > max_s:
                with suppress(libvirt.libvirtError):
                    dom.abortJob()
                raise OperationFailed("The backup job took too long and was aborted.")
            time.sleep(POLL_S)
        try:
            completed = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            completed = {}
        if completed and completed.get("success") is False:
            raise OperationFailed(
                "The backup job failed.", raw=str(completed.get("errmsg", "")) or "backup job reported failure"
            )
        return {k: v for k, v in completed.items() if isinstance(v, int | float | str | bool)}


def rename_for_restore(xml: str, *, name: str, uuid: str, macs: dict[str, str]) -> str:
    """A definition under a new name and UUID (and new MACs where given: old → new), so a restored copy
    can run beside the original."""
    root = parse_xml(xml)
    for tag, value in (("name", name), ("uuid", uuid)):
        el = root.find(tag)
        if el is None:
            el = SubElement(root, tag)
        el.text = value
    for mac in root.iter("mac"):
        old = mac.get("address", "").lower()
        if old in macs:
            mac.set("address", macs[old])
    return tostring(root, encoding="unicode")


__all__ = [
    "Definition",
    "DiskRef",
    "HypervisorError",
    "NotFound",
    "ShutdownTimeout",
    "define",
    "definition",
    "destroy",
    "disks_of",
    "exists",
    "is_running",
    "missing_disks",
    "push_backup",
    "rename_for_restore",
    "shutdown",
    "start",
    "undefine",
]
