"""Run pages, history and reports. Each view parses, authorises (vmportal.access), calls one
service, renders."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from inventory.models import Host, Team
from inventory.permissions import sees_everything
from migrations_app.choices import Mode
from migrations_app.models import MigrationRun
from migrations_app.services import live, reports, scheduling
from migrations_app.services.plans import PlanError
from vmportal import access

PAGE_SIZE = 50


def _run_for(request: HttpRequest, pk: int) -> MigrationRun:
    try:
        return access.visible_runs(request.user).select_related("vm", "source", "destination", "item__plan").get(pk=pk)
    except MigrationRun.DoesNotExist:
        raise Http404("No such run, or it is not one of your teams' runs.") from None


@login_required
@require_safe
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_for(request, pk)
    snapshot = live.run_snapshot(run)
    latest = snapshot["latest"] or {}
    return render(
        request,
        "migrations_app/run_detail.html",
        {
            "run": run,
            "plan": run.item.plan,
            "snap": snapshot["run"],
            "latest": latest,
            "timeline": snapshot["timeline"],
            "sample_count": len(snapshot["samples"]),
            "validation": snapshot["validation"],
            "may_cancel": not snapshot["run"]["terminal"]
            and access.allowed(request.user, access.Action.RUN_CANCEL, run),
        },
    )


@login_required
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_for(request, pk)
    access.check_view(request.user, access.Action.RUN_CANCEL, run)
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation to cancel the move. Nothing was changed.")
        return redirect("runs:run_detail", pk=run.pk)
    try:
        scheduling.cancel_run(request.user, run)
    except PlanError as exc:
        messages.error(request, f"{exc} Nothing was changed.")
    else:
        messages.success(request, "Cancel requested: the move stops and the VM stays on (or returns to) the source.")
    return redirect("runs:run_detail", pk=run.pk)


# ---- history and reports ----------------------------------------------------------------------------------


class RunFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="VM")
    outcome = forms.ChoiceField(required=False, choices=reports.OUTCOME_CHOICES)
    mode = forms.ChoiceField(required=False, choices=[("", "Any mode"), (Mode.LIVE, "Live"), (Mode.COLD, "Cold")])
    host = forms.CharField(required=False, max_length=64)
    team = forms.CharField(required=False, max_length=100)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            raise forms.ValidationError("“Until” is before “since”.")
        return data


def _filtered(request: HttpRequest) -> tuple[RunFilterForm, Any]:
    form = RunFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    return form, reports.filter_runs(access.visible_runs(request.user), filters)


@login_required
@require_safe
def run_history(request: HttpRequest) -> HttpResponse:
    form, runs = _filtered(request)
    page = Paginator(
        runs.select_related("vm", "source", "destination", "item__plan").order_by("-queued_at", "-pk"), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    for run in page.object_list:
        run.duration_s = live.duration_s(run)  # type: ignore[attr-defined]
    success = reports.success_by_day(runs)
    downtime = reports.downtime_histogram(runs)
    query = request.GET.copy()
    query.pop("page", None)
    user = request.user
    return render(
        request,
        "migrations_app/run_history.html",
        {
            "form": form,
            "page": page,
            "totals": reports.totals(runs),
            "success": success,
            "downtime": downtime,
            # chart data as attributes (escaped by the template); scripts read them, nothing is inline
            "success_json": json.dumps(success),
            "downtime_json": json.dumps(downtime),
            "hosts": Host.objects.order_by("name").values_list("name", flat=True),
            "teams": (Team.objects.all() if sees_everything(user) else Team.objects.filter(members=user.pk))
            .order_by("name")
            .values_list("slug", "name"),
            "querystring": query.urlencode(),
            "filtered": bool(request.GET.keys() - {"page"}),
        },
    )


def _export_name(ext: str) -> str:
    return f"vmportal-runs-{timezone.localtime():%Y%m%d-%H%M}.{ext}"


@login_required
@require_safe
def run_export(request: HttpRequest, fmt: str) -> HttpResponseBase:
    form, runs = _filtered(request)
    if request.GET and not form.is_valid():
        messages.error(request, "The filters are not valid; nothing was exported.")
        return redirect(f"{reverse('runs:history')}?{request.GET.urlencode()}")
    rows = reports.export_rows(runs)
    if fmt == "csv":
        response = StreamingHttpResponse(reports.csv_lines(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(reports.json_chunks(rows), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_export_name(fmt)}"'
    return response
