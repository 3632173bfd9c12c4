"""From an approved plan to moves on the workers, and the plan's state following its runs.

- `schedule()` (in the approval's transaction): the plan becomes `scheduled` for the start of its
  window — its own, else the next admin change window that applies to it, else at once — and a start job
  is put in RQ's scheduler for that time (`enqueue_at`) after commit.
- `start_due()` (the start job): nothing starts before its time or inside a freeze (the plan is held and
  its start moved to the freeze's end); a plan whose window is over is sent back. Otherwise the plan is
  re-audited on fresh facts: a check that now blocks and did not when it was approved (or a VM that would
  now need another mode) sends the plan back to its owner (`superseded`, with the reason). Else the
  plan runs: the first wave's items become runs (`runs.start_item`), which wait for per-host slots.
- `run_ended()` (after every run's end): the next wave starts when a wave is done; a failed VM stops the
  VMs not started yet only if the plan says so; when nothing is left the plan becomes succeeded,
  partially succeeded, failed or cancelled.
- `sweep()` (every minute, vmportal.cron): starts plans whose start job did not run (workers down, Redis
  lost it), and finishes plans whose last run ended unnoticed. A scheduled plan never fails silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from migrations_app import rules
from migrations_app.choices import (
    TERMINAL_PLAN_STATES,
    TERMINAL_RUN_STATES,
    AuditStatus,
    PlanStatus,
    RunStatus,
    Severity,
)
from migrations_app.models import Audit, ChangeFreeze, ChangeWindow, MigrationPlan, MigrationRun, PlanItem
from migrations_app.services import auditlog, planstate
from migrations_app.services.plans import PlanError
from vmportal import access
from vmportal.access import Action

log = logging.getLogger(__name__)

S = PlanStatus
#: a start job that runs this early (clock skew between machines) still counts as on time
EARLY_TOLERANCE = timedelta(seconds=2)
#: a start claimed this long ago without an outcome belongs to a worker that died; the sweep retries it
STALE_CLAIM = timedelta(minutes=20)


# ---- windows and freezes ------------------------------------------------------------------------------


def host_ids(plan: MigrationPlan) -> set[int]:
    return hosts_of([plan.pk]).get(plan.pk, set())


def hosts_of(plan_ids: list[int]) -> dict[int, set[int]]:
    """plan id → the ids of the hosts its VMs move from or to (one query for any number of plans)."""
    found: dict[int, set[int]] = {}
    for plan_id, source, destination in PlanItem.objects.filter(plan_id__in=plan_ids).values_list(
        "plan_id", "source_id", "destination_id"
    ):
        found.setdefault(plan_id, set()).add(source)
        if destination is not None:
            found[plan_id].add(destination)
    return found


@dataclass(frozen=True)
class Window:
    start: datetime | None  # None: at once
    end: datetime | None  # None: open-ended
    source: str  # in words: "the plan's own window", "change window “Sunday nights”", …


def effective_window(
    plan: MigrationPlan,
    now: datetime | None = None,
    hosts: set[int] | None = None,
    windows: list[ChangeWindow] | None = None,
) -> Window:
    """The window the plan starts in: its own, else the earliest admin window (open now or next) that
    applies to its team or hosts, else none (it starts once approved). `hosts` (the plan's host ids) and
    `windows` (every admin window) may be passed by a caller that has them for many plans."""
    now = now or timezone.now()
    if plan.window_start is not None and plan.window_end is not None:
        return Window(plan.window_start, plan.window_end, "the plan's own change window")
    best: tuple[datetime, datetime, ChangeWindow] | None = None
    hosts = host_ids(plan) if hosts is None else hosts
    if windows is None:
        windows = list(ChangeWindow.objects.select_related("host", "team"))
    for window in (w for w in windows if w.applies(plan.team_id, hosts)):
        occurrence = window.occurrence(now)
        if occurrence is not None and (best is None or occurrence[0] < best[0]):
            best = (*occurrence, window)
    if best is None:
        return Window(None, None, "no change window applies")
    return Window(best[0], best[1], f"the change window “{best[2].name}” ({best[2].applies_to})")


@dataclass(frozen=True)
class Freeze:
    name: str
    start: datetime
    end: datetime
    applies_to: str


def freezes_for(plan: MigrationPlan) -> list[Freeze]:
    """Freezes that apply to the plan: the admins' (global, its team's, its hosts'), and those configured
    in VMPORTAL_CHANGE_FREEZES (global)."""
    hosts = host_ids(plan)
    found = [
        Freeze(f.name, f.start, f.end, f.applies_to)
        for f in ChangeFreeze.objects.select_related("host", "team")
        if f.applies(plan.team_id, hosts)
    ]
    found += [Freeze("configured freeze", a, b, "everything") for a, b in getattr(settings, "CHANGE_FREEZES", [])]
    return found


def freeze_at(plan: MigrationPlan, at: datetime) -> Freeze | None:
    """The freeze holding the plan at `at` (the one ending last, when several overlap)."""
    active = [f for f in freezes_for(plan) if f.start <= at < f.end]
    return max(active, key=lambda f: f.end) if active else None


def fits_window(plan: MigrationPlan, window: Window | None = None) -> bool | None:
    """Whether the audit's prediction fits the plan's window (None: no window or no prediction)."""
    window = window or effective_window(plan)
    return rules.fits_window(plan.predicted_seconds, window.start, window.end, timezone.now())


def _when(at: datetime) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S %Z")


# ---- scheduling -----------------------------------------------------------------------------------------


def schedule(plan: MigrationPlan, *, actor: Any = None, emergency: bool = False) -> MigrationPlan:
    """approved → scheduled for its window's start (emergency: now), with a start job in RQ's scheduler."""
    now = timezone.now()
    if emergency:
        start, note = now, "Emergency change: starts at once, outside windows and freezes."
    else:
        window = effective_window(plan, now)
        if window.end is not None and window.end <= now:
            raise PlanError(
                f"The plan's change window ended at {_when(window.end)}; reject it so its team can plan again."
            )
        start = max(window.start or now, now)
        note = f"Starts at {_when(start)}: {window.source}."
    planstate.transition(
        plan,
        S.SCHEDULED,
        actor=actor,
        reason=note,
        expect=S.APPROVED,
        fields={"scheduled_for": start, "schedule_note": note[:300], "start_claimed_at": None},
        log={"starts at": start.isoformat()},
    )
    transaction.on_commit(partial(enqueue_start, plan.pk, start))
    return plan


def enqueue_start(plan_id: int, at: datetime) -> None:
    """Put the plan's start job in RQ (for later through RQ's scheduler). If Redis is down the sweep
    starts the plan once it answers again."""
    from migrations_app import plan_jobs

    try:
        plan_jobs.enqueue_start(plan_id, at)
    except Exception:
        log.warning("queueing the start of plan %s failed; the sweep will start it", plan_id, exc_info=True)


def _claim(plan_id: int, now: datetime) -> bool:
    """Take the start of a due plan, so that the start job and the sweep never both start it."""
    return bool(
        MigrationPlan.objects.filter(pk=plan_id, status=S.SCHEDULED, scheduled_for__lte=now + EARLY_TOLERANCE)
        .filter(Q(start_claimed_at__isnull=True) | Q(start_claimed_at__lt=now - STALE_CLAIM))
        .update(start_claimed_at=now)
    )


def _hold(plan: MigrationPlan, until: datetime, note: str, *, tell_owners: bool = True) -> None:
    """Keep the plan scheduled, its start moved to `until` (with the reason on its page)."""
    with transaction.atomic():
        MigrationPlan.objects.filter(pk=plan.pk, status=S.SCHEDULED).update(
            scheduled_for=until, schedule_note=note[:300], start_claimed_at=None, status_reason=note
        )
        auditlog.record(None, "plan.held", plan, after={"until": until.isoformat()}, comment=note)
        if tell_owners:
            from migrations_app.services import notifications

            notifications.notify(
                notifications.owners(plan), f"Plan “{plan.name}” is held", note, plan=plan, verb="plan.held"
            )
        transaction.on_commit(partial(enqueue_start, plan.pk, until))


def _supersede(plan: MigrationPlan, reason: str) -> None:
    planstate.transition_if(plan, S.SCHEDULED, S.SUPERSEDED, reason=reason, fields={"start_claimed_at": None})


def start_due(plan_id: int) -> dict[str, Any]:
    """The start job: hold, send back, or start the plan (see the module docstring). Safe to run twice."""
    now = timezone.now()
    plan = MigrationPlan.objects.select_related("team", "requester").filter(pk=plan_id).first()
    if plan is None or plan.status != S.SCHEDULED:
        return {"plan": plan_id, "started": False, "why": "not scheduled"}
    if not _claim(plan_id, now):
        return {"plan": plan_id, "started": False, "why": "not due, or already being started"}
    emergency = hasattr(plan, "emergency")
    if not emergency:
        window = effective_window(plan, now)
        if window.end is not None and window.end <= now:
            _supersede(plan, f"Its change window ended at {_when(window.end)} before it could start; plan it again.")
            return {"plan": plan_id, "started": False, "why": "window over"}
        if window.start is not None and window.start > now + EARLY_TOLERANCE:
            _hold(plan, window.start, f"Waiting for {window.source}, from {_when(window.start)}.", tell_owners=False)
            return {"plan": plan_id, "started": False, "why": "before its window"}
        freeze = freeze_at(plan, now)
        if freeze is not None:
            if window.end is not None and freeze.end >= window.end:
                _supersede(
                    plan,
                    f"The change freeze “{freeze.name}” ({freeze.applies_to}) lasts until {_when(freeze.end)}, past the "
                    f"end of its window; plan it again.",
                )
                return {"plan": plan_id, "started": False, "why": "frozen for the rest of its window"}
            _hold(
                plan,
                freeze.end,
                f"Held by the change freeze “{freeze.name}” ({freeze.applies_to}) until {_when(freeze.end)}; "
                "it starts then.",
            )
            return {"plan": plan_id, "started": False, "why": "frozen", "until": freeze.end.isoformat()}
    why_not = reaudit(plan)
    if why_not:
        _supersede(plan, f"The re-audit at its start found: {why_not} Nothing was moved; plan it again.")
        return {"plan": plan_id, "started": False, "why": "superseded", "reason": why_not}
    with transaction.atomic():
        if not planstate.transition_if(
            plan,
            S.SCHEDULED,
            S.RUNNING,
            reason="Started: the re-audit found nothing new.",
            fields={"start_claimed_at": None, "schedule_note": ""},
        ):
            return {"plan": plan_id, "started": False, "why": "changed meanwhile"}
        started = start_next_wave(plan)
    if not started:
        run_ended_for_plan(plan.pk)  # nothing could start: the plan ends now, with the reasons
    return {"plan": plan_id, "started": True, "runs": started}


def reaudit(plan: MigrationPlan) -> str:
    """Audit the plan again on fresh facts; "" when nothing new blocks it, else the reason in words."""
    from migrations_app.services import audits
    from migrations_app.services.plans import uncovered_blocks

    modes = dict(plan.items.values_list("pk", "mode"))
    approved = plan.approved_audit
    accepted: set[tuple[int, str]] = set()
    if approved is not None:
        accepted = set(approved.results.filter(severity=Severity.BLOCK).values_list("item_id", "check_id"))
    audit = Audit.objects.create(plan=plan, reason="schedule")
    summary = audits.run_audit(audit.pk)
    audit.refresh_from_db()
    if audit.status != AuditStatus.DONE:
        return f"the re-audit could not finish ({summary.get('error') or audit.error or 'unknown error'})."
    new = [r for r in uncovered_blocks(plan, audit) if (r.item_id, r.check_id) not in accepted]
    reasons = [f"{r.check_id} on {r.item.vm.name}: {r.message}" for r in sorted(new, key=lambda r: r.check_id)]
    for item in plan.items.select_related("vm"):
        if modes.get(item.pk) and item.mode != modes[item.pk]:
            reasons.append(f"{item.vm.name} would now have to move {item.mode} instead of {modes[item.pk]}.")
    return " ".join(reasons)


# ---- runs ---------------------------------------------------------------------------------------------


def _latest_runs(plan: MigrationPlan) -> dict[int, MigrationRun]:
    latest: dict[int, MigrationRun] = {}
    for run in MigrationRun.objects.filter(item__plan=plan).order_by("item_id", "queued_at", "pk"):
        latest[run.item_id] = run
    return latest


def start_next_wave(plan: MigrationPlan, actor: Any = None) -> int:
    """Start the lowest wave whose items have not started yet; returns how many runs were queued."""
    from migrations_app.services import runs

    started = _latest_runs(plan)
    waiting = [i for i in plan.items.select_related("vm", "source", "destination", "plan") if i.pk not in started]
    waiting = [i for i in waiting if not i.start_error]
    if not waiting:
        return 0
    wave = min(i.wave for i in waiting)
    count = 0
    for item in (i for i in waiting if i.wave == wave):
        try:
            with transaction.atomic():
                runs.start_item(actor, item)
            count += 1
        except runs.RunError as exc:
            PlanItem.objects.filter(pk=item.pk).update(start_error=str(exc))
            auditlog.record(actor, "plan.item_not_started", plan, after={"vm": item.vm.name}, comment=str(exc))
    if count == 0:
        return start_next_wave(plan, actor)  # every item of this wave was refused: try the next one
    return count


def run_ended(run_id: int) -> None:
    """Called after every run's end (services.runs.finish)."""
    plan_id = MigrationRun.objects.filter(pk=run_id).values_list("item__plan_id", flat=True).first()
    if plan_id is not None:
        run_ended_for_plan(plan_id)


