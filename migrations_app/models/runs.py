"""Migration runs (one attempt to move one item) and their progress samples."""

from __future__ import annotations

from django.db import models

from migrations_app.choices import Mode, RunStatus


class MigrationRun(models.Model):
    """One attempt to move one plan item. Holds a lease while a worker owns it.

    A worker claims a queued run with a conditional UPDATE (status=queued → preflight) so two workers
    never run the same one, renews `lease_until` with a heartbeat, and the reconciler adopts runs whose
    lease expired by asking libvirt where the VM really is.
    """

    item = models.ForeignKey("migrations_app.PlanItem", on_delete=models.PROTECT, related_name="runs")
    vm = models.ForeignKey("inventory.VirtualMachine", on_delete=models.PROTECT, related_name="runs")
    source = models.ForeignKey("inventory.Host", on_delete=models.PROTECT, related_name="outgoing_runs")
    destination = models.ForeignKey("inventory.Host", on_delete=models.PROTECT, related_name="incoming_runs")
    mode = models.CharField(max_length=8, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    phase_detail = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)

    job_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    transferred_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    percent = models.FloatField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    bytes_processed = models.BigIntegerField(default=0)
    bytes_remaining = models.BigIntegerField(default=0)
    downtime_ms = models.FloatField(
        null=True, blank=True, help_text="Real downtime from libvirt's completed job stats."
    )
    setup_ms = models.FloatField(null=True, blank=True)
    elapsed_ms = models.FloatField(null=True, blank=True)
    completed_stats = models.JSONField(default=dict, blank=True)
    options = models.JSONField(
        default=dict, blank=True, help_text="What the run is asked to do (migrations_app.engine.spec.RunSpec)."
    )
    scratch = models.JSONField(
        default=dict,
        blank=True,
        help_text="The engine's working state: what it used (libvirt flags, disks copied), rollback state, "
        "transfer reports.",
    )

    pending_cleanup = models.JSONField(
        default=dict,
        blank=True,
        help_text="What a failed move left on the destination and could not be removed yet (host id, volumes).",
    )

    error = models.TextField(blank=True)
    error_raw = models.TextField(blank=True)
    outcome = models.TextField(blank=True, help_text="What happened, in words (shown to people).")

    class Meta:
        ordering = ["-queued_at", "-pk"]
        indexes = [models.Index(fields=["status", "source"]), models.Index(fields=["status", "destination"])]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.mode} {self.status})"


class ProgressSample(models.Model):
    """One poll of a running move's job stats."""

    run = models.ForeignKey(MigrationRun, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    elapsed_s = models.FloatField(default=0)
    phase = models.CharField(max_length=16)
    percent = models.FloatField(default=0)
    bytes_processed = models.BigIntegerField(default=0)
    bytes_remaining = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    throughput_bps = models.FloatField(null=True, blank=True)
    dirty_rate_bps = models.FloatField(null=True, blank=True)
    iteration = models.PositiveIntegerField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    downtime_limit_ms = models.FloatField(null=True, blank=True)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["run", "at", "pk"]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.phase} {self.percent:.0f}%"
