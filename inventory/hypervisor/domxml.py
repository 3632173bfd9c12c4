"""Parsing of libvirt XML documents into the adapter's dataclasses.

The XML comes from hypervisors and is treated as untrusted input: a document with a document type
declaration is parsed with defusedxml (no entity expansion, no external references); one without
cannot declare an entity or refer to anything outside itself, and is parsed by the standard library's
C parser, which is about twice as fast. Every value read from it is plain text that the templates escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError
from xml.etree.ElementTree import fromstring as _fromstring_without_dtd

from defusedxml import ElementTree

from .errors import OperationFailed
from .types import BackingFile, DiskInfo, DomainInfo, HostDevInfo, NicInfo

#: libvirt's metadata namespace for vmportal's own tags (team ownership, run ids).
METADATA_NS = "urn:vmportal:metadata:1"

_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

#: transient domains the portal itself starts for a moment: a cold copy's carrier
#: (inventory.hypervisor.offline) and a QEMU start-time probe (inventory.hypervisor.measure).
CARRIER_PREFIX = "vmportal-copy-"
PROBE_PREFIX = "vmportal-probe-"
HELPER_DOMAIN_PREFIXES = (CARRIER_PREFIX, PROBE_PREFIX)


def is_helper_domain(name: str, persistent: bool) -> bool:
    """A transient domain of the portal's own, not a VM (the inventory does not list it)."""
    return not persistent and name.startswith(HELPER_DOMAIN_PREFIXES)


def parse_xml(text: str) -> Element:
    if "<!DOCTYPE" not in text:
        # Entities can only be declared in a DTD, and a DTD only in a document type declaration: without
        # one the only entities are XML's five predefined ones (an undefined one is a parse error).
        try:
            return _fromstring_without_dtd(text)  # noqa: S314 (no DTD, checked above)
        except (ParseError, ValueError) as exc:
            raise OperationFailed("The hypervisor returned XML that could not be read.", raw=str(exc)) from None
    try:
        return ElementTree.fromstring(text)
    except Exception as exc:  # defusedxml raises several types; all mean "not usable XML"
        raise OperationFailed("The hypervisor returned XML that could not be read.", raw=str(exc)) from None


def to_bytes(element: Element | None, default_unit: str = "KiB") -> int:
    if element is None or not (element.text or "").strip():
        return 0
    unit = (element.get("unit") or default_unit).lower()
    try:
        return int(element.text.strip()) * _UNITS.get(unit, 1024)  # type: ignore[union-attr]
    except ValueError:
        return 0