def run_ended_for_plan(plan_id: int) -> str:
    """Let a running plan follow its runs; returns its state afterwards."""
    from migrations_app.services import runs

    with transaction.atomic():
        plan = MigrationPlan.objects.select_for_update().select_related("team", "requester").get(pk=plan_id)
        if plan.status != S.RUNNING:
            return plan.status
        latest = _latest_runs(plan)
        failed = [r for r in latest.values() if r.status in (RunStatus.FAILED, RunStatus.ROLLED_BACK)]
        active = [r for r in latest.values() if r.status not in TERMINAL_RUN_STATES]
        stop = plan.cancel_requested or (plan.stop_on_failure and bool(failed))
        if stop:
            for run in active:
                if run.status == RunStatus.QUEUED:
                    runs.request_cancel(None, run)
        if any(r.status not in TERMINAL_RUN_STATES for r in _latest_runs(plan).values()):
            return plan.status
        if not stop and start_next_wave(plan):
            return plan.status
        return _finish(plan)


def _finish(plan: MigrationPlan) -> str:
    latest = _latest_runs(plan)
    items = list(plan.items.select_related("vm"))
    moved = [i for i in items if i.pk in latest and latest[i.pk].status == RunStatus.SUCCEEDED]
    not_moved = [i for i in items if i not in moved]
    summary = f"{len(moved)} of {len(items)} VM{'s' if len(items) != 1 else ''} moved."
    problems = []
    for item in not_moved:
        run = latest.get(item.pk)
        if run is None:
            problems.append(f"{item.vm.name}: not started ({item.start_error or 'stopped before its turn'}).")
        else:
            problems.append(
                f"{item.vm.name}: {run.get_status_display().lower()} ({run.error or run.outcome}).".replace(" ()", "")
            )
    detail = " ".join([summary, *problems])
    if plan.cancel_requested:
        new = S.CANCELLED
    elif not not_moved:
        new = S.SUCCEEDED
    elif moved:
        new = S.PARTIALLY_SUCCEEDED
    else:
        new = S.FAILED
    planstate.transition(plan, new, reason=detail[:4000], expect=S.RUNNING)
    return new


