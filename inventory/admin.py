from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from inventory.hypervisor import InvalidURI
from inventory.models import NIC, Disk, Host, Network, StoragePool, Team, VirtualMachine
from inventory.permissions import is_admin
from inventory.services.hosts import EDITABLE_FIELDS


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]


class HostAdminForm(forms.ModelForm):
    """The migration URI is held to the same allow-list here as on the registration form."""

    class Meta:
        model = Host
        fields = [f for f in EDITABLE_FIELDS if f != "uri"]  # the URI itself changes only by registering anew

    def clean_migration_uri(self) -> str:
        from inventory.services.hosts import check_migration_uri

        try:
            return check_migration_uri(self.cleaned_data.get("migration_uri") or "")
        except InvalidURI as exc:
            raise forms.ValidationError(exc.message) from None


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    form = HostAdminForm
    list_display = ["name", "uri", "reachability", "enabled", "maintenance", "last_sync_at"]
    list_filter = ["reachability", "enabled", "maintenance", "site"]
    search_fields = ["name", "uri", "hostname"]
    readonly_fields = [
        "name",
        "uri",
        "reachability",
        "last_error",
        "last_error_raw",
        "last_seen_at",
        "last_sync_at",
        "last_sync_ms",
        "hostname",
        "host_uuid",
        "arch",
        "cpu_model",
        "cpu_vendor",
        "cpu_xml",
        "cpus",
        "sockets",
        "cores",
        "threads",
        "memory_total",
        "memory_free",
        "hypervisor_type",
        "hypervisor_version",
        "libvirt_version",
        "virt_type",
        "machine_types",
        "domain_capabilities",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # registration goes through the portal's form, which validates the URI

    def save_model(self, request: HttpRequest, obj: Host, form: Any, change: bool) -> None:
        """Through the host service: URIs checked again, the change audit-logged with before and after."""
        from inventory.services.hosts import EDITABLE_FIELDS, update_host

        changes = {key: form.cleaned_data[key] for key in form.changed_data if key in EDITABLE_FIELDS}
        update_host(request.user, Host.objects.get(pk=obj.pk), **changes)
        obj.refresh_from_db()


@admin.register(StoragePool)
class StoragePoolAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "type", "target_path", "shared_by_type", "shared_by_admin", "present"]
    list_filter = ["host", "type", "shared_by_admin"]
    readonly_fields = [
        "host",
        "name",
        "uuid",
        "type",
        "target_path",
        "active",
        "shared_by_type",
        "capacity",
        "allocation",
        "available",
        "present",
    ]


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "bridge", "forward_mode", "active", "present"]
    list_filter = ["host"]
    readonly_fields = ["host", "name", "uuid", "bridge", "forward_mode", "active", "present"]


class DiskInline(admin.TabularInline):
    model = Disk
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "target",
        "device",
        "bus",
        "format",
        "source",
        "pool",
        "cache",
        "capacity",
        "allocation",
    )


class NICInline(admin.TabularInline):
    model = NIC
    extra = 0
    can_delete = False
    fields = readonly_fields = ("mac", "type", "source_network", "source_bridge", "model")


@admin.register(VirtualMachine)
class VirtualMachineAdmin(admin.ModelAdmin):
    list_display = ["name", "host", "state", "team", "team_source", "present"]
    list_filter = ["present", "state", "host", "team"]
    search_fields = ["name", "uuid"]
    list_select_related = ["host", "team"]
    inlines = [DiskInline, NICInline]
    fields = [
        "uuid",
        "name",
        "host",
        "state",
        "team",
        "team_source",
        "team_tag",
        "app",
        "labels",
        "present",
        "missing_since",
        "also_defined_on",
        "xml",
    ]
    readonly_fields = [
        "uuid",
        "name",
        "host",
        "state",
        "team_source",
        "team_tag",
        "present",
        "missing_since",
        "also_defined_on",
        "xml",
    ]
    actions = ["clear_team"]

    def has_assign_permission(self, request: HttpRequest) -> bool:
        return is_admin(request.user)

    def save_model(self, request: HttpRequest, obj: VirtualMachine, form: object, change: bool) -> None:
        from inventory.services.hosts import assign_team

        if change and "team" in getattr(form, "changed_data", []):
            assign_team(request.user, [obj], obj.team)
        super().save_model(request, obj, form, change)  # type: ignore[arg-type]

    @admin.action(description="Clear team (admin decision)", permissions=["assign"])
    def clear_team(self, request: HttpRequest, queryset: QuerySet[VirtualMachine]) -> None:
        from inventory.services.hosts import assign_team

        assign_team(request.user, list(queryset), None)


@admin.register(Disk)
class DiskAdmin(admin.ModelAdmin):
    list_display = ["vm", "target", "format", "pool", "capacity"]
    list_select_related = ["vm", "pool", "pool__host"]
    readonly_fields = [f.name for f in Disk._meta.fields]


@admin.register(NIC)
class NICAdmin(admin.ModelAdmin):
    list_display = ["vm", "mac", "type", "source_network"]
    list_select_related = ["vm"]
    readonly_fields = [f.name for f in NIC._meta.fields]
