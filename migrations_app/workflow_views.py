"""Approval queue, decisions, emergency changes, runs, notifications and the audit log.

Each view parses, asks the permission layer (404 for objects of other teams, 403 with the reason for
actions not allowed), calls one service, renders.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from migrations_app.choices import PlanStatus, Severity
from migrations_app.forms import AuditLogFilterForm, DecisionForm, EmergencyForm, ReviewForm
from migrations_app.models import Audit, ChangeWindow, CheckResult, MigrationPlan, MigrationRun, Notification
from migrations_app.services import approvals, auditlog, notifications, scheduling
from migrations_app.views import _post_action
from vmportal import access
from vmportal.access import Action

PAGE_SIZE = 50


def _plan(request: HttpRequest, pk: int) -> MigrationPlan:
    return access.get_visible_or_404(request.user, MigrationPlan.objects.select_related("team", "requester"), pk=pk)


# ---- the approval queue -----------------------------------------------------------------------------------


@login_required
@require_safe
def approval_queue(request: HttpRequest) -> HttpResponse:
    """Pending plans, soonest window first, with their risk; emergency changes waiting for review."""
    access.check_view(request.user, Action.APPROVAL_QUEUE)
    plans = list(
        MigrationPlan.objects.filter(status=PlanStatus.PENDING_APPROVAL)
        .select_related("team", "requester")
        .annotate(item_count=Count("items", distinct=True), override_count=Count("overrides", distinct=True))
    )
    counts: dict[int, dict[str, int]] = {p.pk: {} for p in plans}
    # the newest audit of each pending plan, then its warnings and blocks: two queries for any number of plans
    latest = Audit.objects.filter(plan__in=plans).order_by("plan_id", "-created_at", "-pk").distinct("plan_id")
    for row in (
        CheckResult.objects.filter(audit__in=list(latest), severity__in=[Severity.WARN, Severity.BLOCK])
        .values("audit__plan_id", "severity")
        .annotate(n=Count("id"))
    ):
        counts[row["audit__plan_id"]][row["severity"]] = row["n"]
    ids = [p.pk for p in plans]
    mine = set(
        MigrationPlan.objects.filter(pk__in=ids, approvals__approver=request.user.pk).values_list("pk", flat=True)
    )
    given = dict(
        MigrationPlan.objects.filter(pk__in=ids)
        .annotate(n=Count("approvals", filter=Q(approvals__decision="approve")))
        .values_list("pk", "n")
    )
    rows = []
    hosts = scheduling.hosts_of(ids)
    windows = list(ChangeWindow.objects.select_related("host", "team"))
    for plan in plans:
        window = scheduling.effective_window(plan, hosts=hosts.get(plan.pk, set()), windows=windows)
        fits = scheduling.fits_window(plan, window)
        rows.append(
            {
                "plan": plan,
                "window": window,
                "fits": fits,
                "warnings": counts[plan.pk].get(Severity.WARN, 0),
                "blocks": counts[plan.pk].get(Severity.BLOCK, 0),
                "decided": plan.pk in mine,
                "own": plan.requester_id == request.user.pk,
                "approvals": given.get(plan.pk, 0),
                "may_decide": access.allowed(request.user, Action.PLAN_APPROVE, plan) and plan.pk not in mine,
            }
        )
    far = timezone.now() + timedelta(days=36500)
    rows.sort(key=lambda r: (r["plan"].change_type != "emergency", r["window"].start or far, r["plan"].pk))
    return render(
        request,
        "migrations_app/approval_queue.html",
        {
            "rows": rows,
            "to_review": [
                (review, access.allowed(request.user, Action.PLAN_REVIEW, review.plan))
                for review in approvals.to_review()
            ],
            "form": DecisionForm(),
            "review_form": ReviewForm(),
        },
    )


@login_required
@require_POST
def plan_decide(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan(request, pk)
    access.check_view(request.user, Action.PLAN_APPROVE, plan)
    form = DecisionForm(request.POST)
    back = request.POST.get("next") == "queue"
    target: Any = "migrations_app:approval_queue" if back else plan
    if not form.is_valid():
        messages.error(request, "Choose approve or reject and give a comment. Nothing was changed.")
        return redirect(target)
    comment = form.cleaned_data["comment"]
    if form.cleaned_data["decision"] == "approve":
        return _post_action(
            request,
            target,
            lambda: approvals.approve(request.user, plan, comment),
            f"You approved “{plan.name}”.",
        )
    return _post_action(
        request, target, lambda: approvals.reject(request.user, plan, comment), f"You rejected “{plan.name}”."
    )


@login_required
@require_POST
def plan_emergency(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan(request, pk)
    access.check_view(request.user, Action.PLAN_EMERGENCY, plan)
    form = EmergencyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a justification of at least 10 characters and tick the confirmation.")
        return redirect(plan)
    return _post_action(
        request,
        plan,
        lambda: approvals.run_emergency(request.user, plan, form.cleaned_data["justification"]),
        "Emergency change started; it is listed for review by another approver.",
    )


@login_required
@require_POST
def plan_review(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _plan(request, pk)
    access.check_view(request.user, Action.PLAN_REVIEW, plan)
    form = ReviewForm(request.POST)
    target: Any = "migrations_app:approval_queue" if request.POST.get("next") == "queue" else plan
    if not form.is_valid():
        messages.error(request, "Write what you found in a few words. Nothing was changed.")
        return redirect(target)
    return _post_action(
        request,
        target,
        lambda: approvals.review_emergency(request.user, plan, form.cleaned_data["comment"]),
        "Review recorded.",
    )


# ---- runs ------------------------------------------------------------------------------------------------------


def _run(request: HttpRequest, pk: int) -> MigrationRun:
    return access.get_visible_or_404(
        request.user,
        MigrationRun.objects.select_related("item__plan__team", "vm", "source", "destination"),
        pk=pk,
    )


# ---- notifications -------------------------------------------------------------------------------------------


@login_required
@require_safe
def notification_list(request: HttpRequest) -> HttpResponse:
    items = Notification.objects.filter(user=request.user.pk).select_related("plan")
    page = Paginator(items, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "migrations_app/notifications.html", {"page": page})


@login_required
@require_POST
def notifications_read(request: HttpRequest) -> HttpResponse:
    ids = [int(i) for i in request.POST.getlist("id") if i.isdigit()][:500]
    count = notifications.mark_read(request.user, ids or None)
    messages.success(request, f"{count} notification{'s' if count != 1 else ''} marked as read.")
    return redirect("notifications")


# ---- the audit log -----------------------------------------------------------------------------------------------


@login_required
@require_safe
def audit_log(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    access.check_view(request.user, Action.AUDITLOG_VIEW)
    form = AuditLogFilterForm(request.GET or None)
    filters = {k: v for k, v in (form.cleaned_data.items() if form.is_valid() else []) if v not in (None, "")}
    entries = auditlog.search(**filters)
    if request.GET.get("format") == "csv":
        response = StreamingHttpResponse(auditlog.csv_rows(entries), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="vmportal-audit-log-{stamp}.csv"'
        return response
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("format", None)
    return render(
        request,
        "migrations_app/audit_log.html",
        {"form": form, "page": page, "querystring": query.urlencode(), "filtered": bool(filters)},
    )
