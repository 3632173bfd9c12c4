"""Throw-away guests on the real lab, for tests that need a VM in a particular shape.

Tests talk to the lab daemons with libvirt-python directly (the portal itself goes through
inventory.hypervisor). Every guest and volume made here is removed afterwards from every lab host,
wherever the test left it, so tests do not depend on each other or on the demo guests.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid as uuid_lib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import libvirt
import pytest

from inventory.hypervisor.domxml import METADATA_NS

libvirt.registerErrorHandler(lambda _c, _e: None, None)


@dataclass
class DiskSpec:
    pool: str = "local"  # "local" or "shared"
    format: str = "qcow2"  # qcow2, raw, vmdk
    capacity_mib: int = 64
    target: str = "vda"
    bus: str = "virtio"
    cache: str = ""  # "", none, writeback…
    shareable: bool = False
    volume: str = ""  # use an existing volume name instead of creating one
    write_mib: int = 0  # bytes of data written into the image after creation (through a volume upload)


@dataclass
class NicSpec:
    network: str = "app-net"
    mac: str = ""
    model: str = "virtio"
    type: str = "network"  # network, direct…
    filter: str = ""


@dataclass
class Guest:
    name: str
    uuid: str
    host: str
    disks: list[dict[str, str]] = field(default_factory=list)
    macs: list[str] = field(default_factory=list)


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class LabGuests:
    """Create guests on lab hosts; `cleanup()` removes them and their volumes everywhere."""

    def __init__(self, lab: dict[str, Any]) -> None:
        self.lab = lab
        self.hosts = {h["name"]: h for h in lab["hosts"]}
        self._conns: dict[str, libvirt.virConnect] = {}
        self.created: list[Guest] = []
        self.volumes: list[tuple[str, str]] = []  # (pool name, volume name) on any host

    def conn(self, host: str) -> libvirt.virConnect:
        """A connection to the host, opened again when its daemon restarted since (a fault test stops it)."""
        cached = self._conns.get(host)
        if cached is not None:
            try:
                cached.getLibVersion()  # a round trip: a closed socket is only noticed on use
                return cached
            except libvirt.libvirtError:
                pass
            with contextlib.suppress(libvirt.libvirtError):
                cached.close()
        self._conns[host] = libvirt.open(self.hosts[host]["uri"])
        return self._conns[host]

    def volume(self, host: str, pool: str, name: str, fmt: str, capacity_mib: int) -> str:
        """Create a sparse volume through the pool; return its path."""
        p = self.conn(host).storagePoolLookupByName(pool)
        xml = (
            f"<volume><name>{escape(name)}</name><capacity unit='MiB'>{capacity_mib}</capacity>"
            f"<allocation>0</allocation><target><format type='{fmt}'/></target></volume>"
        )
        vol = p.createXML(xml, 0)
        self.volumes.append((pool, name))
        return vol.path()

    def fill(self, host: str, path: str, mib: int) -> None:
        """Write `mib` MiB of non-zero data at the start of a raw volume (so it is not sparse there)."""
        vol = self.conn(host).storageVolLookupByPath(path)
        stream = self.conn(host).newStream(0)
        vol.upload(stream, 0, mib * 1024 * 1024, 0)
        chunk = secrets.token_bytes(1024 * 1024)
        for _ in range(mib):
            stream.send(chunk)
        stream.finish()

    def define(
        self,
        host: str,
        *,
        name: str = "",
        memory_mib: int = 64,
        vcpus: int = 1,
        disks: list[DiskSpec] | None = None,
        nics: list[NicSpec] | None = None,
        team: str = "payments",
        start: bool = True,
        cpu_xml: str = "",
        devices_xml: str = "",
        domain_extra_xml: str = "",
        machine: str = "pc",
    ) -> Guest:
        name = name or f"{TEST_DOMAIN_PREFIX}{secrets.token_hex(3)}"
        guest_uuid = str(uuid_lib.uuid4())
        disk_xml, disk_info = [], []
        for i, d in enumerate(disks or []):
            target = d.target if i == 0 or d.target != "vda" else f"vd{chr(ord('a') + i)}"
            vol_name = d.volume or f"{name}-{target}.{d.format}"
            if d.volume:
                path = self.conn(host).storagePoolLookupByName(d.pool).storageVolLookupByName(d.volume).path()
            else:
                path = self.volume(host, d.pool, vol_name, d.format, d.capacity_mib)
                if d.write_mib:
                    self.fill(host, path, d.write_mib)
            cache = f" cache='{d.cache}'" if d.cache else ""
            disk_xml.append(
                f"<disk type='file' device='disk'><driver name='qemu' type='{d.format}'{cache}/>"
                f"<source file='{escape(path)}'/><target dev='{target}' bus='{d.bus}'/>"
                f"{'<shareable/>' if d.shareable else ''}</disk>"
            )
            disk_info.append({"target": target, "path": path, "pool": d.pool, "format": d.format, "volume": vol_name})
        nic_xml, macs = [], []
        for n in nics if nics is not None else [NicSpec()]:
            mac = n.mac or random_mac()
            macs.append(mac)
            filt = f"<filterref filter='{n.filter}'/>" if n.filter else ""
            if n.type == "network":
                source = f"<source network='{escape(n.network)}'/>"
            else:
                source = f"<source dev='{escape(n.network)}' mode='bridge'/>"
            nic_xml.append(
                f"<interface type='{n.type}'><mac address='{mac}'/>{source}<model type='{n.model}'/>"
                f"{filt}<rom enabled='no'/></interface>"
            )
        team_xml = (
            (
                f"<metadata><vmportal:owner xmlns:vmportal='{METADATA_NS}'><vmportal:team>{team}"
                f"</vmportal:team></vmportal:owner></metadata>"
            )
            if team
            else ""
        )
        virt = "kvm" if self.lab.get("kvm") else "qemu"
        xml = (
            f"<domain type='{virt}'><name>{escape(name)}</name><uuid>{guest_uuid}</uuid>{team_xml}"
            f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>"
            f"<os><type arch='x86_64' machine='{machine}'>hvm</type><boot dev='hd'/></os>{cpu_xml}"
            f"<features><acpi/><apic/></features><on_crash>preserve</on_crash>{domain_extra_xml}"
            f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{''.join(disk_xml)}{''.join(nic_xml)}"
            f"<controller type='usb' model='none'/>{devices_xml}</devices></domain>"
        )
        dom = self.conn(host).defineXML(xml)
        guest = Guest(name=name, uuid=guest_uuid, host=host, disks=disk_info, macs=macs)
        self.created.append(guest)
        if start:
            dom.create()
        return guest

    def where(self, guest: Guest) -> dict[str, str]:
        """host name → state string for every lab host that knows this guest's UUID."""
        found = {}
        for host in self.hosts:
            with contextlib.suppress(libvirt.libvirtError):
                state = self.conn(host).lookupByUUIDString(guest.uuid).state()[0]
                found[host] = "running" if state == libvirt.VIR_DOMAIN_RUNNING else str(state)
        return found

    def cleanup(self) -> None:
        for guest in self.created:
            for host in self.hosts:
                try:
                    dom = self.conn(host).lookupByUUIDString(guest.uuid)
                except libvirt.libvirtError:
                    continue
                remove_domain(dom)
        # backups a run took of these guests (migrations_app.engine.backup names them after the VM)
        prefixes = tuple(f"vmportal-backup-{g.name}-" for g in self.created)
        for host in self.hosts:
            for pool_name in ("local", "shared", "backup"):
                with contextlib.suppress(libvirt.libvirtError):
                    p = self.conn(host).storagePoolLookupByName(pool_name)
                    p.refresh(0)
                    for name in p.listVolumes():
                        if prefixes and name.startswith(prefixes):
                            with contextlib.suppress(libvirt.libvirtError):
                                p.storageVolLookupByName(name).delete(0)
        for pool, vol in self.volumes + [(d["pool"], d["volume"]) for g in self.created for d in g.disks]:
            for host in self.hosts:
                with contextlib.suppress(libvirt.libvirtError):
                    p = self.conn(host).storagePoolLookupByName(pool)
                    p.refresh(0)
                    p.storageVolLookupByName(vol).delete(0)
        for conn in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self._conns.clear()


#: every domain a test defines is named so (LabGuests.define, tests.engine.linux.define_linux)
TEST_DOMAIN_PREFIX = "t-"


def remove_domain(dom: libvirt.virDomain) -> None:
    """Stop whatever the domain does and remove it (a test's guest, or one a killed session left)."""
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def remove_leftovers(lab: dict[str, Any]) -> list[str]:
    """Destroy and undefine the test domains a killed session left on the lab hosts: a leftover Linux
    guest would still answer at the address the next test gives its own guest. Returns what went."""
    removed = []
    for host in lab["hosts"]:
        conn = libvirt.open(host["uri"])
        try:
            for dom in conn.listAllDomains():
                if not dom.name().startswith(TEST_DOMAIN_PREFIX):
                    continue
                remove_domain(dom)
                removed.append(f"{host['name']}:{dom.name()}")
        finally:
            conn.close()
    return removed


@pytest.fixture
def lab_guests(lab: dict[str, Any]) -> Iterator[LabGuests]:
    guests = LabGuests(lab)
    try:
        yield guests
    finally:
        guests.cleanup()
