"""Measurements the migration prediction needs, taken on the hosts through libvirt.

Each function opens its own connection, never raises for a host or guest problem, and returns a
plain dataclass whose value is `None` with a `reason` (for people) when the figure could not be
taken. The prediction then says "cannot tell" for that input instead of guessing silently.

What is measured, and what libvirt can and cannot tell:

- `dirty_rate`: how fast the running guest rewrites its memory, from QEMU's own dirty-rate
  calculation (`virDomainStartDirtyRateCalc`, page sampling), read back from the domain stats.
- `memory_in_use`: how much of the guest's memory a pre-copy pass really has to send. QEMU sends
  only pages that were ever written (never-touched pages go as a one-byte "zero page" marker), so the
  QEMU process's resident set (`memoryStats()["rss"]`) is the figure: an upper bound, because it also
  counts QEMU's own few tens of MiB, capped at the guest's memory size.
- `pool_write_throughput`: how fast the destination writes into a pool through a libvirt storage
  stream, i.e. the same path a cold copy takes: a temporary raw volume is written and deleted again.
- `qemu_start_time`: how long the destination takes to start a QEMU right now (a paused, device-less
  probe domain): most of a live move's fixed setup cost.
- `link_speed`: the bandwidth between two hosts. libvirt offers no host-to-host probe short of a real
  migration, so the adapter can only read the nominal speed of each host's network interfaces (node
  devices, `<link speed=…>`): the fastest interface that is up, in bytes/s. That is an upper bound of
  what a migration can reach; `migrations_app.prediction` prefers the median throughput of past
  moves between the same two hosts, then an admin-set figure (`Host.link_mib_s`), and uses this
  nominal speed only when neither exists.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
import xml.etree.ElementTree as ET  # noqa: S405  (XML from our own libvirt daemons)
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from .connection import call, connect
from .domxml import PROBE_PREFIX
from .errors import HypervisorError

MIB = 1024 * 1024


@dataclass(frozen=True)
class DirtyRate:
    """Bytes of guest memory rewritten per second, measured over `period_s` seconds."""

    bytes_per_s: float | None
    period_s: float = 0.0
    method: str = "page-sampling"
    reason: str = ""  # why there is no figure
    raw: str = ""


@dataclass(frozen=True)
class MemoryUse:
    """Memory a pre-copy pass has to send (`bytes_in_use`) out of the guest's `total`."""

    bytes_in_use: int | None
    total: int = 0
    source: str = ""  # "rss" (QEMU resident set) or "" when unknown
    guest_used: int | None = None  # what the guest itself reports as used (balloon driver), if any
    reason: str = ""
    raw: str = ""


@dataclass(frozen=True)
class WriteThroughput:
    """Bytes/s the host wrote into `pool` through a libvirt storage stream."""

    bytes_per_s: float | None
    pool: str = ""
    bytes_written: int = 0
    seconds: float = 0.0
    reason: str = ""
    raw: str = ""


@dataclass(frozen=True)
class QemuStart:
    """Seconds the host took to start a paused, device-less QEMU."""

    seconds: float | None
    reason: str = ""
    raw: str = ""


@dataclass(frozen=True)
class LinkSpeed:
    """Nominal speed (bytes/s) of the host's fastest network interface that is up."""

    bytes_per_s: float | None
    interface: str = ""
    reason: str = ""
    raw: str = ""


# ---- dirty rate ---------------------------------------------------------------------------------


def _dirty_stats(conn: libvirt.virConnect, doms: list[libvirt.virDomain]) -> dict[str, dict[str, Any]]:
    """uuid → the domain's dirtyrate.* stats, for all of `doms` in one call."""
    stats = call(
        lambda: conn.domainListGetStats(doms, libvirt.VIR_DOMAIN_STATS_DIRTYRATE, 0), "reading dirty-rate stats"
    )
    return {dom.UUIDString(): dict(values) for dom, values in stats}


