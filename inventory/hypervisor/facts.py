"""Fresh facts for the pre-migration audit, read through libvirt and returned as dataclasses.

The audit must not trust the inventory alone: a VM may have been edited, a network stopped or a
guest defined on the destination since the last sync. `FactsReader` keeps one connection per host
for the duration of an audit, reads each host once (capabilities, domain capabilities per virt
type, versions, free memory, pools with their volume paths, networks, network filters, and every
domain's name, UUID and MACs), and reads the plan's VMs on their source host (migratable XML,
state, running jobs, snapshots) in the same connection. CPU comparisons on a destination are cached
per distinct CPU definition, so a 500-VM plan costs a handful of comparisons, not 500.

Every libvirt error leaves as one of the exceptions in `errors`. A call the host does not support
(the test driver has no domain capabilities, CPU comparison or network filters) gives `None` or an
empty value that the checks read as "cannot decide", never as a failure of the guest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from xml.etree.ElementTree import Element

import libvirt
from defusedxml import ElementTree

from . import domxml
from .connection import DEFAULT_TIMEOUT_S, _open, call, state_name, translate
from .errors import HypervisorError, NotFound, Unsupported
from .reader import read_networks, read_node, read_pools
from .types import BackingFile, DiskInfo, DomainInfo, NetworkInfo, PoolInfo

#: libvirt pool types whose volumes can be refreshed cheaply (a directory scan), so the audit sees
#: files that appeared since the pool was last refreshed (e.g. an ISO copied onto shared storage)


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _values(element: Element | None, enum_name: str) -> tuple[str, ...]:
    if element is None:
        return ()
    for enum in element.findall("enum"):
        if enum.get("name") == enum_name:
            return tuple(_text(v) for v in enum.findall("value") if _text(v))
    return ()


def _tostring(element: Element) -> str:
    text: str = ElementTree.tostring(element, encoding="unicode")  # type: ignore[attr-defined]
    return text.strip()


# ---- dataclasses ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainCapsFacts:
    """What a host's hypervisor offers guests of one virt type (`virConnectGetDomainCapabilities`)."""

    virt_type: str
    arch: str
    machine: str
    max_vcpus: int | None
    firmware_values: tuple[str, ...]  # os/enum[@name=firmware]: "efi", "bios" when auto-selection works
    loader_supported: bool
    loader_values: tuple[str, ...]  # UEFI loader images the host has (paths)
    loader_types: tuple[str, ...]  # rom, pflash
    cpu_modes: dict[str, bool]  # host-passthrough / host-model / custom / maximum → supported
    tpm_supported: bool
    tpm_models: tuple[str, ...]
    tpm_backends: tuple[str, ...]
    hostdev_supported: bool
    hostdev_types: tuple[str, ...]
    xml: str = ""


#: a pool and a network as the audit sees them: the adapter's one reader of each (reader.py)
PoolFacts = PoolInfo
NetworkFacts = NetworkInfo


@dataclass(frozen=True)
class DomainSummary:
    """Another domain on a host, as far as clashes and allocation go."""

    uuid: str
    name: str
    active: bool
    macs: tuple[str, ...]
    vcpus: int
    memory: int  # bytes


@dataclass(frozen=True)
class TpmInfo:
    model: str
    backend: str


@dataclass(frozen=True)
class MediaInfo:
    target: str
    device: str  # cdrom or floppy
    path: str  # "" when the drive is empty


@dataclass(frozen=True)
class DomainDetails:
    """Parts of a domain definition the audit needs beyond `DomainInfo`."""

    cpu_xml: str = ""  # the <cpu> element as written, "" when the guest has none
    loader: str = ""
    loader_type: str = ""
    nvram: str = ""
    firmware_auto: str = ""  # <os firmware='efi'>
    secure_boot: bool = False
    tpms: tuple[TpmInfo, ...] = ()
    sysinfo: bool = False
    smbios_mode: str = ""
    vcpupins: tuple[tuple[int, str], ...] = ()
    emulatorpin: str = ""
    numa_nodeset: str = ""
    hugepages: tuple[int, ...] = ()  # page sizes in KiB; (0,) = default huge page size
    media: tuple[MediaInfo, ...] = ()


@dataclass
class GuestFacts:
    """One VM read on its own host for the audit."""

    uuid: str
    name: str
    state: str
    xml: str  # migratable XML (what a move sends)
    domain: DomainInfo
    details: DomainDetails
    job: str = "none"  # active domain job type; "none" when idle
    job_operation: str = ""
    block_jobs: dict[str, str] = field(default_factory=dict)  # disk target → job type
    snapshot_count: int = 0
    notes: list[str] = field(default_factory=list)  # what could not be read, for "cannot decide"

    @property
    def busy(self) -> bool:
        return self.job != "none" or bool(self.block_jobs)


