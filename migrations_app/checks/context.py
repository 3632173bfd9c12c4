"""What a check sees: one item (VM, destination, mode, mappings) and the audit's shared facts.

`AuditEnvironment` is built once per audit (or per destination search): it holds the facts reader
(each host read once, through the adapter), and the database facts every item needs, each loaded
with one query for the whole plan — hosts, pools, approved inbound moves, other active plans,
disks shared with other VMs, backups. `CheckContext` is one item in one mode towards one
destination; its properties are cheap after the first item because everything is cached.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.utils import timezone

from inventory.choices import Reachability
from inventory.hypervisor import HypervisorError
from inventory.hypervisor.facts import CpuComparison, DomainSummary, FactsReader, GuestFacts, HostFacts
from inventory.hypervisor.types import DiskInfo
from inventory.models import Disk, Host, StoragePool, VirtualMachine
from migrations_app import rules
from migrations_app.backupplace import BackupPlace, choose, survives_host_loss
from migrations_app.choices import ACTIVE_PLAN_STATES, APPROVED_PLAN_STATES, TargetFormat
from migrations_app.models import ChangeFreeze, MigrationPlan, PlanItem, Prediction

from .registry import DESTINATION, GUEST, SOURCE

#: bytes kept free in a destination pool on top of the copied disks
SPACE_MARGIN_FRACTION = 0.05
SPACE_MARGIN_MIN = 256 * 1024 * 1024

#: formats a move can carry as they are; anything else needs conversion (a cold move)
NATIVE_FORMATS = frozenset({"qcow2", "raw"})


@dataclass(frozen=True)
class InboundMove:
    """A VM that an approved plan will bring onto a host."""

    plan_id: int
    plan_name: str
    vm_name: str
    memory: int
    vcpus: int


@dataclass
class PlanLoad:
    """Memory and vCPUs that a plan's items bring onto one host."""

    count: int = 0
    memory: int = 0
    vcpus: int = 0
    names: list[str] = field(default_factory=list)

    def add(self, item: PlanItem, sign: int) -> None:
        self.count += sign
        self.memory += sign * (item.vm.max_memory or item.vm.memory)
        self.vcpus += sign * item.vm.vcpus
        if sign > 0:
            self.names.append(item.vm.name)
        elif item.vm.name in self.names:
            self.names.remove(item.vm.name)

    def copy(self) -> PlanLoad:
        return PlanLoad(self.count, self.memory, self.vcpus, list(self.names))


@dataclass
class HostIndex:
    """Lookups over one host's domains, so per-item checks do not scan every domain each time."""

    macs: dict[str, list[DomainSummary]] = field(default_factory=dict)
    names: dict[str, list[DomainSummary]] = field(default_factory=dict)
    uuids: dict[str, DomainSummary] = field(default_factory=dict)
    running_vcpus: int = 0


@dataclass(frozen=True)
class BackupEvidence:
    """The recent verified backups of a VM (definition and disks), as BAK-RECENT shows them."""

    taken_at: datetime  # the newest
    location: str  # "host/pool" of the newest
    verified: bool = True
    #: the newest backup that survives the loss of the VM's host (another host or shared storage)
    safe_taken_at: datetime | None = None
    safe_location: str = ""

    @property
    def survives_host_loss(self) -> bool:
        return self.safe_taken_at is not None


def load_recent_backups(vm_ids: list[int], max_age_s: int) -> dict[int, BackupEvidence]:
    """The verified, ready backups younger than `max_age_s` of each VM that has one (one query): the
    newest, and the newest outside the VM's failure domain (`backupplace.survives_host_loss`).

    This is the one place BAK-RECENT learns about backups.
    """
    from migrations_app.models import Backup, BackupState

    since = timezone.now() - timedelta(seconds=max_age_s)
    newest: dict[int, tuple[datetime, str]] = {}
    safe: dict[int, tuple[datetime, str]] = {}
    rows = (
        Backup.objects.filter(vm_id__in=vm_ids, state=BackupState.READY, verified=True, created_at__gte=since)
        .order_by("vm_id", "-created_at", "-pk")
        .values("vm_id", "vm__host_id", "created_at", "host_id", "host__name", "pool", "on_shared_storage")
    )
    for row in rows:
        vm_id = row["vm_id"]
        here = (row["created_at"], f"{row['host__name'] or '?'}/{row['pool'] or '?'}")
        newest.setdefault(vm_id, here)
        if vm_id not in safe and survives_host_loss(row["host_id"], row["on_shared_storage"], row["vm__host_id"]):
            safe[vm_id] = here
    return {
        vm_id: BackupEvidence(
            taken_at=taken_at,
            location=location,
            safe_taken_at=safe[vm_id][0] if vm_id in safe else None,
            safe_location=safe[vm_id][1] if vm_id in safe else "",
        )
        for vm_id, (taken_at, location) in newest.items()
    }


