"""Live migration through libvirt: XML rewrite, destination volumes, the peer-to-peer job, its stats.

Callers pass plain dataclasses in and get plain dataclasses back. The one stateful object here,
`LiveMigration`, owns the libvirt connection of one move; the engine drives it from two threads (one
blocked in `run()`, one polling `stats()`), which libvirt supports on one connection.

Peer-to-peer (`VIR_MIGRATE_PEER2PEER`) is used on purpose: the source daemon drives the whole move,
so a worker that dies half way does not take the migration with it; the reconciler finds the result.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import libvirt

from .connection import DEFAULT_TIMEOUT_S, RUNNING_STATES, _open, call, connect, lookup_domain, state_name, translate
from .domxml import METADATA_NS, file_disks, parse_disks, parse_network, parse_xml
from .errors import HostUnreachable, HypervisorError, NotFound, OperationFailed
from .storage import _volume_xml

log = logging.getLogger(__name__)

#: libvirt keeps one metadata element per namespace; the team tag lives there too, so the run tag is a
#: child of the same `owner` element rather than a second element that would replace it.
_OWNER = "owner"
_RUN = "run"
_PREFIX = "vmportal"


# ---- data in and out ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskPlacement:
    """Where one disk goes. `copy`: the disk is local and must be copied into `pool` (as `format`)."""

    target: str
    pool: str
    copy: bool
    format: str = "keep"  # keep, qcow2, raw


@dataclass(frozen=True)
class LiveOptions:
    bandwidth_mib_s: int | None = None
    auto_converge: bool = False
    postcopy: bool = False
    parallel_connections: int = 1
    compression: str = "none"  # none, zstd, zlib, xbzrle
    tls: bool = False
    synchronous_writes: bool = True


@dataclass(frozen=True)
class MigrationRequest:
    """One live move: which domain, from where, to where, mapped how."""

    uuid: str
    source_uri: str
    destination_uri: str  # how the portal reaches the destination (volumes, checks)
    peer_uri: str  # how the source daemon reaches the destination daemon
    network_map: dict[str, str] = field(default_factory=dict)  # mac → destination network
    disks: dict[str, DiskPlacement] = field(default_factory=dict)  # target → placement
    options: LiveOptions = field(default_factory=LiveOptions)
    run_tag: str = ""
    timeout: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class VolumeRef:
    pool: str
    name: str
    path: str

    def as_dict(self) -> dict[str, str]:
        return {"pool": self.pool, "name": self.name, "path": self.path}


@dataclass
class PreparedMove:
    """What `prepare` decided: the destination XML, the disks to copy, the volumes it created."""

    destination_xml: str
    copy_disks: list[str]
    created_volumes: list[VolumeRef]
    flags: list[str]
    params: dict[str, Any]
    memory_bytes: int = 0


@dataclass(frozen=True)
class JobStats:
    """One reading of a migration job (all sizes in bytes, times in milliseconds)."""

    active: bool
    elapsed_ms: int = 0
    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    memory_bps: int = 0
    dirty_rate_bps: int = 0
    iteration: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    disk_bps: int = 0
    postcopy_requests: int = 0
    downtime_ms: int | None = None
    setup_ms: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DomainLocation:
    """Where a UUID is on one host, as far as that host knows."""

    host_uri: str
    reachable: bool
    exists: bool = False
    state: str = ""  # running, paused, shutoff, …
    persistent: bool = False
    job_active: bool = False
    run_tag: str = ""
    error: str = ""

    @property
    def running(self) -> bool:
        return self.exists and self.state in RUNNING_STATES


class MigrationFailed(OperationFailed):
    """The move did not happen; the message says why in words."""


class MigrationAborted(MigrationFailed):
    """The move was aborted on request (cancel or convergence policy); the source keeps the VM."""


# ---- errors ------------------------------------------------------------------------------------------


def migration_error(exc: libvirt.libvirtError) -> HypervisorError:
    """libvirt's migration errors, in words an operator understands; the raw text is kept."""
    raw = exc.get_error_message() or str(exc)
    low = raw.lower()
    code = exc.get_error_code()
    if code == libvirt.VIR_ERR_OPERATION_ABORTED or "canceled by client" in low or "cancelled by client" in low:
        return MigrationAborted("The move was aborted; the VM keeps running on the source host.", raw=raw, code=code)
    if "lost connection to destination" in low or ("unable to connect" in low and "server" in low):
        return HostUnreachable(
            "The destination host's libvirt daemon stopped answering during the move; the VM stays on the source.",
            raw=raw,
            code=code,
        )
    if code == libvirt.VIR_ERR_NO_NETWORK or "network not found" in low:
        return NotFound("A mapped network does not exist on the destination host.", raw=raw, code=code)
    if "unsafe migration" in low:
        return MigrationFailed(
            "libvirt refused the move as unsafe: a disk is neither on shared storage nor being copied.",
            raw=raw,
            code=code,
        )
    if "domain is not running" in low:
        return MigrationFailed("The VM is not running, so it cannot be moved live.", raw=raw, code=code)
    translated = translate(exc, "live migration")
    if isinstance(translated, OperationFailed) and not isinstance(translated, MigrationFailed):
        return MigrationFailed(f"The hypervisor refused the move: {raw}", raw=raw, code=code)
    return translated


