"""One parser each in the adapter: VM states, capabilities, disks of a definition (no hosts needed)."""

from __future__ import annotations

import uuid
from xml.etree.ElementTree import Element

import libvirt
import pytest

from inventory.hypervisor import lifecycle
from inventory.hypervisor import migrate as hv
from inventory.hypervisor.connection import RUNNING_STATES, state_name
from inventory.hypervisor.domxml import file_disks, parse_capabilities, parse_disks, parse_domain, parse_xml
from inventory.hypervisor.errors import OperationFailed

DOMAIN = """<domain type='qemu'><name>d</name><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/a.qcow2'/><target dev='vda'/></disk>
<disk type='file' device='disk'><source file='/p/b.img'/><target dev='vdb'/><readonly/></disk>
<disk type='file' device='lun'><driver type='raw'/><source file='/p/c.raw'/><target dev='sda'/><shareable/></disk>
<disk type='file' device='cdrom'><source file='/iso/os.iso'/><target dev='hdc'/></disk>
<disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdc'/></disk>
<disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdd'/></disk>
</devices></domain>"""

CAPS = """<capabilities><host><uuid>u-1</uuid><cpu><arch>x86_64</arch><model>Skylake</model><vendor>Intel</vendor>
<feature name='vmx'/><pages size='4'/><pages size='2048'/></cpu><topology><cells num='2'/></topology></host>
<guest><os_type>hvm</os_type><arch name='x86_64'><machine canonical='pc-i440fx-7.2'>pc</machine>
<domain type='qemu'/><domain type='kvm'><machine>q35</machine></domain></arch></guest>
<guest><os_type>hvm</os_type><arch name='i686'><machine>isapc</machine><domain type='qemu'/></arch></guest>
<guest><os_type>xen</os_type><arch name='x86_64'><machine>xenpv</machine><domain type='xen'/></arch></guest>
</capabilities>"""


def test_one_state_map_and_blocked_counts_as_running() -> None:
    assert state_name(libvirt.VIR_DOMAIN_RUNNING) == "running"
    assert state_name(libvirt.VIR_DOMAIN_BLOCKED) == "blocked"
    assert state_name(libvirt.VIR_DOMAIN_NOSTATE) == "nostate"
    assert state_name(99) == "unknown"
    assert RUNNING_STATES == {"running", "blocked"}
    assert hv.DomainLocation("test:///x", True, exists=True, state="blocked").running
    assert not hv.DomainLocation("test:///x", True, exists=True, state="paused").running
    assert not hv.DomainLocation("test:///x", True, exists=False, state="running").running


def test_one_disk_parser_for_definitions() -> None:
    assert [d.target for d in parse_disks(DOMAIN)] == ["vda", "vdb", "sda", "hdc", "vdc", "vdd"]
    refs = {d.target: d for d in file_disks(DOMAIN)}
    assert set(refs) == {"vda", "vdb", "sda"}  # file-backed disks and LUNs only
    assert (refs["vda"].path, refs["vda"].format, refs["vda"].writable) == ("/p/a.qcow2", "qcow2", True)
    assert refs["vdb"].format == "raw" and not refs["vdb"].writable
    assert not refs["sda"].writable
    assert lifecycle.disks_of(DOMAIN) == file_disks(DOMAIN)
    assert hv._disk_paths(DOMAIN) == ["/p/a.qcow2", "/p/b.img", "/p/c.raw", "/iso/os.iso"]


def test_one_capabilities_parser() -> None:
    caps = parse_capabilities(CAPS)
    assert (caps.uuid, caps.arch, caps.cpu_model, caps.cpu_vendor) == ("u-1", "x86_64", "Skylake", "Intel")
    assert caps.cpu_features == {"vmx"} and caps.page_sizes == (4, 2048) and caps.numa_cells == 2
    assert caps.machine_types == ["pc", "pc-i440fx-7.2", "q35"]
    assert caps.virt_types == ["kvm", "qemu"]
    assert set(caps.guest_arches) == {"x86_64", "i686"}  # hvm guests only
    assert "<model>Skylake</model>" in caps.cpu_xml


VM_FOR_COPY = """<domain type='kvm'><name>big</name><uuid>0b7c7e1e-1111-4222-8333-944455556666</uuid>
<memory unit='GiB'>64</memory><vcpu>16</vcpu>
<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os><features><acpi/><apic/></features>
<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>
<source file='/p/root.raw'/><target dev='sda' bus='sata'/><iotune><total_bytes_sec>1000</total_bytes_sec></iotune>
<boot order='1'/><address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/data.qcow2'/>
<target dev='vdb' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/shared/s.raw'/><target dev='vdc'/></disk>
<interface type='network'><mac address='52:54:00:00:00:01'/><source network='n'/></interface>
<graphics type='vnc'/><video><model type='vga'/></video></devices></domain>"""


def _el(parent: Element, path: str) -> Element:
    found = parent.find(path)
    assert found is not None, path
    return found