def load_freezes(plan: MigrationPlan | None, items: list[PlanItem]) -> list[tuple[datetime, datetime]]:
    """The admins' change freezes that apply to the plan: global ones, its team's and its hosts'."""
    hosts = {i.source_id for i in items} | {i.destination_id for i in items if i.destination_id}
    team = plan.team_id if plan else None
    return [(f.start, f.end) for f in ChangeFreeze.objects.all() if f.applies(team, hosts)]


@dataclass(frozen=True)
class DiskMove:
    """One disk of the VM and where the item's storage map sends it."""

    disk: DiskInfo
    source_pool: str
    source_shared: bool
    destination_pool: str
    destination_shared: bool
    target_format: str

    @property
    def copied(self) -> bool:
        """Shared storage stays put (only memory moves); everything else is copied."""
        return rules.disk_copied(self.source_pool, self.source_shared, self.destination_pool, self.destination_shared)

    @property
    def final_format(self) -> str:
        if self.target_format and self.target_format != TargetFormat.KEEP:
            return self.target_format
        return self.disk.format or "raw"


class AuditEnvironment:
    """Shared facts of one audit. Database facts are loaded by `load`, host facts on first use."""

    def __init__(self, reader: FactsReader, plan: MigrationPlan | None = None, now: datetime | None = None) -> None:
        self.reader = reader
        self.plan = plan
        self.now = now or timezone.now()
        self.items: list[PlanItem] = []
        self.hosts: dict[int, Host] = {}
        self.pools: dict[tuple[int, str], StoragePool] = {}
        self.inbound: dict[int, list[InboundMove]] = defaultdict(list)
        self.busy: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.disk_users: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.backups: dict[int, BackupEvidence] = {}
        self.predictions: dict[int, dict[str, Prediction]] = {}
        self.host_errors: dict[int, str] = {}
        self.stale_hosts: set[int] = set()
        self._load_by_destination: dict[int, PlanLoad] | None = None
        self._host_index: dict[str, HostIndex] = {}
        self.inventory_max_age = int(getattr(settings, "INVENTORY_MAX_AGE", 600))
        self.backup_max_age = int(settings.BACKUP_MAX_AGE)
        self.freezes: list[tuple[datetime, datetime]] = list(getattr(settings, "CHANGE_FREEZES", []))

    # -- database facts, one query each --

    def load(self, vms: list[VirtualMachine], items: list[PlanItem] | None = None) -> None:
        self.items = list(items or [])
        self._load_by_destination = None
        # networks and pools with the hosts: destination choice maps every VM onto every candidate host
        self.hosts = {h.pk: h for h in Host.objects.prefetch_related("networks", "pools")}
        self.pools = {(p.host_id, p.name): p for p in StoragePool.objects.filter(present=True)}
        vm_ids = [vm.pk for vm in vms]
        approved = PlanItem.objects.filter(plan__status__in=APPROVED_PLAN_STATES, destination__isnull=False)
        if self.plan is not None:
            approved = approved.exclude(plan=self.plan)
        for row in approved.values(
            "destination_id",
            "plan_id",
            "plan__name",
            "plan__window_start",
            "plan__window_end",
            "vm__name",
            "vm__host_id",
            "vm__memory",
            "vm__max_memory",
            "vm__vcpus",
        ):
            if row["vm__host_id"] == row["destination_id"]:
                continue  # already there: its memory is no longer free on the destination
            if not self._same_window(row["plan__window_start"], row["plan__window_end"]):
                continue
            self.inbound[row["destination_id"]].append(
                InboundMove(
                    plan_id=row["plan_id"],
                    plan_name=row["plan__name"],
                    vm_name=row["vm__name"],
                    memory=row["vm__max_memory"] or row["vm__memory"],
                    vcpus=row["vm__vcpus"],
                )
            )
        others = PlanItem.objects.filter(vm_id__in=vm_ids, plan__status__in=ACTIVE_PLAN_STATES)
        if self.plan is not None:
            others = others.exclude(plan=self.plan)
        for other in others.values("vm_id", "plan_id", "plan__name", "plan__status"):
            self.busy[other["vm_id"]].append(
                {"plan": other["plan_id"], "name": other["plan__name"], "status": other["plan__status"]}
            )
        self.backups = load_recent_backups(vm_ids, self.backup_max_age)
        self.freezes = list(getattr(settings, "CHANGE_FREEZES", [])) + load_freezes(self.plan, self.items)

    def load_disk_users(self, paths: set[str]) -> None:
        """Which VMs use these disk images (for shareable disks)."""
        if not paths:
            return
        for row in Disk.objects.filter(source__in=paths, vm__present=True).values("source", "vm_id", "vm__name"):
            self.disk_users[row["source"]].append((row["vm_id"], row["vm__name"]))

    def _same_window(self, start: datetime | None, end: datetime | None) -> bool:
        """Approved moves count against a destination unless both windows are set and do not overlap."""
        if self.plan is None or None in (start, end, self.plan.window_start, self.plan.window_end):
            return True
        assert start is not None and end is not None  # noqa: S101  (narrowing for the type checker)
        return start < self.plan.window_end and self.plan.window_start < end  # type: ignore[operator]

    # -- host facts, read once per host --

    def host_facts(self, host: Host | None) -> HostFacts | None:
        if host is None or host.pk in self.host_errors:
            return None
        try:
            return self.reader.host(host.uri)
        except HypervisorError as exc:
            self.host_errors[host.pk] = exc.message
            return None

    def guest_facts(self, vm: VirtualMachine) -> GuestFacts | None:
        if self.host_facts(vm.host) is None:
            return None
        try:
            return self.reader.guest(vm.host.uri, str(vm.uuid))
        except HypervisorError as exc:
            self.host_errors[vm.host_id] = exc.message
            return None

    def backup_place(self, vm: VirtualMachine, disks_shared: bool) -> BackupPlace:
        """Where a fresh backup of `vm` would go (the engine's rule, over the loaded pools)."""
        usable = {pk for pk, h in self.hosts.items() if h.enabled and h.reachability != Reachability.UNREACHABLE}
        return choose(vm.host_id, disks_shared, [p for p in self.pools.values() if p.active], usable)

    def pool_shared(self, host_id: int, name: str) -> bool:
        pool = self.pools.get((host_id, name))
        return bool(pool and pool.shared)

    def inbound_to(self, host_id: int) -> list[InboundMove]:
        return self.inbound.get(host_id, [])

    def plan_load_to(self, host_id: int, exclude_item: PlanItem | None) -> PlanLoad:
        """What the other items of this plan bring onto a host (totals per host are computed once:
        plans have hundreds of items)."""
        if self._load_by_destination is None:
            index: dict[int, PlanLoad] = defaultdict(PlanLoad)
            for i in self.items:
                if i.destination_id is not None and i.vm.host_id != i.destination_id:
                    index[i.destination_id].add(i, 1)
            self._load_by_destination = index
        load = self._load_by_destination.get(host_id, PlanLoad())
        if exclude_item is not None and exclude_item.destination_id == host_id and exclude_item.vm.host_id != host_id:
            load = load.copy()
            load.add(exclude_item, -1)
        return load

    def destinations_changed(self) -> None:
        self._load_by_destination = None

    def destination_chosen(self, item: PlanItem) -> None:
        """An item that had no destination got one: its load joins that host's total (no rebuild, which
        would cost a pass over every item for every choice)."""
        if self._load_by_destination is None:
            return
        if item.destination_id is not None and item.vm.host_id != item.destination_id:
            self._load_by_destination[item.destination_id].add(item, 1)

    def host_index(self, facts: HostFacts) -> HostIndex:
        """MACs, names and running vCPUs of a host's domains, computed once per host."""
        if facts.uri not in self._host_index:
            index = HostIndex()
            for dom in facts.domains:
                index.names.setdefault(dom.name, []).append(dom)
                index.uuids[dom.uuid] = dom
                for mac in dom.macs:
                    index.macs.setdefault(mac, []).append(dom)
                if dom.active:
                    index.running_vcpus += dom.vcpus
            self._host_index[facts.uri] = index
        return self._host_index[facts.uri]


