"""Reading a guest after a move the way a remote portal can: through libvirt only.

The domain's state and live XML on a host, the network filters that host defines, the serial
console through libvirt's console stream, and the QEMU guest agent (ping, file systems, addresses,
`guest-exec` of a read-only command). Nothing here reads files on a hypervisor host.

Every function returns plain dataclasses and never raises for a guest that does not answer: the
answer says why instead, so a validation check can say `warn` with the reason.
"""

from __future__ import annotations

import base64
import json
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import libvirt
import libvirt_qemu

from .connection import RUNNING_STATES, connect, state_name, translate
from .domxml import parse_domain, parse_xml
from .errors import HypervisorError
from .migrate import _ensure_event_loop, _run_tag
from .types import DomainInfo

#: libvirt's crash reasons, in words (VIR_DOMAIN_CRASHED_*)
_CRASH_REASONS = {1: "panicked"}


@dataclass(frozen=True)
class DomainView:
    """One host's view of a domain: state, persistence, live definition, and what the host offers."""

    host_uri: str
    reachable: bool
    exists: bool = False
    state: str = ""  # running, paused, shutoff, crashed…
    reason: str = ""  # "panicked" for a crashed guest
    persistent: bool = False
    run_tag: str = ""
    domain: DomainInfo | None = None  # parsed live XML (inactive XML for a domain that is not running)
    disk_sizes: dict[str, int] = field(default_factory=dict)  # target -> capacity in bytes
    nic_links: dict[str, str] = field(default_factory=dict)  # mac -> "up" / "down"
    seclabels: tuple[str, ...] = ()  # "model:type" of each <seclabel>
    nwfilters: frozenset[str] = frozenset()  # filters the host defines
    networks: dict[str, bool] = field(default_factory=dict)  # network name -> active
    error: str = ""

    @property
    def running(self) -> bool:
        return self.exists and self.state == "running"


def _seclabels(xml: str) -> tuple[str, ...]:
    root = parse_xml(xml)
    labels = []
    for label in root.findall("seclabel"):
        labels.append(f"{label.get('model', '')}:{label.get('type', '')}")
    return tuple(labels)


def _nic_links(xml: str) -> dict[str, str]:
    root = parse_xml(xml)
    links = {}
    for iface in root.iter("interface"):
        mac = iface.find("mac")
        link = iface.find("link")
        if mac is not None:
            links[mac.get("address", "").lower()] = link.get("state", "up") if link is not None else "up"
    return links


def read_domain(uri: str, uuid: str, timeout: float = 15.0) -> DomainView:
    """The domain as this host sees it now. Never raises: an unreachable host or error is in the answer."""
    try:
        with connect(uri, timeout) as conn:
            nwfilters: frozenset[str] = frozenset()
            with suppress(libvirt.libvirtError):
                nwfilters = frozenset(conn.listNWFilters())
            networks: dict[str, bool] = {}
            with suppress(libvirt.libvirtError):
                for net in conn.listAllNetworks(0):
                    networks[net.name()] = bool(net.isActive())
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainView(host_uri=uri, reachable=True, nwfilters=nwfilters, networks=networks)
                raise
            code, reason_code = dom.state()
            state = "running" if state_name(code) in RUNNING_STATES else state_name(code)
            reason = _CRASH_REASONS.get(reason_code, "") if code == libvirt.VIR_DOMAIN_CRASHED else ""
            xml = dom.XMLDesc(0)
            info = parse_domain(xml)
            sizes: dict[str, int] = {}
            for disk in info.disks:
                if disk.device == "disk" and disk.source and dom.isActive():
                    with suppress(libvirt.libvirtError):
                        sizes[disk.target] = int(dom.blockInfo(disk.target)[0])
            return DomainView(
                host_uri=uri,
                reachable=True,
                exists=True,
                state=state,
                reason=reason,
                persistent=bool(dom.isPersistent()),
                run_tag=_run_tag(dom),
                domain=info,
                disk_sizes=sizes,
                nic_links=_nic_links(xml),
                seclabels=_seclabels(xml),
                nwfilters=nwfilters,
                networks=networks,
            )
    except libvirt.libvirtError as exc:
        err = translate(exc)
        return DomainView(host_uri=uri, reachable=False, error=err.message)
    except HypervisorError as exc:
        return DomainView(host_uri=uri, reachable=False, error=exc.message)


# ---- the guest agent -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFacts:
    """What the guest agent said about the guest (or why it said nothing)."""

    answered: bool
    error: str = ""
    filesystems: tuple[tuple[str, str], ...] = ()  # (mount point, type), sorted
    addresses: dict[str, list[str]] = field(default_factory=dict)  # mac -> IPv4/IPv6 addresses
    boot_id: str = ""
    uptime_s: float | None = None
    waited_s: float = 0.0  # the whole call: waiting for the agent, then reading the facts
    ping_s: float = 0.0  # of which waiting for the agent's first answer (a deliberate wait)

    def as_dict(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "error": self.error,
            "filesystems": [list(f) for f in self.filesystems],
            "addresses": self.addresses,
            "boot_id": self.boot_id,
            "uptime_s": self.uptime_s,
        }


def _agent(dom: libvirt.virDomain, command: str, arguments: dict[str, Any] | None = None, wait_s: int = 5) -> Any:
    request: dict[str, Any] = {"execute": command}
    if arguments:
        request["arguments"] = arguments
    reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(request), wait_s, 0)
    return json.loads(reply).get("return")


