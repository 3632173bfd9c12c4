"""Network: NIC mappings, MAC clashes, interface types, network filters."""

from __future__ import annotations

from migrations_app.choices import Area, Severity

from .context import CheckContext
from .registry import DESTINATION, GUEST, OTHER_TEAMS, Outcome, block, by_mode, passed, register, warn

#: interface types that are tied to the source host's hardware or devices
HOST_BOUND_NIC_TYPES = frozenset({"direct", "hostdev", "vhostuser", "vdpa"})
MAPPABLE_NIC_TYPES = frozenset({"network", "bridge"})


@register("NET-MAPPED", Area.NETWORK, needs=(GUEST, DESTINATION), destination=True)
def mapped(ctx: CheckContext) -> Outcome:
    """Every NIC's network has a mapping to a destination network that exists and is active."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    nets = ctx.dest_facts.networks
    source, destination, problems = {}, {}, []
    for nic in ctx.guest.domain.nics:
        if nic.type not in MAPPABLE_NIC_TYPES:
            continue
        source[nic.mac] = nic.network or f"bridge {nic.bridge}"
        target = ctx.network_map.get(nic.mac, "")
        net = nets.get(target) if target else None
        destination[nic.mac] = {"network": target, "exists": net is not None, "active": bool(net and net.active)}
        if not target:
            problems.append(f"NIC {nic.mac} on {source[nic.mac]} has no destination network")
        elif net is None:
            problems.append(f"NIC {nic.mac} is mapped to {target}, which {ctx.destination} does not have")
        elif not net.active:
            problems.append(f"NIC {nic.mac} is mapped to {target}, which is not active on {ctx.destination}")
    available = sorted(n for n, f in nets.items() if f.active)
    if problems:
        return block(
            "; ".join(problems) + ".",
            source,
            {"mapping": destination, "networks": available},
            "Map each NIC to an active network of the destination (the plan's network mapping), or ask an admin "
            "to add a default mapping.",
        )
    if not source:
        return passed("The VM has no NICs on networks or bridges.", source, {"networks": available})
    return passed("Every NIC maps to an active destination network.", source, {"mapping": destination})


@register("NET-MAC", Area.NETWORK, needs=(GUEST, DESTINATION), destination=True)
def mac_clash(ctx: CheckContext) -> Outcome:
    """No domain on the destination already uses one of the VM's MACs."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    macs = {n.mac for n in ctx.guest.domain.nics if n.mac}
    clashes = {}
    index = ctx.env.host_index(ctx.dest_facts)
    for mac in macs:
        for dom in index.macs.get(mac, []):
            if dom.uuid != ctx.guest.uuid:  # the VM's own leftover definition is RES-NAME's concern
                clashes[mac] = dom.name
    if clashes:
        return block(
            f"MAC address already in use on {ctx.destination}: {', '.join(sorted(clashes))}.",
            sorted(macs),
            {"in use": sorted(clashes), OTHER_TEAMS: clashes},
            "Change the clashing MAC on one of the VMs, or pick another destination.",
        )
    return passed(
        "No domain on the destination uses the VM's MACs.",
        sorted(macs),
        {"domains checked": len(ctx.dest_facts.domains)},
    )


@register("NET-TYPE", Area.NETWORK, needs=(GUEST,))
def nic_types(ctx: CheckContext) -> Outcome:
    """Direct (macvtap), hostdev and vhost-user interfaces are tied to the source host."""
    assert ctx.guest is not None  # noqa: S101
    types = {n.mac: n.type for n in ctx.guest.domain.nics}
    bound = {mac: t for mac, t in types.items() if t in HOST_BOUND_NIC_TYPES}
    if not bound:
        return passed("Every NIC is on a network or bridge.", types)
    devs = {n.mac: n.source_dev for n in ctx.guest.domain.nics if n.mac in bound}
    listed = ", ".join(f"{mac} ({t}{' on ' + devs[mac] if devs[mac] else ''})" for mac, t in sorted(bound.items()))
    severity = by_mode(ctx.mode, Severity.BLOCK, Severity.WARN)
    return Outcome(
        severity,
        f"NIC {listed} uses the source host's own device; "
        + (
            "a live move cannot carry it."
            if ctx.mode == "live"
            else "it must exist under the same name on the destination."
        ),
        {"types": types, "devices": devs},
        None,
        "Move the NIC onto a libvirt network or bridge first, or check that the destination has the same device.",
    )


@register("NET-FILTER", Area.NETWORK, needs=(GUEST, DESTINATION), destination=True)
def filters(ctx: CheckContext) -> Outcome:
    """Each NIC's network filter (security policy) exists on the destination."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    wanted = {n.mac: n.filter for n in ctx.guest.domain.nics if n.filter}
    if not wanted:
        return passed("No NIC uses a network filter.", {})
    available = ctx.dest_facts.nwfilters
    if available is None:
        return warn(
            "Cannot decide: the destination cannot list its network filters.",
            wanted,
            None,
            "Check by hand that the filters exist on the destination.",
        )
    missing = sorted({f for f in wanted.values() if f not in available})
    if missing:
        return block(
            f"Network filter {', '.join(missing)} does not exist on {ctx.destination}; the VM's NICs would lose "
            "their security policy (libvirt refuses to start them).",
            wanted,
            {"filters": sorted(available)},
            "Define the same filter on the destination (virsh nwfilter-define) before moving.",
        )
    return passed("Every network filter exists on the destination.", wanted, {"filters": sorted(available)})
