"""Query filters of the list endpoints (django-filter)."""

from __future__ import annotations

import django_filters as df

from inventory.choices import PowerState
from inventory.models import Host, VirtualMachine
from migrations_app.choices import PlanStatus, RunStatus
from migrations_app.models import AuditLogEntry, Backup, MigrationPlan, MigrationRun


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
    since = df.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = df.IsoDateTimeFilter(field_name="at", lookup_expr="lt")

    class Meta:
        model = AuditLogEntry
        fields = ["actor", "verb", "target_type", "target_id", "since", "until"]
