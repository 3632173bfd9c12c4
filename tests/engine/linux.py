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

from tests.labguests import Guest, LabGuests, random_mac

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


def define_linux(guests: LabGuests, host: str, ip: str, *, memory_mib: int = 256, network: str = "app-net") -> Guest:
    """A small Linux guest (the lab's kernel and initramfs) with its own IP; removed after the test."""
    name = f"t-linux-{uuid_lib.uuid4().hex[:6]}"
    guest_uuid = str(uuid_lib.uuid4())
    mac = random_mac()
    virt = "kvm" if guests.lab.get("kvm") else "qemu"
    xml = (
        f"<domain type='{virt}'><name>{name}</name><uuid>{guest_uuid}</uuid>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{BOOT_DIR}/vmlinux</kernel>"
        f"<initrd>{BOOT_DIR}/initrd.img</initrd>"
        f"<cmdline>console=ttyS0 panic=-1 quiet ip={ip}::{GATEWAY}:255.255.255.0:{name}:eth0:off</cmdline></os>"
        f"<features><acpi/><apic/></features><on_crash>preserve</on_crash>"
        f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
        f"<interface type='network'><mac address='{mac}'/><source network='{escape(network)}'/>"
        f"<model type='virtio'/><rom enabled='no'/></interface><controller type='usb' model='none'/>"
        f"<serial type='pty'><target port='0'/></serial><panic model='isa'/></devices></domain>"
    )
    dom = guests.conn(host).defineXML(xml)
    guest = Guest(name=name, uuid=guest_uuid, host=host, macs=[mac])
    guests.created.append(guest)
    dom.create()
    wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=90)
    return guest