@dataclass
class HostFacts:
    """One host as the audit sees it right now."""

    uri: str
    hostname: str
    host_uuid: str
    arch: str
    cpu_model: str
    cpu_vendor: str
    cpu_features: frozenset[str]
    cpu_xml: str
    cpus: int
    numa_cells: int
    page_sizes: tuple[int, ...]  # KiB
    memory_total: int
    memory_free: int
    hypervisor_type: str
    hypervisor_version: str
    hypervisor_version_number: int
    libvirt_version: str
    libvirt_version_number: int
    guest_arches: dict[str, dict[str, list[str]]]  # arch → {"virt_types": [...], "machines": [...]}
    domcaps: dict[str, DomainCapsFacts]  # virt type → capabilities (empty: the host offers none)
    pools: dict[str, PoolFacts]
    networks: dict[str, NetworkFacts]
    nwfilters: frozenset[str] | None  # None: the host cannot list filters
    domains: list[DomainSummary]
    read_ms: int = 0

    def machines(self, arch: str) -> list[str]:
        return self.guest_arches.get(arch, {}).get("machines", [])

    def virt_types(self, arch: str) -> list[str]:
        return self.guest_arches.get(arch, {}).get("virt_types", [])

    def volume_paths(self) -> set[str]:
        return {path for pool in self.pools.values() for path in pool.volumes}

    def pool_of(self, path: str) -> PoolFacts | None:
        for pool in self.pools.values():
            if path in pool.volumes:
                return pool
        return None


@dataclass(frozen=True)
class CpuComparison:
    """Outcome of `compareHypervisorCPU` on a destination. `result` None: it could not decide."""

    result: str | None  # identical, superset, incompatible
    reason: str = ""


# ---- parsing -------------------------------------------------------------------------------------


def parse_domcaps(xml: str) -> DomainCapsFacts:
    root = domxml.parse_xml(xml)
    os_el = root.find("os")
    loader = os_el.find("loader") if os_el is not None else None
    cpu = root.find("cpu")
    modes: dict[str, bool] = {}
    if cpu is not None:
        for mode in cpu.findall("mode"):
            modes[mode.get("name", "")] = mode.get("supported") == "yes"
    devices = root.find("devices")
    tpm = devices.find("tpm") if devices is not None else None
    hostdev = devices.find("hostdev") if devices is not None else None
    vcpu = root.find("vcpu")
    try:
        max_vcpus = int(vcpu.get("max", "")) if vcpu is not None else None
    except ValueError:
        max_vcpus = None
    return DomainCapsFacts(
        virt_type=_text(root.find("domain")),
        arch=_text(root.find("arch")),
        machine=_text(root.find("machine")),
        max_vcpus=max_vcpus,
        firmware_values=_values(os_el, "firmware"),
        loader_supported=loader is not None and loader.get("supported") == "yes",
        loader_values=tuple(_text(v) for v in loader.findall("value")) if loader is not None else (),
        loader_types=_values(loader, "type"),
        cpu_modes=modes,
        tpm_supported=tpm is not None and tpm.get("supported") == "yes",
        tpm_models=_values(tpm, "model"),
        tpm_backends=_values(tpm, "backendModel"),
        hostdev_supported=hostdev is not None and hostdev.get("supported") == "yes",
        hostdev_types=_values(hostdev, "subsysType"),
        xml=xml,
    )


