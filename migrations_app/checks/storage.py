"""Storage: shared or copied disks, space, cache modes, shareable disks, backing chains, snapshots,
removable media and running jobs."""

from __future__ import annotations

from collections import defaultdict

from migrations_app.choices import Area

from .context import SPACE_MARGIN_FRACTION, SPACE_MARGIN_MIN, CheckContext
from .registry import DESTINATION, GUEST, Outcome, block, info, passed, register, warn
from .resources import _size

#: cache modes that keep a disk on shared storage consistent while two hosts have it open
SAFE_SHARED_CACHE = frozenset({"none", "directsync"})


@register("STO-SHARED", Area.STORAGE, needs=(GUEST,))
def shared(ctx: CheckContext) -> Outcome:
    """Per disk: shared storage (only memory moves) or local (the disk is copied)."""
    layout = {
        m.disk.target: {
            "pool": m.source_pool or "(outside any pool)",
            "shared": m.source_shared,
            "to": m.destination_pool,
            "copied": m.copied,
            "allocation": m.disk.allocation,
        }
        for m in ctx.disks
    }
    copied = [t for t, d in layout.items() if d["copied"]]
    if not layout:
        return passed("The VM has no disks; only memory moves.", layout)
    if not copied:
        return passed("Every disk is on shared storage; only memory moves.", layout)
    total = sum(m.disk.allocation or 0 for m in ctx.disks if m.copied)
    return info(
        f"{len(copied)} disk(s) ({', '.join(copied)}) on local storage will be copied (about {_size(total)} in use).",
        layout,
        {t: d["to"] for t, d in layout.items()},
    )


@register("STO-SPACE", Area.STORAGE, needs=(GUEST, DESTINATION), destination=True)
def space(ctx: CheckContext) -> Outcome:
    """The destination pools have room for the copied disks, plus a margin."""
    assert ctx.dest_facts is not None  # noqa: S101
    per_pool: dict[str, int] = defaultdict(int)
    unknown, source = [], {}
    for m in ctx.disks:
        if not m.copied:
            continue
        # qcow2 targets stay sparse: count what is written; raw targets may be preallocated: count the size
        size = m.disk.allocation if m.final_format == "qcow2" else m.disk.capacity
        if size is None:
            unknown.append(m.disk.target)
            continue
        source[m.disk.target] = {
            "capacity": m.disk.capacity,
            "allocation": m.disk.allocation,
            "format": m.final_format,
            "counted": size,
        }
        per_pool[m.destination_pool] += size
    if not per_pool and not unknown:
        return passed("No disk is copied.", source)
    destination, problems = {}, []
    for name, need in per_pool.items():
        pool = ctx.dest_facts.pools.get(name)
        margin = max(int(need * SPACE_MARGIN_FRACTION), SPACE_MARGIN_MIN)
        destination[name] = {
            "exists": pool is not None,
            "active": bool(pool and pool.active),
            "available": pool.available if pool else None,
            "needed": need,
            "margin": margin,
        }
        if pool is None or not pool.active:
            problems.append(f"pool {name or '(none)'} does not exist or is inactive on {ctx.destination}")
        elif pool.available < need + margin:
            problems.append(
                f"pool {name} has {_size(pool.available)} free; the copy needs {_size(need)} plus a {_size(margin)} margin"
            )
    if problems:
        return block(
            "Not enough room: " + "; ".join(problems) + ".",
            source,
            destination,
            "Map the disks to a pool with more room, convert them to sparse qcow2, or free space on the destination.",
        )
    if unknown:
        return warn(
            f"Cannot decide for disk {', '.join(unknown)}: its size is unknown (not a volume of a storage pool).",
            source,
            destination,
            "Put the image in a libvirt storage pool so its size can be read, or check the room by hand.",
        )
    return passed("The destination pools have room for the copied disks.", source, destination)


@register("STO-CACHE", Area.STORAGE, needs=(GUEST,), destination=True)
def cache(ctx: CheckContext) -> Outcome:
    """Live moves over shared storage need cache=none or directsync (libvirt refuses others as unsafe)."""
    modes = {m.disk.target: m.disk.cache or "default (writeback)" for m in ctx.disks if not m.copied}
    unsafe = {
        m.disk.target: modes[m.disk.target]
        for m in ctx.disks
        if not m.copied and not m.disk.readonly and not m.disk.shareable and m.disk.cache not in SAFE_SHARED_CACHE
    }
    if ctx.mode != "live":
        return passed("Cache modes do not matter for a cold move.", modes)
    if not unsafe:
        return passed("Every shared disk uses a cache mode that is safe for a live move.", modes)
    listed = ", ".join(f"{t} (cache={c})" for t, c in sorted(unsafe.items()))
    return block(
        f"Disk {listed} is on shared storage with host caching; libvirt refuses to move it live (unsafe migration).",
        modes,
        {"safe modes": sorted(SAFE_SHARED_CACHE)},
        "Set cache='none' on the disk (takes effect at the next VM restart) or move it cold.",
    )