def test_the_cold_copy_carrier_holds_only_the_disks_to_copy() -> None:
    """The paused domain a block-mirror copy starts: the VM's type, machine and emulator, a little RAM and
    only the copied disks (on virtio, without the VM's cache, throttling or boot settings), nothing else."""
    from inventory.hypervisor import offline
    from inventory.hypervisor.domxml import is_helper_domain, parse_xml

    uuid = "0b7c7e1e-1111-4222-8333-944455556666"
    xml, names = offline.carrier_xml(VM_FOR_COPY, uuid, ["vdb", "sda"])
    assert names == {"sda": "vda", "vdb": "vdb"}
    root = parse_xml(xml)
    assert root.get("type") == "kvm"
    assert root.findtext("name") == f"vmportal-copy-{uuid}" == offline.carrier_name(uuid)
    assert root.findtext("uuid") not in ("", uuid)
    assert _el(root, "memory").get("unit") == "MiB" and int(_el(root, "memory").text or 0) <= 64
    assert root.findtext("vcpu") == "1"
    assert _el(root, "os/type").attrib == {"arch": "x86_64", "machine": "pc-q35-7.2"}
    assert root.find("features/acpi") is not None and root.find("os/boot") is None
    devices = _el(root, "devices")
    assert devices.findtext("emulator") == "/usr/bin/qemu-system-x86_64"
    assert [child.tag for child in devices] == ["emulator", "disk", "disk", "controller", "memballoon"]
    first, second = devices.findall("disk")
    assert _el(first, "source").get("file") == "/p/root.raw"
    assert _el(first, "driver").attrib == {"name": "qemu", "type": "raw"}
    assert _el(first, "target").attrib == {"dev": "vda", "bus": "virtio"}
    assert first.find("iotune") is None and first.find("boot") is None and first.find("address") is None
    assert _el(second, "source").get("file") == "/p/data.qcow2" and _el(second, "driver").get("type") == "qcow2"
    assert _el(devices, "controller").attrib == {"type": "usb", "model": "none"}
    # the inventory does not take the carrier (or a start-time probe) for a VM; a defined VM of that name it does
    assert is_helper_domain(offline.carrier_name(uuid), persistent=False)
    assert is_helper_domain("vmportal-probe-0a1b2c", persistent=False)
    assert not is_helper_domain(offline.carrier_name(uuid), persistent=True)
    assert not is_helper_domain("big", persistent=False)
    try:
        offline.carrier_xml(VM_FOR_COPY, uuid, ["vdz"])
    except offline.MirrorUnavailable as exc:
        assert "vdz" in exc.message
    else:
        raise AssertionError("a disk the VM does not have was accepted")


def test_hostile_xml_is_refused_with_or_without_a_document_type() -> None:
    """Without a document type declaration the fast parser reads the XML; entities can then only be the
    predefined ones. With one, defusedxml refuses every entity declaration (no expansion, nothing external)."""
    assert parse_xml("<a>&amp;&lt;&#65;<![CDATA[<!DOCTYPE x>]]></a>").text == "&<A<!DOCTYPE x>"
    hostile = [
        "<a>&undeclared;</a>",
        "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
        "<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>",
        "<!DOCTYPE a [<!ENTITY a0 'xx'><!ENTITY a1 '&a0;&a0;'><!ENTITY a2 '&a1;&a1;'>]><a>&a2;</a>",
        "<!DOCTYPE a SYSTEM 'http://example.invalid/a.dtd'><a>&e;</a>",
        "<a><b></a>",
    ]
    for text in hostile:
        with pytest.raises(OperationFailed):
            parse_xml(text)
    # a harmless document type declaration still goes through defusedxml and reads the same
    plain = parse_domain(DOMAIN)
    assert parse_domain("<!DOCTYPE domain>" + DOMAIN).disks == plain.disks
    assert [d.source for d in plain.disks][:2] == ["/p/a.qcow2", "/p/b.img"]


def test_a_volume_deleted_while_its_pool_is_read_leaves_the_pool_in_the_inventory() -> None:
    """A cold move's or a backup's clean-up can delete a volume between libvirt listing the pool's volumes
    and the reader asking for its size. Only that volume is left out: the pool itself stays (it used to be
    skipped, so a sync marked the destination's pool absent and the next audit mapped no pool)."""
    from inventory.hypervisor.reader import read_pools

    conn = libvirt.open("test:///default")
    pool = conn.storagePoolLookupByName("default-pool")
    gone, kept = (f"{word}-{uuid.uuid4().hex[:8]}.img" for word in ("gone", "kept"))
    for name in (gone, kept):
        pool.createXML(f"<volume><name>{name}</name><capacity>1048576</capacity></volume>", 0)
    listed = pool.listAllVolumes(0)  # what libvirt listed, just before the clean-up ran
    pool.storageVolLookupByName(gone).delete(0)

    class ListedBeforeTheDelete:
        def __getattr__(self, attr: str) -> object:
            return getattr(pool, attr)

        def listAllVolumes(self, flags: int) -> list[libvirt.virStorageVol]:  # noqa: N802 (libvirt's name)
            return listed

    class Conn:
        def listAllStoragePools(self, flags: int) -> list[object]:  # noqa: N802
            return [ListedBeforeTheDelete()]

    pools, volumes = read_pools(Conn())  # type: ignore[arg-type]
    assert [p.name for p in pools] == ["default-pool"]
    names = {path.rsplit("/", 1)[-1] for path in pools[0].volumes}
    assert kept in names and gone not in names
    assert f"default-pool/{kept}" in volumes and f"default-pool/{gone}" not in volumes
    pool.storageVolLookupByName(kept).delete(0)
    conn.close()
