from __future__ import annotations

from typing import Any

from django import forms

from inventory.choices import PowerState
from inventory.hypervisor import InvalidURI
from inventory.models import Team
from inventory.services import hosts as host_services


class HostRegistrationForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Short name, e.g. kvm-a12 (lowercase letters, digits, hyphens).")
    uri = forms.CharField(
        label="libvirt URI",
        max_length=512,
        help_text="e.g. qemu+ssh://root@kvm-a12.example.com/system or qemu+tls://kvm-a12.example.com/system",
    )
    migration_uri = forms.CharField(
        label="Migration URI",
        max_length=512,
        required=False,
        help_text="How other hosts reach this one for migration; leave empty to use the libvirt URI.",
    )
    site = forms.CharField(max_length=100, required=False)

    def clean_uri(self) -> str:
        try:
            return host_services.check_uri(self.cleaned_data["uri"]).uri
        except InvalidURI as exc:
            raise forms.ValidationError(exc.message) from None

    def clean_migration_uri(self) -> str:
        try:
            return host_services.check_migration_uri(self.cleaned_data.get("migration_uri", ""))
        except InvalidURI as exc:
            raise forms.ValidationError(exc.message) from None


class VMFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Search")
    host = forms.CharField(required=False, max_length=64)
    team = forms.CharField(required=False, max_length=100)
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *PowerState.choices])
    missing = forms.BooleanField(required=False, label="Include missing VMs")


class AssignTeamForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.all(), required=False, empty_label="(no team)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
