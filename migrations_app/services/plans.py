"""Migration plans: creation, editing while in draft, audit requests, overrides and submission.

Every function here checks who may do it, validates against the inventory (never trusting ids from a
form), writes audit-log rows, and queues the audit job after commit. Any edit re-runs the audit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from inventory.choices import Reachability
from inventory.models import Disk, Host, Network, StoragePool, VirtualMachine
from inventory.permissions import is_admin
from migrations_app.backupplace import backup_pool_name
from migrations_app.choices import (
    EDITABLE_PLAN_STATES,
    ChangeType,
    Compression,
    Mode,
    NoConvergence,
    PlanStatus,
    Severity,
    TargetFormat,
)
from migrations_app.models import Audit, CheckResult, MigrationPlan, NetworkMapping, Override, PlanItem
from migrations_app.services import auditlog, planstate
from vmportal import access
from vmportal.access import Action
from vmportal.db import insert_many

MAX_PLAN_ITEMS = 500

OPTION_FIELDS = (
    "name",
    "mode",
    "change_type",
    "window_start",
    "window_end",
    "bandwidth_mib_s",
    "max_downtime_ms",
    "auto_converge",
    "postcopy_allowed",
    "on_no_convergence",
    "parallel_connections",
    "compression",
    "fresh_backup",
    "shutdown_timeout_s",
    "allow_force_off",
    "stop_on_failure",
)

# The bounds of the numeric plan options, read by the service, the browser form and the API serializer.
OPTION_RANGES: dict[str, tuple[int, int]] = {
    "bandwidth_mib_s": (1, 100_000),
    "max_downtime_ms": (10, 60_000),
    "parallel_connections": (1, 16),
    "shutdown_timeout_s": (5, 3600),
}


class PlanError(ValueError):
    """A request the rules refuse; the message says why and nothing was saved."""


# ---- defaults ---------------------------------------------------------------------------------


def mappings_to(destination: Host) -> dict[int, str]:
    """source network id → destination network name: the admins' mappings onto `destination`, read once
    per host object (an audit asks for every VM and every candidate host)."""
    cached: dict[int, str] | None = destination.__dict__.get("_vmportal_mappings")
    if cached is None:
        cached = {
            m.source_id: m.destination.name
            for m in NetworkMapping.objects.filter(destination_host=destination).select_related("destination")
        }
        destination.__dict__["_vmportal_mappings"] = cached
    return cached


def default_network_map(vm: VirtualMachine, destination: Host) -> dict[str, str]:
    """mac → destination network name: the admins' mapping, else a same-named network, else "" (unmapped)."""
    dest_networks = {n.name for n in destination.networks.all() if n.present}
    mappings = mappings_to(destination)
    result = {}
    for nic in vm.nics.all():
        mapped = mappings.get(nic.network_id) if nic.network_id else None
        if mapped is None and nic.source_network in dest_networks:
            mapped = nic.source_network
        result[nic.mac] = mapped or ""
    return result


def default_storage_map(vm: VirtualMachine, destination: Host) -> dict[str, dict[str, str]]:
    """disk target → {"pool", "format"}: shared pools stay put; local disks go to the same-named pool
    or the destination's local pool with the most free space (never the pool reserved for backups)."""
    reserved = backup_pool_name()
    pools = [p for p in destination.pools.all() if p.present and p.active and p.name != reserved]
    by_name = {p.name: p for p in pools}
    roomiest_local = max((p for p in pools if not p.shared), key=lambda p: p.available, default=None)
    result = {}
    for disk in vm.disks.all():
        if disk.device not in ("disk", "lun") or not disk.source:
            continue
        pool = disk.pool
        if pool is not None and pool.name in by_name and (pool.shared == by_name[pool.name].shared):
            target = pool.name
        elif roomiest_local is not None:
            target = roomiest_local.name
        else:
            target = ""
        result[disk.target] = {"pool": target, "format": TargetFormat.KEEP}
    return result


