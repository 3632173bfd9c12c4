"""Inventory sync: read a host through the adapter and make the database agree, idempotently.

Rules:
- VMs are keyed by UUID. A VM found on another host than its row says keeps its row; only `host`
  changes. An inactive copy of a VM that runs elsewhere (a cold move's retained source, a paused
  migration target) does not steal the row: the host is noted in `also_defined_on`.
- A paused transient domain that is the target of an incoming live migration is not the VM's home
  while the VM is known elsewhere: the copy that runs (or, for a stopped VM, its persistent
  definition) keeps the row until the move has finished.
- A VM no longer on its host is marked missing (`present=False`), never deleted.
- An unreachable host is marked so; its VMs keep their last known state.
- The number of queries does not grow with the number of VMs (bulk reads and writes only).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from inventory.choices import ACTIVE_STATES, Reachability, TeamSource
from inventory.hypervisor import DomainInfo, HostSnapshot, HypervisorError, NetworkInfo, PoolInfo, read_host
from inventory.models import NIC, Disk, Host, Network, StoragePool, Team, VirtualMachine

log = logging.getLogger(__name__)

VM_FIELDS = [
    "name",
    "host",
    "state",
    "state_reason",
    "persistent",
    "autostart",
    "virt_type",
    "vcpus",
    "memory",
    "max_memory",
    "cpu_mode",
    "cpu_model",
    "machine_type",
    "arch",
    "firmware",
    "title",
    "description",
    "has_guest_agent",
    "snapshot_count",
    "hostdevs",
    "team",
    "team_source",
    "team_tag",
    "present",
    "missing_since",
    "also_defined_on",
    "xml",
    "fingerprint",
    "last_seen_at",
]


# ---- bounds on what a hypervisor can make the portal store ------------------------------------------
# A host is not trusted to be reasonable: text and lists it reports are cut to these sizes, and what was
# cut says so in the stored value itself. Names and other short fields are cut to their column size.
MAX_XML_CHARS = 512 * 1024  # a domain's XML, the host's domain capabilities and CPU XML
MAX_TEXT_CHARS = 8 * 1024  # a VM's description
MAX_LIST_ITEMS = 256  # machine types, passthrough devices, a disk's backing chain
MAX_CHILDREN = 1024  # disks and NICs of one VM


def bounded_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" … [cut by vmportal: {len(text) - limit} more characters were not stored]"


def bounded_xml(xml: str, limit: int = MAX_XML_CHARS) -> str:
    if len(xml) <= limit:
        return xml
    return xml[:limit] + f"\n<!-- cut by vmportal: {len(xml) - limit} more characters were not stored -->"


def bounded_list(items: list[Any], limit: int = MAX_LIST_ITEMS) -> list[Any]:
    if len(items) <= limit:
        return items
    note = f"cut by vmportal: {len(items) - limit} more were not stored"
    return [*items[:limit], {"note": note} if items and isinstance(items[0], dict) else note]


def fit(instance: Any) -> Any:
    """Cut every string field of a model instance to its column size (a longer value would fail the write)."""
    for f in instance._meta.concrete_fields:
        if not isinstance(f, models.CharField):
            continue
        limit = f.max_length
        value = getattr(instance, f.attname, None)
        if limit and isinstance(value, str) and len(value) > limit:
            setattr(instance, f.attname, value[:limit])
    return instance


def _capped(what: str, vm: VirtualMachine, items: list[Any]) -> list[Any]:
    if len(items) > MAX_CHILDREN:
        log.warning("%s reports %d %s; only the first %d are stored", vm.name, len(items), what, MAX_CHILDREN)
    return items[:MAX_CHILDREN]


@dataclass
class SyncResult:
    host: str
    ok: bool
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    missing: int = 0
    elsewhere: int = 0
    elapsed_ms: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def fingerprint(domain: DomainInfo) -> str:
    """What sync compares to skip unchanged VMs: the XML plus the facts that live outside it."""
    h = hashlib.sha256(domain.xml.encode())
    h.update(
        f"|{domain.state}|{domain.state_reason}|{domain.persistent}|{domain.autostart}|{domain.snapshot_count}".encode()
    )
    for disk in domain.disks:
        h.update(f"|{disk.capacity}|{disk.allocation}|{disk.pool}".encode())
    return h.hexdigest()


def sync_host(host_id: int) -> SyncResult:
    """Read one host and store what it reports. Never raises for a host problem."""
    host = Host.objects.get(pk=host_id)
    started = time.monotonic()
    try:
        from inventory.services.hosts import check_uri

        check_uri(host.uri)  # the allow-list may have tightened since the host was registered
        snapshot = read_host(host.uri, timeout=settings.LIBVIRT_CONNECT_TIMEOUT)
    except HypervisorError as exc:
        log.warning("sync of %s failed: %s (%s)", host.name, exc.message, exc.raw)
        Host.objects.filter(pk=host.pk).update(
            reachability=Reachability.UNREACHABLE,
            last_error=exc.message,
            last_error_raw=exc.raw[:4000],
            last_sync_at=timezone.now(),
        )
        return SyncResult(host=host.name, ok=False, error=exc.message, elapsed_ms=_ms(started))
    result = apply_snapshot(host.pk, snapshot)
    result.elapsed_ms = _ms(started)
    Host.objects.filter(pk=host.pk).update(last_sync_ms=result.elapsed_ms)
    return result


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


@transaction.atomic
def apply_snapshot(host_id: int, snap: HostSnapshot) -> SyncResult:
    """Store one host's snapshot. Concurrent syncs of the same host are serialised by a row lock."""
    now = timezone.now()
    host = Host.objects.select_for_update().get(pk=host_id)
    _apply_host(host, snap, now)
    pools = _apply_named(host, StoragePool, snap.pools, _pool_values)
    networks = _apply_named(host, Network, snap.networks, _network_values)
    by_bridge = {n.bridge: n for n in networks.values() if n.bridge}
    result = SyncResult(host=host.name, ok=True)

    teams = {t.slug: t for t in Team.objects.all()}
    seen = [d.uuid for d in snap.domains]
    # In one read, without building a model instance for each: the VMs the host reports, the ones stored
    # as present on it (those it no longer reports are missing) and those with an inactive copy on it.
    rows = {
        str(row[1]): row
        for row in VirtualMachine.objects.filter(
            Q(uuid__in=seen) | Q(host=host, present=True) | Q(also_defined_on__contains=[host.name])
        ).values_list(*_ROW_FIELDS)
    }
    create: list[VirtualMachine] = []
    update: list[VirtualMachine] = []
    refresh_children: list[tuple[VirtualMachine, DomainInfo]] = []
    unchanged_ids: list[int] = []
    rest: list[tuple[DomainInfo, str]] = []

    for dom in snap.domains:
        fp = fingerprint(dom)
        row = rows.get(dom.uuid)
        if row is not None and _unchanged(row, dom, fp, host, teams):
            unchanged_ids.append(row[0])
            result.unchanged += 1
        else:
            rest.append((dom, fp))
    # The stored XML is only ever overwritten here, never read: leave it in the database.
    wanted = [rows[dom.uuid][0] for dom, _ in rest if dom.uuid in rows]
    existing = {str(vm.uuid): vm for vm in VirtualMachine.objects.filter(pk__in=wanted).defer("xml")} if wanted else {}

    for dom, fp in rest:
        vm = existing.get(dom.uuid)
        if dom.incoming_migration and (vm is None or vm.host_id != host.pk):
            # half of a live move in flight: where the VM was stays its home until the move ends
            result.elsewhere += 1
            continue
        if (
            vm is not None
            and vm.host_id != host.pk
            and vm.present
            and vm.state in ACTIVE_STATES
            and dom.state not in ACTIVE_STATES
        ):
            # Runs elsewhere; this is an inactive copy. Keep the row where it runs.
            if host.name not in vm.also_defined_on:
                vm.also_defined_on = [*vm.also_defined_on, host.name]
                update.append(vm)
            result.elsewhere += 1
            continue
        if vm is None:
            vm = VirtualMachine(uuid=dom.uuid, host=host)
            _fill(vm, dom, fp, host, teams, now)
            create.append(vm)
            refresh_children.append((vm, dom))
            result.created += 1
            continue
        also = [h for h in vm.also_defined_on if h != host.name]
        if vm.host_id != host.pk:
            result.moved += 1
            log.info("VM %s (%s) now on %s", dom.name, dom.uuid, host.name)
        vm.also_defined_on = also
        if vm.fingerprint != fp or not vm.present or vm.host_id != host.pk:
            refresh_children.append((vm, dom))
        _fill(vm, dom, fp, host, teams, now)
        update.append(vm)
        result.updated += 1

    VirtualMachine.objects.bulk_create(create)
    if update:
        VirtualMachine.objects.bulk_update(update, VM_FIELDS)
    if unchanged_ids:
        VirtualMachine.objects.filter(pk__in=unchanged_ids).update(last_seen_at=now)
    _replace_children(refresh_children, pools, networks, by_bridge, fresh={id(vm) for vm in create})

    reported = set(seen)
    unreported = [row for uuid, row in rows.items() if uuid not in reported]
    gone = [row[0] for row in unreported if row[2] == host.pk and row[3]]
    if gone:
        result.missing = VirtualMachine.objects.filter(pk__in=gone).update(present=False, missing_since=now)
    # Inactive copies that disappeared from this host.
    for pk, _uuid, _host, _present, _fp, also, *_ in unreported:
        if host.name in also:
            VirtualMachine.objects.filter(pk=pk).update(also_defined_on=[h for h in also if h != host.name])
    return result


