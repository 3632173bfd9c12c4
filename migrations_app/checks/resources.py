"""Resource provisioning: memory, vCPUs, host state, name and UUID clashes."""

from __future__ import annotations

from decimal import Decimal

from django.template.defaultfilters import filesizeformat

from inventory.choices import Reachability
from migrations_app.choices import Area

from .context import CheckContext
from .registry import DESTINATION, OTHER_TEAMS, Outcome, block, passed, register, warn

#: past this multiple of the overcommit ratio a destination is refused outright
CPU_HARD_LIMIT_FACTOR = 2


def _size(n: int) -> str:
    return str(filesizeformat(n)).replace("\xa0", " ")


@register("RES-MEM", Area.RESOURCES, needs=(DESTINATION,), destination=True)
def memory(ctx: CheckContext) -> Outcome:
    """Free memory on the destination, after its reserve and other approved inbound moves, covers the VM."""
    assert ctx.destination is not None and ctx.dest_facts is not None  # noqa: S101
    dest = ctx.destination
    need = ctx.vm_memory
    inbound = ctx.env.inbound_to(dest.pk)
    siblings = ctx.env.plan_load_to(dest.pk, ctx.item)
    inbound_bytes = sum(m.memory for m in inbound)
    sibling_bytes = siblings.memory
    free = ctx.dest_facts.memory_free
    left = free - dest.memory_reserve - inbound_bytes - sibling_bytes
    destination = {
        "free": free,
        "reserve": dest.memory_reserve,
        "approved inbound": {
            "count": len(inbound),
            "memory": inbound_bytes,
            OTHER_TEAMS: [{"plan": m.plan_name, "vm": m.vm_name, "memory": m.memory} for m in inbound],
        },
        "other items of this plan": {"count": siblings.count, "memory": siblings.memory, "vms": siblings.names[:20]},
        "available for this VM": left,
    }
    if need <= left:
        return passed(f"{dest} has {_size(left)} available for this VM's {_size(need)}.", {"memory": need}, destination)
    return block(
        f"{dest} has {_size(max(left, 0))} available ({_size(free)} free, minus a {_size(dest.memory_reserve)} reserve"
        f" and {_size(inbound_bytes + sibling_bytes)} for {len(inbound) + siblings.count} other inbound move(s)); "
        f"the VM needs {_size(need)}.",
        {"memory": need},
        destination,
        "Pick a destination with more free memory, move the VM in another window, or reduce its memory.",
    )


@register("RES-CPU", Area.RESOURCES, needs=(DESTINATION,), destination=True)
def vcpus(ctx: CheckContext) -> Outcome:
    """The destination's vCPU allocation stays within its overcommit ratio after the move."""
    assert ctx.destination is not None and ctx.dest_facts is not None  # noqa: S101
    dest, facts = ctx.destination, ctx.dest_facts
    index = ctx.env.host_index(facts)
    itself = index.uuids.get(str(ctx.vm.uuid))
    running = index.running_vcpus - (itself.vcpus if itself is not None and itself.active else 0)
    inbound = sum(m.vcpus for m in ctx.env.inbound_to(dest.pk))
    siblings = ctx.env.plan_load_to(dest.pk, ctx.item).vcpus
    total = running + inbound + siblings + ctx.vm_vcpus
    cpus = max(facts.cpus, 1)
    ratio = Decimal(total) / Decimal(cpus)
    limit = Decimal(dest.cpu_overcommit)
    hard = limit * CPU_HARD_LIMIT_FACTOR
    caps = facts.domcaps.get(ctx.domain_virt_type)
    destination = {
        "logical cpus": facts.cpus,
        "vcpus running": running,
        "vcpus approved inbound": inbound,
        "vcpus of other items": siblings,
        "ratio after move": float(round(ratio, 2)),
        "overcommit ratio": float(limit),
        "hard limit": float(hard),
        "max vcpus per guest": caps.max_vcpus if caps else None,
    }
    source = {"vcpus": ctx.vm_vcpus}
    if caps is not None and caps.max_vcpus and ctx.vm_vcpus > caps.max_vcpus:
        return block(
            f"The VM has {ctx.vm_vcpus} vCPUs; the destination's hypervisor allows at most {caps.max_vcpus}.",
            source,
            destination,
            "Reduce the VM's vCPUs or pick another destination.",
        )
    if ratio > hard:
        return block(
            f"After the move {dest} would run {total} vCPUs on {facts.cpus} CPUs ({ratio:.2f}:1), past the hard limit "
            f"of {hard:.2f}:1 (twice its overcommit ratio).",
            source,
            destination,
            "Pick a less loaded destination or reduce the VM's vCPUs.",
        )
    if ratio > limit:
        return warn(
            f"After the move {dest} would run {total} vCPUs on {facts.cpus} CPUs ({ratio:.2f}:1), over its overcommit "
            f"ratio of {limit:.2f}:1; guests may slow down.",
            source,
            destination,
            "Prefer a less loaded destination.",
        )
    return passed(f"{dest} stays at {ratio:.2f}:1 vCPUs per CPU (limit {limit:.2f}:1).", source, destination)