# ---- creating and editing ----------------------------------------------------------------------


def _vm_queryset(user: Any) -> Any:
    return (
        VirtualMachine.objects.visible_to(user)
        .present()
        .select_related("host", "team")
        .prefetch_related("nics", Prefetch("disks", queryset=Disk.objects.select_related("pool")))
    )


def offered_destinations() -> Any:
    """Hosts offered as destinations: enabled, not in maintenance, and not known to be unreachable."""
    return Host.objects.filter(enabled=True, maintenance=False).exclude(reachability=Reachability.UNREACHABLE)


def check_destination(destination: Host) -> None:
    """Refuse a destination that is disabled, in maintenance or known to be unreachable."""
    if not destination.enabled:
        raise PlanError(f"Host {destination.name} is disabled and cannot receive VMs.")
    if destination.maintenance:
        raise PlanError(f"Host {destination.name} is in maintenance and cannot receive VMs.")
    if destination.reachability == Reachability.UNREACHABLE:
        detail = f" ({destination.last_error})" if destination.last_error else ""
        raise PlanError(f"Host {destination.name} could not be reached at its last sync{detail}; choose another.")


def _clean_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(OPTION_FIELDS)
    if unknown:
        raise PlanError(f"Unknown plan option(s): {', '.join(sorted(unknown))}.")
    checks = {
        "mode": Mode.values,
        "change_type": ChangeType.values,
        "on_no_convergence": NoConvergence.values,
        "compression": Compression.values,
    }
    for key, allowed in checks.items():
        if key in options and options[key] not in allowed:
            raise PlanError(f"'{options[key]}' is not a valid {key.replace('_', ' ')}.")
    messages = {
        "bandwidth_mib_s": "The bandwidth limit must be between {} and {} MiB/s, or empty for no limit.",
        "max_downtime_ms": "The maximum downtime must be between {} ms and {} ms.",
        "parallel_connections": "Parallel connections must be between {} and {}.",
        "shutdown_timeout_s": "The shutdown timeout must be between {} s and {} s.",
    }
    for key, (low, high) in OPTION_RANGES.items():
        value = options.get(key)
        if value is not None and not (low <= int(value) <= high):
            raise PlanError(messages[key].format(low, high))
    start, end = options.get("window_start"), options.get("window_end")
    if (start is None) != (end is None):
        raise PlanError("A change window needs both a start and an end.")
    if start is not None and end <= start:
        raise PlanError("The change window must end after it starts.")
    if "name" in options and not str(options["name"]).strip():
        raise PlanError("Give the plan a name.")
    return options