def _apply_host(host: Host, snap: HostSnapshot, now: datetime) -> None:
    info = snap.host
    for field in (
        "hostname",
        "host_uuid",
        "arch",
        "cpu_model",
        "cpu_vendor",
        "cpu_xml",
        "cpus",
        "sockets",
        "cores",
        "threads",
        "memory_total",
        "memory_free",
        "hypervisor_type",
        "hypervisor_version",
        "libvirt_version",
        "virt_type",
        "machine_types",
        "domain_capabilities",
    ):
        setattr(host, field, getattr(info, field))
    host.cpu_xml = bounded_xml(host.cpu_xml)
    host.domain_capabilities = bounded_xml(host.domain_capabilities)
    host.machine_types = bounded_list(list(host.machine_types))
    fit(host)
    host.reachability = Reachability.REACHABLE
    host.last_error = ""
    host.last_error_raw = ""
    host.last_seen_at = now
    host.last_sync_at = now
    host.save()


def _pool_values(p: PoolInfo) -> dict[str, Any]:
    return {
        "uuid": p.uuid,
        "type": p.type,
        "target_path": p.target_path,
        "active": p.active,
        "shared_by_type": p.shared,
        "capacity": p.capacity,
        "allocation": p.allocation,
        "available": p.available,
        "present": True,
    }


