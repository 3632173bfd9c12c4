"""Waves of a plan: the planner (migrations_app.waves) fed with the audit's facts and predictions.

Called at the end of every audit, so the owner sees the waves and their predicted timeline before
submitting; the scheduler then starts wave k+1 only when wave k has ended (scheduling.start_next_wave).
Everything is read from what the audit already holds: no query per VM.
"""

from __future__ import annotations

from collections.abc import Iterable
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
