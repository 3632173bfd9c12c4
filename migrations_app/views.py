"""Plan pages. Each view parses, authorises, calls one service, renders."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Min, Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST, require_safe

from inventory.models import Disk, Network, StoragePool, VirtualMachine
from inventory.permissions import sees_everything
from migrations_app.checks.registry import evidence_for
from migrations_app.choices import (
    CANCELLABLE_PLAN_STATES,
    EDITABLE_PLAN_STATES,
    SEVERITY_RANK,
    TERMINAL_PLAN_STATES,
    Area,
    ChangeType,
    PlanStatus,
    Severity,
    TargetFormat,
)
from migrations_app.forms import DecisionForm, EmergencyForm, OverrideForm, PlanCreateForm, PlanOptionsForm, ReviewForm
from migrations_app.models import CheckResult, EmergencyReview, MigrationPlan, PlanItem, Prediction
from migrations_app.services import live, scheduling, waves
from migrations_app.services import plans as plan_services
from migrations_app.services.live import HOST_BLOBS
from vmportal import access
from vmportal.access import Action
from vmportal.ratelimits import over_limit, refusal

PAGE_SIZE = 50


def _plan_for(request: HttpRequest, pk: int, *related: str) -> MigrationPlan:
    try:
        return MigrationPlan.objects.visible_to(request.user).select_related("team", "requester", *related).get(pk=pk)
    except MigrationPlan.DoesNotExist:
        raise Http404("No such plan, or it is not one of your teams' plans.") from None


@login_required
@require_safe
def plan_list(request: HttpRequest) -> HttpResponse:
    plans = (
        MigrationPlan.objects.visible_to(request.user)
        .select_related("team", "requester")
        .annotate(item_count=Count("items"))
        .order_by("-created_at", "-pk")
    )
    page = Paginator(plans, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "migrations_app/plan_list.html", {"page": page})


@login_required
def plan_create(request: HttpRequest) -> HttpResponse:
    access.check_view(request.user, Action.PLAN_CREATE)
    visible = VirtualMachine.objects.visible_to(request.user).present().select_related("host", "team")
    if request.method == "POST":
        form = PlanCreateForm(request.POST)
        if form.is_valid():
            if over_limit(request, "plan-create"):
                return refusal(request, "plan-create")
            dest = form.cleaned_data.pop("destination")
            vm_ids = form.cleaned_data.pop("vms")
            try:
                plan = plan_services.create_plan(
                    request.user, vm_ids=vm_ids, destination_id=dest.pk if dest else None, **form.options()
                )
            except plan_services.PlanError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Plan created. The audit is running; results appear below in a few seconds.")
                return redirect(plan)
        selected = set(request.POST.getlist("vms"))
    else:
        form = PlanCreateForm()
        selected = set(request.GET.getlist("vm"))
    q = request.GET.get("q", "").strip()[:100]
    candidates = visible.filter(name__icontains=q) if q else visible
    page = Paginator(candidates.order_by("name", "pk"), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "migrations_app/plan_create.html",
        {
            "form": form,
            "page": page,
            "q": q,
            "selected": {str(s) for s in selected},
            "preselected": visible.filter(pk__in=[int(s) for s in selected if str(s).isdigit()][:500]),
        },
    )


#: stored for other pages and large: the VMs' XML and the hosts' capability documents
LARGE_FIELDS_NOT_SHOWN = [
    "vm__xml",
    *(f"{host}__{field}" for host in ("vm__host", "source", "destination") for field in HOST_BLOBS),
]
#: plans with more VMs than this show passed checks as one line per check, not one per VM
AUDIT_ROWS_PER_VM_UP_TO = 5


RESULT_FIELDS = ("id", "item_id", "check_id", "area", "severity", "message", "evidence", "remediation")


def _load_results(audit: Any, items: dict[int, PlanItem]) -> tuple[list[CheckResult], list[dict[str, Any]]]:
    """The audit's results: (those listed one per VM, with their item attached; the passed ones folded).

    In plans of many VMs, the checks that passed are folded into one line per check ("passed for 48 of
    50 VMs"), so the problems stay in view; anything not passed is always listed per VM. The folding is
    done by the database (a plan of 500 VMs has 16,000 results)."""
    fold = len(items) > AUDIT_ROWS_PER_VM_UP_TO
    listed_query = audit.results.exclude(severity=Severity.PASS) if fold else audit.results.all()
    listed = []
    for values in listed_query.values_list(*RESULT_FIELDS):
        result = CheckResult(audit_id=audit.pk, **dict(zip(RESULT_FIELDS, values, strict=True)))
        result.item = items[result.item_id]  # loaded already, with its VM: one object each, not one per result
        listed.append(result)
    passed = (
        list(
            audit.results.filter(severity=Severity.PASS)
            .values("area", "check_id")
            .annotate(count=Count("id"), message=Min("message"))
            .order_by("check_id")
        )
        if fold
        else []
    )
    return listed, passed


def _group_results(results: list[CheckResult], passed: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Areas in catalogue order, each with its listed results worst first and its folded passes (one line
    per check: count and an example); the worst area first overall."""
    by_area: dict[str, list[CheckResult]] = defaultdict(list)
    for result in results:
        by_area[result.area].append(result)
    folded: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in passed or []:
        folded[entry["area"]].append(entry)
    groups = []
    for area in Area:
        rows = sorted(by_area.get(area.value, []), key=lambda r: (-SEVERITY_RANK[Severity(r.severity)], r.check_id))
        passes = folded.get(area.value, [])
        if rows or passes:
            worst = rows[0].severity if rows else Severity.PASS
            counts = {s.value: sum(1 for r in rows if r.severity == s.value) for s in Severity}
            counts[Severity.PASS.value] += sum(p["count"] for p in passes)
            groups.append(
                {
                    "area": area.label,
                    "worst": worst,
                    "rank": SEVERITY_RANK[Severity(worst)],
                    "rows": rows,
                    "passed": passes,
                    "counts": counts,
                }
            )
    groups.sort(key=lambda g: -int(str(g["rank"])))
    return groups


@login_required
@require_safe
def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk, "emergency__ran_by", "emergency__reviewed_by")
    editable = plan.status in EDITABLE_PLAN_STATES
    items_query = plan.items.select_related("vm", "vm__host", "source", "destination").defer(*LARGE_FIELDS_NOT_SHOWN)
    if editable:  # the per-NIC and per-disk mapping forms
        items_query = items_query.prefetch_related(
            "vm__nics", Prefetch("vm__disks", queryset=Disk.objects.select_related("pool"))
        )
    items = list(items_query)
    dest_ids = {i.destination_id for i in items if i.destination_id} if editable else set()
    networks: dict[int, list[str]] = defaultdict(list)
    pools: dict[int, list[StoragePool]] = defaultdict(list)
    if dest_ids:
        for net in Network.objects.filter(host_id__in=dest_ids, present=True).order_by("name"):
            networks[net.host_id].append(net.name)
        for pool in StoragePool.objects.filter(host_id__in=dest_ids, present=True).order_by("name"):
            pools[pool.host_id].append(pool)
    audit = plan_services.latest_audit(plan)
    results, passed = _load_results(audit, {item.pk: item for item in items}) if audit else ([], [])
    everything = sees_everything(request.user)
    for result in results:
        result.shown_evidence = evidence_for(result.evidence, everything)  # type: ignore[attr-defined]
    predictions = list(Prediction.objects.filter(audit=audit).order_by("item", "mode")) if audit else []
    by_item: dict[int, dict[str, Prediction]] = defaultdict(dict)
    for prediction in predictions:
        by_item[prediction.item_id][prediction.mode] = prediction
    results_by_item: dict[int, list[CheckResult]] = defaultdict(list)
    for result in results:
        results_by_item[result.item_id].append(result)
    rows = []
    for item in items:
        item_results = results_by_item.get(item.pk, [])
        worst = max((SEVERITY_RANK[Severity(r.severity)] for r in item_results), default=-1)
        if worst < 0 and passed:  # folded: every VM is audited with every check
            worst = SEVERITY_RANK[Severity.PASS]
        rows.append(
            {
                "item": item,
                "nics": [(nic, item.network_map.get(nic.mac, "")) for nic in item.vm.nics.all()] if editable else [],
                "disks": [
                    (d, item.storage_map.get(d.target, {})) for d in item.vm.disks.all() if d.target in item.storage_map
                ]
                if editable
                else [],
                "networks": networks.get(item.destination_id or 0, []),
                "pools": pools.get(item.destination_id or 0, []),
                "live": by_item.get(item.pk, {}).get("live"),
                "cold": by_item.get(item.pk, {}).get("cold"),
                "worst": [s for s, rank in SEVERITY_RANK.items() if rank == worst][0] if worst >= 0 else "",
            }
        )
    overrides = list(plan.overrides.select_related("admin"))
    blocks = (
        plan_services.uncovered_blocks(plan, audit, results=results, overrides=overrides)
        if audit and audit.status == "done"
        else []
    )
    editable = editable and access.allowed(request.user, Action.PLAN_EDIT, plan)
    runs = live.latest_runs(i.pk for i in items)
    for row in rows:
        row["run"] = runs.get(row["item"].pk)  # type: ignore[attr-defined]
    pending = plan.status == PlanStatus.PENDING_APPROVAL
    user = request.user
    try:
        emergency: EmergencyReview | None = plan.emergency
    except EmergencyReview.DoesNotExist:
        emergency = None
    window = scheduling.effective_window(
        plan, hosts={i.source_id for i in items} | {i.destination_id for i in items if i.destination_id}
    )
    return render(
        request,
        "migrations_app/plan_detail.html",
        {
            "plan": plan,
            "rows": rows,
            "audit": audit,
            "groups": _group_results(results, passed),
            "blocks": blocks,
            "editable": editable,
            "can_override": bool(blocks) and access.allowed(user, Action.PLAN_OVERRIDE, plan),
            "overrides": overrides,
            "approvals": plan.approvals.select_related("approver", "policy"),
            "may_decide": pending and access.allowed(user, Action.PLAN_APPROVE, plan),
            "decide_refusal": access.refusal(user, Action.PLAN_APPROVE, plan) if pending else None,
            "may_emergency": pending
            and plan.change_type == ChangeType.EMERGENCY
            and access.allowed(user, Action.PLAN_EMERGENCY, plan),
            "emergency": emergency,
            "may_review": emergency is not None
            and emergency.reviewed_at is None
            and access.allowed(user, Action.PLAN_REVIEW, plan),
            "may_cancel": plan.status in CANCELLABLE_PLAN_STATES and access.allowed(user, Action.PLAN_CANCEL, plan),
            "may_plan_again": plan.status in TERMINAL_PLAN_STATES
            and plan.status != PlanStatus.SUCCEEDED
            and access.allowed(user, Action.PLAN_EDIT, plan),
            "decision_form": DecisionForm(),
            "emergency_form": EmergencyForm(),
            "review_form": ReviewForm(),
            "window": window,
            "hosts": plan_services.offered_destinations().order_by("name"),
            "formats": TargetFormat.choices,
            "options_form": PlanOptionsForm(initial={f: getattr(plan, f) for f in plan_services.OPTION_FIELDS}),
            "override_form": OverrideForm(),
            "auditing": plan.status == PlanStatus.AUDITING,
            "fits_window": scheduling.fits_window(plan, window),
            # live progress of the runs (migrations_app.consumers.PlanConsumer keeps it current)
            "progress": live.plan_progress(plan, items, by_item if audit else None, runs=runs),
            # the waves and their predicted timeline, as the last audit's wave planner stored them
            "waves": waves.shown(plan, items),
            "history": live.plan_history(plan),
        },
    )


