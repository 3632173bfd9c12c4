"""Query filters of the list endpoints (django-filter)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters as df
from django import forms
from django_filters.fields import IsoDateTimeField

from inventory.choices import PowerState
from inventory.models import Host, VirtualMachine
from migrations_app.choices import PlanStatus, RunStatus
from migrations_app.models import AuditLogEntry, Backup, MigrationPlan, MigrationRun


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 time, handed to the database in UTC: any offset the parser accepts is converted here,
    so the database never sees an offset or a date it cannot hold."""

    def to_python(self, value: Any) -> datetime | None:
        result = super().to_python(value)
        if result is None:
            return None
        try:
            result = result.astimezone(UTC) if result.tzinfo is not None else result
        except (OverflowError, ValueError):
            raise forms.ValidationError("The time is out of range.") from None
        if not 1900 <= result.year <= 9000:
            raise forms.ValidationError("The time is out of range (years 1900 to 9000).")
        return result


class UTCDateTimeFilter(df.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class HostFilter(df.FilterSet):
    name = df.CharFilter(lookup_expr="icontains")
    site = df.CharFilter()
    cluster = df.CharFilter()

    class Meta:
        model = Host
        fields = ["name", "site", "cluster", "enabled", "maintenance"]


class VMFilter(df.FilterSet):
    name = df.CharFilter(lookup_expr="icontains")
    host = df.CharFilter(field_name="host__name")
    team = df.CharFilter(field_name="team__slug")
    state = df.ChoiceFilter(choices=PowerState.choices)
    app = df.CharFilter()

    class Meta:
        model = VirtualMachine
        fields = ["name", "host", "team", "state", "app", "present"]


class PlanFilter(df.FilterSet):
    status = df.ChoiceFilter(choices=PlanStatus.choices)
    team = df.CharFilter(field_name="team__slug")

    class Meta:
        model = MigrationPlan
        fields = ["status", "team"]


class RunFilter(df.FilterSet):
    status = df.ChoiceFilter(choices=RunStatus.choices)
    plan = df.NumberFilter(field_name="item__plan_id")
    vm = df.UUIDFilter(field_name="vm__uuid")

    class Meta:
        model = MigrationRun
        fields = ["status", "plan", "vm"]


class BackupFilter(df.FilterSet):
    vm = df.UUIDFilter(field_name="vm_uuid")

    class Meta:
        model = Backup
        fields = ["vm", "state", "verified"]


class AuditLogFilter(df.FilterSet):
    actor = df.CharFilter(field_name="actor_name", lookup_expr="iexact")
    verb = df.CharFilter(lookup_expr="startswith")
    target_type = df.CharFilter()
    target_id = df.CharFilter()
    since = UTCDateTimeFilter(field_name="at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditLogEntry
        fields = ["actor", "verb", "target_type", "target_id", "since", "until"]