def create_plan(
    requester: Any,
    *,
    vm_ids: Iterable[int],
    destinations: dict[int, int | None] | None = None,
    destination_id: int | None = None,
    max_items: int = MAX_PLAN_ITEMS,
    **options: Any,
) -> MigrationPlan:
    """Create a draft plan for VMs the requester may see, all of one team, and queue its audit.

    `destinations` maps vm id → host id (None: let the portal choose); `destination_id` applies one
    host to every VM.
    """
    _may_plan(requester)
    ids = list(dict.fromkeys(int(i) for i in vm_ids))
    if not ids:
        raise PlanError("Choose at least one VM.")
    if len(ids) > max_items:
        raise PlanError(f"A plan holds at most {max_items} VMs; split the move into several plans.")
    vms = list(_vm_queryset(requester).filter(pk__in=ids))
    if len(vms) != len(ids):
        raise PlanError("Some of the chosen VMs do not exist, are missing, or are not your team's.")
    teams = {vm.team_id for vm in vms}
    if None in teams or len(teams) != 1:
        raise PlanError("All VMs of a plan must belong to one team; VMs without a team need an admin first.")
    team = vms[0].team
    if not is_admin(requester) and not team.members.filter(pk=requester.pk).exists():
        raise PlanError("You can only plan moves of your own teams' VMs.")
    options.setdefault("name", f"Move {vms[0].name}" + (f" and {len(vms) - 1} more" if len(vms) > 1 else ""))
    _clean_options(options)
    wanted = dict(destinations or {})
    if destination_id is not None:
        wanted = {vm.pk: destination_id for vm in vms}
    host_ids = {h for h in wanted.values() if h is not None}
    hosts = Host.objects.in_bulk(host_ids)
    if len(hosts) != len(host_ids):
        raise PlanError("A chosen destination host does not exist.")
    hosts_full = {h.pk: h for h in Host.objects.filter(pk__in=host_ids).prefetch_related("networks", "pools")}
    with transaction.atomic():
        plan = MigrationPlan.objects.create(requester=requester, team=team, **options)
        items = []
        for vm in vms:
            dest = hosts_full.get(wanted.get(vm.pk))  # type: ignore[arg-type]
            if dest is not None:
                check_destination(dest)
                if dest.pk == vm.host_id:
                    raise PlanError(f"{vm.name} is already on {dest.name}; choose another destination.")
            items.append(
                PlanItem(
                    plan=plan,
                    vm=vm,
                    source=vm.host,
                    destination=dest,
                    destination_auto=dest is None,
                    network_map=default_network_map(vm, dest) if dest else {},
                    storage_map=default_storage_map(vm, dest) if dest else {},
                )
            )
        # one statement, however many VMs (nothing below needs the items' ids)
        insert_many(PlanItem, items, [f.name for f in PlanItem._meta.concrete_fields if not f.primary_key])
        auditlog.record(requester, "plan.create", plan, after={"vms": [vm.name for vm in vms], **_option_values(plan)})
        request_audit(plan, reason="create", actor=requester)
    return plan


def _may_plan(user: Any) -> None:
    access.require(user, Action.PLAN_CREATE)


def _option_values(plan: MigrationPlan) -> dict[str, Any]:
    values = {key: getattr(plan, key) for key in OPTION_FIELDS}
    for key in ("window_start", "window_end"):
        if values[key] is not None:
            values[key] = values[key].isoformat()
    return values


def _editable(actor: Any, plan: MigrationPlan) -> None:
    access.require(actor, Action.PLAN_EDIT, plan)
    if plan.status not in EDITABLE_PLAN_STATES:
        raise PlanError(f"The plan is {plan.get_status_display().lower()} and can no longer be edited.")


def update_options(actor: Any, plan: MigrationPlan, **options: Any) -> MigrationPlan:
    _editable(actor, plan)
    _clean_options(options)
    with transaction.atomic():
        before = _option_values(plan)
        for key, value in options.items():
            setattr(plan, key, value)
        plan.save()
        auditlog.record(actor, "plan.update", plan, before=before, after=_option_values(plan))
        request_audit(plan, reason="edit", actor=actor)
    return plan


def update_item(
    actor: Any,
    item: PlanItem,
    *,
    destination_id: int | None = None,
    choose_destination: bool = False,
    network_map: dict[str, str] | None = None,
    storage_map: dict[str, dict[str, str]] | None = None,
    wave: int | None = None,
) -> PlanItem:
    """Change an item's destination or mappings; only destination networks and pools are accepted."""
    plan = item.plan
    _editable(actor, plan)
    before = {"destination": item.destination_id, "network_map": item.network_map, "storage_map": item.storage_map}
    with transaction.atomic():
        if choose_destination:
            item.destination, item.destination_auto, item.network_map, item.storage_map = None, True, {}, {}
        elif destination_id is not None and destination_id != item.destination_id:
            dest = Host.objects.filter(pk=destination_id).first()
            if dest is None:
                raise PlanError("That destination host does not exist.")
            check_destination(dest)
            if dest.pk == item.vm.host_id:
                raise PlanError(f"{item.vm.name} is already on {dest.name}.")
            item.destination, item.destination_auto = dest, False
            item.network_map = default_network_map(item.vm, dest)
            item.storage_map = default_storage_map(item.vm, dest)
        if network_map is not None:
            item.network_map = _clean_network_map(item, network_map)
        if storage_map is not None:
            item.storage_map = _clean_storage_map(item, storage_map)
        if wave is not None:
            if not 1 <= int(wave) <= 100:
                raise PlanError("Waves are numbered 1 to 100.")
            item.wave = int(wave)
        item.save()
        auditlog.record(
            actor,
            "plan.item.update",
            plan,
            before=before,
            after={
                "destination": item.destination_id,
                "network_map": item.network_map,
                "storage_map": item.storage_map,
            },
        )
        request_audit(plan, reason="edit", actor=actor)
    return item