def dirty_rates(uri: str, uuids: list[str], seconds: int = 1, *, timeout: float = 10.0) -> dict[str, DirtyRate]:
    """Measure the memory dirty rate of several running guests of one host at once, over `seconds` (≥ 1).

    Every calculation is started first and all are read back with one stats call, so a host with many
    VMs costs about `seconds`, not `seconds` per VM. QEMU's page sampling reports MiB/s of distinct
    pages written during the period: a page rewritten twice counts once, which is what a pre-copy
    pass of about that length has to resend. Guests that are not running, missing or unsupported get
    `None` with the reason.
    """
    seconds = max(int(seconds), 1)
    result: dict[str, DirtyRate] = {}
    try:
        with connect(uri) as conn:
            doms = []
            for uuid in uuids:
                try:
                    dom = call(functools.partial(conn.lookupByUUIDString, uuid), "finding the VM")
                    if not call(dom.isActive):
                        result[uuid] = DirtyRate(None, reason="The VM is not running, so it dirties no memory.")
                    else:
                        doms.append(dom)
                except HypervisorError as exc:
                    result[uuid] = DirtyRate(None, reason=exc.message, raw=exc.raw)
            if not doms:
                return result
            # calc_start_time is on QEMU's own clock, not the wall clock: a fresh result is one whose
            # start time differs from the previous result's, or one seen measuring after our start.
            previous = {u: st.get("dirtyrate.calc_start_time") for u, st in _dirty_stats(conn, doms).items()}
            started = []
            for dom in doms:
                try:
                    call(
                        functools.partial(
                            dom.startDirtyRateCalc, seconds, libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING
                        ),
                        "starting the dirty-rate calculation",
                    )
                    started.append(dom)
                except HypervisorError as exc:
                    result[dom.UUIDString()] = DirtyRate(None, reason=exc.message, raw=exc.raw)
            measuring: set[str] = set()
            time.sleep(seconds)
            deadline = time.monotonic() + timeout
            while started:
                stats = _dirty_stats(conn, started)
                for uuid, st in stats.items():
                    status = st.get("dirtyrate.calc_status")
                    if status == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURING:
                        measuring.add(uuid)
                    elif status == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED and (
                        uuid in measuring or st.get("dirtyrate.calc_start_time") != previous.get(uuid)
                    ):
                        mib_s = st.get("dirtyrate.megabytes_per_second")
                        result[uuid] = (
                            DirtyRate(float(mib_s) * MIB, period_s=float(st.get("dirtyrate.calc_period", seconds)))
                            if mib_s is not None
                            else DirtyRate(None, reason="The host reported no dirty rate.", raw=str(st))
                        )
                started = [d for d in started if d.UUIDString() not in result]
                if started and time.monotonic() > deadline:
                    for dom in started:
                        result[dom.UUIDString()] = DirtyRate(
                            None, reason="The dirty-rate calculation did not finish in time.", raw=str(stats)
                        )
                    break
                if started:
                    time.sleep(0.1)
    except HypervisorError as exc:
        return {u: result.get(u) or DirtyRate(None, reason=exc.message, raw=exc.raw) for u in uuids}
    return result


def dirty_rate(uri: str, uuid: str, seconds: int = 1, *, timeout: float = 10.0) -> DirtyRate:
    """The dirty rate of one running guest (see `dirty_rates`)."""
    return dirty_rates(uri, [uuid], seconds, timeout=timeout)[uuid]


# ---- memory in use ------------------------------------------------------------------------------


def _memory_in_use(conn: libvirt.virConnect, uuid: str) -> MemoryUse:
    try:
        dom = call(functools.partial(conn.lookupByUUIDString, uuid), "finding the VM")
        _state, max_kib, cur_kib, _vcpus, _cpu = call(dom.info, "reading the VM's state")
        total = int(cur_kib or max_kib) * 1024
        if not call(dom.isActive):
            return MemoryUse(None, total=total, reason="The VM is not running.")
        stats = call(lambda: dom.memoryStats(), "reading memory statistics")
    except HypervisorError as exc:
        return MemoryUse(None, reason=exc.message, raw=exc.raw)
    guest_used = None
    if "unused" in stats and "actual" in stats:
        guest_used = max(int(stats["actual"]) - int(stats["unused"]), 0) * 1024
    if "rss" not in stats:
        return MemoryUse(None, total=total, guest_used=guest_used, reason="The host reported no resident memory.")
    return MemoryUse(min(int(stats["rss"]) * 1024, total), total=total, source="rss", guest_used=guest_used)


def memories_in_use(uri: str, uuids: list[str]) -> dict[str, MemoryUse]:
    """Resident memory of several guests of one host (see `memory_in_use`), over one connection."""
    try:
        with connect(uri) as conn:
            return {uuid: _memory_in_use(conn, uuid) for uuid in uuids}
    except HypervisorError as exc:
        return {uuid: MemoryUse(None, reason=exc.message, raw=exc.raw) for uuid in uuids}


def memory_in_use(uri: str, uuid: str) -> MemoryUse:
    """Resident memory of the guest's QEMU process (capped at the guest's memory), when it runs."""
    return memories_in_use(uri, [uuid])[uuid]


# ---- destination write throughput ---------------------------------------------------------------