def _text(element: Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _backing_chain(disk: Element) -> tuple[BackingFile, ...]:
    chain: list[BackingFile] = []
    node = disk.find("backingStore")
    while node is not None and len(chain) < 64:
        source = node.find("source")
        if source is None:
            break
        path = source.get("file") or source.get("dev") or source.get("name") or ""
        fmt = node.find("format")
        chain.append(BackingFile(path=path, format=fmt.get("type", "") if fmt is not None else ""))
        node = node.find("backingStore")
    return tuple(chain)


def parse_disk(disk: Element) -> DiskInfo:
    source_type = disk.get("type", "file")
    source = disk.find("source")
    pool = ""
    path = ""
    if source is not None:
        if source_type == "volume":
            pool = source.get("pool", "")
            path = f"{pool}/{source.get('volume', '')}"
        elif source_type == "network":
            path = f"{source.get('protocol', '')}:{source.get('name', '')}"
        else:
            path = source.get("file") or source.get("dev") or source.get("dir") or ""
    driver = disk.find("driver")
    target = disk.find("target")
    return DiskInfo(
        target=target.get("dev", "") if target is not None else "",
        bus=target.get("bus", "") if target is not None else "",
        device=disk.get("device", "disk"),
        source_type=source_type,
        source=path,
        format=(driver.get("type", "") if driver is not None else ""),
        cache=(driver.get("cache", "") if driver is not None else ""),
        shareable=disk.find("shareable") is not None,
        readonly=disk.find("readonly") is not None,
        pool=pool,
        backing_chain=_backing_chain(disk),
    )


def parse_disks(xml: str) -> list[DiskInfo]:
    """Every disk device (disks, CD-ROMs, floppies) of a domain definition, in order."""
    devices = parse_xml(xml).find("devices")
    return [parse_disk(d) for d in devices.findall("disk")] if devices is not None else []


@dataclass(frozen=True)
class DiskRef:
    """A file-backed disk of a domain definition (not a CD-ROM or floppy)."""

    target: str
    path: str
    format: str
    writable: bool


def file_disks(xml: str) -> list[DiskRef]:
    """The file-backed disks and LUNs of a domain definition: what a move copies or leaves in place."""
    return [
        DiskRef(target=d.target, path=d.source, format=d.format or "raw", writable=not (d.readonly or d.shareable))
        for d in parse_disks(xml)
        if d.device in ("disk", "lun") and d.source_type == "file" and d.source and d.target
    ]


def parse_nic(iface: Element) -> NicInfo:
    source = iface.find("source")
    mac = iface.find("mac")
    model = iface.find("model")
    target = iface.find("target")
    filterref = iface.find("filterref")
    src = source.attrib if source is not None else {}
    return NicInfo(
        mac=(mac.get("address", "") if mac is not None else "").lower(),
        type=iface.get("type", ""),
        model=model.get("type", "") if model is not None else "",
        network=src.get("network", ""),
        bridge=src.get("bridge", ""),
        source_dev=src.get("dev", ""),
        target_dev=target.get("dev", "") if target is not None else "",
        filter=filterref.get("filter", "") if filterref is not None else "",
    )


def parse_hostdev(dev: Element) -> HostDevInfo:
    source = dev.find("source")
    address = ""
    if source is not None:
        addr = source.find("address")
        if addr is not None:
            address = addr.get("uuid") or ":".join(
                addr.get(k, "") for k in ("domain", "bus", "slot", "function") if addr.get(k)
            )
        vendor, product = source.find("vendor"), source.find("product")
        if vendor is not None and product is not None:
            address = f"{vendor.get('id', '')}:{product.get('id', '')}"
    return HostDevInfo(type=dev.get("type", ""), mode=dev.get("mode", "subsystem"), address=address)


def parse_domain(xml: str) -> DomainInfo:
    """Parse a domain definition. State, persistence and snapshots come from other calls."""
    root = parse_xml(xml)
    os_el = root.find("os")
    os_type = os_el.find("type") if os_el is not None else None
    cpu = root.find("cpu")
    devices = root.find("devices")
    firmware = "bios"
    if os_el is not None:
        loader = os_el.find("loader")
        if os_el.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash"):
            firmware = "uefi"
    team = ""
    metadata = root.find("metadata")
    if metadata is not None:
        team = _text(metadata.find(f"{{{METADATA_NS}}}owner/{{{METADATA_NS}}}team"))
    disks, nics, hostdevs, agent = [], [], [], False
    if devices is not None:
        disks = [parse_disk(d) for d in devices.findall("disk")]
        nics = [parse_nic(i) for i in devices.findall("interface")]
        hostdevs = [parse_hostdev(h) for h in devices.findall("hostdev")]
        for channel in devices.findall("channel"):
            target = channel.find("target")
            if target is not None and target.get("name") == GUEST_AGENT_CHANNEL:
                agent = True
    vcpu = root.find("vcpu")
    try:
        vcpus = int(vcpu.get("current") or _text(vcpu)) if vcpu is not None else 0
    except ValueError:
        vcpus = 0
    memory = to_bytes(root.find("currentMemory")) or to_bytes(root.find("memory"))
    return DomainInfo(
        uuid=_text(root.find("uuid")).lower(),
        name=_text(root.find("name")),
        virt_type=root.get("type", ""),
        state="unknown",
        vcpus=vcpus,
        memory=memory,
        max_memory=to_bytes(root.find("memory")),
        cpu_mode=(cpu.get("mode", "custom") if cpu is not None else ""),
        cpu_model=_text(cpu.find("model")) if cpu is not None else "",
        machine_type=(os_type.get("machine", "") if os_type is not None else ""),
        arch=(os_type.get("arch", "") if os_type is not None else ""),
        firmware=firmware,
        os_type=_text(os_type) or "hvm",
        title=_text(root.find("title")),
        description=_text(root.find("description")),
        team_tag=team,
        has_guest_agent=agent,
        disks=disks,
        nics=nics,
        hostdevs=hostdevs,
        xml=xml,
    )


@dataclass(frozen=True)
class Capabilities:
    """Host facts from `virConnectGetCapabilities` (one parser for the sync and the audit)."""

    uuid: str
    arch: str
    cpu_model: str
    cpu_vendor: str
    cpu_features: frozenset[str]
    cpu_xml: str
    numa_cells: int
    page_sizes: tuple[int, ...]
    #: guest arch → {"virt_types": [...], "machines": [...]} (hvm guests only)
    guest_arches: dict[str, dict[str, list[str]]]

    @property
    def machine_types(self) -> list[str]:
        """Machine types (and their canonical names) offered to guests of the host's own arch."""
        return list(self.guest_arches.get(self.arch, {}).get("machines", []))

    @property
    def virt_types(self) -> list[str]:
        return sorted(self.guest_arches.get(self.arch, {}).get("virt_types", []))


def parse_capabilities(xml: str) -> Capabilities:
    root = parse_xml(xml)
    host = root.find("host")
    cpu = host.find("cpu") if host is not None else None
    features: set[str] = set()
    pages: list[int] = []
    if cpu is not None:
        for feature in cpu.findall("feature"):
            features.add(feature.get("name", ""))
        legacy = cpu.find("features")  # the test driver lists features as child tags
        if legacy is not None:
            features.update(child.tag for child in legacy)
        for page in cpu.findall("pages"):
            try:
                pages.append(int(page.get("size", "0")))
            except ValueError:
                continue
    cells = root.find("host/topology/cells")
    try:
        numa_cells = int(cells.get("num", "1")) if cells is not None else 1
    except ValueError:
        numa_cells = 1
    arches: dict[str, dict[str, list[str]]] = {}
    for guest in root.findall("guest"):
        if _text(guest.find("os_type")) != "hvm":
            continue
        arch_el = guest.find("arch")
        if arch_el is None:
            continue
        entry = arches.setdefault(arch_el.get("name", ""), {"virt_types": [], "machines": []})
        for machine in arch_el.findall("machine") + [
            m for d in arch_el.findall("domain") for m in d.findall("machine")
        ]:
            for name in (_text(machine), machine.get("canonical", "")):
                if name and name not in entry["machines"]:
                    entry["machines"].append(name)
        for dom in arch_el.findall("domain"):
            if dom.get("type") and dom.get("type") not in entry["virt_types"]:
                entry["virt_types"].append(dom.get("type", ""))
    cpu_xml = ElementTree.tostring(cpu, encoding="unicode").strip() if cpu is not None else ""  # type: ignore[attr-defined]
    return Capabilities(
        uuid=_text(host.find("uuid")) if host is not None else "",
        arch=_text(cpu.find("arch")) if cpu is not None else "",
        cpu_model=_text(cpu.find("model")) if cpu is not None else "",
        cpu_vendor=_text(cpu.find("vendor")) if cpu is not None else "",
        cpu_features=frozenset(f for f in features if f),
        cpu_xml=cpu_xml,
        numa_cells=max(numa_cells, 1),
        page_sizes=tuple(pages),
        guest_arches=arches,
    )


def parse_pool(xml: str) -> tuple[str, str]:
    """(type, target path) of a storage pool."""
    root = parse_xml(xml)
    return root.get("type", ""), _text(root.find("target/path"))


def parse_network(xml: str) -> tuple[str, str]:
    """(forward mode, bridge) of a network; forward mode "isolated" when there is none."""
    root = parse_xml(xml)
    forward = root.find("forward")
    bridge = root.find("bridge")
    return (
        forward.get("mode", "nat") if forward is not None else "isolated",
        bridge.get("name", "") if bridge is not None else "",
    )
