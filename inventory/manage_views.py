"""Admins' pages for who owns what: teams, their members, and which team owns which VM.
Auditors may look; admins change. Every change goes through a service that writes the audit log."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_POST, require_safe

from inventory.models import Host, Team, VirtualMachine
from inventory.services import hosts as host_services
from inventory.services import teams as team_services
from vmportal import access
from vmportal.access import Action

PAGE_SIZE = 100


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(
        max_length=100, required=False, help_text="The team tag in libvirt metadata; empty: made from the name."
    )


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)


class OwnershipForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.all(), required=False, empty_label="(no team)")
    vms = forms.ModelMultipleChoiceField(
        queryset=VirtualMachine.objects.all(), error_messages={"required": "Tick at least one VM."}
    )

    def clean_vms(self) -> Any:
        vms = self.cleaned_data["vms"]
        if len(vms) > 500:
            raise forms.ValidationError("At most 500 VMs at a time.")
        return vms


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    access.check_view(request.user, Action.SETTINGS_VIEW)
    may_change = access.allowed(request.user, Action.OWNERSHIP_MANAGE)
    form = TeamForm(request.POST or None)
    if request.method == "POST":
        access.check_view(request.user, Action.OWNERSHIP_MANAGE)
        if form.is_valid():
            try:
                team = team_services.create_team(request.user, form.cleaned_data["name"], form.cleaned_data["slug"])
            except team_services.TeamError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Team {team.name} created; add its members below.")
                return redirect("manage:team_detail", slug=team.slug)
    teams = Team.objects.annotate(
        member_count=Count("members", distinct=True), vm_count=Count("vms", filter=Q(vms__present=True), distinct=True)
    )
    return render(
        request,
        "inventory/manage/teams.html",
        {"teams": teams, "form": form, "may_change": may_change},
        status=400 if request.method == "POST" else 200,
    )


@login_required
@require_safe
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    access.check_view(request.user, Action.SETTINGS_VIEW)
    team = get_object_or_404(Team, slug=slug)
    return render(
        request,
        "inventory/manage/team_detail.html",
        {
            "team": team,
            "members": team.members.order_by("username"),
            "vms": team.vms.filter(present=True).select_related("host").order_by("name")[:PAGE_SIZE],
            "vm_total": team.vms.filter(present=True).count(),
            "form": MemberForm(),
            "may_change": access.allowed(request.user, Action.OWNERSHIP_MANAGE),
        },
    )


@login_required
@require_POST
def team_member_add(request: HttpRequest, slug: str) -> HttpResponse:
    access.check_view(request.user, Action.OWNERSHIP_MANAGE)
    team = get_object_or_404(Team, slug=slug)
    form = MemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a user name. Nothing was changed.")
    else:
        try:
            user = team_services.add_member(request.user, team, form.cleaned_data["username"])
        except team_services.TeamError as exc:
            messages.error(request, f"{exc} Nothing was changed.")
        else:
            messages.success(request, f"{user.get_username()} is now a member of {team.name}.")
    return redirect("manage:team_detail", slug=team.slug)


@login_required
@require_POST
def team_member_remove(request: HttpRequest, slug: str) -> HttpResponse:
    access.check_view(request.user, Action.OWNERSHIP_MANAGE)
    team = get_object_or_404(Team, slug=slug)
    raw = request.POST.get("user", "")
    try:
        user = team_services.remove_member(request.user, team, int(raw) if raw.isdigit() else 0)
    except team_services.TeamError as exc:
        messages.error(request, f"{exc} Nothing was changed.")
    else:
        messages.success(request, f"{user.get_username()} is no longer a member of {team.name}.")
    return redirect("manage:team_detail", slug=team.slug)


@login_required
def ownership(request: HttpRequest) -> HttpResponse:
    """Which team owns which VM: filter, tick, assign."""
    access.check_view(request.user, Action.SETTINGS_VIEW)
    may_change = access.allowed(request.user, Action.OWNERSHIP_MANAGE)
    if request.method == "POST":
        access.check_view(request.user, Action.OWNERSHIP_MANAGE)
        form = OwnershipForm(request.POST)
        if form.is_valid():
            team = form.cleaned_data["team"]
            count = host_services.assign_team(request.user, list(form.cleaned_data["vms"]), team)
            messages.success(request, f"{count} VM{'s' if count != 1 else ''} now belong to {team or 'no team'}.")
            return redirect(f"{request.path}?{request.GET.urlencode()}")
        messages.error(
            request, "; ".join(str(e) for errs in form.errors.values() for e in errs) + " Nothing was changed."
        )
    vms = VirtualMachine.objects.present().select_related("host", "team").order_by("name", "pk")
    q = request.GET.get("q", "").strip()[:100]
    if q:
        vms = vms.filter(name__icontains=q)
    host = request.GET.get("host", "")[:64]
    if host:
        vms = vms.filter(host__name=host)
    team_filter = request.GET.get("team", "")[:100]
    if team_filter == "-":
        vms = vms.filter(team__isnull=True)
    elif team_filter:
        vms = vms.filter(team__slug=team_filter)
    page = Paginator(vms, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "inventory/manage/ownership.html",
        {
            "page": page,
            "teams": Team.objects.all(),
            "hosts": Host.objects.values_list("name", flat=True),
            "q": q,
            "host": host,
            "team_filter": team_filter,
            "may_change": may_change,
            "querystring": query.urlencode(),
        },
    )


urlpatterns = [
    path("teams/", team_list, name="team_list"),
    path("teams/<slug:slug>/", team_detail, name="team_detail"),
    path("teams/<slug:slug>/members/", team_member_add, name="team_member_add"),
    path("teams/<slug:slug>/members/remove/", team_member_remove, name="team_member_remove"),
    path("ownership/", ownership, name="ownership"),
]