def _network_values(n: NetworkInfo) -> dict[str, Any]:
    return {"uuid": n.uuid, "bridge": n.bridge, "forward_mode": n.forward_mode, "active": n.active, "present": True}


def _apply_named(host: Host, model: Any, items: list[Any], values: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Upsert the host's pools or networks by name; ones no longer reported are marked absent."""
    current = {obj.name: obj for obj in model.objects.filter(host=host)}
    changed, created = [], []
    for item in items:
        vals = values(item)
        obj = current.get(item.name)
        if obj is None:
            obj = fit(model(host=host, name=item.name, **vals))
            created.append(obj)
            current[item.name] = obj
        elif any(getattr(obj, k) != v for k, v in vals.items()):
            for k, v in vals.items():
                setattr(obj, k, v)
            changed.append(fit(obj))
    model.objects.bulk_create(created)
    if changed:
        model.objects.bulk_update(changed, list(values(items[0]).keys()))
    names = {i.name for i in items}
    if any(obj.present and name not in names for name, obj in current.items()):
        model.objects.filter(host=host, present=True).exclude(name__in=names).update(present=False)
    return {name: obj for name, obj in current.items() if name in names}


#: a stored VM as `_unchanged` reads it: (pk, uuid, host, present, fingerprint, also_defined_on, team, team_source)
_ROW_FIELDS = ("pk", "uuid", "host_id", "present", "fingerprint", "also_defined_on", "team_id", "team_source")


def _unchanged(row: tuple[Any, ...], dom: DomainInfo, fp: str, host: Host, teams: dict[str, Team]) -> bool:
    """Whether the stored VM already says everything this read of it does (then only last_seen_at moves)."""
    _pk, _uuid, host_id, present, stored_fp, also, team_id, team_source = row
    return (
        stored_fp == fp
        and host_id == host.pk
        and present
        and host.name not in also
        and _team(team_id, team_source, dom, teams) == (team_id, team_source)
    )


def _team_for(vm: VirtualMachine, dom: DomainInfo, teams: dict[str, Team]) -> tuple[int | None, str]:
    return _team(vm.team_id, vm.team_source, dom, teams)


def _team(team_id: int | None, team_source: str, dom: DomainInfo, teams: dict[str, Team]) -> tuple[int | None, str]:
    if team_source == TeamSource.ADMIN:
        return team_id, team_source
    team = teams.get(dom.team_tag) if dom.team_tag else None
    if team is not None:
        return team.pk, TeamSource.METADATA
    return None, TeamSource.NONE


def _fill(vm: VirtualMachine, dom: DomainInfo, fp: str, host: Host, teams: dict[str, Team], now: datetime) -> None:
    vm.name = dom.name[:255]
    vm.host = host
    vm.state = dom.state
    vm.state_reason = dom.state_reason
    vm.persistent = dom.persistent
    vm.autostart = dom.autostart
    vm.virt_type = dom.virt_type
    vm.vcpus = dom.vcpus
    vm.memory = dom.memory
    vm.max_memory = dom.max_memory
    vm.cpu_mode = dom.cpu_mode
    vm.cpu_model = dom.cpu_model
    vm.machine_type = dom.machine_type
    vm.arch = dom.arch
    vm.firmware = dom.firmware
    vm.title = dom.title[:255]
    vm.description = bounded_text(dom.description)
    vm.has_guest_agent = dom.has_guest_agent
    vm.snapshot_count = dom.snapshot_count
    vm.hostdevs = bounded_list([asdict(h) for h in dom.hostdevs])
    vm.team_tag = dom.team_tag[:100]
    team_id, source = _team_for(vm, dom, teams)
    vm.team_id = team_id
    vm.team_source = source
    vm.present = True
    vm.missing_since = None
    vm.xml = bounded_xml(dom.xml)
    vm.fingerprint = fp
    vm.last_seen_at = now
    fit(vm)


def _replace_children(
    items: list[tuple[VirtualMachine, DomainInfo]],
    pools: dict[str, StoragePool],
    networks: dict[str, Network],
    by_bridge: dict[str, Network],
    fresh: set[int],
) -> None:
    """Store the disks and NICs of `items` in place of their old ones (VMs in `fresh`, by id(), were just
    created and have none)."""
    if not items:
        return
    ids = [vm.pk for vm, _ in items if id(vm) not in fresh]
    if ids:
        Disk.objects.filter(vm_id__in=ids).delete()
        NIC.objects.filter(vm_id__in=ids).delete()
    disks, nics = [], []
    for vm, dom in items:
        for d in _capped("disks", vm, dom.disks):
            pool = pools.get(d.pool)
            disks.append(
                Disk(
                    vm=vm,
                    target=d.target,
                    bus=d.bus,
                    device=d.device,
                    source_type=d.source_type,
                    source=d.source[:1024],
                    pool=pool,
                    format=d.format,
                    cache=d.cache,
                    shareable=d.shareable,
                    readonly=d.readonly,
                    capacity=d.capacity,
                    allocation=d.allocation,
                    backing_chain=bounded_list([asdict(b) for b in d.backing_chain]),
                )
            )
        for order, n in enumerate(_capped("NICs", vm, dom.nics)):
            net = networks.get(n.network) if n.network else by_bridge.get(n.bridge)
            nics.append(
                NIC(
                    vm=vm,
                    mac=n.mac,
                    type=n.type,
                    model=n.model,
                    source_network=n.network,
                    source_bridge=n.bridge,
                    source_dev=n.source_dev,
                    network=net,
                    target_dev=n.target_dev,
                    filter=n.filter,
                    order=order,
                )
            )
    Disk.objects.bulk_create([fit(d) for d in disks])
    NIC.objects.bulk_create([fit(n) for n in nics])
