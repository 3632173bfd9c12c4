"""Waves of a plan: the planner (migrations_app.waves) fed with the audit's facts and predictions.

Called at the end of every audit, so the owner sees the waves and their predicted timeline before
submitting; the scheduler then starts wave k+1 only when wave k has ended (scheduling.start_next_wave).
Everything is read from what the audit already holds: no query per VM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from migrations_app.checks import AuditEnvironment
from migrations_app.models import MigrationPlan, PlanItem, Prediction
from migrations_app.waves import HostRoom, Move, WavePlan, plan_waves

#: a move without a predicted duration counts this long on the timeline
UNKNOWN_DURATION_S = 120.0


def _duration(item: PlanItem, predictions: list[Prediction]) -> float:
    chosen = next((p for p in predictions if p.mode == item.mode), None) or next(
        (p for p in predictions if p.recommended), None
    )
    if chosen is None or chosen.duration_s is None:
        return UNKNOWN_DURATION_S
    return float(chosen.duration_s)


def _room(env: AuditEnvironment, host: Any) -> HostRoom:
    facts = env.host_facts(host)
    inbound = env.inbound_to(host.pk)
    free = facts.memory_free if facts is not None else host.memory_free
    cpus = facts.cpus if facts is not None else host.cpus
    running = env.host_index(facts).running_vcpus if facts is not None else 0
    return HostRoom(
        max_outgoing=host.max_outgoing,
        max_incoming=host.max_incoming,
        memory=free - host.memory_reserve - sum(m.memory for m in inbound),
        vcpus=float(host.cpu_overcommit) * cpus - running - sum(m.vcpus for m in inbound),
    )


def window_seconds(plan: MigrationPlan, now: datetime) -> float | None:
    from migrations_app.services.scheduling import effective_window

    window = effective_window(plan, now)
    if window.end is None:
        return None
    start = max(window.start or now, now)
    return max((window.end - start).total_seconds(), 0.0)


def assign(
    plan: MigrationPlan, env: AuditEnvironment, items: list[PlanItem], predictions: Iterable[Prediction], now: datetime
) -> WavePlan:
    """Set `item.wave` on the (unsaved) items and `plan.wave_plan`; the caller saves both."""
    per_item: dict[int, list[Prediction]] = {}
    for p in predictions:
        per_item.setdefault(p.item_id, []).append(p)
    moves, hosts = [], {}
    for item in items:
        if item.destination is None:
            continue
        for host in (item.source, item.destination):
            if host.pk not in hosts:
                hosts[host.pk] = _room(env, host)
        moves.append(
            Move(
                key=item.pk,
                source=item.source_id,
                destination=item.destination.pk,
                memory=max(item.vm.max_memory, item.vm.memory),
                vcpus=item.vm.vcpus,
                duration_s=_duration(item, per_item.get(item.pk, [])),
                group=item.vm.application_group,
            )
        )
    result = plan_waves(moves, hosts, window_seconds(plan, now))
    last = len(result.waves) + 1
    for item in items:
        item.wave = result.wave_of.get(item.pk, last)  # items without a destination go last (they do not run)
    plan.wave_plan = {
        "summary": result.summary(),
        "total_s": result.total_s,
        "waves": [
            {"number": w.number, "items": len(w.keys), "start_s": w.start_s, "end_s": w.end_s, "in_window": w.in_window}
            for w in result.waves
        ],
        "problems": {str(k): v for k, v in result.problems.items()},
    }
    return result


@dataclass
class ShownWave:
    """One wave as the plan page shows it: what the last audit planned (no planning here)."""

    number: int
    items: list[PlanItem]
    start_s: float
    end_s: float
    in_window: bool
    sources: list[str]
    destinations: list[str]
    #: the wave's place on the plan's timeline, in per mille of the whole plan (an SVG bar)
    bar_x: int
    bar_width: int


@dataclass
class ShownWavePlan:
    summary: str
    total_s: float
    waves: list[ShownWave]
    #: items in no wave (no destination) or placed against a limit, with the planner's reason
    problems: list[tuple[PlanItem, str]]


def shown(plan: MigrationPlan, items: Iterable[PlanItem]) -> ShownWavePlan | None:
    """The waves the last audit stored (`plan.wave_plan`, `item.wave`) with their VMs and hosts, for the
    plan page; None before any audit planned waves. `items` come with `vm`, `source` and `destination`."""
    stored = plan.wave_plan or {}
    planned = stored.get("waves") or []
    if not planned:
        return None
    items = list(items)
    by_wave: dict[int, list[PlanItem]] = {}
    for item in items:
        by_wave.setdefault(item.wave, []).append(item)
    total = float(stored.get("total_s") or 0.0) or max(float(w.get("end_s") or 0.0) for w in planned)
    waves = []
    for w in planned:
        number = int(w["number"])
        members = [i for i in by_wave.get(number, []) if i.destination_id is not None]
        start, end = float(w.get("start_s") or 0.0), float(w.get("end_s") or 0.0)
        x = round(1000 * start / total) if total > 0 else 0
        waves.append(
            ShownWave(
                number=number,
                items=members,
                start_s=start,
                end_s=end,
                in_window=bool(w.get("in_window", True)),
                sources=sorted({i.source.name for i in members}),
                destinations=sorted({i.destination.name for i in members if i.destination is not None}),
                bar_x=x,
                bar_width=max(round(1000 * end / total) - x, 2) if total > 0 else 1000,
            )
        )
    reasons: dict[str, str] = stored.get("problems") or {}
    by_pk = {str(i.pk): i for i in items}
    problems = [(by_pk[key], why) for key, why in reasons.items() if key in by_pk]
    problems += [(i, "No destination: it does not move.") for i in items if i.destination_id is None]
    return ShownWavePlan(summary=str(stored.get("summary", "")), total_s=total, waves=waves, problems=problems)