@dataclass
class CheckContext:
    """One VM, one destination, one mode."""

    env: AuditEnvironment
    vm: VirtualMachine
    mode: str
    destination: Host | None
    item: PlanItem | None = None
    network_map: dict[str, str] = field(default_factory=dict)
    storage_map: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def plan(self) -> MigrationPlan | None:
        return self.env.plan

    @property
    def source(self) -> Host:
        return self.vm.host

    @cached_property
    def source_facts(self) -> HostFacts | None:
        return self.env.host_facts(self.source)

    @cached_property
    def dest_facts(self) -> HostFacts | None:
        return self.env.host_facts(self.destination)

    @cached_property
    def guest(self) -> GuestFacts | None:
        return self.env.guest_facts(self.vm)

    def missing(self, needs: frozenset[str]) -> str:
        """Why the facts a check needs are not available ("" when they are)."""
        if SOURCE in needs or GUEST in needs:
            if self.source_facts is None:
                error = self.env.host_errors.get(self.source.pk, "")
                return f"the source host {self.source.name} could not be read ({error})."
        if GUEST in needs and self.guest is None:
            return f"{self.vm.name} is not defined on {self.source.name} any more; re-sync the inventory."
        if DESTINATION in needs:
            if self.destination is None:
                return "no destination host is chosen."
            if self.dest_facts is None:
                error = self.env.host_errors.get(self.destination.pk, "")
                return f"the destination host {self.destination.name} could not be read ({error})."
        return ""

    # -- derived facts --

    @property
    def domain_virt_type(self) -> str:
        return (self.guest.domain.virt_type if self.guest else self.vm.virt_type) or "qemu"

    @property
    def vm_memory(self) -> int:
        if self.guest is not None:
            return self.guest.domain.max_memory or self.guest.domain.memory
        return self.vm.max_memory or self.vm.memory

    @property
    def vm_vcpus(self) -> int:
        return self.guest.domain.vcpus if self.guest is not None else self.vm.vcpus

    @cached_property
    def disks(self) -> list[DiskMove]:
        """Disks (not CD-ROMs) with their source pool and where the storage map sends them."""
        assert self.guest is not None  # noqa: S101  (checks using this declare GUEST)
        moves = []
        for disk in self.guest.domain.disks:
            if disk.device not in ("disk", "lun") or not disk.source:
                continue
            choice = self.storage_map.get(disk.target) or {}
            dest_pool = rules.destination_pool(self.storage_map, disk.target, disk.pool)
            dest_id = self.destination.pk if self.destination else 0
            moves.append(
                DiskMove(
                    disk=disk,
                    source_pool=disk.pool,
                    source_shared=self.env.pool_shared(self.source.pk, disk.pool) if disk.pool else False,
                    destination_pool=dest_pool,
                    destination_shared=self.env.pool_shared(dest_id, dest_pool) if dest_pool else False,
                    target_format=choice.get("format", TargetFormat.KEEP),
                )
            )
        return moves

    def compare_cpu(self, cpu_xml: str) -> CpuComparison:
        assert self.destination is not None  # noqa: S101
        arch = self.guest.domain.arch if self.guest else self.vm.arch
        return self.env.reader.compare_cpu(self.destination.uri, cpu_xml, arch, self.domain_virt_type)

    def predictions(self) -> dict[str, Prediction]:
        return self.env.predictions.get(self.item.pk, {}) if self.item is not None else {}