def _post_action(request: HttpRequest, plan: Any, action: Any, success: str) -> HttpResponse:
    """Run a service action; its refusal becomes a message. Then back to `plan` (any redirect target)."""
    try:
        action()
    except plan_services.PlanError as exc:
        messages.error(request, f"{exc} Nothing was changed.")
    else:
        messages.success(request, success)
    return redirect(plan)


@login_required
@require_POST
def plan_update_item(request: HttpRequest, pk: int, item_id: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_EDIT, plan)
    try:
        item = plan.items.select_related("vm", "destination", "plan__team").get(pk=item_id)
    except PlanItem.DoesNotExist:
        raise Http404("No such item in this plan.") from None
    post = request.POST
    destination = post.get("destination", "")
    kwargs: dict[str, Any] = {}
    if destination == "auto":
        kwargs["choose_destination"] = True
    elif destination:
        if not destination.isdigit():
            messages.error(request, "Choose a destination host. Nothing was changed.")
            return redirect(plan)
        kwargs["destination_id"] = int(destination)
    if not kwargs or kwargs.get("destination_id") == item.destination_id:
        kwargs.pop("destination_id", None)
        network_map = {k[4:]: v for k, v in post.items() if k.startswith("net-")}
        storage_map = {
            k[5:]: {"pool": v, "format": post.get(f"fmt-{k[5:]}", TargetFormat.KEEP)}
            for k, v in post.items()
            if k.startswith("pool-")
        }
        if network_map:
            kwargs["network_map"] = network_map
        if storage_map:
            kwargs["storage_map"] = storage_map
    return _post_action(
        request,
        plan,
        lambda: plan_services.update_item(request.user, item, **kwargs),
        f"{item.vm.name} updated; the audit runs again.",
    )