# ---- cancelling -------------------------------------------------------------------------------------------


def cancel_plan(actor: Any, plan: MigrationPlan) -> MigrationPlan:
    """Cancel a plan that has not ended. A running plan stops starting VMs and cancels its runs; it ends
    as `cancelled` when the last run has ended (a VM already switching over finishes its move)."""
    from migrations_app.services import runs

    access.require(actor, Action.PLAN_CANCEL, plan)
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else "the portal"
    with transaction.atomic():
        current = MigrationPlan.objects.select_for_update().get(pk=plan.pk)
        if current.status in TERMINAL_PLAN_STATES:
            raise PlanError(f"The plan is already {current.get_status_display().lower()}.")
        if current.status != S.RUNNING:
            planstate.transition(plan, S.CANCELLED, actor=actor, reason=f"Cancelled by {who}; nothing was moved.")
            return plan
        MigrationPlan.objects.filter(pk=plan.pk).update(cancel_requested=True)
        plan.cancel_requested = True
        auditlog.record(actor, "plan.cancel_requested", plan, after={"cancel requested": True})
        for run in MigrationRun.objects.filter(item__plan=plan).exclude(status__in=TERMINAL_RUN_STATES):
            try:
                runs.request_cancel(actor, run)
            except runs.RunError as exc:
                log.info("run %s of plan %s cannot be cancelled: %s", run.pk, plan.pk, exc)
    run_ended_for_plan(plan.pk)
    plan.refresh_from_db()
    return plan


