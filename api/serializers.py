"""What the API shows and accepts. Objects are named by stable public keys: hosts by name, VMs by UUID,
plans, items and runs by id."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from inventory.models import Host, VirtualMachine
from migrations_app.choices import ChangeType, Compression, Mode, NoConvergence
from migrations_app.models import (
    AuditLogEntry,
    Backup,
    CheckResult,
    MigrationPlan,
    MigrationRun,
    PlanItem,
    ProgressSample,
)
from migrations_app.services.plans import OPTION_FIELDS, OPTION_RANGES


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(required=False)  # type: ignore[assignment]
    rows = serializers.ListField(child=serializers.DictField(), required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class HostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = [
            "name",
            "site",
            "cluster",
            "enabled",
            "maintenance",
            "reachability",
            "last_sync_at",
            "arch",
            "cpu_model",
            "cpus",
            "memory_total",
            "memory_free",
            "virt_type",
            "max_outgoing",
            "max_incoming",
        ]


class VMSerializer(serializers.ModelSerializer):
    host = serializers.CharField(source="host.name", read_only=True)
    team = serializers.CharField(source="team.slug", read_only=True, allow_null=True, default=None)
    application_group = serializers.CharField(read_only=True)

    class Meta:
        model = VirtualMachine
        fields = [
            "uuid",
            "name",
            "host",
            "team",
            "state",
            "vcpus",
            "memory",
            "max_memory",
            "arch",
            "machine_type",
            "persistent",
            "present",
            "application_group",
            "last_seen_at",
        ]


class GroupSerializer(serializers.Serializer):
    group = serializers.CharField(max_length=100, allow_blank=True, help_text="Empty: no group.")


class PlanItemSerializer(serializers.ModelSerializer):
    vm = serializers.UUIDField(source="vm.uuid", read_only=True)
    vm_name = serializers.CharField(source="vm.name", read_only=True)
    source = serializers.CharField(source="source.name", read_only=True)
    destination = serializers.CharField(source="destination.name", read_only=True, allow_null=True, default=None)

    class Meta:
        model = PlanItem
        fields = [
            "id",
            "vm",
            "vm_name",
            "source",
            "destination",
            "destination_auto",
            "destination_reason",
            "mode",
            "wave",
            "network_map",
            "storage_map",
            "start_error",
        ]


class PlanSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    requester = serializers.CharField(source="requester.username", read_only=True)

    class Meta:
        model = MigrationPlan
        fields = [
            "id",
            "team",
            "requester",
            "status",
            "status_reason",
            *OPTION_FIELDS,
            "predicted_seconds",
            "predicted_downtime_ms",
            "scheduled_for",
            "created_at",
            "submitted_at",
        ]
        read_only_fields = fields


class PlanOptionsSerializer(serializers.Serializer):
    """Plan options; on create every one is optional (the portal's defaults apply)."""

    name = serializers.CharField(max_length=120, required=False)
    mode = serializers.ChoiceField(Mode.choices, required=False)
    change_type = serializers.ChoiceField(ChangeType.choices, required=False)
    window_start = serializers.DateTimeField(required=False, allow_null=True)
    window_end = serializers.DateTimeField(required=False, allow_null=True)
    bandwidth_mib_s = serializers.IntegerField(
        min_value=OPTION_RANGES["bandwidth_mib_s"][0],
        max_value=OPTION_RANGES["bandwidth_mib_s"][1],
        required=False,
        allow_null=True,
    )
    max_downtime_ms = serializers.IntegerField(
        min_value=OPTION_RANGES["max_downtime_ms"][0], max_value=OPTION_RANGES["max_downtime_ms"][1], required=False
    )
    auto_converge = serializers.BooleanField(required=False)
    postcopy_allowed = serializers.BooleanField(required=False)
    on_no_convergence = serializers.ChoiceField(NoConvergence.choices, required=False)
    parallel_connections = serializers.IntegerField(
        min_value=OPTION_RANGES["parallel_connections"][0],
        max_value=OPTION_RANGES["parallel_connections"][1],
        required=False,
    )
    compression = serializers.ChoiceField(Compression.choices, required=False)
    fresh_backup = serializers.BooleanField(required=False)
    shutdown_timeout_s = serializers.IntegerField(
        min_value=OPTION_RANGES["shutdown_timeout_s"][0],
        max_value=OPTION_RANGES["shutdown_timeout_s"][1],
        required=False,
    )
    allow_force_off = serializers.BooleanField(required=False)
    stop_on_failure = serializers.BooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("window_start" in attrs) != ("window_end" in attrs):
            raise serializers.ValidationError("Give both window_start and window_end (or neither).")
        start, end = attrs.get("window_start"), attrs.get("window_end")
        if (start is None) != (end is None):
            raise serializers.ValidationError("A change window needs both a start and an end.")
        if start is not None and end <= start:
            raise serializers.ValidationError("The change window must end after it starts.")
        return attrs


class PlanCreateSerializer(PlanOptionsSerializer):
    vms = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=500)
    destination = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text="One host for every VM; empty: the portal chooses."
    )
    destinations = serializers.DictField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text='VM UUID → host name or "auto", per VM.',
    )


