"""Hypervisor compatibility: disk formats, machine type, CPU, versions, architecture, firmware."""

from __future__ import annotations

from migrations_app.choices import Area, Severity

from .context import NATIVE_FORMATS, CheckContext
from .registry import DESTINATION, GUEST, SOURCE, Outcome, block, by_mode, info, passed, register, warn


@register("HC-FORMAT", Area.HYPERVISOR, needs=(GUEST,))
def disk_formats(ctx: CheckContext) -> Outcome:
    """Each disk's image format is usable as it is; foreign formats need a cold move with conversion."""
    formats = {m.disk.target: m.disk.format or "raw" for m in ctx.disks}
    foreign = {t: f for t, f in formats.items() if f not in NATIVE_FORMATS}
    destination = {
        "usable": sorted(NATIVE_FORMATS),
        "target formats": {m.disk.target: m.final_format for m in ctx.disks},
    }
    if not foreign:
        return passed("Every disk is qcow2 or raw.", formats, destination)
    listed = ", ".join(f"{t} ({f})" for t, f in sorted(foreign.items()))
    if ctx.mode == "live":
        return block(
            f"Disk {listed} is in a format a live move cannot carry; it must be converted in a cold move.",
            formats,
            destination,
            "Choose a cold move (the disk is converted to qcow2 or raw on the way) or convert the image first.",
        )
    return info(f"Disk {listed} will be converted during the cold move.", formats, destination)


@register("HC-MACHINE", Area.HYPERVISOR, needs=(GUEST, DESTINATION), destination=True)
def machine_type(ctx: CheckContext) -> Outcome:
    """The VM's machine type is offered by the destination."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    machine, arch = ctx.guest.domain.machine_type, ctx.guest.domain.arch
    offered = ctx.dest_facts.machines(arch)
    dest = {"arch": arch, "machine types": offered[:40]}
    if not machine:
        return warn("Cannot decide: the VM's definition names no machine type.", machine, dest)
    if machine in offered:
        return passed(f"The destination offers machine type {machine}.", machine, dest)
    return block(
        f"The destination's hypervisor does not offer machine type {machine} for {arch or 'this architecture'}.",
        machine,
        dest,
        "Pick a destination with the same or a newer QEMU, or change the VM's machine type to one both hosts offer.",
    )


def _host_cpu(facts: object) -> dict[str, object]:
    return {
        "model": getattr(facts, "cpu_model", ""),
        "vendor": getattr(facts, "cpu_vendor", ""),
        "features": sorted(getattr(facts, "cpu_features", ())),
    }


@register("HC-CPU", Area.HYPERVISOR, needs=(GUEST, SOURCE, DESTINATION), destination=True)
def cpu(ctx: CheckContext) -> Outcome:
    """The guest CPU definition is usable on the destination."""
    assert ctx.guest is not None and ctx.dest_facts is not None and ctx.source_facts is not None  # noqa: S101
    details = ctx.guest.details
    mode = ctx.guest.domain.cpu_mode or "none"
    fail = by_mode(ctx.mode, Severity.BLOCK, Severity.WARN)
    remedy = "Use a named CPU model both hosts support (or host-model on a stopped VM), or move it cold."
    if mode == "host-passthrough":
        src, dst = _host_cpu(ctx.source_facts), _host_cpu(ctx.dest_facts)
        caps = ctx.dest_facts.domcaps.get(ctx.domain_virt_type)
        if caps is not None and not caps.cpu_modes.get("host-passthrough", False):
            return Outcome(
                fail,
                f"The VM passes the host CPU through, and the destination cannot offer host-passthrough to "
                f"{ctx.domain_virt_type} guests.",
                {"mode": mode, "host cpu": src},
                {"host cpu": dst, "host-passthrough supported": False},
                remedy,
            )
        if src != dst:
            return Outcome(
                fail,
                "The VM passes the host CPU through, and the two hosts' CPUs differ; it may crash or refuse to "
                "run on the destination.",
                {"mode": mode, "host cpu": src},
                {"host cpu": dst},
                remedy,
            )
        if caps is None:
            return warn(
                "The hosts' CPUs are identical, but the destination does not say whether it offers host-passthrough.",
                {"mode": mode, "host cpu": src},
                {"host cpu": dst},
            )
        return passed("The VM passes the host CPU through, and both hosts' CPUs are identical.", {"mode": mode}, dst)
    if not details.cpu_xml:
        return passed("The VM has no CPU definition; the hypervisor's default model runs anywhere.", {"mode": mode})
    comparison = ctx.compare_cpu(details.cpu_xml)
    source = {"mode": mode, "model": ctx.guest.domain.cpu_model, "definition": details.cpu_xml}
    if comparison.result is None:
        return warn(
            f"Cannot decide: {comparison.reason}.",
            source,
            {"comparison": None, "host cpu": _host_cpu(ctx.dest_facts)},
            "Check the CPU model by hand or move the VM cold.",
        )
    if comparison.result == "incompatible":
        return Outcome(
            fail,
            f"The destination cannot provide the VM's CPU ({ctx.guest.domain.cpu_model or mode}).",
            source,
            {"comparison": comparison.result, "detail": comparison.reason, "host cpu": _host_cpu(ctx.dest_facts)},
            remedy,
        )
    return passed(
        f"The destination provides the VM's CPU ({comparison.result}).", source, {"comparison": comparison.result}
    )


@register("HC-VERSION", Area.HYPERVISOR, needs=(SOURCE, DESTINATION), destination=True)
def versions(ctx: CheckContext) -> Outcome:
    """The destination's libvirt and hypervisor are not older than the source's."""
    src, dst = ctx.source_facts, ctx.dest_facts
    assert src is not None and dst is not None  # noqa: S101
    source = {"hypervisor": f"{src.hypervisor_type} {src.hypervisor_version}", "libvirt": src.libvirt_version}
    destination = {"hypervisor": f"{dst.hypervisor_type} {dst.hypervisor_version}", "libvirt": dst.libvirt_version}
    problems = []
    if src.hypervisor_type != dst.hypervisor_type:
        problems.append(f"the destination runs {dst.hypervisor_type}, the source {src.hypervisor_type}")
    elif dst.hypervisor_version_number < src.hypervisor_version_number:
        problems.append(f"{dst.hypervisor_type} {dst.hypervisor_version} is older than {src.hypervisor_version}")
    if dst.libvirt_version_number < src.libvirt_version_number:
        problems.append(f"libvirt {dst.libvirt_version} is older than {src.libvirt_version}")
    if not problems:
        return passed("The destination's libvirt and hypervisor are as new as the source's.", source, destination)
    message = "Versions: " + "; ".join(problems) + "."
    if ctx.mode == "live":
        return block(
            message + " A running guest cannot move to an older hypervisor.",
            source,
            destination,
            "Upgrade the destination, pick another one, or move the VM cold.",
        )
    return info(message + " A cold move redefines the VM there.", source, destination)


@register("HC-ARCH", Area.HYPERVISOR, needs=(GUEST, DESTINATION), destination=True)
def architecture(ctx: CheckContext) -> Outcome:
    """Source and destination run the VM's architecture."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    arch = ctx.guest.domain.arch
    dst = ctx.dest_facts
    destination = {"host arch": dst.arch, "guest arches": sorted(dst.guest_arches)}
    if arch == dst.arch and ctx.domain_virt_type in dst.virt_types(arch):
        return passed(f"Both hosts are {arch}.", arch, destination)
    if arch != dst.arch:
        reason = f"The VM is {arch}; the destination host is {dst.arch}."
    else:
        reason = f"The destination runs no {ctx.domain_virt_type} guests of {arch}."
    return block(
        reason, {"arch": arch, "virt type": ctx.domain_virt_type}, destination, "Pick a host of the same architecture."
    )