def parse_details(xml: str) -> DomainDetails:
    """The parts of a domain definition that tie it to its host (firmware, identity, pinning…)."""
    root = domxml.parse_xml(xml)
    cpu = root.find("cpu")
    os_el = root.find("os")
    loader = os_el.find("loader") if os_el is not None else None
    nvram = os_el.find("nvram") if os_el is not None else None
    smbios = os_el.find("smbios") if os_el is not None else None
    devices = root.find("devices")
    tpms: list[TpmInfo] = []
    media: list[MediaInfo] = []
    if devices is not None:
        for tpm in devices.findall("tpm"):
            backend = tpm.find("backend")
            tpms.append(
                TpmInfo(model=tpm.get("model", ""), backend=backend.get("type", "") if backend is not None else "")
            )
        for disk in devices.findall("disk"):
            if disk.get("device") in ("cdrom", "floppy"):
                source = disk.find("source")
                target = disk.find("target")
                path = ""
                if source is not None:
                    path = source.get("file") or source.get("dev") or ""
                media.append(
                    MediaInfo(
                        target=target.get("dev", "") if target is not None else "",
                        device=disk.get("device", ""),
                        path=path,
                    )
                )
    pins: list[tuple[int, str]] = []
    emulatorpin = ""
    cputune = root.find("cputune")
    if cputune is not None:
        for pin in cputune.findall("vcpupin"):
            try:
                pins.append((int(pin.get("vcpu", "0")), pin.get("cpuset", "")))
            except ValueError:
                continue
        emu = cputune.find("emulatorpin")
        emulatorpin = emu.get("cpuset", "") if emu is not None else ""
    numa = root.find("numatune/memory")
    hugepages: list[int] = []
    backing = root.find("memoryBacking/hugepages")
    if backing is not None:
        sizes = backing.findall("page")
        for page in sizes:
            hugepages.append(domxml.to_bytes(_size_element(page)) // 1024 if page.get("size") else 0)
        if not sizes:
            hugepages.append(0)
    return DomainDetails(
        cpu_xml=_tostring(cpu) if cpu is not None else "",
        loader=_text(loader),
        loader_type=loader.get("type", "") if loader is not None else "",
        nvram=_text(nvram) or (nvram.get("template", "") if nvram is not None else ""),
        firmware_auto=os_el.get("firmware", "") if os_el is not None else "",
        secure_boot=loader is not None and loader.get("secure") == "yes",
        tpms=tuple(tpms),
        sysinfo=root.find("sysinfo") is not None,
        smbios_mode=smbios.get("mode", "") if smbios is not None else "",
        vcpupins=tuple(pins),
        emulatorpin=emulatorpin,
        numa_nodeset=numa.get("nodeset", "") if numa is not None else "",
        hugepages=tuple(hugepages),
        media=tuple(media),
    )


def _size_element(page: Element) -> Element:
    """A <page size='2' unit='M'/> as an element `to_bytes` can read (it reads text and unit)."""
    element = Element("size", {"unit": page.get("unit", "KiB")})
    element.text = page.get("size", "0")
    return element


def parse_cpuset(cpuset: str) -> set[int]:
    """libvirt cpuset syntax ("0-3,^2,6") → CPU ids. Malformed parts are ignored."""
    result: set[int] = set()
    excluded: set[int] = set()
    for part in cpuset.split(","):
        part = part.strip()
        if not part:
            continue
        target = excluded if part.startswith("^") else result
        part = part.lstrip("^")
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                target.update(range(low, min(high, low + 4096) + 1))
            else:
                target.add(int(part))
        except ValueError:
            continue
    return result - excluded


# ---- reading -------------------------------------------------------------------------------------

_JOB_TYPES = {
    libvirt.VIR_DOMAIN_JOB_NONE: "none",
    libvirt.VIR_DOMAIN_JOB_BOUNDED: "bounded",
    libvirt.VIR_DOMAIN_JOB_UNBOUNDED: "unbounded",
    libvirt.VIR_DOMAIN_JOB_COMPLETED: "none",
    libvirt.VIR_DOMAIN_JOB_FAILED: "none",
    libvirt.VIR_DOMAIN_JOB_CANCELLED: "none",
}
_BLOCK_JOB_TYPES = {
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL: "pull",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY: "copy",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT: "commit",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT: "active commit",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_BACKUP: "backup",
}
_JOB_OPERATIONS = {
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "outgoing migration",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "incoming migration",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE: "save",
    libvirt.VIR_DOMAIN_JOB_OPERATION_RESTORE: "restore",
    libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP: "dump",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT: "snapshot",
    libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP: "backup",
}


class FactsReader:
    """Reads hosts and guests for one audit, one connection per host, each host once.

    Use as a context manager; connections are closed on exit. Errors of one host are remembered and
    raised again for later requests of the same host, so an unreachable host costs one timeout.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._conns: dict[str, libvirt.virConnect] = {}
        self._hosts: dict[str, HostFacts] = {}
        self._failed: dict[str, HypervisorError] = {}
        self._guests: dict[tuple[str, str], GuestFacts | None] = {}
        self._cpu: dict[tuple[str, str, str, str], CpuComparison] = {}

    def __enter__(self) -> FactsReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        self._conns.clear()

    def _conn(self, uri: str) -> libvirt.virConnect:
        if uri in self._failed:
            raise self._failed[uri]
        if uri not in self._conns:
            try:
                self._conns[uri] = _open(uri, self.timeout)
            except HypervisorError as exc:
                self._failed[uri] = exc
                raise
        return self._conns[uri]

    # -- hosts --

    def host(self, uri: str) -> HostFacts:
        """The host's facts, read on first request. Raises HypervisorError subclasses."""
        if uri in self._hosts:
            return self._hosts[uri]
        conn = self._conn(uri)
        started = time.monotonic()
        try:
            facts = self._read_host(uri, conn)
        except HypervisorError as exc:
            self._failed[uri] = exc
            raise
        facts.read_ms = int((time.monotonic() - started) * 1000)
        self._hosts[uri] = facts
        return facts

    def _read_host(self, uri: str, conn: libvirt.virConnect) -> HostFacts:
        node = read_node(conn, domain_capabilities=False)
        info, caps = node.info, node.caps
        arch = info.arch
        domcaps: dict[str, DomainCapsFacts] = {}
        for virt_type in caps.guest_arches.get(arch, {}).get("virt_types", []):
            try:
                xml = call(lambda vt=virt_type: conn.getDomainCapabilities(None, arch, None, vt, 0))  # type: ignore[misc]
            except (Unsupported, HypervisorError):
                continue  # e.g. the test driver; checks that need it say they cannot decide
            domcaps[virt_type] = parse_domcaps(xml)
        return HostFacts(
            uri=uri,
            hostname=info.hostname,
            host_uuid=info.host_uuid,
            arch=arch,
            cpu_model=info.cpu_model,
            cpu_vendor=info.cpu_vendor,
            cpu_features=caps.cpu_features,
            cpu_xml=info.cpu_xml,
            cpus=info.cpus,
            numa_cells=caps.numa_cells,
            page_sizes=caps.page_sizes,
            memory_total=info.memory_total,
            # a host that cannot tell its free memory (the sync stores 0): the checks take all of it as free
            memory_free=info.memory_free or info.memory_total,
            hypervisor_type=info.hypervisor_type,
            hypervisor_version=info.hypervisor_version,
            hypervisor_version_number=node.hypervisor_version_number,
            libvirt_version=info.libvirt_version,
            libvirt_version_number=node.libvirt_version_number,
            guest_arches=caps.guest_arches,
            domcaps=domcaps,
            pools=self._pools(conn),
            networks=self._networks(conn),
            nwfilters=self._nwfilters(conn),
            domains=self._domains(conn),
        )

    @staticmethod
    def _pools(conn: libvirt.virConnect) -> dict[str, PoolFacts]:
        return {p.name: p for p in read_pools(conn, refresh=True)[0]}

    @staticmethod
    def _networks(conn: libvirt.virConnect) -> dict[str, NetworkFacts]:
        return {n.name: n for n in read_networks(conn)}

    @staticmethod
    def _nwfilters(conn: libvirt.virConnect) -> frozenset[str] | None:
        try:
            return frozenset(f.name() for f in call(lambda: conn.listAllNWFilters(0), "listing network filters"))
        except Unsupported:
            return None

    @staticmethod
    def _domains(conn: libvirt.virConnect) -> list[DomainSummary]:
        everything = call(lambda: conn.listAllDomains(0), "listing VMs")
        active = {
            d.UUIDString()
            for d in call(lambda: conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE), "listing VMs")
        }
        result = []
        for dom in everything:
            try:
                info = domxml.parse_domain(dom.XMLDesc(0))
            except libvirt.libvirtError as exc:
                if isinstance(translate(exc), NotFound):
                    continue  # undefined while we read it
                raise translate(exc, "reading a VM") from None
            result.append(
                DomainSummary(
                    uuid=info.uuid,
                    name=info.name,
                    active=dom.UUIDString() in active,
                    macs=tuple(n.mac for n in info.nics if n.mac),
                    vcpus=info.vcpus,
                    memory=info.max_memory or info.memory,
                )
            )
        return result

    # -- guests --

    def guests(self, uri: str, uuids: Iterable[str]) -> dict[str, GuestFacts | None]:
        """The VMs with these UUIDs on this host (None: not defined there)."""
        return {u: self.guest(uri, u) for u in uuids}

    def guest(self, uri: str, uuid: str) -> GuestFacts | None:
        key = (uri, uuid.lower())
        if key not in self._guests:
            self._guests[key] = self._read_guest(self._conn(uri), uuid)
        return self._guests[key]

    def _read_guest(self, conn: libvirt.virConnect, uuid: str) -> GuestFacts | None:
        try:
            dom = call(lambda: conn.lookupByUUIDString(uuid), "looking up the VM")
        except NotFound:
            return None
        try:
            state_code, _reason = dom.state()
            active = bool(dom.isActive())
            flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | (0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE)
            xml = dom.XMLDesc(flags)
        except libvirt.libvirtError as exc:
            if isinstance(translate(exc), NotFound):
                return None
            raise translate(exc, "reading the VM") from None
        domain = domxml.parse_domain(xml)
        notes: list[str] = []
        domain.disks = [self._sized_disk(conn, disk, notes) for disk in domain.disks]
        guest = GuestFacts(
            uuid=domain.uuid,
            name=domain.name,
            state=state_name(state_code),
            xml=xml,
            domain=domain,
            details=parse_details(xml),
            notes=notes,
        )
        domain.state = guest.state
        try:
            guest.snapshot_count = int(dom.snapshotNum(0))
        except libvirt.libvirtError as exc:
            notes.append(f"snapshots: {translate(exc).message}")
        if active:
            self._jobs(dom, guest)
        return guest

    @staticmethod
    def _sized_disk(conn: libvirt.virConnect, disk: DiskInfo, notes: list[str]) -> DiskInfo:
        """Add the volume's pool, capacity, allocation and backing chain (inactive XML shows no chain)."""
        if disk.source_type not in ("file", "block") or not disk.source or disk.device not in ("disk", "lun"):
            return disk
        try:
            vol = conn.storageVolLookupByPath(disk.source)
            _vtype, capacity, allocation = vol.info()
            pool = vol.storagePoolLookupByVolume().name()
            chain = disk.backing_chain
            if not chain:
                root = domxml.parse_xml(vol.XMLDesc(0))
                backing = root.find("backingStore")
                if backing is not None and _text(backing.find("path")):
                    fmt = backing.find("format")
                    chain = (
                        BackingFile(
                            path=_text(backing.find("path")), format=fmt.get("type", "") if fmt is not None else ""
                        ),
                    )
        except libvirt.libvirtError as exc:
            notes.append(f"disk {disk.target}: {translate(exc).message}")
            return disk
        return DiskInfo(
            **{
                **disk.__dict__,
                "pool": disk.pool or pool,
                "capacity": capacity,
                "allocation": allocation,
                "backing_chain": chain,
            }
        )

    @staticmethod
    def _jobs(dom: libvirt.virDomain, guest: GuestFacts) -> None:
        try:
            stats = dom.jobStats(0)
            guest.job = _JOB_TYPES.get(stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE), "unknown")
            if guest.job != "none":
                guest.job_operation = _JOB_OPERATIONS.get(stats.get("operation", -1), "")
        except libvirt.libvirtError as exc:
            error = translate(exc)
            if not isinstance(error, NotFound):
                guest.notes.append(f"job: {error.message}")
        for disk in guest.domain.disks:
            if disk.device not in ("disk", "lun") or not disk.target:
                continue
            try:
                info = dom.blockJobInfo(disk.target, 0)
            except libvirt.libvirtError as exc:
                guest.notes.append(f"block job of {disk.target}: {translate(exc).message}")
                continue
            if info:
                guest.block_jobs[disk.target] = _BLOCK_JOB_TYPES.get(info.get("type", 0), "unknown")

    # -- CPU --

    def compare_cpu(self, uri: str, cpu_xml: str, arch: str, virt_type: str) -> CpuComparison:
        """Is this guest CPU definition usable on the host? Cached per definition."""
        key = (uri, cpu_xml, arch, virt_type)
        if key in self._cpu:
            return self._cpu[key]
        conn = self._conn(uri)
        try:
            code = conn.compareHypervisorCPU(None, arch or None, None, virt_type or None, cpu_xml, 0)
            labels = {
                libvirt.VIR_CPU_COMPARE_INCOMPATIBLE: "incompatible",
                libvirt.VIR_CPU_COMPARE_IDENTICAL: "identical",
                libvirt.VIR_CPU_COMPARE_SUPERSET: "superset",
            }
            result = CpuComparison(labels.get(code), "" if code in labels else "libvirt could not compare the CPU")
        except libvirt.libvirtError as exc:
            error = translate(exc)
            if isinstance(error, Unsupported):
                result = CpuComparison(None, "the destination's libvirt cannot compare CPUs")
            elif getattr(error, "code", None) == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
                result = CpuComparison("incompatible", error.raw)
            else:
                result = CpuComparison(None, error.raw or error.message)
        self._cpu[key] = result
        return result


def read_facts(
    uri: str, guest_uuids: Iterable[str] = (), timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[HostFacts, dict[str, GuestFacts | None]]:
    """One host and some of its guests in one connection (for callers outside an audit)."""
    with FactsReader(timeout) as reader:
        return reader.host(uri), reader.guests(uri, guest_uuids)
