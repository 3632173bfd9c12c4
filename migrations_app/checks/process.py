"""Backup and process: recent backup, power state, other plans, change window and freezes, inventory age."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from migrations_app import rules
from migrations_app.choices import Area

from .context import CheckContext
from .registry import GUEST, Outcome, block, info, passed, register, warn

#: power states a live move can start from
LIVE_STATES = frozenset({"running", "paused", "blocked"})


@register("BAK-RECENT", Area.DEPENDENCIES)
def backup(ctx: CheckContext) -> Outcome:
    """A verified backup younger than the policy age exists, or the run takes one first."""
    found = ctx.env.backups.get(ctx.vm.pk)
    policy = {"max age s": ctx.env.backup_max_age}
    if found is not None:
        return passed(
            f"A verified backup from {found.taken_at:%Y-%m-%d %H:%M} exists.",
            {"taken at": found.taken_at.isoformat(), "location": found.location},
            policy,
        )
    if ctx.plan is not None and ctx.plan.fresh_backup:
        return passed("The run will take a verified backup first.", {"fresh backup": True}, policy)
    return block(
        "No verified backup known, and the plan does not take one.",
        {"fresh backup": False},
        policy,
        "Turn on 'take a verified backup before moving' in the plan options.",
    )


@register("PROC-STATE", Area.DEPENDENCIES, needs=(GUEST,))
def power_state(ctx: CheckContext) -> Outcome:
    """The power state fits the mode (a live move needs a running VM)."""
    assert ctx.guest is not None  # noqa: S101
    state = ctx.guest.state
    if ctx.mode == "live":
        if state in LIVE_STATES:
            return passed(f"The VM is {state}; it can move live.", {"state": state, "mode": "live"})
        return block(
            f"The VM is {state}; only a running VM can move live.",
            {"state": state, "mode": "live"},
            None,
            "Start the VM first, or move it cold.",
        )
    if state in ("crashed", "unknown", "nostate"):
        return warn(
            f"The VM is {state}; a cold move will shut it down and copy it as it is.",
            {"state": state, "mode": "cold"},
            None,
            "Find out why it is in this state before moving it.",
        )
    return passed(f"The VM is {state}; a cold move shuts it down first if needed.", {"state": state, "mode": "cold"})


@register("PROC-BUSY", Area.DEPENDENCIES)
def busy(ctx: CheckContext) -> Outcome:
    """The VM is not in another active plan."""
    others = ctx.env.busy.get(ctx.vm.pk, [])
    if not others:
        return passed("The VM is in no other active plan.")
    listed = ", ".join(f"'{o['name']}' ({o['status']})" for o in others)
    return block(
        f"The VM is already in another active plan: {listed}.",
        {"other plans": others},
        None,
        "Cancel or finish the other plan first, or remove the VM from this one.",
    )


def _overlaps(
    start: datetime, end: datetime, freezes: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    return [(a, b) for a, b in freezes if start < b and a < end]


@register("PROC-WINDOW", Area.DEPENDENCIES)
def window(ctx: CheckContext) -> Outcome:
    """The predicted duration fits the change window, and no freeze period applies."""
    plan, now = ctx.plan, ctx.env.now
    start = plan.window_start if plan else None
    end = plan.window_end if plan else None
    # only what is still ahead counts: a freeze that ended before now no longer matters
    span_start, span_end = (max(start, now), end) if start and end else (now, now)
    frozen = _overlaps(span_start, span_end, ctx.env.freezes) or [
        (a, b) for a, b in ctx.env.freezes if a <= span_start < b
    ]
    source: dict[str, Any] = {"window": [start.isoformat(), end.isoformat()] if start and end else None}
    destination = {"freezes": [[a.isoformat(), b.isoformat()] for a, b in ctx.env.freezes]}
    if frozen and plan is not None and plan.change_type == "emergency":
        a, b = frozen[0]
        return warn(
            f"The change falls in a change freeze ({a:%Y-%m-%d %H:%M} – {b:%Y-%m-%d %H:%M}); as an emergency change "
            "an approver may still run it, and it is reviewed afterwards.",
            source,
            destination,
            "Run it only if it cannot wait for the end of the freeze.",
        )
    if frozen:
        a, b = frozen[0]
        return block(
            f"The change {'window' if start else 'would run'} falls in a change freeze ({a:%Y-%m-%d %H:%M} – "
            f"{b:%Y-%m-%d %H:%M}).",
            source,
            destination,
            "Choose a window outside the freeze, or ask for an emergency change.",
        )
    if not (start and end):
        return info(
            "The plan has no change window; the move runs when it is approved and started.", source, destination
        )
    if end <= now:
        return warn(
            f"The change window ended at {end:%Y-%m-%d %H:%M}.", source, destination, "Choose a window in the future."
        )
    length = rules.window_left_s(start, end, now) or 0.0
    prediction = ctx.predictions().get(ctx.mode)
    predicted = prediction.duration_s if prediction is not None else None
    source["predicted s"] = predicted
    source["window s"] = round(length)
    fits = rules.fits_window(predicted, start, end, now)
    if predicted is None or fits is None:
        return info(f"The window leaves {length / 60:.0f} min; no prediction yet to compare with.", source, destination)
    if not fits:
        return warn(
            f"The move is predicted to take {predicted / 60:.1f} min; the window leaves {length / 60:.1f} min.",
            source,
            destination,
            "Widen the window, split the plan into waves, or raise the bandwidth limit.",
        )
    return passed(f"The predicted {predicted / 60:.1f} min fit the {length / 60:.0f} min window.", source, destination)


@register("PROC-FRESH", Area.DEPENDENCIES)
def freshness(ctx: CheckContext) -> Outcome:
    """Source and destination inventory are fresher than the policy age (else a re-sync is queued)."""
    max_age = ctx.env.inventory_max_age
    hosts = [h for h in (ctx.source, ctx.destination) if h is not None]
    ages = {}
    stale = []
    for host in hosts:
        age = (ctx.env.now - host.last_sync_at).total_seconds() if host.last_sync_at else None
        ages[host.name] = round(age) if age is not None else None
        if age is None or age > max_age:
            stale.append(host)
    source = {"last sync age s": ages.get(ctx.source.name)}
    destination = {"last sync age s": ages.get(ctx.destination.name) if ctx.destination else None, "policy s": max_age}
    if stale:
        ctx.env.stale_hosts.update(h.pk for h in stale)
        names = ", ".join(h.name for h in stale)
        return info(
            f"The inventory of {names} is older than {max_age // 60} min; a re-sync was queued. The audit itself read "
            "fresh facts from the hosts.",
            source,
            destination,
        )
    return passed("The inventory of both hosts is fresh.", source, destination)
