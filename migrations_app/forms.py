"""Plan forms: they parse and bound input; the rules live in migrations_app.services.plans."""

from __future__ import annotations

from typing import Any

from django import forms

from inventory.models import Network
from migrations_app.choices import ChangeType, Compression, Mode, NoConvergence
from migrations_app.models import (
    ApprovalRule,
    ChangeFreeze,
    ChangeWindow,
    NetworkMapping,
    StandardChangePolicy,
)
from migrations_app.services.plans import MAX_PLAN_ITEMS, OPTION_RANGES, offered_destinations


class IdListField(forms.Field):
    """A list of integer ids from repeated form values, bounded in length."""

    def __init__(self, *, max_items: int, **kwargs: Any) -> None:
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[int]:
        if not value:
            return []
        values = value if isinstance(value, list | tuple) else [value]
        if len(values) > self.max_items:
            raise forms.ValidationError(f"Choose at most {self.max_items} VMs per plan.")
        try:
            return [int(v) for v in values]
        except (TypeError, ValueError):
            raise forms.ValidationError("The VM selection is malformed.") from None


class IdListWidget(forms.MultipleHiddenInput):
    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        return data.getlist(name) if hasattr(data, "getlist") else data.get(name)


OPTION_HELP = {
    "mode": "Auto moves live whenever the audit allows it, cold otherwise.",
    "bandwidth_mib_s": "Caps the migration stream; empty means as fast as the link allows.",
    "max_downtime_ms": "The longest pause of the VM allowed at cutover (libvirt's default is 300 ms).",
    "auto_converge": "Slows the VM's vCPUs if it writes memory faster than it can be sent.",
    "postcopy_allowed": "Lets a move that cannot converge finish by running on the destination first.",
    "on_no_convergence": "What to do when the move cannot finish within the downtime limit.",
    "parallel_connections": "More connections move memory faster on fast links (1 = a single stream).",
    "compression": "Trades CPU for bandwidth on slow links.",
    "fresh_backup": "A verified backup of the definition and disks is taken before anything moves.",
    "shutdown_timeout_s": "Cold moves: how long the VM gets to shut down cleanly.",
    "allow_force_off": "Cold moves: power the VM off if it does not shut down in time.",
    "change_type": "Normal: an approver decides. Standard: approved at once if an admin's policy fits. "
    "Emergency: an approver may run it at once, outside windows and freezes; it is reviewed afterwards.",
    "window_start": "Empty: the next change window the admins set for your team or hosts, or once approved.",
    "stop_on_failure": "Off: a VM that fails to move does not stop the others.",
}


class PlanOptionsForm(forms.Form):
    name = forms.CharField(max_length=120, required=False)
    mode = forms.ChoiceField(choices=Mode.choices, initial=Mode.AUTO)
    change_type = forms.ChoiceField(choices=ChangeType.choices, initial=ChangeType.NORMAL)
    window_start = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    window_end = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    bandwidth_mib_s = forms.IntegerField(
        label="Bandwidth limit (MiB/s)",
        required=False,
        min_value=OPTION_RANGES["bandwidth_mib_s"][0],
        max_value=OPTION_RANGES["bandwidth_mib_s"][1],
    )
    max_downtime_ms = forms.IntegerField(
        label="Max downtime (ms)",
        initial=300,
        min_value=OPTION_RANGES["max_downtime_ms"][0],
        max_value=OPTION_RANGES["max_downtime_ms"][1],
    )
    auto_converge = forms.BooleanField(required=False, initial=True)
    postcopy_allowed = forms.BooleanField(label="Post-copy allowed", required=False)
    on_no_convergence = forms.ChoiceField(choices=NoConvergence.choices, initial=NoConvergence.ABORT)
    parallel_connections = forms.IntegerField(
        initial=1,
        min_value=OPTION_RANGES["parallel_connections"][0],
        max_value=OPTION_RANGES["parallel_connections"][1],
    )
    compression = forms.ChoiceField(choices=Compression.choices, initial=Compression.NONE)
    fresh_backup = forms.BooleanField(label="Take a fresh backup first", required=False, initial=True)
    shutdown_timeout_s = forms.IntegerField(
        label="Shutdown timeout (s)",
        initial=120,
        min_value=OPTION_RANGES["shutdown_timeout_s"][0],
        max_value=OPTION_RANGES["shutdown_timeout_s"][1],
    )
    allow_force_off = forms.BooleanField(label="Allow force off", required=False)
    stop_on_failure = forms.BooleanField(label="Stop on the first failure", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, text in OPTION_HELP.items():
            self.fields[name].help_text = text

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("window_start"), data.get("window_end")
        if (start is None) != (end is None):
            raise forms.ValidationError("A change window needs both a start and an end.")
        if start and end and end <= start:
            raise forms.ValidationError("The change window must end after it starts.")
        return data

    def options(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        if not data.get("name"):
            data.pop("name", None)
        return data


class PlanCreateForm(PlanOptionsForm):
    vms = IdListField(max_items=MAX_PLAN_ITEMS, widget=IdListWidget, required=True)
    destination = forms.ModelChoiceField(
        queryset=offered_destinations(),
        required=False,
        empty_label="Let the portal choose (best headroom among hosts that pass the hard checks)",
    )


class OverrideForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), min_length=10, max_length=2000)
    confirm = forms.BooleanField(label="I accept these blocks for this plan", required=True)