@register("HC-FIRMWARE", Area.HYPERVISOR, needs=(GUEST, DESTINATION), destination=True)
def firmware(ctx: CheckContext) -> Outcome:
    """UEFI guests: the destination offers a matching loader; the NVRAM is carried."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    details = ctx.guest.details
    if ctx.guest.domain.firmware != "uefi":
        return passed("The VM boots with BIOS; no firmware files are needed.", {"firmware": "bios"})
    source = {
        "firmware": "uefi",
        "loader": details.loader or f"auto ({details.firmware_auto})",
        "nvram": details.nvram,
        "secure boot": details.secure_boot,
    }
    caps = ctx.dest_facts.domcaps.get(ctx.domain_virt_type)
    if caps is None:
        return warn(
            "Cannot decide: the destination does not report its firmware (no domain capabilities).",
            source,
            None,
            "Check by hand that the destination has the same UEFI firmware package.",
        )
    destination = {"loaders": list(caps.loader_values), "firmware": list(caps.firmware_values)}
    if details.loader:
        ok = details.loader in caps.loader_values
    else:
        ok = "efi" in caps.firmware_values
    if ok:
        return info("The destination offers the VM's UEFI loader; the NVRAM will be carried.", source, destination)
    return block(
        "The destination offers no matching UEFI loader, so the VM could not boot there.",
        source,
        destination,
        "Install the same UEFI firmware package (e.g. OVMF) on the destination, or pick another host.",
    )