def _clean_network_map(item: PlanItem, wanted: dict[str, str]) -> dict[str, str]:
    if item.destination is None:
        raise PlanError("Choose a destination before mapping networks.")
    macs = set(item.vm.nics.values_list("mac", flat=True))
    if set(wanted) - macs:
        raise PlanError("The network mapping names a NIC this VM does not have.")
    allowed = set(Network.objects.filter(host=item.destination, present=True).values_list("name", flat=True))
    for network in wanted.values():
        if network not in allowed:
            raise PlanError(f"'{network}' is not a network of {item.destination.name}.")
    return {**item.network_map, **wanted}


def _clean_storage_map(item: PlanItem, wanted: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    if item.destination is None:
        raise PlanError("Choose a destination before mapping storage.")
    targets = set(item.vm.disks.values_list("target", flat=True))
    if set(wanted) - targets:
        raise PlanError("The storage mapping names a disk this VM does not have.")
    pools = set(StoragePool.objects.filter(host=item.destination, present=True).values_list("name", flat=True))
    result = dict(item.storage_map)
    for target, choice in wanted.items():
        if not isinstance(choice, dict) or choice.get("pool") not in pools:
            raise PlanError(f"Disk {target}: choose a storage pool of {item.destination.name}.")
        if choice.get("format", TargetFormat.KEEP) not in TargetFormat.values:
            raise PlanError(f"Disk {target}: the target format must be qcow2, raw or keep.")
        result[target] = {"pool": choice["pool"], "format": choice.get("format", TargetFormat.KEEP)}
    return result


# ---- audit, override, submit ----------------------------------------------------------------------


def request_audit(plan: MigrationPlan, reason: str = "edit", actor: Any = None) -> Audit:
    """Record a queued audit and run it on a worker after commit; the plan shows "auditing" until then."""
    from migrations_app import jobs

    with transaction.atomic():
        try:
            planstate.transition(plan, PlanStatus.AUDITING, actor=actor)
        except planstate.TransitionError as exc:
            raise PlanError(f"{exc} Only draft plans are audited on request.") from None
        audit = Audit.objects.create(plan=plan, reason=reason)
        transaction.on_commit(lambda: jobs.enqueue_audit(audit.pk))
    return audit


def reaudit(actor: Any, plan: MigrationPlan) -> Audit:
    """Run the audit again on request (draft plans; the plan's team and admins). Overrides belong to the
    audit they accepted, so a new audit needs a new override: the log and the result say so."""
    _editable(actor, plan)
    previous = latest_audit(plan)
    dropped = plan.overrides.filter(audit=previous).count() if previous else 0
    with transaction.atomic():
        audit = request_audit(plan, reason="request", actor=actor)
        auditlog.record(actor, "plan.reaudit", plan, after={"audit": audit.pk, "overrides_no_longer_apply": dropped})
    return audit


def latest_audit(plan: MigrationPlan) -> Audit | None:
    return plan.audits.order_by("-created_at", "-pk").first()


def uncovered_blocks(
    plan: MigrationPlan,
    audit: Audit,
    *,
    results: list[CheckResult] | None = None,
    overrides: list[Override] | None = None,
) -> list[CheckResult]:
    """The audit's blocks no override covers (`results` / `overrides`: the audit's results and the plan's
    overrides, when the caller has loaded them already)."""
    if overrides is None:
        overrides = list(plan.overrides.filter(audit=audit))
    covered = {tuple(pair) for o in overrides if o.audit_id == audit.pk for pair in o.covers}
    blocks = (
        [r for r in results if r.severity == Severity.BLOCK]
        if results is not None
        else audit.results.filter(severity=Severity.BLOCK)
    )
    return [r for r in blocks if (r.item_id, r.check_id) not in covered]


def record_override(admin: Any, plan: MigrationPlan, reason: str) -> Override:
    """An admin accepts the current audit's blocks, with a reason (audit-logged, shown to approvers)."""
    access.require(admin, Action.PLAN_OVERRIDE, plan)
    reason = reason.strip()
    if len(reason) < 10:
        raise PlanError("Explain the override in a sentence (at least 10 characters).")
    audit = latest_audit(plan)
    if audit is None or audit.status != "done":
        raise PlanError("Wait for the audit to finish before overriding it.")
    blocks = uncovered_blocks(plan, audit)
    if not blocks:
        raise PlanError("The latest audit has no blocks to override.")
    with transaction.atomic():
        override = Override.objects.create(
            plan=plan, audit=audit, admin=admin, reason=reason, covers=[[r.item_id, r.check_id] for r in blocks]
        )
        auditlog.record(admin, "plan.override", plan, after={"covers": override.covers}, comment=reason)
        planstate.transition_if(plan, PlanStatus.BLOCKED, PlanStatus.READY, actor=admin, reason="Blocks overridden.")
    return override


def submit(actor: Any, plan: MigrationPlan) -> MigrationPlan:
    """Send a ready plan to the approvers; a plan with uncovered blocks cannot be submitted."""
    _editable(actor, plan)
    audit = latest_audit(plan)
    if audit is None or audit.status != "done":
        raise PlanError("The audit has not finished yet; submit when it is done.")
    blocks = uncovered_blocks(plan, audit)
    if blocks:
        ids = ", ".join(sorted({r.check_id for r in blocks}))
        raise PlanError(f"The audit blocks this plan ({ids}); fix the causes or ask an admin for an override.")
    from migrations_app.services import approvals

    with transaction.atomic():
        required = approvals.required_approvers(plan)
        try:
            planstate.transition(
                plan,
                PlanStatus.PENDING_APPROVAL,
                actor=actor,
                expect=PlanStatus.READY,
                fields={"submitted_at": timezone.now(), "approvals_required": required},
                log={"audit": audit.pk, "change type": plan.change_type, "approvers needed": required},
            )
        except planstate.TransitionError as exc:
            raise PlanError(str(exc)) from None
        approvals.approve_if_standard(plan, audit)
    return plan


def plan_again(actor: Any, plan: MigrationPlan) -> MigrationPlan:
    """A new draft with the VMs, destinations and options of a plan that ended (sent back, rejected,
    failed…), for its team to adjust and submit again; the change window is left for them to choose."""
    from migrations_app.choices import TERMINAL_PLAN_STATES

    access.require(actor, Action.PLAN_EDIT, plan)
    if plan.status not in TERMINAL_PLAN_STATES:
        raise PlanError("Only a plan that has ended can be planned again; this one is still under way.")
    items = list(plan.items.all())
    options = {k: v for k, v in _option_values(plan).items() if k not in ("window_start", "window_end", "name")}
    return create_plan(
        actor,
        vm_ids=[i.vm_id for i in items],
        destinations={i.vm_id: None if i.destination_auto else i.destination_id for i in items},
        name=f"{plan.name} (again)"[:120],
        **options,
    )


def cancel(actor: Any, plan: MigrationPlan) -> MigrationPlan:
    """Cancel a plan in any state that is not final (a running plan: see scheduling.cancel_plan)."""
    from migrations_app.services import scheduling

    return scheduling.cancel_plan(actor, plan)