class CSVImportSerializer(serializers.Serializer):
    csv = serializers.CharField(
        max_length=2 * 1024 * 1024,
        trim_whitespace=False,
        help_text="Columns: vm (name or UUID), destination (host or auto), mode, window (START/END), group.",
    )
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)


class ItemUpdateSerializer(serializers.Serializer):
    destination = serializers.CharField(max_length=64, required=False, help_text='A host name, or "auto".')
    network_map = serializers.DictField(child=serializers.CharField(max_length=255), required=False)
    storage_map = serializers.DictField(child=serializers.DictField(child=serializers.CharField()), required=False)
    wave = serializers.IntegerField(min_value=1, max_value=100, required=False)


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(max_length=4000)


class CheckResultSerializer(serializers.ModelSerializer):
    vm = serializers.CharField(source="item.vm.name", read_only=True)

    class Meta:
        model = CheckResult
        fields = ["item", "vm", "check_id", "area", "severity", "message", "remediation"]


class AuditSerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    worst = serializers.CharField(allow_null=True, allow_blank=True)
    plan_status = serializers.CharField()
    blocks = serializers.IntegerField()
    warnings = serializers.IntegerField()
    results = CheckResultSerializer(many=True)


class WaveSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    items = serializers.IntegerField()
    start_s = serializers.FloatField()
    end_s = serializers.FloatField()
    in_window = serializers.BooleanField()


class WavePlanSerializer(serializers.Serializer):
    summary = serializers.CharField(allow_blank=True)
    total_s = serializers.FloatField(allow_null=True)
    waves = WaveSerializer(many=True)
    problems = serializers.DictField(child=serializers.CharField())


class EvacuationSerializer(serializers.Serializer):
    host = serializers.CharField()
    plans = serializers.ListField(child=serializers.IntegerField())
    cannot_move = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


class RunSerializer(serializers.ModelSerializer):
    plan = serializers.IntegerField(source="item.plan_id", read_only=True)
    vm = serializers.UUIDField(source="vm.uuid", read_only=True)
    vm_name = serializers.CharField(source="vm.name", read_only=True)
    source = serializers.CharField(source="source.name", read_only=True)
    destination = serializers.CharField(source="destination.name", read_only=True)

    class Meta:
        model = MigrationRun
        fields = [
            "id",
            "plan",
            "item",
            "vm",
            "vm_name",
            "source",
            "destination",
            "mode",
            "status",
            "phase_detail",
            "percent",
            "bytes_total",
            "bytes_processed",
            "bytes_remaining",
            "downtime_ms",
            "queued_at",
            "started_at",
            "finished_at",
            "error",
            "outcome",
            "cancel_requested",
        ]


class SampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProgressSample
        fields = [
            "at",
            "elapsed_s",
            "phase",
            "percent",
            "bytes_processed",
            "bytes_remaining",
            "bytes_total",
            "throughput_bps",
            "dirty_rate_bps",
            "iteration",
            "eta_s",
            "note",
        ]


class ValidationSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    report = serializers.DictField(allow_null=True, help_text="Null while the run has no validation report.")


class BackupSerializer(serializers.ModelSerializer):
    host = serializers.CharField(source="host.name", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Backup
        fields = [
            "id",
            "vm_name",
            "vm_uuid",
            "host",
            "pool",
            "method",
            "state",
            "verified",
            "total_bytes",
            "created_at",
            "finished_at",
            "expires_at",
            "error",
        ]


class AuditLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditLogEntry
        fields = [
            "id",
            "at",
            "actor_name",
            "verb",
            "target_type",
            "target_id",
            "target_repr",
            "before",
            "after",
            "comment",
        ]