# ---- the event loop (for JOB_COMPLETED) --------------------------------------------------------------

_loop_lock = threading.Lock()
_loop_pid: int | None = None


def _ensure_event_loop() -> None:
    """libvirt delivers domain events only through a registered event loop, one per process.

    RQ forks a work horse per job, so the loop thread is started again in each new process.
    """
    global _loop_pid
    with _loop_lock:
        if _loop_pid == os.getpid():
            return
        with suppress(libvirt.libvirtError):
            libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError:
                    time.sleep(0.1)

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _loop_pid = os.getpid()


# ---- XML ---------------------------------------------------------------------------------------------


def _find(root: Element, path: str) -> Element:
    found = root.find(path)
    if found is None:
        raise MigrationFailed(f"The domain definition has no <{path}>.")
    return found


def rewrite_xml(xml: str, network_map: dict[str, str], disk_paths: dict[str, tuple[str, str]]) -> tuple[str, list[str]]:
    """The destination definition: NICs on their mapped networks (MACs kept), disks at new paths.

    `disk_paths`: target → (path, format) for disks that move. Returns the XML and the unmapped MACs.
    """
    root = parse_xml(xml)
    devices = _find(root, "devices")
    unmapped: list[str] = []
    for iface in devices.findall("interface"):
        mac_el = iface.find("mac")
        mac = (mac_el.get("address", "") if mac_el is not None else "").lower()
        network = network_map.get(mac)
        if not network:
            if iface.get("type") == "network":
                unmapped.append(mac)
            continue
        iface.set("type", "network")
        source = iface.find("source")
        if source is None:
            source = SubElement(iface, "source")
        source.attrib.clear()
        source.set("network", network)
        # a host-specific tap name or bridge would pin the NIC to the source host
        for child in ("target", "actual"):
            for el in iface.findall(child):
                iface.remove(el)
    for disk in devices.findall("disk"):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev not in disk_paths:
            continue
        path, fmt = disk_paths[dev]
        disk.set("type", "file")
        source = disk.find("source")
        if source is None:
            source = SubElement(disk, "source")
        for attr in list(source.attrib):
            del source.attrib[attr]
        source.set("file", path)
        driver = disk.find("driver")
        if driver is not None and fmt:
            driver.set("type", fmt)
        for el in disk.findall("backingStore"):
            disk.remove(el)
    return tostring(root, encoding="unicode"), unmapped


# ---- connections -------------------------------------------------------------------------------------


# One way to open and close a connection, and to find a VM, for the whole adapter.
_conn = connect
_lookup = lookup_domain


def _run_tag(dom: libvirt.virDomain) -> str:
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    except libvirt.libvirtError:
        return ""
    root = parse_xml(text)
    run = root.find(_RUN)
    return run.get("id", "") if run is not None else ""


# ---- small operations --------------------------------------------------------------------------------


