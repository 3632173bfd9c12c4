"""Plain dataclasses the adapter returns. No libvirt objects ever leave the adapter."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackingFile:
    path: str
    format: str


@dataclass(frozen=True)
class DiskInfo:
    target: str
    bus: str
    device: str  # disk, cdrom, floppy, lun
    source_type: str  # file, block, volume, network
    source: str  # path, device, "pool/volume" or network name; "" for an empty drive
    format: str  # qcow2, raw, vmdk… ("" when unknown)
    cache: str
    shareable: bool
    readonly: bool
    pool: str = ""  # pool name when the source names one (type=volume) or is found in a pool
    capacity: int | None = None  # bytes
    allocation: int | None = None  # bytes
    backing_chain: tuple[BackingFile, ...] = ()


@dataclass(frozen=True)
class NicInfo:
    mac: str
    type: str  # network, bridge, direct, hostdev, user, vhostuser…
    model: str
    network: str = ""
    bridge: str = ""
    source_dev: str = ""
    target_dev: str = ""
    filter: str = ""


@dataclass(frozen=True)
class HostDevInfo:
    type: str  # pci, usb, mdev, scsi…
    mode: str
    address: str


@dataclass
class DomainInfo:
    uuid: str
    name: str
    virt_type: str
    state: str  # one of inventory.choices.PowerState values
    state_reason: int = 0
    persistent: bool = True
    #: a paused, transient domain that is the target of an incoming migration (not yet the VM's home)
    incoming_migration: bool = False
    autostart: bool = False
    vcpus: int = 0
    memory: int = 0  # bytes (current)
    max_memory: int = 0  # bytes
    cpu_mode: str = ""
    cpu_model: str = ""
    machine_type: str = ""
    arch: str = ""
    firmware: str = "bios"
    os_type: str = "hvm"
    title: str = ""
    description: str = ""
    team_tag: str = ""
    has_guest_agent: bool = False
    snapshot_count: int = 0
    disks: list[DiskInfo] = field(default_factory=list)
    nics: list[NicInfo] = field(default_factory=list)
    hostdevs: list[HostDevInfo] = field(default_factory=list)
    xml: str = ""


@dataclass(frozen=True)
class PoolInfo:
    uuid: str
    name: str
    type: str
    target_path: str
    active: bool
    shared: bool  # True only when libvirt's pool type is a network one (netfs, gluster, rbd…)
    capacity: int
    allocation: int
    available: int
    volumes: frozenset[str] = frozenset()  # paths of its volumes


@dataclass(frozen=True)
class NetworkInfo:
    uuid: str
    name: str
    bridge: str
    forward_mode: str
    active: bool


@dataclass
class HostInfo:
    hostname: str
    host_uuid: str
    arch: str
    cpu_model: str
    cpu_vendor: str
    cpu_xml: str
    cpus: int
    sockets: int
    cores: int
    threads: int
    mhz: int
    memory_total: int  # bytes
    memory_free: int  # bytes
    hypervisor_type: str
    hypervisor_version: str
    libvirt_version: str
    machine_types: list[str]
    virt_type: str  # kvm or qemu: what guests on this host use
    domain_capabilities: str = ""


@dataclass
class HostSnapshot:
    """Everything one read of a host returns: what sync stores."""

    host: HostInfo
    pools: list[PoolInfo]
    networks: list[NetworkInfo]
    domains: list[DomainInfo]


@dataclass(frozen=True)
class ConnectionReport:
    """Result of a "test connection": reachable or not, with versions."""

    ok: bool
    message: str
    hostname: str = ""
    hypervisor_version: str = ""
    libvirt_version: str = ""
    elapsed_ms: int = 0
    raw: str = ""
