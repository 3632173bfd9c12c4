"""Dependencies: passthrough devices, identity, pinning, vTPM, application groups."""

from __future__ import annotations

from collections import defaultdict

from inventory.hypervisor.facts import parse_cpuset
from migrations_app.choices import Area, Severity

from .context import CheckContext
from .registry import DESTINATION, GUEST, Outcome, block, by_mode, passed, register, warn


@register("DEP-HOSTDEV", Area.DEPENDENCIES, needs=(GUEST,))
def hostdevs(ctx: CheckContext) -> Outcome:
    """PCI, USB or mediated devices passed through from the source host."""
    assert ctx.guest is not None  # noqa: S101
    devices = [{"type": d.type, "mode": d.mode, "address": d.address} for d in ctx.guest.domain.hostdevs]
    if not devices:
        return passed("The VM uses no passthrough devices.", devices)
    listed = ", ".join(f"{d['type']} {d['address']}".strip() for d in devices)
    return Outcome(
        by_mode(ctx.mode, Severity.BLOCK, Severity.WARN),
        f"The VM uses passthrough device(s) of the source host: {listed}. "
        + (
            "A live move cannot carry them."
            if ctx.mode == "live"
            else "The same devices must exist on the destination for the VM to start there."
        ),
        devices,
        None,
        "Detach the devices before moving, or make sure the destination has the same devices at the same addresses.",
    )


@register("DEP-IDENTITY", Area.DEPENDENCIES, needs=(GUEST,))
def identity(ctx: CheckContext) -> Outcome:
    """UUID and SMBIOS identity are preserved; host-derived SMBIOS data changes with the host."""
    assert ctx.guest is not None  # noqa: S101
    details = ctx.guest.details
    source = {"uuid": ctx.guest.uuid, "sysinfo": details.sysinfo, "smbios mode": details.smbios_mode or "emulate"}
    if details.smbios_mode == "host":
        return warn(
            "The VM shows the source host's SMBIOS data (smbios mode='host'); after the move it sees the "
            "destination's, which may invalidate licence keys tied to it.",
            source,
            None,
            "Check licences tied to hardware identity, or give the VM fixed <sysinfo> values.",
        )
    if details.sysinfo:
        return warn(
            "The VM carries its own SMBIOS identity (<sysinfo>); it moves with the definition, but software that "
            "ties licences to hardware may still notice the new host.",
            source,
            None,
            "Check licences tied to hardware identity before the move.",
        )
    return passed("The UUID is preserved and no host-specific identity is used.", source)


@register("DEP-PINNING", Area.DEPENDENCIES, needs=(GUEST, DESTINATION), destination=True)
def pinning(ctx: CheckContext) -> Outcome:
    """CPU pinning, NUMA and hugepage settings the destination can satisfy."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    details, facts = ctx.guest.details, ctx.dest_facts
    source = {
        "vcpupin": {str(v): c for v, c in details.vcpupins},
        "emulatorpin": details.emulatorpin,
        "numa nodeset": details.numa_nodeset,
        "hugepages KiB": list(details.hugepages),
    }
    destination = {"cpus": facts.cpus, "numa cells": facts.numa_cells, "page sizes KiB": list(facts.page_sizes)}
    if not (details.vcpupins or details.emulatorpin or details.numa_nodeset or details.hugepages):
        return passed("The VM uses no CPU pinning, NUMA or hugepage settings.", source, destination)
    problems = []
    cpus_used = set().union(*(parse_cpuset(c) for _v, c in details.vcpupins), parse_cpuset(details.emulatorpin))
    beyond = sorted(c for c in cpus_used if c >= facts.cpus)
    if beyond:
        problems.append(f"pins to CPU {', '.join(map(str, beyond))}, but {ctx.destination} has CPUs 0–{facts.cpus - 1}")
    nodes = sorted(n for n in parse_cpuset(details.numa_nodeset) if n >= facts.numa_cells)
    if nodes:
        problems.append(
            f"binds memory to NUMA node {', '.join(map(str, nodes))}, but {ctx.destination} has {facts.numa_cells}"
        )
    sizes = [s for s in details.hugepages if s and s not in facts.page_sizes]
    if sizes:
        problems.append(
            f"needs {', '.join(f'{s} KiB' for s in sizes)} huge pages, which {ctx.destination} does not offer"
        )
    if problems:
        return block(
            "The VM " + "; ".join(problems) + ".",
            source,
            destination,
            "Adjust the pinning to the destination's CPUs and NUMA nodes (or remove it), or pick a matching host.",
        )
    return passed("The destination can satisfy the VM's pinning and memory settings.", source, destination)


@register("DEP-TPM", Area.DEPENDENCIES, needs=(GUEST,))
def tpm(ctx: CheckContext) -> Outcome:
    """vTPM state present (disk-encryption keys and other secrets depend on it)."""
    assert ctx.guest is not None  # noqa: S101
    tpms = [{"model": t.model, "backend": t.backend} for t in ctx.guest.details.tpms]
    if not tpms:
        return passed("The VM has no TPM.", tpms)
    caps = ctx.dest_facts.domcaps.get(ctx.domain_virt_type) if ctx.dest_facts else None
    destination = {"backends": list(caps.tpm_backends) if caps else None}
    note = ""
    if any(t["backend"] == "passthrough" for t in tpms):
        note = " A passthrough TPM is the source host's chip: its secrets cannot move at all."
    elif caps is not None and any(t["backend"] not in caps.tpm_backends for t in tpms):
        note = " The destination does not offer this TPM backend."
    return warn(
        "The VM has a TPM; secrets sealed to it (e.g. disk-encryption keys) must survive the move." + note,
        tpms,
        destination,
        "Make sure recovery keys are at hand; for an emulated TPM its state is carried with the VM.",
    )


@register("DEP-GROUP", Area.DEPENDENCIES)
def group(ctx: CheckContext) -> Outcome:
    """VMs of one application group are not split across waves."""
    app = ctx.vm.application_group
    if not app:
        return passed("The VM belongs to no application group.")
    waves: dict[int, list[str]] = defaultdict(list)
    for item in ctx.env.items:
        other = item.vm.application_group
        if other == app:
            waves[item.wave].append(item.vm.name)
    evidence = {"app": app, "waves": {str(w): sorted(n) for w, n in sorted(waves.items())}}
    if len(waves) > 1:
        return warn(
            f"Application {app} is split across waves {', '.join(str(w) for w in sorted(waves))}; it runs on two "
            "hosts (and possibly across a network boundary) in between.",
            evidence,
            None,
            "Put the application's VMs in one wave, unless the split is intended.",
        )
    return passed(f"Every VM of application {app} in this plan moves in the same wave.", evidence)
