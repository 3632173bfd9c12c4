"""REST API v1. Every endpoint starts from the permission layer's querysets (vmportal.access): objects
of other teams are 404, forbidden actions 403 with the reason; state changes go through the same
services as the pages (plans, approvals, scheduling), never around them."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from api import filters
from api import serializers as s
from api.pagination import Pages
from inventory.models import Host, VirtualMachine
from inventory.permissions import sees_everything
from migrations_app.choices import Severity
from migrations_app.models import AuditLogEntry, Backup, MigrationPlan, PlanItem
from migrations_app.services import approvals, bulk, plans, scheduling
from migrations_app.services import live as live_services
from migrations_app.services.plans import PlanError
from vmportal import access
from vmportal.access import Action


def _refused_payload(exc: PlanError) -> ValidationError:
    return ValidationError({"non_field_errors": [str(exc)]})


# ---- inventory --------------------------------------------------------------------------------------


class HostViewSet(viewsets.ReadOnlyModelViewSet):
    """Hypervisor hosts (every signed-in user sees the fleet)."""

    serializer_class = s.HostSerializer
    filterset_class = filters.HostFilter
    lookup_field = "name"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    queryset = Host.objects.all().order_by("name")

    @extend_schema(request=None, responses={201: s.EvacuationSerializer})
    @action(detail=True, methods=["post"])
    def evacuate(self, request: Request, name: str) -> Response:
        """Empty the host for maintenance: marks it, and plans the move of every VM on it (admins)."""
        host = self.get_object()
        result = bulk.evacuate(request.user, host)
        body = {"host": host.name, "plans": [p.pk for p in result.plans], "cannot_move": result.cannot_move}
        return Response(body, status=status.HTTP_201_CREATED)


class VMViewSet(viewsets.ReadOnlyModelViewSet):
    """Virtual machines of your teams (approvers and auditors: all)."""

    serializer_class = s.VMSerializer
    filterset_class = filters.VMFilter
    lookup_field = "uuid"
    lookup_value_regex = r"[0-9a-fA-F-]{36}"

    def get_queryset(self) -> QuerySet[VirtualMachine]:
        return VirtualMachine.objects.visible_to(self.request.user).select_related("host", "team").order_by("name")

    @extend_schema(request=s.GroupSerializer, responses={200: s.VMSerializer})
    @action(detail=True, methods=["post"])
    def group(self, request: Request, uuid: str) -> Response:
        """Set the VM's application group (VMs of one group move in one wave)."""
        vm = self.get_object()
        payload = s.GroupSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        bulk.set_application_group(request.user, vm, payload.validated_data["group"])
        return Response(s.VMSerializer(vm).data)


# ---- plans ------------------------------------------------------------------------------------------


class PlanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Migration plans: create, edit options and items while a draft, audit, submit, cancel, approve."""

    serializer_class = s.PlanSerializer
    filterset_class = filters.PlanFilter

    def get_queryset(self) -> QuerySet[MigrationPlan]:
        return access.visible_plans(self.request.user).select_related("team", "requester").order_by("-created_at")

    def _hosts(self, names: set[str], field: str) -> dict[str, Host]:
        found = {h.name: h for h in Host.objects.filter(name__in=names)}
        missing = sorted(names - set(found))
        if missing:
            raise ValidationError({field: [f"No host {', '.join(missing)}."]})
        return found

    @extend_schema(request=s.PlanCreateSerializer, responses={201: s.PlanSerializer})
    def create(self, request: Request) -> Response:
        access.require(request.user, Action.PLAN_CREATE)
        payload = s.PlanCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        uuids = data.pop("vms")
        vms = {vm.uuid: vm.pk for vm in VirtualMachine.objects.visible_to(request.user).filter(uuid__in=uuids)}
        missing = [str(u) for u in uuids if u not in vms]
        if missing:
            raise ValidationError({"vms": [f"No VM {', '.join(missing)} (or not one of your teams')."]})
        destination = data.pop("destination", None)
        wanted = data.pop("destinations", {})
        names = {n for n in wanted.values() if n.lower() != "auto"} | ({destination} if destination else set())
        hosts = self._hosts(names, "destinations")
        per_vm: dict[int, int | None] = {}
        for key, name in wanted.items():
            try:
                vm_id = vms[serializers.UUIDField().to_internal_value(key)]
            except (ValidationError, KeyError):
                raise ValidationError({"destinations": [f"{key} is not one of the plan's VMs."]}) from None
            per_vm[vm_id] = None if name.lower() == "auto" else hosts[name].pk
        try:
            plan = plans.create_plan(
                request.user,
                vm_ids=list(vms.values()),
                destinations=per_vm or None,
                destination_id=hosts[destination].pk if destination else None,
                **data,
            )
        except PlanError as exc:
            raise _refused_payload(exc) from None
        return Response(s.PlanSerializer(plan).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.PlanOptionsSerializer, responses={200: s.PlanSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        """Change a draft plan's options (the plan is audited again)."""
        plan = self.get_object()
        payload = s.PlanOptionsSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        plans.update_options(request.user, plan, **payload.validated_data)
        return Response(s.PlanSerializer(plan).data)

    @extend_schema(request=s.CSVImportSerializer, responses={201: s.PlanSerializer})
    @action(detail=False, methods=["post"], url_path="import-csv")
    def import_csv(self, request: Request) -> Response:
        """A plan from CSV, all or nothing: a refused CSV lists every bad row with its line number."""
        access.require(request.user, Action.PLAN_CREATE)
        payload = s.CSVImportSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        plan = bulk.import_csv(request.user, payload.validated_data["csv"], name=payload.validated_data.get("name", ""))
        return Response(s.PlanSerializer(plan).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: s.PlanItemSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=Pages)
    def items(self, request: Request, pk: str) -> Response:
        plan = self.get_object()
        queryset = plan.items.select_related("vm", "source", "destination").order_by("wave", "pk")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(s.PlanItemSerializer(page, many=True).data)

    @extend_schema(request=s.ItemUpdateSerializer, responses={200: s.PlanItemSerializer})
    @action(detail=True, methods=["patch"], url_path=r"items/(?P<item_id>[0-9]+)")
    def item(self, request: Request, pk: str, item_id: str) -> Response:
        """Change one item of a draft plan: destination (a host or "auto"), mappings, wave."""
        plan = self.get_object()
        item = get_object_or_404(PlanItem.objects.select_related("vm", "plan", "destination"), plan=plan, pk=item_id)
        payload = s.ItemUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        destination = data.pop("destination", None)
        kwargs: dict[str, Any] = {}
        if destination is not None:
            if destination.lower() == "auto":
                kwargs["choose_destination"] = True
            else:
                kwargs["destination_id"] = self._hosts({destination}, "destination")[destination].pk
        plans.update_item(request.user, item, **kwargs, **data)
        return Response(s.PlanItemSerializer(item).data)

    def _audit(self, plan: MigrationPlan) -> dict[str, Any]:
        audit = plans.latest_audit(plan)
        results = (
            list(audit.results.select_related("item__vm").order_by("item_id", "check_id")) if audit is not None else []
        )
        shown = [r for r in results if r.severity != Severity.PASS]
        return {
            "id": audit.pk if audit else None,
            "status": audit.status if audit else None,
            "worst": audit.worst if audit else None,
            "plan_status": plan.status,
            "blocks": sum(r.severity == Severity.BLOCK for r in results),
            "warnings": sum(r.severity == Severity.WARN for r in results),
            "results": s.CheckResultSerializer(shown, many=True).data,
        }

    @extend_schema(methods=["GET"], responses={200: s.AuditSerializer})
    @extend_schema(methods=["POST"], request=None, responses={202: s.AuditSerializer})
    @action(detail=True, methods=["get", "post"])
    def audit(self, request: Request, pk: str) -> Response:
        """GET: the latest audit's findings (warnings and blocks). POST: audit the draft plan again."""
        plan = self.get_object()
        if request.method == "POST":
            plans.reaudit(request.user, plan)
            plan.refresh_from_db()
            return Response(self._audit(plan), status=status.HTTP_202_ACCEPTED)
        return Response(self._audit(plan))

    @extend_schema(responses={200: s.WavePlanSerializer})
    @action(detail=True, methods=["get"])
    def waves(self, request: Request, pk: str) -> Response:
        """The waves the last audit planned and their predicted timeline."""
        plan = self.get_object()
        stored = plan.wave_plan or {}
        return Response(
            {
                "summary": stored.get("summary", ""),
                "total_s": stored.get("total_s"),
                "waves": stored.get("waves", []),
                "problems": stored.get("problems", {}),
            }
        )

    @extend_schema(request=None, responses={200: s.PlanSerializer})
    @action(detail=True, methods=["post"])
    def submit(self, request: Request, pk: str) -> Response:
        plan = plans.submit(request.user, self.get_object())
        return Response(s.PlanSerializer(plan).data)

    @extend_schema(request=None, responses={200: s.PlanSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        plan = scheduling.cancel_plan(request.user, self.get_object())
        return Response(s.PlanSerializer(plan).data)

    def _decide(self, request: Request, decide: Any) -> Response:
        plan = self.get_object()
        payload = s.CommentSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        plan = decide(request.user, plan, payload.validated_data["comment"])
        return Response(s.PlanSerializer(plan).data)

    @extend_schema(request=s.CommentSerializer, responses={200: s.PlanSerializer})
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """An approver's yes (four eyes: never on one's own plan)."""
        return self._decide(request, approvals.approve)

    @extend_schema(request=s.CommentSerializer, responses={200: s.PlanSerializer})
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        return self._decide(request, approvals.reject)


# ---- runs -------------------------------------------------------------------------------------------


class RunViewSet(viewsets.ReadOnlyModelViewSet):
    """Migration runs of the plans you may see."""

    serializer_class = s.RunSerializer
    filterset_class = filters.RunFilter

    def get_queryset(self) -> QuerySet[Any]:
        return (
            access.visible_runs(self.request.user)
            .select_related("vm", "source", "destination", "item")
            .order_by("-queued_at", "-pk")
        )

    @extend_schema(responses={200: s.SampleSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=Pages)
    def samples(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        page = self.paginate_queryset(run.samples.order_by("at", "pk"))
        return self.get_paginated_response(s.SampleSerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: s.RunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = scheduling.cancel_run(request.user, self.get_object())
        return Response(s.RunSerializer(run).data)

    @extend_schema(responses={200: s.ValidationSerializer})
    @action(detail=True, methods=["get"])
    def validation(self, request: Request, pk: str) -> Response:
        """The run's post-migration validation report (null while there is none)."""
        run = self.get_object()
        return Response({"run": run.pk, "report": live_services.validation_snapshot(run)})


# ---- backups and the audit log ------------------------------------------------------------------------


class BackupViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Backups of the VMs you may see."""

    serializer_class = s.BackupSerializer
    filterset_class = filters.BackupFilter

    def get_queryset(self) -> QuerySet[Backup]:
        user = self.request.user
        backups = Backup.objects.select_related("host").order_by("-created_at", "-pk")
        if sees_everything(user):
            return backups
        return backups.filter(vm__in=VirtualMachine.objects.visible_to(user).values("pk"))


class MaySeeAuditLog(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        reason = access.refusal(request.user, Action.AUDITLOG_VIEW)
        if reason is not None:
            self.message = reason
        return reason is None


class AuditLogViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The audit log (approvers and auditors)."""

    serializer_class = s.AuditLogSerializer
    filterset_class = filters.AuditLogFilter
    permission_classes = [IsAuthenticated, MaySeeAuditLog]
    queryset = AuditLogEntry.objects.order_by("-at", "-id")
