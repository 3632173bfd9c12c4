"""Post-migration validation: one report per run with one result per VAL-* check, and the probes a
VM's team defines for it."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from migrations_app.choices import ProbeKind, ValidationOutcome, ValidationStatus


class ValidationReport(models.Model):
    """The validation of one run: the guest facts read before the move, then each check's result."""

    run = models.OneToOneField("migrations_app.MigrationRun", on_delete=models.CASCADE, related_name="validation")
    status = models.CharField(max_length=16, choices=ValidationStatus.choices, default=ValidationStatus.PENDING)
    baseline = models.JSONField(
        default=dict, blank=True, help_text="What the source and the guest agent said before the move."
    )
    baseline_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True, help_text="How long the validation took.")
    waits = models.JSONField(
        default=dict,
        blank=True,
        help_text='Of that, ms the checks spent waiting on purpose: {"agent", "console", "probes", "total"}.',
    )
    move_back_plan = models.ForeignKey(
        "migrations_app.MigrationPlan", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"validation of run {self.run_id} ({self.status})"


class ValidationResult(models.Model):
    """One VAL-* check of one run: outcome, a message for people, the evidence, when."""

    report = models.ForeignKey(ValidationReport, on_delete=models.CASCADE, related_name="results")
    check_id = models.CharField(max_length=32)
    outcome = models.CharField(max_length=8, choices=ValidationOutcome.choices)
    message = models.TextField()
    evidence = models.JSONField(default=dict, blank=True, help_text='{"expected": …, "found": …}')
    remediation = models.TextField(blank=True)
    at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["report", "at", "pk"]
        constraints = [models.UniqueConstraint(fields=["report", "check_id"], name="one_validation_result_per_check")]

    def __str__(self) -> str:
        return f"{self.check_id} {self.outcome}"


class Probe(models.Model):
    """A check its team defines for a VM, run from the worker after every move: a TCP port that must
    accept connections, or an HTTP path that must answer with the expected status."""

    vm = models.ForeignKey("inventory.VirtualMachine", on_delete=models.CASCADE, related_name="probes")
    kind = models.CharField(max_length=8, choices=ProbeKind.choices, default=ProbeKind.TCP)
    address = models.CharField(
        max_length=253,
        blank=True,
        help_text="IP address or host name; empty: the address the guest agent reports for the VM.",
    )
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    path = models.CharField(max_length=200, blank=True, default="/", help_text="HTTP only.")
    expect_status = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(100), MaxValueValidator(599)], help_text="HTTP only."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["vm", "pk"]

    def __str__(self) -> str:
        if self.kind == ProbeKind.HTTP:
            return f"HTTP {self.path or '/'} on port {self.port} answers {self.expect_status or 200}"
        return f"TCP port {self.port} open"
