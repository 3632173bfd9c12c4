"""Pre-migration audits, their check results and predictions, and admin overrides."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from migrations_app.choices import Area, AuditStatus, Mode, Severity, Verdict


class Audit(models.Model):
    """One run of the CHECKS.md pre-migration catalogue over every item of a plan."""

    plan = models.ForeignKey("migrations_app.MigrationPlan", on_delete=models.CASCADE, related_name="audits")
    status = models.CharField(max_length=16, choices=AuditStatus.choices, default=AuditStatus.QUEUED)
    reason = models.CharField(max_length=64, default="edit", help_text="edit, submit, schedule or cutover")
    job_id = models.CharField(max_length=64, blank=True)
    worst = models.CharField(max_length=8, choices=Severity.choices, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"audit {self.pk} of plan {self.plan_id}"


class CheckResult(models.Model):
    """One check on one item: severity, a message for people, the evidence, and a remediation."""

    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="results")
    item = models.ForeignKey("migrations_app.PlanItem", on_delete=models.CASCADE, related_name="check_results")
    check_id = models.CharField(max_length=32)
    area = models.CharField(max_length=16, choices=Area.choices)
    severity = models.CharField(max_length=8, choices=Severity.choices)
    message = models.TextField()
    evidence = models.JSONField(default=dict, blank=True, help_text='{"source": …, "destination": …}')
    remediation = models.TextField(blank=True)

    class Meta:
        ordering = ["audit", "item", "check_id"]
        constraints = [models.UniqueConstraint(fields=["audit", "item", "check_id"], name="one_result_per_check")]

    def __str__(self) -> str:
        return f"{self.check_id} {self.severity}"


class Prediction(models.Model):
    """Predicted duration and downtime of one item for one mode, with the inputs shown beside them."""

    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="predictions")
    item = models.ForeignKey("migrations_app.PlanItem", on_delete=models.CASCADE, related_name="predictions")
    mode = models.CharField(max_length=8, choices=Mode.choices)
    duration_s = models.FloatField(null=True, blank=True)
    downtime_ms = models.FloatField(null=True, blank=True)
    bytes_to_copy = models.BigIntegerField(default=0)
    verdict = models.CharField(max_length=24, choices=Verdict.choices, default=Verdict.UNKNOWN)
    recommended = models.BooleanField(default=False)
    inputs = models.JSONField(default=dict, blank=True)
    load = models.JSONField(default=dict, blank=True, help_text="Expected load on hosts, network and storage.")
    explanation = models.TextField(blank=True)

    class Meta:
        ordering = ["audit", "item", "mode"]
        constraints = [models.UniqueConstraint(fields=["audit", "item", "mode"], name="one_prediction_per_mode")]

    def __str__(self) -> str:
        return f"{self.mode} prediction for item {self.item_id}"


class Override(models.Model):
    """An admin's decision to let a plan with blocking results be submitted, with the reason."""

    plan = models.ForeignKey("migrations_app.MigrationPlan", on_delete=models.CASCADE, related_name="overrides")
    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="overrides")
    admin = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    covers = models.JSONField(default=list, help_text="[[item id, check id], …] the blocks this override accepts.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"override of plan {self.plan_id} by {self.admin_id}"