@register("RES-HOST", Area.RESOURCES, destination=True)
def hosts(ctx: CheckContext) -> Outcome:
    """The destination is enabled, reachable and not in maintenance; the source is reachable."""
    src, dest = ctx.source, ctx.destination
    problems = []
    source = {"host": src.name, "reachable": ctx.source_facts is not None}
    if ctx.source_facts is None:
        problems.append(f"the source {src} cannot be reached ({ctx.env.host_errors.get(src.pk, '')})")
    if dest is None:
        return _no_destination(ctx, source)
    destination = {
        "host": dest.name,
        "enabled": dest.enabled,
        "maintenance": dest.maintenance,
        "reachable": ctx.dest_facts is not None,
        "last known reachability": dest.reachability,
    }
    if not dest.enabled:
        problems.append(f"the destination {dest} is disabled")
    if dest.maintenance:
        problems.append(f"the destination {dest} is in maintenance")
    if ctx.dest_facts is None:
        problems.append(f"the destination {dest} cannot be reached ({ctx.env.host_errors.get(dest.pk, '')})")
    if problems:
        return block(
            problems[0][0].upper() + "; ".join(problems)[1:] + ".",
            source,
            destination,
            "Bring the host back (or end its maintenance) and run the audit again, or pick another destination.",
        )
    if dest.reachability == Reachability.UNREACHABLE:
        destination["note"] = "the last sync could not reach it; it answers now"
    return passed(f"{src} and {dest} are reachable; {dest} accepts VMs.", source, destination)


def _no_destination(ctx: CheckContext, source: dict[str, object]) -> Outcome:
    """No destination: say which check turned each host down, and give those checks' own advice."""
    rejected = list(getattr(ctx.item, "destination_rejections", None) or [])
    if ctx.item is not None and not ctx.item.destination_auto:
        return block("No destination host is chosen for this VM.", source, None, "Choose a destination host.")
    reasons, advice = [], []
    for entry in rejected:
        checks = entry.get("checks", [])
        why = "; ".join(sorted({f"{c['check']}: {c['message']}" for c in checks})) or entry.get("why", "")
        reasons.append(f"{entry['host']} — {why}")
        for c in checks:
            if c.get("remediation") and c["remediation"] not in advice:
                advice.append(c["remediation"])
        if entry.get("why", "").startswith("unreachable") and "Bring the unreachable hosts back." not in advice:
            advice.append("Bring the unreachable hosts back.")
    message = "No destination host passes the hard checks for this VM"
    message += (": " + " | ".join(reasons) + ".") if reasons else "; there is no other enabled host."
    return block(
        message,
        source,
        {"hosts turned down": rejected},
        " ".join(advice) + " Or choose a destination by hand." if advice else "Register or enable another host.",
    )


@register("RES-NAME", Area.RESOURCES, needs=(DESTINATION,), destination=True)
def names(ctx: CheckContext) -> Outcome:
    """No domain with the same name or UUID on the destination."""
    assert ctx.dest_facts is not None  # noqa: S101
    name = ctx.guest.name if ctx.guest else ctx.vm.name
    uuid = str(ctx.vm.uuid)
    index = ctx.env.host_index(ctx.dest_facts)
    found = {d.uuid: d for d in index.names.get(name, [])}
    if uuid in index.uuids:
        found[uuid] = index.uuids[uuid]
    clashes = [{"name": d.name, "uuid": d.uuid, "running": d.active} for d in found.values()]
    if clashes:
        what = "UUID" if any(c["uuid"] == uuid for c in clashes) else "name"
        return block(
            f"{ctx.destination} already has a domain with this VM's {what}"
            f"{' (running)' if any(c['running'] for c in clashes) else ''}.",
            {"name": name, "uuid": uuid},
            {"clashes": len(clashes), OTHER_TEAMS: clashes},
            "Rename or remove the other domain (an old copy of this VM?), or pick another destination.",
        )
    return passed("No domain on the destination has this name or UUID.", {"name": name, "uuid": uuid})
