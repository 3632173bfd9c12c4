"""Migration plans and their items."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from inventory.permissions import sees_everything
from migrations_app.choices import ChangeType, Compression, Mode, NoConvergence, PlanStatus, TargetFormat

if TYPE_CHECKING:
    from inventory.permissions import AnyUser


class MigrationPlanQuerySet(models.QuerySet["MigrationPlan"]):
    def visible_to(self, user: AnyUser) -> MigrationPlanQuerySet:
        """Owners see their teams' plans; approvers and auditors see all."""
        if not user.is_authenticated:
            return self.none()
        if sees_everything(user):
            return self
        return self.filter(team__members=user.pk)


class MigrationPlan(models.Model):
    """A request to move one or more VMs of one team, with the options every move of it uses."""

    name = models.CharField(max_length=120)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="plans")
    team = models.ForeignKey("inventory.Team", on_delete=models.PROTECT, related_name="plans")
    status = models.CharField(max_length=24, choices=PlanStatus.choices, default=PlanStatus.DRAFT, db_index=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.AUTO)
    change_type = models.CharField(max_length=16, choices=ChangeType.choices, default=ChangeType.NORMAL)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)

    # live-migration options (sensible defaults, shown on the form)
    bandwidth_mib_s = models.PositiveIntegerField(
        "bandwidth limit (MiB/s)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Empty: no limit.",
    )
    max_downtime_ms = models.PositiveIntegerField(
        "max downtime (ms)",
        default=300,
        validators=[MinValueValidator(10), MaxValueValidator(60_000)],
    )
    auto_converge = models.BooleanField(
        default=True, help_text="Throttle the guest's vCPUs if memory is dirtied faster than it is sent."
    )
    postcopy_allowed = models.BooleanField(default=False)
    on_no_convergence = models.CharField(max_length=16, choices=NoConvergence.choices, default=NoConvergence.ABORT)
    parallel_connections = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(16)]
    )
    compression = models.CharField(max_length=8, choices=Compression.choices, default=Compression.NONE)

    # cold-migration and safety options
    fresh_backup = models.BooleanField(default=True, help_text="Take a verified backup before moving.")
    shutdown_timeout_s = models.PositiveIntegerField(
        default=120, validators=[MinValueValidator(5), MaxValueValidator(3600)]
    )
    allow_force_off = models.BooleanField(default=False, help_text="Power the VM off if it does not shut down in time.")
    stop_on_failure = models.BooleanField(
        default=False, help_text="A failed VM stops the VMs of the plan that have not started yet."
    )

    predicted_seconds = models.FloatField(null=True, blank=True)
    predicted_downtime_ms = models.FloatField(null=True, blank=True)
    wave_plan = models.JSONField(
        default=dict, blank=True, help_text="The waves the last audit planned: summary, timeline, problems."
    )

    # the workflow (migrations_app.services.planstate is the only writer of `status`)
    status_reason = models.TextField(blank=True, help_text="Why the plan is in its state, in words.")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    approved_audit = models.ForeignKey(
        "migrations_app.Audit", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    scheduled_for = models.DateTimeField(null=True, blank=True, help_text="When the scheduler starts the plan.")
    start_claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="A scheduler took the start (re-audit under way) at this time."
    )
    schedule_note = models.CharField(max_length=300, blank=True)
    cancel_requested = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    objects = MigrationPlanQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("migrations_app:plan_detail", args=[self.pk])


class PlanItem(models.Model):
    """One VM of a plan: where it goes and how its NICs and disks are mapped.

    `network_map`: {mac: destination network name}. `storage_map`: {disk target: {"pool": name,
    "format": "keep"|"qcow2"|"raw"}}. Both are filled from the defaults when the item is created and
    may be overridden by the owner while the plan is a draft.
    """

    plan = models.ForeignKey(MigrationPlan, on_delete=models.CASCADE, related_name="items")
    vm = models.ForeignKey("inventory.VirtualMachine", on_delete=models.PROTECT, related_name="plan_items")
    source = models.ForeignKey("inventory.Host", on_delete=models.PROTECT, related_name="+")
    destination = models.ForeignKey("inventory.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    destination_auto = models.BooleanField(default=False, help_text="The portal chose the destination.")
    destination_reason = models.CharField(max_length=300, blank=True)
    start_error = models.TextField(blank=True, help_text="Why no run could be started for this VM.")
    destination_rejections = models.JSONField(
        default=list, blank=True, help_text='Hosts the portal did not choose: [{"host": …, "why": …}, …].'
    )
    mode = models.CharField(
        max_length=8, choices=Mode.choices, blank=True, help_text="The resolved mode (live or cold)."
    )
    network_map = models.JSONField(default=dict, blank=True)
    storage_map = models.JSONField(default=dict, blank=True)
    target_format = models.CharField(max_length=8, choices=TargetFormat.choices, default=TargetFormat.KEEP)
    wave = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["plan", "wave", "pk"]
        constraints = [models.UniqueConstraint(fields=["plan", "vm"], name="vm_once_per_plan")]

    def __str__(self) -> str:
        return f"{self.plan_id}: {self.vm_id} → {self.destination_id}"
