from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from inventory.permissions import is_admin
from migrations_app.models import AuditLogEntry, Backup, MigrationPlan, NetworkMapping, PlanItem, RetainedDisk


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only."""

    list_display = ["at", "actor_name", "verb", "target_repr"]
    list_filter = ["verb"]
    search_fields = ["actor_name", "target_repr", "verb"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(NetworkMapping)
class NetworkMappingAdmin(admin.ModelAdmin):
    """Default network mappings between hosts; plans inherit them."""

    list_display = ["source", "destination", "note"]
    list_select_related = ["source__host", "destination__host"]

    def save_model(self, request: HttpRequest, obj: NetworkMapping, form: Any, change: bool) -> None:
        from migrations_app.services import auditlog

        super().save_model(request, obj, form, change)
        auditlog.record(
            request.user, "mapping.save", obj, after={"source": str(obj.source), "destination": str(obj.destination)}
        )


class PlanItemInline(admin.TabularInline):
    model = PlanItem
    extra = 0
    can_delete = False
    fields = readonly_fields = ("vm", "source", "destination", "mode", "network_map", "storage_map", "wave")


@admin.register(MigrationPlan)
class MigrationPlanAdmin(admin.ModelAdmin):
    """Plans change only through the portal's pages and services (audit-logged); here they are read-only."""

    list_display = ["name", "status", "team", "requester", "mode", "created_at"]
    list_filter = ["status", "mode", "team"]
    list_select_related = ["team", "requester"]
    inlines = [PlanItemInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# ---- backups and retained source disks (issue 5) -------------------------------------------------


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    """Backups are made by runs and the backup service; here they are read-only."""

    list_display = ["vm_name", "created_at", "method", "state", "verified", "total_bytes", "host", "expires_at"]
    list_filter = ["state", "method", "verified"]
    search_fields = ["vm_name", "vm_uuid"]
    list_select_related = ["host"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(RetainedDisk)
class RetainedDiskAdmin(admin.ModelAdmin):
    """Source disks a cold move kept. Releasing one removes the volume before its retention ends."""

    list_display = ["path", "host", "vm", "retain_until", "released_at", "released_by"]
    list_filter = ["released_at"]
    list_select_related = ["host", "vm"]
    actions = ["release"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_release_permission(self, request: HttpRequest) -> bool:
        return is_admin(request.user)

    @admin.action(description="Release: remove the kept disk files now", permissions=["release"])
    def release(self, request: HttpRequest, queryset: Any) -> None:
        from migrations_app.services.backups import release_retained_disk

        released = sum(1 for disk in queryset.select_related("host") if release_retained_disk(request.user, disk))
        self.message_user(request, f"{released} disk(s) released.")
