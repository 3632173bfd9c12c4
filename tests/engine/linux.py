"""A small Linux guest on the lab (the lab's kernel and initramfs) and helpers to wait for it.

Used by the engine tests and the live-migration benchmarks. The guest serves /cgi-bin/bootid and
/cgi-bin/dirty over HTTP on its own address on the app segment, which the root namespace reaches.
"""

from __future__ import annotations

import time
import urllib.request
import uuid as uuid_lib
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from inventory.hypervisor.domxml import METADATA_NS
from tests.labguests import TEST_DOMAIN_PREFIX, Guest, LabGuests, random_mac

BOOT_DIR = "/srv/vmportal-lab/boot"
GATEWAY = "10.78.0.254"


def http(ip: str, path: str, timeout: float = 3.0) -> str:
    with urllib.request.urlopen(f"http://{ip}{path}", timeout=timeout) as resp:  # noqa: S310 (lab address)
        return resp.read().decode().strip()


def wait_for(predicate: Callable[[], Any], timeout: float = 120.0, interval: float = 0.3) -> Any:
    """Poll until `predicate` returns something truthy (a bound on waiting, not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up waiting after {timeout:.0f} s")


#: the initramfs with the QEMU guest agent (lab/labctl writes it under this name)
AGENT_INITRD = f"{BOOT_DIR}/initrd-agent.img"


def define_linux(
    guests: LabGuests,
    host: str,
    ip: str,
    *,
    memory_mib: int = 256,
    network: str = "app-net",
    agent: bool = False,
    data_disk: bool = False,
    nic_filter: str = "",
    onboot_url: str = "",
    team: str = "",
) -> Guest:
    """A small Linux guest (the lab's kernel and initramfs) with its own IP; removed after the test.

    `agent`: the QEMU guest agent runs in it (its channel is defined); `data_disk`: a qcow2 data disk
    (vda, local pool) mounted at /data; `nic_filter`: a network filter on its NIC; `onboot_url`: the guest
    asks this URL once at boot and panics a few seconds later when it answers "panic N"."""
    name = f"{TEST_DOMAIN_PREFIX}linux-{uuid_lib.uuid4().hex[:6]}"
    guest_uuid = str(uuid_lib.uuid4())
    mac = random_mac()
    virt = "kvm" if guests.lab.get("kvm") else "qemu"
    cmdline = f"console=ttyS0 panic=-1 quiet ip={ip}::{GATEWAY}:255.255.255.0:{name}:eth0:off"
    disks, disk_info = "", []
    if data_disk:
        volume = f"{name}-vda.qcow2"
        path = guests.volume(host, "local", volume, "qcow2", 32)
        disks = (
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{escape(path)}'/>"
            "<target dev='vda' bus='virtio'/></disk>"
        )
        disk_info.append({"target": "vda", "path": path, "pool": "local", "format": "qcow2", "volume": volume})
        cmdline += " vmportal.data=vda"
    if onboot_url:
        cmdline += f" vmportal.onboot={onboot_url}"
    team_xml = (
        f"<metadata><vmportal:owner xmlns:vmportal='{METADATA_NS}'><vmportal:team>{escape(team)}"
        "</vmportal:team></vmportal:owner></metadata>"
        if team
        else ""
    )
    filt = f"<filterref filter='{escape(nic_filter)}'/>" if nic_filter else ""
    channel = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>" if agent else ""
    xml = (
        f"<domain type='{virt}'><name>{name}</name><uuid>{guest_uuid}</uuid>{team_xml}"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{BOOT_DIR}/vmlinux</kernel>"
        f"<initrd>{AGENT_INITRD if agent or data_disk or onboot_url else BOOT_DIR + '/initrd.img'}</initrd>"
        f"<cmdline>{escape(cmdline)}</cmdline></os>"
        f"<features><acpi/><apic/></features><on_crash>preserve</on_crash>"
        f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{disks}"
        f"<interface type='network'><mac address='{mac}'/><source network='{escape(network)}'/>"
        f"<model type='virtio'/>{filt}<rom enabled='no'/></interface><controller type='usb' model='none'/>"
        f"<serial type='pty'><target port='0'/></serial>"
        f"<console type='pty'><target type='serial' port='0'/></console>{channel}"
        f"<panic model='isa'/></devices></domain>"
    )
    dom = guests.conn(host).defineXML(xml)
    guest = Guest(name=name, uuid=guest_uuid, host=host, macs=[mac], disks=disk_info)
    guests.created.append(guest)
    dom.create()
    wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=90)
    return guest
