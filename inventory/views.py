"""Inventory pages. Each view parses, authorises, calls one service, renders."""

from __future__ import annotations

import uuid as uuid_lib
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.views.decorators.http import require_POST, require_safe

from inventory import jobs
from inventory.choices import PowerState
from inventory.forms import AssignTeamForm, HostRegistrationForm, VMFilterForm
from inventory.models import Host, StoragePool, Team, VirtualMachine
from inventory.permissions import is_admin, sees_everything
from inventory.services import hosts as host_services
from vmportal import access
from vmportal.access import Action
from vmportal.ratelimits import over_limit
from vmportal.ratelimits import refusal as rate_refusal

PAGE_SIZE = 50


def _admin_only(request: HttpRequest, action: Action = Action.HOST_MANAGE) -> None:
    access.check_view(request.user, action)


def _raw_percent(part: int | None, whole: int | None) -> int:
    return round(100 * (part or 0) / whole) if whole else 0


def _percent(part: int | None, whole: int | None) -> int:
    """For the bar: 0–100 (the text beside it shows the real figure, overcommit included)."""
    return max(0, min(100, _raw_percent(part, whole)))


def _usage_text(used: str, total: str, pct: int) -> str:
    return f"{used} of {total} ({pct}%{', overcommitted' if pct > 100 else ''})"


def _usage(hosts: list[Host]) -> list[dict[str, Any]]:
    """Per-host usage figures from two grouped queries, whatever the number of hosts."""
    vm_stats = {
        row["host"]: row
        for row in VirtualMachine.objects.filter(present=True)
        .values("host")
        .annotate(
            total=Count("id"),
            running=Count("id", filter=Q(state=PowerState.RUNNING)),
            vcpus=Sum("vcpus", filter=Q(state=PowerState.RUNNING)),
            memory=Sum("memory", filter=Q(state=PowerState.RUNNING)),
        )
    }
    pool_stats = {
        row["host"]: row
        for row in StoragePool.objects.filter(present=True, active=True)
        .values("host")
        .annotate(capacity=Sum("capacity"), allocation=Sum("allocation"))
    }
    rows = []
    for host in hosts:
        vms = vm_stats.get(host.pk, {})
        pools = pool_stats.get(host.pk, {})
        rows.append(
            {
                "host": host,
                "vm_total": vms.get("total", 0),
                "vm_running": vms.get("running", 0),
                "vcpus": vms.get("vcpus") or 0,
                "vcpu_pct": _percent(vms.get("vcpus"), host.cpus),
                "memory_used": host.memory_used,
                "memory_pct": _percent(host.memory_used, host.memory_total),
                "storage_capacity": pools.get("capacity") or 0,
                "storage_allocation": pools.get("allocation") or 0,
                "storage_pct": _percent(pools.get("allocation"), pools.get("capacity")),
                "memory_text": f"{filesizeformat(host.memory_used)} of {filesizeformat(host.memory_total)}",
                "vcpu_text": f"{vms.get('vcpus') or 0} vCPUs running on {host.cpus} CPUs",
                "storage_text": f"{filesizeformat(pools.get('allocation') or 0)} of {filesizeformat(pools.get('capacity') or 0)}",
            }
        )
    return rows


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    hosts = list(Host.objects.all())
    visible = VirtualMachine.objects.visible_to(request.user).present()
    return render(
        request,
        "inventory/dashboard.html",
        {
            "rows": _usage(hosts),
            "my_vm_count": visible.count(),
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
            "usage": _usage([host])[0],
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

    return render(
        request,
        "inventory/vm_detail.html",
        {
            "vm": vm,
            "disks": vm.disks.select_related("pool"),
            "nics": vm.nics.select_related("network"),
            "team_form": form,
            "backups": backups_of(vm)[:20],
            "retained_disks": retained_disks_of(vm),
        },
    )


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