def _exec(dom: libvirt.virDomain, path: str, args: list[str], wait_s: float = 5.0) -> str:
    """Run a read-only command in the guest through the agent; its standard output."""
    started = _agent(dom, "guest-exec", {"path": path, "arg": args, "capture-output": True})
    pid = started["pid"]
    end = time.monotonic() + wait_s
    pause = 0.01  # a read-only command is done in milliseconds: ask again soon, then less often
    while True:
        status = _agent(dom, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            return base64.b64decode(status.get("out-data", "")).decode(errors="replace")
        if time.monotonic() > end:
            raise TimeoutError(f"{path} did not finish within {wait_s:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _ping(dom: libvirt.virDomain, wait_s: float) -> tuple[bool, str]:
    end = time.monotonic() + wait_s
    error = ""
    while True:
        try:
            if not dom.isActive():
                return False, "the domain is not running"
            _agent(dom, "guest-ping", wait_s=2)
            return True, ""
        except libvirt.libvirtError as exc:
            error = exc.get_error_message() or str(exc)
        if time.monotonic() >= end:
            return False, error
        time.sleep(0.3)


def agent_facts(uri: str, uuid: str, timeout: float = 15.0, wait_s: float = 0.0) -> AgentFacts:
    """Ask the guest agent (waiting up to `wait_s` for it to answer, e.g. while the guest boots) for its
    mounted file systems, addresses per MAC, boot id and uptime. Never raises."""
    started = time.monotonic()
    try:
        with connect(uri, timeout) as conn:
            dom = conn.lookupByUUIDString(uuid)
            ping_started = time.monotonic()
            ok, error = _ping(dom, wait_s)
            pinged = time.monotonic() - ping_started
            if not ok:
                return AgentFacts(answered=False, error=error, waited_s=time.monotonic() - started, ping_s=pinged)
            filesystems: set[tuple[str, str]] = set()
            with suppress(libvirt.libvirtError):
                for fs in dom.fsInfo(0):
                    filesystems.add((str(fs[0]), str(fs[2])))
            if not filesystems:  # agents that cannot map devices list nothing: read the mount table
                with suppress(libvirt.libvirtError, KeyError, TypeError, TimeoutError):
                    for line in _exec(dom, "/bin/cat", ["/proc/mounts"]).splitlines():
                        parts = line.split()
                        if len(parts) >= 3 and parts[0].startswith("/dev/"):
                            filesystems.add((parts[1], parts[2]))
            addresses: dict[str, list[str]] = {}
            with suppress(libvirt.libvirtError):
                found = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0) or {}
                for iface in found.values():
                    mac = (iface.get("hwaddr") or "").lower()
                    ips = sorted(a["addr"] for a in iface.get("addrs") or [] if not a["addr"].startswith("127."))
                    if mac and mac != "00:00:00:00:00:00":
                        addresses[mac] = ips
            boot_id, uptime = "", None
            with suppress(libvirt.libvirtError, KeyError, TypeError, TimeoutError):
                boot_id = _exec(dom, "/bin/cat", ["/proc/sys/kernel/random/boot_id"]).strip()
            with suppress(libvirt.libvirtError, KeyError, TypeError, TimeoutError, ValueError, IndexError):
                uptime = float(_exec(dom, "/bin/cat", ["/proc/uptime"]).split()[0])
            return AgentFacts(
                answered=True,
                filesystems=tuple(sorted(filesystems)),
                addresses=addresses,
                boot_id=boot_id,
                uptime_s=uptime,
                waited_s=time.monotonic() - started,
                ping_s=pinged,
            )
    except libvirt.libvirtError as exc:
        return AgentFacts(answered=False, error=translate(exc).message, waited_s=time.monotonic() - started)
    except HypervisorError as exc:
        return AgentFacts(answered=False, error=exc.message, waited_s=time.monotonic() - started)


def guest_kernel_log(uri: str, uuid: str, timeout: float = 15.0) -> tuple[str | None, str]:
    """The guest's kernel log through the agent's `guest-exec` of `dmesg` (read-only): (text, why not)."""
    try:
        with connect(uri, timeout) as conn:
            dom = conn.lookupByUUIDString(uuid)
            return _exec(dom, "/bin/dmesg", []), ""
    except libvirt.libvirtError as exc:
        return None, exc.get_error_message() or str(exc)
    except (HypervisorError, KeyError, TypeError, TimeoutError) as exc:
        return None, str(exc)


# ---- the serial console ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleCapture:
    text: str
    seconds: float
    error: str = ""


def watch_console(uri: str, uuid: str, seconds: float, timeout: float = 15.0, stop: Any = None) -> ConsoleCapture:
    """What the guest writes to its serial console during `seconds`, read through libvirt's console
    stream (the console is taken over if another client holds it). `stop()` returning True ends early.
    Never raises."""
    _ensure_event_loop()
    chunks: list[bytes] = []
    started = time.monotonic()
    try:
        with connect(uri, timeout) as conn:
            dom = conn.lookupByUUIDString(uuid)
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            try:
                dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
                end = started + seconds
                while time.monotonic() < end:
                    try:
                        data = stream.recv(65536)
                    except libvirt.libvirtError:
                        break  # the console closed (the domain stopped)
                    if data == -2:
                        if stop is not None and stop():
                            break
                        time.sleep(0.1)
                        continue
                    if not data:
                        break
                    assert isinstance(data, bytes)  # noqa: S101
                    chunks.append(data)
            finally:
                with suppress(libvirt.libvirtError):
                    stream.abort()
    except libvirt.libvirtError as exc:
        return ConsoleCapture(
            b"".join(chunks).decode(errors="replace"),
            time.monotonic() - started,
            exc.get_error_message() or str(exc),
        )
    except HypervisorError as exc:
        return ConsoleCapture(b"".join(chunks).decode(errors="replace"), time.monotonic() - started, exc.message)
    return ConsoleCapture(b"".join(chunks).decode(errors="replace"), time.monotonic() - started)