# ---- approval workflow -----------------------------------------------------------------------------------


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        min_length=3,
        max_length=4000,
        help_text="Kept with the plan and shown to its team.",
    )


class EmergencyForm(forms.Form):
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), min_length=10, max_length=4000)
    confirm = forms.BooleanField(
        label="Run it now, outside any window and freeze; it is flagged for review afterwards", required=True
    )


class ReviewForm(forms.Form):
    comment = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), min_length=3, max_length=4000)


class AuditLogFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150)
    verb = forms.CharField(required=False, max_length=64, help_text="e.g. plan. or plan.approved")
    target_type = forms.CharField(required=False, max_length=64, label="Object type")
    target_id = forms.CharField(required=False, max_length=64, label="Object id")
    text = forms.CharField(required=False, max_length=200, label="Text")
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))


# ---- admins' settings ----------------------------------------------------------------------------------------

_WHEN = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class _ScopedForm(forms.ModelForm):
    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        scope = data.get("scope")
        if scope != "host":
            data["host"] = None
        if scope != "team":
            data["team"] = None
        return data


class ChangeWindowForm(_ScopedForm):
    class Meta:
        model = ChangeWindow
        fields = ["name", "scope", "host", "team", "start", "end", "repeat_weekly"]
        widgets = {"start": _WHEN, "end": _WHEN}


class ChangeFreezeForm(_ScopedForm):
    class Meta:
        model = ChangeFreeze
        fields = ["name", "scope", "host", "team", "start", "end", "reason"]
        widgets = {"start": _WHEN, "end": _WHEN}


class StandardChangePolicyForm(forms.ModelForm):
    class Meta:
        model = StandardChangePolicy
        fields = ["name", "enabled", "max_vms", "live_only", "same_site", "clean_audit", "teams"]
        widgets = {"teams": forms.CheckboxSelectMultiple}

    def clean_max_vms(self) -> int:
        value = self.cleaned_data["max_vms"]
        if not 1 <= value <= MAX_PLAN_ITEMS:
            raise forms.ValidationError(f"Between 1 and {MAX_PLAN_ITEMS} VMs.")
        return int(value)


class ApprovalRuleForm(forms.ModelForm):
    class Meta:
        model = ApprovalRule
        fields = ["min_vms", "approvers"]


class NetworkMappingForm(forms.ModelForm):
    class Meta:
        model = NetworkMapping
        fields = ["source", "destination", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        networks = Network.objects.filter(present=True).select_related("host").order_by("host__name", "name")
        for name in ("source", "destination"):
            field = self.fields[name]
            field.queryset = networks  # type: ignore[attr-defined]
            field.label_from_instance = lambda n: f"{n.host.name} / {n.name}"  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        source, destination = data.get("source"), data.get("destination")
        if source is not None and destination is not None:
            clash = NetworkMapping.objects.filter(source=source, destination_host=destination.host_id)
            if self.instance.pk:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                raise forms.ValidationError(
                    f"{source.host.name} / {source.name} already has a mapping to {destination.host.name}."
                )
        return data