def tag_domain(uri: str, uuid: str, run_tag: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Record the run id in the domain's vmportal metadata (live and persistent), keeping the team tag."""
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        _tag(dom, run_tag)


def _tag(dom: libvirt.virDomain, run_tag: str) -> None:
    try:
        existing = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        root = parse_xml(existing)
    except libvirt.libvirtError:
        root = Element(_OWNER)
    for old in root.findall(_RUN):
        root.remove(old)
    if run_tag:
        SubElement(root, _RUN, id=run_tag)
    text = tostring(root, encoding="unicode")
    flags = libvirt.VIR_DOMAIN_AFFECT_LIVE
    if dom.isPersistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if not dom.isActive():
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    call(
        lambda: dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, text, _PREFIX, METADATA_NS, flags),
        "tagging the VM with its run",
    )


def locate(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> DomainLocation:
    """Is the UUID on this host, in which state, with a migration job running? Never raises."""
    try:
        with _conn(uri, timeout) as conn:
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return DomainLocation(host_uri=uri, reachable=True)
                raise
            state = state_name(dom.state()[0])
            job = False
            if dom.isActive():
                with suppress(libvirt.libvirtError):
                    job = dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
            return DomainLocation(
                host_uri=uri,
                reachable=True,
                exists=True,
                state=state,
                persistent=bool(dom.isPersistent()),
                job_active=job,
                run_tag=_run_tag(dom),
            )
    except libvirt.libvirtError as exc:
        err = translate(exc)
        return DomainLocation(host_uri=uri, reachable=not isinstance(err, HostUnreachable), error=err.message)
    except HypervisorError as exc:
        return DomainLocation(host_uri=uri, reachable=not isinstance(exc, HostUnreachable), error=exc.message)


def abort_job(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Abort a running migration of the domain from a new connection; False when there was none."""
    with _conn(uri, timeout) as conn:
        dom = _lookup(conn, uuid)
        try:
            dom.abortJob()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
                return False
            raise translate(exc, "aborting the move") from None
        return True


def network_problems(uri: str, names: list[str], timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """What keeps guests from joining these networks on this host right now, in words (empty: nothing):
    a network that is missing or inactive, or the host bridge a bridged network names that is gone.
    Raises `HostUnreachable` when the host cannot be reached."""
    problems = []
    with _conn(uri, timeout) as conn:
        for name in sorted(set(names)):
            try:
                net = conn.networkLookupByName(name)
                active = bool(net.isActive())
                forward, bridge = parse_network(net.XMLDesc(0))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    problems.append(f"network {name} does not exist")
                    continue
                raise translate(exc, f"reading network {name}") from None
            if not active:
                problems.append(f"network {name} is not active")
            elif forward == "bridge" and bridge and not _interface_present(conn, bridge):
                problems.append(f"the bridge {bridge} of network {name} is missing on the host")
    return problems


def _interface_present(conn: libvirt.virConnect, name: str) -> bool:
    """Is a host interface of this name present? True when the host cannot tell (no interface driver)."""
    try:
        conn.interfaceLookupByName(name)
        return True
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_INTERFACE:
            return False
        return True


def completed_stats(uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S) -> JobStats | None:
    """The completed job's stats as the destination reports them (downtime, elapsed, memory)."""
    try:
        with _conn(uri, timeout) as conn:
            dom = _lookup(conn, uuid)
            raw = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except (libvirt.libvirtError, HypervisorError):
        return None
    if not raw or raw.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return _stats(raw)


def cleanup_destination(
    uri: str, uuid: str, volumes: list[dict[str, str]], timeout: float = DEFAULT_TIMEOUT_S
) -> list[str]:
    """Remove what a failed move left on the destination: an inactive definition and the volumes the move
    created. A domain that runs there is never touched, and neither are the volumes it uses.

    Returns what was removed, in words. Raises `HostUnreachable` when the host cannot be reached.
    """
    removed: list[str] = []
    with _conn(uri, timeout) as conn:
        in_use: set[str] = set()
        try:
            dom = conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError:
            dom = None
        if dom is not None:
            if dom.isActive():
                in_use = {p for p in _disk_paths(dom.XMLDesc(0))}
            else:
                call(
                    lambda: dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM),
                    "removing the stray definition",
                )
                removed.append(f"definition of {dom.name()}")
        for vol in volumes:
            if vol["path"] in in_use:
                continue
            try:
                pool = conn.storagePoolLookupByName(vol["pool"])
                with suppress(libvirt.libvirtError):
                    pool.refresh(0)
                pool.storageVolLookupByName(vol["name"]).delete(0)
                removed.append(f"volume {vol['pool']}/{vol['name']}")
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise translate(exc, f"removing volume {vol['name']}") from None
    return removed


def _disk_paths(xml: str) -> list[str]:
    """Files the domain has open (any disk device backed by a file)."""
    return [d.source for d in parse_disks(xml) if d.source_type == "file" and d.source]


# ---- stats -------------------------------------------------------------------------------------------


def _stats(raw: dict[str, Any]) -> JobStats:
    def i(key: str) -> int:
        return int(raw.get(key, 0) or 0)

    page = i("memory_page_size") or 4096
    active = raw.get("type", libvirt.VIR_DOMAIN_JOB_NONE) not in (
        libvirt.VIR_DOMAIN_JOB_NONE,
        libvirt.VIR_DOMAIN_JOB_COMPLETED,
    )
    return JobStats(
        active=active,
        elapsed_ms=i("time_elapsed"),
        data_total=i("data_total"),
        data_processed=i("data_processed"),
        data_remaining=i("data_remaining"),
        memory_total=i("memory_total"),
        memory_processed=i("memory_processed"),
        memory_remaining=i("memory_remaining"),
        memory_bps=i("memory_bps"),
        dirty_rate_bps=i("memory_dirty_rate") * page,
        iteration=i("memory_iteration"),
        disk_total=i("disk_total"),
        disk_processed=i("disk_processed"),
        disk_remaining=i("disk_remaining"),
        disk_bps=i("disk_bps"),
        postcopy_requests=i("memory_postcopy_requests"),
        downtime_ms=int(raw["downtime"]) if "downtime" in raw else None,
        setup_ms=int(raw["setup_time"]) if "setup_time" in raw else None,
        raw={k: v for k, v in raw.items() if isinstance(v, int | float | str)},
    )


# ---- one live move -----------------------------------------------------------------------------------


class LiveMigration:
    """One peer-to-peer live move. `prepare()` then `run()` (blocking) while another thread polls
    `stats()` and may call `set_max_downtime()`, `start_postcopy()` or `abort()`; `close()` at the end.
    """

    @classmethod
    def attach(
        cls, source_uri: str, destination_uri: str, uuid: str, timeout: float = DEFAULT_TIMEOUT_S
    ) -> LiveMigration:
        """A handle on a job that is already running on the source (started by a worker that is gone):
        the same `stats()`, `set_max_downtime()`, `start_postcopy()`, `abort()` and `completed()`."""
        return cls(
            MigrationRequest(
                uuid=uuid, source_uri=source_uri, destination_uri=destination_uri, peer_uri="", timeout=timeout
            )
        )

    def __init__(self, request: MigrationRequest) -> None:
        self.request = request
        _ensure_event_loop()
        self._conn = _open(request.source_uri, request.timeout)
        self._dom = _lookup(self._conn, request.uuid)
        self._completed: dict[str, Any] | None = None
        self._completed_event = threading.Event()
        self._callback_id: int | None = None
        self.prepared: PreparedMove | None = None
        self._dest_conn: libvirt.virConnect | None = None

    # -- lifecycle

    def close(self) -> None:
        if self._callback_id is not None:
            with suppress(libvirt.libvirtError):
                self._conn.domainEventDeregisterAny(self._callback_id)
        for conn in (self._conn, self._dest_conn):
            if conn is not None:
                with suppress(libvirt.libvirtError):
                    conn.close()

    def __enter__(self) -> LiveMigration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- before the job

    def prepare(self) -> PreparedMove:
        """Tag the domain, rewrite its XML for the destination and pre-create volumes of copied disks.

        Volumes are created sparse through the destination pool; if anything fails half way, the volumes
        created so far are removed again before the error is raised.
        """
        req = self.request
        dom = self._dom
        if not dom.isActive():
            raise MigrationFailed("The VM is not running, so it cannot be moved live.")
        if req.run_tag:
            _tag(dom, req.run_tag)
        xml = call(lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), "reading the VM's definition")
        self._dest_conn = _open(req.destination_uri, req.timeout)
        created: list[VolumeRef] = []
        copy: list[str] = []
        new_paths: dict[str, tuple[str, str]] = {}
        try:
            for ref in file_disks(xml):
                dev, path, writable = ref.target, ref.path, ref.writable
                placement = req.disks.get(dev)
                if placement is None or not placement.copy:
                    continue  # shared storage: the destination opens the same file
                if not writable:
                    raise MigrationFailed(
                        f"Disk {dev} is read-only or shareable on local storage; put it on shared storage first."
                    )
                src_fmt = ref.format
                fmt = src_fmt if placement.format in ("", "keep") else placement.format
                capacity = self._capacity(path, dev)
                name = os.path.basename(path)
                if fmt != src_fmt:
                    name = f"{os.path.splitext(name)[0]}.{fmt}"
                vol = self._create_volume(placement.pool, name, capacity, fmt)
                created.append(vol)
                copy.append(dev)
                new_paths[dev] = (vol.path, fmt)
            dest_xml, unmapped = rewrite_xml(xml, req.network_map, new_paths)
            if unmapped:
                raise MigrationFailed(f"NIC(s) {', '.join(unmapped)} have no destination network mapped.")
        except BaseException:
            self._remove_volumes(created)
            raise
        flags, params = self._flags_and_params(dest_xml, copy)
        self.prepared = PreparedMove(
            destination_xml=dest_xml,
            copy_disks=copy,
            created_volumes=created,
            flags=[n for n, _ in flags],
            params={k: v for k, v in params.items() if k not in ("destination_xml", "persistent_xml")},
            memory_bytes=int(dom.info()[2]) * 1024,
        )
        self._flag_bits = sum(v for _, v in flags)
        self._params = params
        return self.prepared

    def _capacity(self, path: str, dev: str) -> int:
        try:
            return int(self._dom.blockInfo(path)[0])
        except libvirt.libvirtError as exc:
            raise translate(exc, f"reading the size of {dev}") from None

    def _create_volume(self, pool_name: str, name: str, capacity: int, fmt: str) -> VolumeRef:
        conn = self._dest_conn
        if conn is None:
            raise MigrationFailed("The destination connection is not open.")
        pool = call(lambda: conn.storagePoolLookupByName(pool_name), f"finding pool {pool_name} on the destination")
        with suppress(libvirt.libvirtError):
            pool.refresh(0)
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            pass
        else:
            raise MigrationFailed(
                f"A volume named {name} already exists in pool {pool_name} on the destination; "
                "the portal never overwrites one. Remove or rename it first."
            )
        vol = call(lambda: pool.createXML(_volume_xml(name, capacity, fmt), 0), f"creating {name} on the destination")
        return VolumeRef(pool=pool_name, name=name, path=vol.path())

    def _remove_volumes(self, volumes: list[VolumeRef]) -> None:
        if not volumes or self._dest_conn is None:
            return
        for vol in volumes:
            with suppress(libvirt.libvirtError):
                self._dest_conn.storagePoolLookupByName(vol.pool).storageVolLookupByName(vol.name).delete(0)

    def _flags_and_params(self, dest_xml: str, copy: list[str]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
        opts = self.request.options
        flags = [
            ("live", libvirt.VIR_MIGRATE_LIVE),
            ("peer2peer", libvirt.VIR_MIGRATE_PEER2PEER),
            ("persist_dest", libvirt.VIR_MIGRATE_PERSIST_DEST),
            ("undefine_source", libvirt.VIR_MIGRATE_UNDEFINE_SOURCE),
            # abort rather than carry on when a disk copy hits an I/O error
            ("abort_on_error", libvirt.VIR_MIGRATE_ABORT_ON_ERROR),
        ]
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: dest_xml,
        }
        if copy:
            flags.append(("non_shared_disk", libvirt.VIR_MIGRATE_NON_SHARED_DISK))
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = copy
            if opts.synchronous_writes and hasattr(libvirt, "VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES"):
                # guest writes reach the destination before they complete, so the copy always converges
                flags.append(("synchronous_writes", libvirt.VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES))
        if opts.bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(opts.bandwidth_mib_s)
        if opts.auto_converge:
            flags.append(("auto_converge", libvirt.VIR_MIGRATE_AUTO_CONVERGE))
        if opts.postcopy:
            flags.append(("postcopy", libvirt.VIR_MIGRATE_POSTCOPY))
        if opts.parallel_connections > 1 or opts.compression in ("zstd", "zlib"):
            flags.append(("parallel", libvirt.VIR_MIGRATE_PARALLEL))
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = max(int(opts.parallel_connections), 2)
        if opts.compression != "none":
            flags.append(("compressed", libvirt.VIR_MIGRATE_COMPRESSED))
            params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = opts.compression
        if opts.tls:
            flags.append(("tls", libvirt.VIR_MIGRATE_TLS))
        return flags, params

    # -- the job

    def run(self) -> None:
        """Start the move and block until it ends. Raises `MigrationAborted` or another error."""
        if self.prepared is None:
            raise MigrationFailed("prepare() must run before run().")
        self._watch_completion()
        try:
            self._dom.migrateToURI3(self.request.peer_uri, self._params, self._flag_bits)
        except libvirt.libvirtError as exc:
            error = migration_error(exc)
            if isinstance(error, HostUnreachable) and self._source_alive():
                # our link to the source is fine, so the daemon that went away is the destination's
                error = HostUnreachable(
                    "The destination host's libvirt daemon stopped answering during the move; "
                    "the VM stays on the source.",
                    raw=error.raw,
                    code=error.code,
                )
            raise error from None

    def _source_alive(self) -> bool:
        try:
            self._conn.getLibVersion()
            return True
        except libvirt.libvirtError:
            return False

    def _watch_completion(self) -> None:
        def on_completed(_conn: Any, _dom: Any, stats: dict[str, Any], _opaque: Any) -> None:
            self._completed = dict(stats)
            self._completed_event.set()

        try:
            self._callback_id = self._conn.domainEventRegisterAny(
                self._dom, libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_completed, None
            )
        except libvirt.libvirtError:
            self._callback_id = None  # no event: the destination's completed stats are used instead

    def stats(self) -> JobStats | None:
        """The running job's stats; None once the domain has left the source (or no job yet)."""
        try:
            return _stats(self._dom.jobStats(0))
        except libvirt.libvirtError:
            return None

    def set_max_downtime(self, ms: int) -> bool:
        try:
            self._dom.migrateSetMaxDowntime(int(ms), 0)
            return True
        except libvirt.libvirtError as exc:
            log.info("setting max downtime to %s ms failed: %s", ms, exc)
            return False

    def start_postcopy(self) -> None:
        try:
            self._dom.migrateStartPostCopy(0)
        except libvirt.libvirtError as exc:
            raise migration_error(exc) from None

    def abort(self) -> bool:
        try:
            self._dom.abortJob()
            return True
        except libvirt.libvirtError as exc:
            log.info("abortJob failed: %s", exc)
            return False

    def job_running(self) -> bool:
        """Is a job still running on the source domain? False once it ended or the domain left."""
        stats = self.stats()
        return stats is not None and stats.active

    def completed(self, wait_s: float = 3.0) -> JobStats | None:
        """Completed stats: the source's JOB_COMPLETED event if it came, else the destination's record."""
        if self._completed_event.wait(wait_s) and self._completed:
            return _stats({"type": libvirt.VIR_DOMAIN_JOB_COMPLETED, **self._completed})
        return completed_stats(self.request.destination_uri, self.request.uuid, self.request.timeout)