def pool_write_throughput(uri: str, pool: str, mib: int = 32) -> WriteThroughput:
    """Write `mib` MiB of random data into a temporary raw volume of `pool`, time it, delete it.

    The data goes through a libvirt storage stream (`virStorageVolUpload`), the path the portal's
    cold copy uses, and is random so that no layer can skip it as zeroes. The volume is deleted in
    every case, even when the write fails.
    """
    mib = max(int(mib), 1)
    name = f"vmportal-probe-{secrets.token_hex(6)}.raw"
    chunk = secrets.token_bytes(MIB)
    try:
        with connect(uri) as conn:
            p = call(lambda: conn.storagePoolLookupByName(pool), "finding the pool")
            vol_xml = (
                f"<volume><name>{escape(name)}</name><capacity unit='MiB'>{mib}</capacity>"
                f"<allocation>0</allocation><target><format type='raw'/></target></volume>"
            )
            vol = call(lambda: p.createXML(vol_xml, 0), "creating a probe volume")
            try:
                stream = call(lambda: conn.newStream(0))
                start = time.monotonic()
                try:
                    call(lambda: vol.upload(stream, 0, mib * MIB, 0), "writing the probe volume")
                    for _ in range(mib):
                        call(lambda: stream.send(chunk), "writing the probe volume")
                    call(stream.finish, "writing the probe volume")
                except HypervisorError:
                    with contextlib.suppress(libvirt.libvirtError):
                        stream.abort()
                    raise
                seconds = time.monotonic() - start
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
    except HypervisorError as exc:
        return WriteThroughput(None, pool=pool, reason=exc.message, raw=exc.raw)
    if seconds <= 0:
        return WriteThroughput(None, pool=pool, reason="The write took no measurable time.")
    return WriteThroughput(mib * MIB / seconds, pool=pool, bytes_written=mib * MIB, seconds=seconds)


# ---- guest start time on the destination --------------------------------------------------------


def qemu_start_time(uri: str, *, virt_type: str = "qemu", arch: str = "x86_64", machine: str = "") -> QemuStart:
    """Time the host takes to start a QEMU right now: the bulk of a live move's setup.

    Starts a transient, paused, device-less 16 MiB domain named `vmportal-probe-…` (auto-destroyed
    should the portal's connection drop) and destroys it at once. Nothing is defined and no guest
    code runs. The host's current load shows up in the figure, which is the point.
    """
    name = f"{PROBE_PREFIX}{secrets.token_hex(6)}"
    machine_attr = f" machine='{escape(machine)}'" if machine else ""
    xml = (
        f"<domain type='{escape(virt_type or 'qemu')}'><name>{name}</name><memory unit='MiB'>16</memory>"
        f"<vcpu>1</vcpu><os><type arch='{escape(arch or 'x86_64')}'{machine_attr}>hvm</type></os>"
        # ACPI on, as in real guests: without it libvirt 9.0 passes -no-acpi, which QEMU 9+ refuses
        "<features><acpi/></features>"
        "<devices><controller type='usb' model='none'/><memballoon model='none'/></devices></domain>"
    )
    try:
        with connect(uri) as conn:
            start = time.monotonic()
            dom = call(
                lambda: conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY),
                "starting a probe QEMU",
            )
            seconds = time.monotonic() - start
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
    except HypervisorError as exc:
        return QemuStart(None, reason=exc.message, raw=exc.raw)
    return QemuStart(seconds)


# ---- link speed ---------------------------------------------------------------------------------


def parse_link_speeds(device_xmls: list[str]) -> list[tuple[str, int]]:
    """(interface, Mbit/s) of every network interface that is up and reports a speed."""
    found = []
    for text in device_xmls:
        try:
            root = ET.fromstring(text)  # noqa: S314  (XML from our own libvirt daemons)
        except ET.ParseError:
            continue
        cap = root.find("capability[@type='net']")
        if cap is None:
            continue
        link = cap.find("link")
        iface = cap.findtext("interface", "")
        if link is None or link.get("state") != "up" or not link.get("speed") or iface == "lo":
            continue
        with contextlib.suppress(ValueError):
            speed = int(link.get("speed", "0"))
            if speed > 0:
                found.append((iface, speed))
    return found


def link_speed(uri: str) -> LinkSpeed:
    """Nominal speed of the host's fastest interface that is up (an upper bound of migration speed)."""
    try:
        with connect(uri) as conn:
            devices = call(
                lambda: conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET), "listing network devices"
            )
            xmls = [call(functools.partial(d.XMLDesc, 0)) for d in devices]
    except HypervisorError as exc:
        return LinkSpeed(None, reason=exc.message, raw=exc.raw)
    speeds = parse_link_speeds(xmls)
    if not speeds:
        return LinkSpeed(None, reason="No network interface of the host reports a link speed.")
    iface, mbit = max(speeds, key=lambda s: s[1])
    return LinkSpeed(mbit * 1_000_000 / 8, interface=iface)
