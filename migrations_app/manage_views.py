"""Admins' pages for change control: windows, freezes, standard-change policies, approver thresholds and
network mappings. One list/edit/delete pattern for all of them; auditors may look, admins change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from migrations_app.forms import (
    ApprovalRuleForm,
    ChangeFreezeForm,
    ChangeWindowForm,
    NetworkMappingForm,
    StandardChangePolicyForm,
)
from migrations_app.models import ApprovalRule, ChangeFreeze, ChangeWindow, NetworkMapping, StandardChangePolicy
from migrations_app.services import configuration
from vmportal import access
from vmportal.access import Action


@dataclass(frozen=True)
class Kind:
    slug: str  # in URLs and URL names
    title: str
    model: type[models.Model]
    form: type[forms.ModelForm]  # type: ignore[type-arg]
    columns: tuple[tuple[str, str], ...]  # (heading, attribute or method)
    help: str
    select_related: tuple[str, ...] = ()
    prefetch_related: tuple[str, ...] = ()


KINDS = {
    k.slug: k
    for k in (
        Kind(
            "windows",
            "Change windows",
            ChangeWindow,
            ChangeWindowForm,
            (
                ("Name", "name"),
                ("Applies to", "applies_to"),
                ("From", "start"),
                ("To", "end"),
                ("Weekly", "repeat_weekly"),
            ),
            "Approved plans without a window of their own start at the next window that applies to their team or "
            "hosts (or to everything). With no window defined, a plan starts once it is approved.",
            ("host", "team"),
        ),
        Kind(
            "freezes",
            "Change freezes",
            ChangeFreeze,
            ChangeFreezeForm,
            (("Name", "name"), ("Applies to", "applies_to"), ("From", "start"), ("To", "end"), ("Reason", "reason")),
            "Nothing starts inside a freeze: plans due then are held until it ends (or sent back if it outlasts "
            "their window), and the audit blocks plans whose window falls in one. Emergency changes may still run.",
            ("host", "team"),
        ),
        Kind(
            "policies",
            "Standard-change policies",
            StandardChangePolicy,
            StandardChangePolicyForm,
            (
                ("Name", "name"),
                ("Enabled", "enabled"),
                ("At most VMs", "max_vms"),
                ("Live only", "live_only"),
                ("Same site", "same_site"),
                ("Clean audit", "clean_audit"),
            ),
            "A plan submitted as a standard change that fits one enabled policy is approved automatically and "
            "recorded as such; one that fits none waits for an approver.",
            (),
            ("teams",),
        ),
        Kind(
            "approval-rules",
            "Approvers per plan size",
            ApprovalRule,
            ApprovalRuleForm,
            (("From VMs", "min_vms"), ("Approvers needed", "approvers")),
            "Plans of at least this many VMs need this many distinct approvers (the largest matching rule "
            "wins; one approver otherwise). The number is fixed when a plan is submitted.",
        ),
        Kind(
            "network-mappings",
            "Network mappings",
            NetworkMapping,
            NetworkMappingForm,
            (("From", "source"), ("To", "destination"), ("Note", "note")),
            "A VM's NIC on the source network lands on the destination network when it moves to that network's "
            "host. Plans take these as their defaults; owners may still change a NIC's network.",
            ("source__host", "destination__host"),
        ),
    )
}


def _kind(slug: str) -> Kind:
    try:
        return KINDS[slug]
    except KeyError:
        raise Http404("No such settings page.") from None


def _object(kind: Kind, pk: int) -> models.Model:
    obj = kind.model.objects.filter(pk=pk).first()  # type: ignore[attr-defined]
    if obj is None:
        raise Http404("No such entry.")
    return obj


def _cell(obj: Any, attr: str) -> Any:
    value = getattr(obj, attr)
    return value() if callable(value) else value


def list_view(slug: str) -> Any:
    @login_required
    def view(request: HttpRequest) -> HttpResponse:
        kind = _kind(slug)
        access.check_view(request.user, Action.SETTINGS_VIEW)  # admins and auditors look; admins change
        may_change = access.allowed(request.user, Action.CHANGE_CONTROL_MANAGE)
        form = kind.form(request.POST or None) if may_change else None
        if request.method == "POST":
            access.check_view(request.user, Action.CHANGE_CONTROL_MANAGE)
            assert form is not None  # noqa: S101
            if form.is_valid():
                obj = configuration.save(request.user, form)
                messages.success(request, f"Saved “{obj}”.")
                return redirect(f"manage:{slug}_list")
        rows = kind.model.objects.all().select_related(*kind.select_related).prefetch_related(*kind.prefetch_related)  # type: ignore[attr-defined]
        return render(
            request,
            "migrations_app/manage/list.html",
            {
                "kind": kind,
                "kinds": KINDS.values(),
                "rows": [(obj, [_cell(obj, attr) for _h, attr in kind.columns]) for obj in rows],
                "form": form,
                "may_change": may_change,
            },
            status=400 if request.method == "POST" else 200,
        )

    view.__name__ = f"{slug.replace('-', '_')}_list"
    return view


def edit_view(slug: str) -> Any:
    @login_required
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        kind = _kind(slug)
        access.check_view(request.user, Action.CHANGE_CONTROL_MANAGE)
        obj = _object(kind, pk)
        form = kind.form(request.POST or None, instance=obj)
        if request.method == "POST" and form.is_valid():
            configuration.save(request.user, form)
            messages.success(request, f"Saved “{obj}”.")
            return redirect(f"manage:{slug}_list")
        return render(
            request,
            "migrations_app/manage/edit.html",
            {"kind": kind, "obj": obj, "form": form, "list_url": reverse(f"manage:{slug}_list")},
            status=400 if request.method == "POST" else 200,
        )

    view.__name__ = f"{slug.replace('-', '_')}_edit"
    return view


def delete_view(slug: str) -> Any:
    @login_required
    @require_POST
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        kind = _kind(slug)
        access.check_view(request.user, Action.CHANGE_CONTROL_MANAGE)
        obj = _object(kind, pk)
        if request.POST.get("confirm") != "yes":
            messages.error(request, "Tick the confirmation to delete. Nothing was changed.")
        else:
            configuration.delete(request.user, obj)
            messages.success(request, f"Deleted “{obj}”.")
        return redirect(f"manage:{slug}_list")

    view.__name__ = f"{slug.replace('-', '_')}_delete"
    return view


def urlpatterns() -> list[Any]:
    found = []
    for slug in KINDS:
        found += [
            path(f"{slug}/", list_view(slug), name=f"{slug}_list"),
            path(f"{slug}/<int:pk>/", edit_view(slug), name=f"{slug}_edit"),
            path(f"{slug}/<int:pk>/delete/", delete_view(slug), name=f"{slug}_delete"),
        ]
    return found