def cancel_run(actor: Any, run: MigrationRun) -> MigrationRun:
    from migrations_app.services import runs

    access.require(actor, Action.RUN_CANCEL, run)
    try:
        return runs.request_cancel(actor, run)
    except runs.RunError as exc:
        raise PlanError(str(exc)) from None


# ---- the sweep ---------------------------------------------------------------------------------------------


def sweep() -> dict[str, list[int]]:
    """Catch what the start jobs and run hooks missed (workers down, Redis restarted)."""
    now = timezone.now()
    grace = timedelta(seconds=settings.SCHEDULE_GRACE_SECONDS)
    done: dict[str, list[int]] = {"scheduled": [], "started": [], "followed": []}
    for plan in MigrationPlan.objects.filter(status=S.APPROVED, status_changed_at__lt=now - grace):
        try:
            with transaction.atomic():
                schedule(plan, emergency=hasattr(plan, "emergency"))
            done["scheduled"].append(plan.pk)
        except PlanError as exc:
            planstate.transition_if(plan, S.APPROVED, S.SUPERSEDED, reason=str(exc))
    overdue = MigrationPlan.objects.filter(status=S.SCHEDULED, scheduled_for__lt=now - grace).filter(
        Q(start_claimed_at__isnull=True) | Q(start_claimed_at__lt=now - STALE_CLAIM)
    )
    for plan_id in overdue.values_list("pk", flat=True):
        log.warning("plan %s was not started at its time; the sweep starts it", plan_id)
        start_due(plan_id)
        done["started"].append(plan_id)
    running = MigrationPlan.objects.filter(status=S.RUNNING).exclude(
        items__runs__status__in=set(RunStatus) - TERMINAL_RUN_STATES
    )
    for plan_id in running.values_list("pk", flat=True).distinct():
        if run_ended_for_plan(plan_id) != S.RUNNING:
            done["followed"].append(plan_id)
    return done