@login_required
@require_POST
def plan_update_options(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_EDIT, plan)
    form = PlanOptionsForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(str(e) for e in v)}" for k, v in form.errors.items())
        messages.error(request, f"The options were not saved: {errors}")
        return redirect(plan)
    return _post_action(
        request,
        plan,
        lambda: plan_services.update_options(request.user, plan, **form.options()),
        "Options saved; the audit runs again.",
    )


@login_required
@require_POST
def plan_reaudit(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_EDIT, plan)
    if over_limit(request, "plan-audit"):
        return refusal(request, "plan-audit")
    return _post_action(request, plan, lambda: plan_services.reaudit(request.user, plan), "The audit runs again.")


@login_required
@require_POST
def plan_submit(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_EDIT, plan)
    return _post_action(
        request,
        plan,
        lambda: plan_services.submit(request.user, plan),
        "Submitted for approval. An approver will review the audit and the prediction.",
    )


@login_required
@require_POST
def plan_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_CANCEL, plan)
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation to cancel the plan. Nothing was changed.")
        return redirect(plan)
    running = plan.status == PlanStatus.RUNNING
    return _post_action(
        request,
        plan,
        lambda: plan_services.cancel(request.user, plan),
        "Cancel requested: VMs not yet moving will not move, moves under way are aborted (a VM already switching "
        "over finishes its move)."
        if running
        else "Plan cancelled. Nothing was moved.",
    )


@login_required
@require_POST
def plan_again(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_EDIT, plan)
    try:
        new = plan_services.plan_again(request.user, plan)
    except plan_services.PlanError as exc:
        messages.error(request, f"{exc} Nothing was changed.")
        return redirect(plan)
    messages.success(request, f"A new draft of “{plan.name}” was made; its audit is running.")
    return redirect(new)


@login_required
@require_POST
def plan_override(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan_for(request, pk)
    access.check_view(request.user, Action.PLAN_OVERRIDE, plan)
    form = OverrideForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, "Give a reason of at least 10 characters and tick the confirmation. Nothing was changed."
        )
        return redirect(plan)
    return _post_action(
        request,
        plan,
        lambda: plan_services.record_override(request.user, plan, form.cleaned_data["reason"]),
        "Override recorded; it is shown to approvers with your reason.",
    )
