"""One parser each in the adapter: VM states, capabilities, disks of a definition (no hosts needed)."""

from __future__ import annotations

import libvirt

from inventory.hypervisor import lifecycle
from inventory.hypervisor import migrate as hv
from inventory.hypervisor.connection import RUNNING_STATES, state_name
from inventory.hypervisor.domxml import file_disks, parse_capabilities, parse_disks

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
