"""Running the pre-migration audit, and choosing destinations.

`run_audit` claims a queued audit, reads fresh facts from every host involved (each host once, one
connection each), picks destinations for items that let the portal choose, resolves `auto` to live
or cold per item, runs the whole CHECKS.md catalogue for every item, stores one result per check per
item in one bulk insert, predicts each item (`migrations_app.prediction`: the running guests' dirty
rates and memory in use measured once per audit, all hosts at the same time) and sets the plan ready or
blocked. A host that cannot be reached makes the checks that need it say `warn` (and RES-HOST
`block`); it never makes the audit crash.

Database reads are per plan, not per item: the number of queries does not grow with the number of
VMs (except for items whose destination the portal chooses, which read the default mappings).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from inventory.hypervisor import HypervisorError
from inventory.hypervisor.facts import FactsReader
from inventory.models import Disk, Host, VirtualMachine
from migrations_app import prediction
from migrations_app.checks import REGISTRY, AuditEnvironment, Check, CheckContext, Outcome, blocking, evaluate, worst
from migrations_app.choices import AuditStatus, Mode, PlanStatus, Severity
from migrations_app.models import Audit, CheckResult, MigrationPlan, PlanItem, Prediction
from migrations_app.services import planstate, waves
from migrations_app.services.plans import default_network_map, default_storage_map, latest_audit, uncovered_blocks
from vmportal.db import insert_many, update_many

RESULT_FIELDS = ["audit", "item", "check_id", "area", "severity", "message", "evidence", "remediation"]

log = logging.getLogger(__name__)

#: every column of a prediction but its id (written with `insert_many`)
PREDICTION_FIELDS = [f.name for f in Prediction._meta.concrete_fields if not f.primary_key]


@dataclass(frozen=True)
class Candidate:
    """A destination that passes every hard check for a VM, with its headroom after the move."""

    host: Host
    mode: str  # the mode in which it passes (live preferred)
    memory_headroom: int  # bytes left after the move (free − reserve − inbound − this VM)
    vcpu_headroom: float  # vCPUs left under the overcommit ratio after the move
    reason: str


# ---- choosing destinations ---------------------------------------------------------------------------


def _hard_checks() -> list[Check]:
    return [c for c in REGISTRY.values() if c.destination]


def _modes(mode: str) -> list[str]:
    return [Mode.LIVE, Mode.COLD] if mode == Mode.AUTO else [mode]


def _candidates(
    env: AuditEnvironment,
    vm: VirtualMachine,
    mode: str,
    item: PlanItem | None = None,
    rejected: list[dict[str, Any]] | None = None,
) -> list[Candidate]:
    """Hosts passing every hard check, best headroom first; `rejected` collects why each other host is not."""
    hard = _hard_checks()
    found = []
    refused = rejected if rejected is not None else []
    for host in sorted(env.hosts.values(), key=lambda h: h.name):
        if host.pk == vm.host_id:
            continue
        if not host.enabled or host.maintenance:
            refused.append({"host": host.name, "why": "disabled" if not host.enabled else "in maintenance"})
            continue
        facts = env.host_facts(host)
        if facts is None:
            refused.append({"host": host.name, "why": f"unreachable: {env.host_errors.get(host.pk, '')}".strip()})
            continue
        network_map, storage_map = default_network_map(vm, host), default_storage_map(vm, host)
        blocks: list[dict[str, str]] = []
        for candidate_mode in _modes(mode):
            ctx = CheckContext(env, vm, candidate_mode, host, item, network_map, storage_map)
            results = evaluate(ctx, hard)
            if not blocking(results):
                break
            blocks += [
                {"check": cid, "mode": candidate_mode, "message": out.message, "remediation": out.remediation}
                for cid, (_c, out) in sorted(results.items())
                if out.severity == Severity.BLOCK
            ]
        else:
            refused.append({"host": host.name, "why": "fails a hard check", "checks": blocks})
            continue
        load = env.plan_load_to(host.pk, item)
        inbound = sum(m.memory for m in env.inbound_to(host.pk)) + load.memory
        memory = facts.memory_free - host.memory_reserve - inbound - ctx.vm_memory
        running = env.host_index(facts).running_vcpus
        inbound_vcpus = sum(m.vcpus for m in env.inbound_to(host.pk)) + load.vcpus
        vcpus = float(host.cpu_overcommit) * facts.cpus - running - inbound_vcpus - ctx.vm_vcpus
        size = str(filesizeformat(max(memory, 0))).replace("\xa0", " ")
        found.append(
            Candidate(
                host=host,
                mode=candidate_mode,
                memory_headroom=memory,
                vcpu_headroom=vcpus,
                reason=f"{host.name}: {size} of memory and {vcpus:.0f} vCPUs to spare after the move; "
                f"passes every hard check ({candidate_mode}).",
            )
        )
    found.sort(key=lambda c: (c.memory_headroom, c.vcpu_headroom), reverse=True)
    return found


def candidate_destinations(vm: VirtualMachine, mode: str, plan: MigrationPlan | None = None) -> list[Candidate]:
    """Hosts other than the VM's, enabled, passing every hard check, best headroom first.

    Reads every enabled host through the adapter; an unreachable host is simply not offered.
    """
    items = list(_items(plan)) if plan is not None else []
    with FactsReader(timeout=settings.LIBVIRT_CONNECT_TIMEOUT) as reader:
        env = AuditEnvironment(reader, plan)
        env.load([vm], items)
        own = next((i for i in items if i.vm_id == vm.pk), None)
        return _candidates(env, vm, mode, own)


# ---- running an audit ------------------------------------------------------------------------------


def _items(plan: MigrationPlan) -> Any:
    return (
        PlanItem.objects.filter(plan=plan)
        .select_related("vm__host", "vm__team", "source", "destination")
        .prefetch_related("vm__nics", Prefetch("vm__disks", queryset=Disk.objects.select_related("pool")))
        .order_by("wave", "pk")
    )


def _resolve(env: AuditEnvironment, item: PlanItem, plan_mode: str) -> tuple[str, dict[str, tuple[Check, Outcome]]]:
    """Pick the item's mode and return the results in that mode.

    `auto` is live unless some check blocks live that would not block cold (a cold move then removes
    a block); a block that both modes share leaves it live, since cold would gain nothing.
    """
    modes = _modes(plan_mode)

    def run(mode: str) -> dict[str, tuple[Check, Outcome]]:
        ctx = CheckContext(env, item.vm, mode, item.destination, item, item.network_map, item.storage_map)
        return evaluate(ctx)

    first = run(modes[0])
    if len(modes) == 1:
        return modes[0], first
    live_blocks = blocking(first)
    if not live_blocks:
        return Mode.LIVE, first
    second = run(Mode.COLD)
    if live_blocks <= blocking(second):
        return Mode.LIVE, first
    return Mode.COLD, second


def run_audit(audit_id: int) -> dict[str, object]:
    """Run one queued audit. Returns a summary; an audit already taken by another worker is skipped."""
    started = timezone.now()
    claimed = Audit.objects.filter(pk=audit_id, status=AuditStatus.QUEUED).update(
        status=AuditStatus.RUNNING, started_at=started
    )
    if not claimed:
        return {"audit": audit_id, "claimed": False}
    audit = Audit.objects.select_related("plan").get(pk=audit_id)
    try:
        return _run(audit)
    except HypervisorError as exc:
        log.warning("audit %s errored: %s (%s)", audit_id, exc.message, exc.raw)
        _errored(audit, exc.message)
        return {"audit": audit_id, "claimed": True, "status": AuditStatus.ERRORED, "error": exc.message}
    except Exception as exc:
        _errored(audit, f"The audit failed unexpectedly: {exc}")
        raise


def _errored(audit: Audit, message: str) -> None:
    with transaction.atomic():
        Audit.objects.filter(pk=audit.pk).update(status=AuditStatus.ERRORED, error=message, finished_at=timezone.now())
        newest = latest_audit(audit.plan)
        if newest is not None and newest.pk == audit.pk:
            # Nothing was decided: the owner may edit or re-run; submitting needs a finished audit anyway.
            planstate.transition_if(audit.plan, PlanStatus.AUDITING, PlanStatus.DRAFT, reason=message)


@dataclass
class ItemAudit:
    """The outcome of the catalogue for one item: its resolved mode, one outcome per check, predictions."""

    item: PlanItem
    mode: str
    results: dict[str, tuple[Check, Outcome]]
    predictions: list[Prediction]


def evaluate_plan(
    plan: MigrationPlan, *, predict: bool = False, env: AuditEnvironment | None = None
) -> tuple[list[ItemAudit], AuditEnvironment]:
    """Run the catalogue over every item of a plan without storing anything.

    Picks destinations for items that let the portal choose and resolves each item's mode (on the
    item instances, unsaved). With `predict`, each item is predicted too.
    """
    items = list(_items(plan))
    if env is None:
        reader = FactsReader(timeout=settings.LIBVIRT_CONNECT_TIMEOUT)
        with reader:
            return _evaluate(AuditEnvironment(reader, plan), plan, items, predict)
    return _evaluate(env, plan, items, predict)


def _evaluate(
    env: AuditEnvironment, plan: MigrationPlan, items: list[PlanItem], predict: bool
) -> tuple[list[ItemAudit], AuditEnvironment]:
    # each running guest measured once, all source hosts at the same time, within a bounded time, while
    # the facts are read and the checks run (libvirt's dirty-rate window is a second at least)
    collect = prediction.start_measuring(items) if predict else None
    env.load([i.vm for i in items], items)
    # Sources first, with every plan VM of each, then the chosen destinations: each host once.
    guests = {item.pk: env.guest_facts(item.vm) for item in items}
    env.load_disk_users({d.source for g in guests.values() if g for d in g.domain.disks if d.shareable})
    for item in items:
        if item.destination_id is None and item.destination_auto:
            _choose_destination(env, item, plan.mode)
        env.host_facts(item.destination)
    audited = []
    for item in items:
        mode, outcome = _resolve(env, item, plan.mode)
        item.mode = mode
        audited.append(ItemAudit(item, mode, outcome, []))
    if collect is None:
        return audited, env
    measured = collect()
    window = REGISTRY["PROC-WINDOW"]
    for entry in audited:
        item = entry.item
        entry.predictions = _predict(item, plan, measured.get(item.pk))
        if entry.predictions:
            env.predictions[item.pk] = {p.mode: p for p in entry.predictions}
            # the window check compares against the prediction just made
            ctx = CheckContext(env, item.vm, entry.mode, item.destination, item, item.network_map, item.storage_map)
            entry.results["PROC-WINDOW"] = (window, evaluate(ctx, [window])["PROC-WINDOW"][1])
    return audited, env


def _run(audit: Audit) -> dict[str, object]:
    clock = time.monotonic()
    plan = audit.plan
    with FactsReader(timeout=settings.LIBVIRT_CONNECT_TIMEOUT) as reader:
        audited, env = evaluate_plan(plan, predict=True, env=AuditEnvironment(reader, plan, timezone.now()))
    items = [a.item for a in audited]
    results: list[CheckResult] = []
    severities: list[str] = []
    predictions: list[Prediction] = []
    for entry in audited:
        predictions.extend(entry.predictions)
        for check_id, (check, result) in entry.results.items():
            severities.append(result.severity)
            results.append(
                CheckResult(
                    audit=audit,
                    item=entry.item,
                    check_id=check_id,
                    area=check.area,
                    severity=result.severity,
                    message=result.message,
                    evidence=result.evidence,
                    remediation=result.remediation,
                )
            )
    waves.assign(plan, env, items, predictions, timezone.now())
    stale = sorted(env.stale_hosts)
    with transaction.atomic():
        # One statement whatever the plan's size (bulk_create would batch ~16,000 rows of a 500-VM plan).
        insert_many(CheckResult, results, RESULT_FIELDS)
        for p in predictions:
            p.audit = audit
        # one statement each, whatever the plan's size
        insert_many(Prediction, predictions, PREDICTION_FIELDS)
        update_many(
            PlanItem,
            items,
            [
                "destination",
                "destination_reason",
                "destination_rejections",
                "mode",
                "network_map",
                "storage_map",
                "wave",
            ],
        )
        MigrationPlan.objects.filter(pk=plan.pk).update(wave_plan=plan.wave_plan)
        audit.worst = worst(severities)
        audit.status = AuditStatus.DONE
        audit.finished_at = timezone.now()
        audit.save(update_fields=["worst", "status", "finished_at"])
        plan_status = _set_plan_status(plan, audit)
        if predictions:
            totals = prediction.plan_totals(plan, predictions)
            MigrationPlan.objects.filter(pk=plan.pk).update(
                predicted_seconds=totals.seconds, predicted_downtime_ms=totals.downtime_ms
            )
        if stale:
            from inventory import jobs as inventory_jobs

            for host_id in stale:
                transaction.on_commit(lambda h=host_id: inventory_jobs.enqueue_sync(h))  # type: ignore[misc]
    return {
        "audit": audit.pk,
        "claimed": True,
        "status": AuditStatus.DONE,
        "plan_status": plan_status,
        "worst": audit.worst,
        "items": len(items),
        "results": len(results),
        "predictions": len(predictions),
        "resyncs": stale,
        "host_errors": {env.hosts[h].name if h in env.hosts else h: e for h, e in env.host_errors.items()},
        "elapsed_ms": int((time.monotonic() - clock) * 1000),
    }


def rejections_text(rejected: list[dict[str, Any]]) -> str:
    """ "h2: NET-MAPPED (live, cold); h3: unreachable" — which check turned each host down."""
    parts = []
    for entry in rejected:
        checks: dict[str, list[str]] = {}
        for block in entry.get("checks", []):
            checks.setdefault(block["check"], []).append(block["mode"])
        why = ", ".join(f"{cid} ({', '.join(modes)})" for cid, modes in checks.items()) or entry["why"]
        parts.append(f"{entry['host']}: {why}")
    return "; ".join(parts)


def _choose_destination(env: AuditEnvironment, item: PlanItem, plan_mode: str) -> None:
    rejected: list[dict[str, Any]] = []
    candidates = _candidates(env, item.vm, plan_mode, item, rejected)
    item.destination_rejections = rejected
    if not candidates:
        reasons = rejections_text(rejected) or "there is no other host"
        item.destination_reason = f"No host passes the hard checks: {reasons}."[:300]
        return
    best = candidates[0]
    item.destination = best.host
    env.destination_chosen(item)
    item.destination_reason = best.reason[:300]
    item.network_map = default_network_map(item.vm, best.host)
    item.storage_map = default_storage_map(item.vm, best.host)


def _predict(item: PlanItem, plan: MigrationPlan, facts: prediction.PredictionFacts | None) -> list[Prediction]:
    if item.destination is None:
        return []
    try:
        rows = prediction.predict_item(item, plan, facts)
    except HypervisorError as exc:
        log.warning("prediction of item %s failed: %s", item.pk, exc.message)
        return []
    except Exception:
        # A prediction is advice beside the checks; its failure must not cost the plan its audit.
        log.exception("prediction of item %s failed", item.pk)
        return []
    return rows


def _set_plan_status(plan: MigrationPlan, audit: Audit) -> str:
    """READY or BLOCKED, but only if this is the plan's newest audit and the plan still waits for it."""
    newest = latest_audit(plan)
    if newest is None or newest.pk != audit.pk:
        return MigrationPlan.objects.values_list("status", flat=True).get(pk=plan.pk)
    status = PlanStatus.BLOCKED if uncovered_blocks(plan, audit) else PlanStatus.READY
    if planstate.transition_if(plan, PlanStatus.AUDITING, status):
        return status
    return MigrationPlan.objects.values_list("status", flat=True).get(pk=plan.pk)