@register("STO-SHAREABLE", Area.STORAGE, needs=(GUEST,))
def shareable(ctx: CheckContext) -> Outcome:
    """A disk shared with other VMs: those VMs move together or not at all."""
    shared_disks = [m.disk for m in ctx.disks if m.disk.shareable]
    if not shared_disks:
        return passed("No disk is shared with other VMs.")
    in_plan = {i.vm_id for i in ctx.env.items}
    users, outside = {}, {}
    for disk in shared_disks:
        others = [(vm_id, name) for vm_id, name in ctx.env.disk_users.get(disk.source, []) if vm_id != ctx.vm.pk]
        users[disk.target] = {"path": disk.source, "other vms": [name for _id, name in others]}
        missing = [name for vm_id, name in others if vm_id not in in_plan]
        if missing:
            outside[disk.target] = missing
    if outside:
        listed = "; ".join(f"{t} is also used by {', '.join(v)}" for t, v in sorted(outside.items()))
        return block(
            f"Shared disk: {listed}, which this plan does not move.",
            users,
            {"vms in this plan": sorted(i.vm.name for i in ctx.env.items)},
            "Add every VM that uses the shared disk to this plan, so they move together.",
        )
    return passed("Every VM using the shared disk moves in this plan.", users)


@register("STO-BACKING", Area.STORAGE, needs=(GUEST, DESTINATION), destination=True)
def backing(ctx: CheckContext) -> Outcome:
    """Backing chains are present on the destination or will be flattened."""
    assert ctx.dest_facts is not None  # noqa: S101
    chains = {m.disk.target: [b.path for b in m.disk.backing_chain] for m in ctx.disks if m.disk.backing_chain}
    if not chains:
        return passed("No disk has a backing file.")
    present = ctx.dest_facts.volume_paths()
    missing, flattened = {}, []
    for m in ctx.disks:
        if not m.disk.backing_chain:
            continue
        if m.copied or ctx.mode == "cold":
            flattened.append(m.disk.target)  # a copy or conversion writes one image with the chain merged
            continue
        absent = [b.path for b in m.disk.backing_chain if b.path not in present]
        if absent:
            missing[m.disk.target] = absent
    destination = {"missing": missing, "flattened": flattened}
    if missing:
        listed = "; ".join(f"{t} needs {', '.join(p)}" for t, p in sorted(missing.items()))
        return block(
            f"Backing files are not on the destination: {listed}.",
            chains,
            destination,
            "Put the backing files on shared storage, map the disk to a pool so it is copied (and flattened), "
            "or move the VM cold.",
        )
    if flattened:
        return info(f"Disk {', '.join(flattened)} will be flattened into one image.", chains, destination)
    return passed("Every backing file is present on the destination.", chains, destination)


@register("STO-SNAPSHOTS", Area.STORAGE, needs=(GUEST,))
def snapshots(ctx: CheckContext) -> Outcome:
    """The VM has snapshots (only the current state moves)."""
    assert ctx.guest is not None  # noqa: S101
    count = ctx.guest.snapshot_count
    if count == 0:
        return passed("The VM has no snapshots.", {"snapshots": 0})
    return warn(
        f"The VM has {count} snapshot(s); only its current state moves, the snapshots stay behind.",
        {"snapshots": count},
        None,
        "Delete or merge the snapshots you no longer need before moving; keep a backup of the others.",
    )


@register("STO-MEDIA", Area.STORAGE, needs=(GUEST, DESTINATION), destination=True)
def media(ctx: CheckContext) -> Outcome:
    """A CD-ROM or floppy points at a local file missing on the destination."""
    assert ctx.guest is not None and ctx.dest_facts is not None  # noqa: S101
    drives = {m.target: m.path for m in ctx.guest.details.media}
    loaded = {t: p for t, p in drives.items() if p}
    if not loaded:
        return passed("No CD-ROM or floppy has media inserted.", drives)
    present = ctx.dest_facts.volume_paths()
    missing = {t: p for t, p in loaded.items() if p not in present}
    if missing:
        listed = ", ".join(f"{t} ({p})" for t, p in sorted(missing.items()))
        return warn(
            f"Media not found in any storage pool of {ctx.destination}: {listed}.",
            loaded,
            {"missing": missing},
            "Eject the media, or copy the image to the same path (or a shared pool) on the destination.",
        )
    return passed("Every inserted medium is also on the destination.", loaded)


@register("STO-JOBS", Area.STORAGE, needs=(GUEST,))
def jobs(ctx: CheckContext) -> Outcome:
    """No active block job or other migration on the VM."""
    assert ctx.guest is not None  # noqa: S101
    guest = ctx.guest
    source = {"job": guest.job, "operation": guest.job_operation, "block jobs": guest.block_jobs}
    if guest.busy:
        parts = []
        if guest.job != "none":
            parts.append(f"a {guest.job_operation or guest.job} job")
        parts += [f"a block {kind} job on {target}" for target, kind in sorted(guest.block_jobs.items())]
        return block(
            f"The VM is busy: {', '.join(parts)}.",
            source,
            None,
            "Wait for the job to finish (or abort it) and run the audit again.",
        )
    job_notes = [n for n in guest.notes if n.startswith(("job", "block job"))]
    if job_notes:
        return warn(f"Cannot decide: {'; '.join(job_notes)}.", source)
    return passed("No job is running on the VM.", source)
