"""Inventory pages. Each view parses, authorises, calls one service, renders."""

from __future__ import annotations

import uuid as uuid_lib
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from inventory import jobs
from inventory.forms import AssignTeamForm, HostRegistrationForm, VMFilterForm
from inventory.models import Host, Team, VirtualMachine
from inventory.permissions import is_admin, sees_everything
from inventory.services import capacity, groups
from inventory.services import hosts as host_services
from vmportal import access
from vmportal.access import Action
from vmportal.ratelimits import over_limit
from vmportal.ratelimits import refusal as rate_refusal

PAGE_SIZE = 50
#: host cards on one page of the fleet dashboard (those needing attention first)
DASHBOARD_HOSTS = 48


def _admin_only(request: HttpRequest, action: Action = Action.HOST_MANAGE) -> None:
    access.check_view(request.user, action)


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    from migrations_app.services import live

    page = Paginator(capacity.by_attention(Host.objects.all()), DASHBOARD_HOSTS).get_page(request.GET.get("page"))
    visible = VirtualMachine.objects.visible_to(request.user).present()
    return render(
        request,
        "inventory/dashboard.html",
        {
            "rows": capacity.usage(page.object_list),
            "page": page,
            "summary": capacity.summary(),
            "my_vm_count": visible.count(),
            "moving": [live.run_row(run) for run in live.fleet_runs(access.visible_runs(request.user))],
        },
    )


@login_required
@require_safe
def host_detail(request: HttpRequest, name: str) -> HttpResponse:
    host = get_object_or_404(Host, name=name)
    vms = (
        VirtualMachine.objects.visible_to(request.user)
        .filter(host=host)
        .select_related("team")
        .order_by("-present", "name")
    )
    page = Paginator(vms, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "inventory/host_detail.html",
        {
            "host": host,
            "usage": capacity.usage([host])[0],
            "pools": host.pools.order_by("-present", "name"),
            "networks": host.networks.order_by("-present", "name"),
            "page": page,
        },
    )


@login_required
def host_register(request: HttpRequest) -> HttpResponse:
    _admin_only(request)
    form = HostRegistrationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            host = host_services.register_host(request.user, **form.cleaned_data)
        except host_services.HostError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Host {host.name} registered; its first inventory sync is queued.")
            return redirect(host)
    return render(request, "inventory/host_register.html", {"form": form})


@login_required
@require_POST
def host_test_connection(request: HttpRequest, name: str) -> HttpResponse:
    _admin_only(request)
    host = get_object_or_404(Host, name=name)
    if over_limit(request, "host-test"):
        return rate_refusal(request, "host-test")
    report = host_services.probe_host(host)
    if report.ok:
        messages.success(
            request,
            f"{host.name} answered in {report.elapsed_ms} ms: {report.hypervisor_version}, "
            f"libvirt {report.libvirt_version}, host name {report.hostname}.",
        )
    else:
        messages.error(request, f"{host.name} did not answer: {report.message} Details: {report.raw}")
    return redirect(host)


@login_required
@require_POST
def host_sync(request: HttpRequest, name: str) -> HttpResponse:
    _admin_only(request)
    host = get_object_or_404(Host, name=name)
    jobs.enqueue_sync(host.pk)
    messages.info(request, f"Sync of {host.name} queued; refresh in a few seconds.")
    return redirect(host)


@login_required
@require_safe
def vm_list(request: HttpRequest) -> HttpResponse:
    form = VMFilterForm(request.GET or None)
    vms = VirtualMachine.objects.visible_to(request.user).select_related("host", "team")
    filters: dict[str, Any] = {}
    if form.is_valid():
        filters = form.cleaned_data
    if not filters.get("missing"):
        vms = vms.present()
    if filters.get("q"):
        q = filters["q"]
        cond = Q(name__icontains=q) | Q(title__icontains=q) | Q(app__icontains=q)
        try:
            cond |= Q(uuid=uuid_lib.UUID(q))
        except ValueError:
            pass
        vms = vms.filter(cond)
    if filters.get("host"):
        vms = vms.filter(host__name=filters["host"])
    if filters.get("team"):
        vms = vms.filter(team__slug=filters["team"])
    if filters.get("state"):
        vms = vms.filter(state=filters["state"])
    page = Paginator(vms.order_by("name", "pk"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "inventory/vm_list.html",
        {
            "form": form,
            "page": page,
            "hosts": Host.objects.values_list("name", flat=True),
            "teams": _teams_for(request.user).values_list("slug", "name"),
            "filtered": any(filters.get(k) for k in ("q", "host", "team", "state")),
            "has_team": sees_everything(request.user) or Team.objects.filter(members=request.user.pk).exists(),
            "querystring": query.urlencode(),
        },
    )


def _teams_for(user: Any) -> Any:
    return Team.objects.all() if sees_everything(user) else Team.objects.filter(members=user.pk)


@login_required
@require_safe
def vm_detail(request: HttpRequest, uuid: uuid_lib.UUID) -> HttpResponse:
    try:
        vm = VirtualMachine.objects.visible_to(request.user).select_related("host", "team").get(uuid=uuid)
    except VirtualMachine.DoesNotExist:
        raise Http404("No such VM, or it is not one of your teams' VMs.") from None
    form = AssignTeamForm(initial={"team": vm.team}) if is_admin(request.user) else None
    from migrations_app.services.backups import backups_of, retained_disks_of  # backups section (issue 5)
    from migrations_app.services.runs import active_run_of

    return render(
        request,
        "inventory/vm_detail.html",
        {
            "vm": vm,
            "disks": vm.disks.select_related("pool"),
            "nics": vm.nics.select_related("network"),
            "team_form": form,
            "may_set_group": access.allowed(request.user, Action.PLAN_CREATE, vm),
            "backups": backups_of(vm)[:20],
            "retained_disks": retained_disks_of(vm),
            "moving": active_run_of(vm),
        },
    )


@login_required
@require_POST
def vm_set_group(request: HttpRequest, uuid: uuid_lib.UUID) -> HttpResponse:
    """The owner sets the VM's application group (VMs of one group move in one wave)."""
    vm = access.get_visible_or_404(request.user, VirtualMachine.objects.all(), uuid=uuid)
    access.check_view(request.user, Action.PLAN_CREATE, vm)
    try:
        groups.set_application_group(request.user, vm, request.POST.get("group", ""))
    except groups.GroupError as exc:
        messages.error(request, str(exc))
        return redirect(vm)
    messages.success(
        request, f"{vm.name} is in application group “{vm.app}”." if vm.app else f"{vm.name} is in no group."
    )
    return redirect(vm)


@login_required
@require_POST
def vm_assign_team(request: HttpRequest, uuid: uuid_lib.UUID) -> HttpResponse:
    vm = access.get_visible_or_404(request.user, VirtualMachine.objects.all(), uuid=uuid)
    _admin_only(request, Action.OWNERSHIP_MANAGE)
    form = AssignTeamForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose an existing team.")
        return redirect(vm)
    team = form.cleaned_data["team"]
    host_services.assign_team(request.user, [vm], team)
    messages.success(request, f"{vm.name} now belongs to {team.name if team else 'no team'}.")
    return redirect(vm)
