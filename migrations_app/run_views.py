"""Run pages, history and reports. Each view parses, authorises (vmportal.access), calls one
service, renders."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from inventory.models import Host, Team, VirtualMachine
from inventory.permissions import sees_everything
from migrations_app.choices import Mode, ProbeKind
from migrations_app.models import MigrationRun, Probe
from migrations_app.services import auditlog, live, reports, scheduling, validation
from migrations_app.services.plans import PlanError
from vmportal import access

PAGE_SIZE = 50


def _run_for(request: HttpRequest, pk: int) -> MigrationRun:
    try:
        return (
            access.visible_runs(request.user)
            .select_related("vm", "source", "destination", "item__plan", "validation")
            .get(pk=pk)
        )
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
            "may_move_back": validation.may_move_back(run)
            and access.allowed(request.user, access.Action.RUN_MOVE_BACK, run),
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


# ---- post-migration validation ------------------------------------------------------------------------------


def _report_context(run: MigrationRun) -> dict[str, Any]:
    report = validation.report_payload(run.validation) if hasattr(run, "validation") else None
    return {
        "run": {
            "id": run.pk,
            "vm": run.vm.name,
            "source": run.source.name,
            "destination": run.destination.name,
            "mode": run.mode,
            "status": run.status,
            "status_label": run.get_status_display(),
            "downtime_ms": run.downtime_ms,
            "max_downtime_ms": (run.options or {}).get("max_downtime_ms"),
            "error": run.error,
            "what_was_done": run.outcome,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
        "validation": report,
    }


@login_required
@require_safe
def run_validation(request: HttpRequest, pk: int) -> HttpResponse:
    """The validation report of a run as a printable page."""
    run = _run_for(request, pk)
    data = _report_context(run)
    return render(
        request,
        "migrations_app/validation_report.html",
        {
            "run": run,
            "plan": run.item.plan,
            "report": data["validation"],
            "limit": data["run"]["max_downtime_ms"],
            "may_move_back": validation.may_move_back(run)
            and access.allowed(request.user, access.Action.RUN_MOVE_BACK, run),
        },
    )


@login_required
@require_safe
def run_validation_json(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_for(request, pk)
    return JsonResponse(_report_context(run), json_dumps_params={"indent": 1})


@login_required
@require_POST
def run_move_back(request: HttpRequest, pk: int) -> HttpResponse:
    run = _run_for(request, pk)
    access.check_view(request.user, access.Action.RUN_MOVE_BACK, run)
    try:
        plan = validation.offer_move_back(request.user, run)
    except PlanError as exc:
        messages.error(request, f"{exc} Nothing was changed.")
        return redirect("runs:run_detail", pk=run.pk)
    messages.success(request, "A plan to move the VM back was created and audited; submit it for approval.")
    return redirect(plan.get_absolute_url())


# ---- probes a VM's team defines ------------------------------------------------------------------------------


class ProbeForm(forms.ModelForm):
    class Meta:
        model = Probe
        fields = ["kind", "address", "port", "path", "expect_status"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == ProbeKind.HTTP:
            path = data.get("path") or "/"
            if not path.startswith("/"):
                self.add_error("path", "An HTTP path starts with “/”.")
            data["path"] = path
            if not data.get("expect_status"):
                data["expect_status"] = 200
        else:
            data["path"] = ""
            data["expect_status"] = None
        address = data.get("address") or ""
        if address and not all(c.isalnum() or c in ".-:" for c in address):
            self.add_error("address", "An IP address or a host name (letters, digits, dots, dashes).")
        return data


@login_required
def vm_probes(request: HttpRequest, vm_id: int) -> HttpResponse:
    vm = access.get_visible_or_404(request.user, VirtualMachine.objects.all(), pk=vm_id)
    may_edit = access.allowed(request.user, access.Action.PROBE_EDIT, vm)
    form = ProbeForm(request.POST or None)
    if request.method == "POST":
        access.check_view(request.user, access.Action.PROBE_EDIT, vm)
        if form.is_valid():
            probe = form.save(commit=False)
            probe.vm = vm
            probe.created_by = request.user
            probe.save()
            auditlog.record(request.user, "probe.create", vm, after={"probe": str(probe)})
            messages.success(request, f"Probe added: {probe}. It runs after every move of {vm.name}.")
            return redirect("runs:vm_probes", vm_id=vm.pk)
    elif request.method != "GET":
        return HttpResponse(status=405)
    return render(
        request,
        "migrations_app/vm_probes.html",
        {"vm": vm, "probes": list(vm.probes.all()), "form": form, "may_edit": may_edit},
    )


@login_required
@require_POST
def probe_delete(request: HttpRequest, pk: int) -> HttpResponse:
    probe = Probe.objects.select_related("vm").filter(pk=pk).first()
    if probe is None or not access.visible(request.user, probe.vm):
        raise Http404("No such probe, or it is not one of your teams'.")
    access.check_view(request.user, access.Action.PROBE_EDIT, probe.vm)
    auditlog.record(request.user, "probe.delete", probe.vm, before={"probe": str(probe)})
    probe.delete()
    messages.success(request, "Probe removed.")
    return redirect("runs:vm_probes", vm_id=probe.vm_id)
