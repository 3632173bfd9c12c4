"""Change governance: approvals, change windows and freezes, standard-change policies, approver
thresholds and the review of emergency changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from migrations_app.choices import ApprovalKind, Decision, Scope

if TYPE_CHECKING:
    from collections.abc import Iterable

WEEK = timedelta(days=7)


class ScopedPeriod(models.Model):
    """A named period that applies to everything, to one host or to one team."""

    name = models.CharField(max_length=120)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.GLOBAL)
    host = models.ForeignKey("inventory.Host", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey("inventory.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    start = models.DateTimeField()
    end = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["start", "pk"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.start and self.end and self.end <= self.start:
            raise ValidationError("The end must be after the start.")
        if self.scope == Scope.HOST and self.host_id is None:
            raise ValidationError({"host": "Choose the host this applies to."})
        if self.scope == Scope.TEAM and self.team_id is None:
            raise ValidationError({"team": "Choose the team this applies to."})

    def applies(self, team_id: int | None, host_ids: Iterable[int]) -> bool:
        """Global periods apply to every plan; a team's to its plans; a host's to plans moving from or to it.
        (Admins keep a handful of these, so callers load them all and ask each.)"""
        if self.scope == Scope.HOST:
            return self.host_id in set(host_ids)
        if self.scope == Scope.TEAM:
            return team_id is not None and self.team_id == team_id
        return True

    @property
    def applies_to(self) -> str:
        if self.scope == Scope.HOST:
            return f"host {self.host}"
        if self.scope == Scope.TEAM:
            return f"team {self.team}"
        return "everything"


class ChangeWindow(ScopedPeriod):
    """When changes may run. A plan without a window of its own starts at the next window that applies
    to it (its team, one of its hosts, or a global one); with none defined it starts once approved."""

    repeat_weekly = models.BooleanField(default=False, help_text="Repeat every week at the same time.")

    class Meta(ScopedPeriod.Meta):
        verbose_name = "change window"

    def occurrence(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence that is open at `now` or the next one; None when it is over for good."""
        if self.end > now:
            return self.start, self.end
        if not self.repeat_weekly:
            return None
        weeks = (now - self.end) // WEEK + 1
        return self.start + weeks * WEEK, self.end + weeks * WEEK


class ChangeFreeze(ScopedPeriod):
    """A period in which nothing starts (plans scheduled into it are held until it ends)."""

    reason = models.CharField(max_length=300, blank=True)

    class Meta(ScopedPeriod.Meta):
        verbose_name = "change freeze"


class StandardChangePolicy(models.Model):
    """A pre-approved kind of change: a standard plan that fits one enabled policy is approved automatically."""

    name = models.CharField(max_length=120, unique=True)
    enabled = models.BooleanField(default=True)
    max_vms = models.PositiveIntegerField(default=5, help_text="At most this many VMs in the plan.")
    live_only = models.BooleanField(default=True, help_text="Every VM moves live.")
    same_site = models.BooleanField(default=True, help_text="Source and destination hosts are in the same site.")
    clean_audit = models.BooleanField(
        default=True, help_text="The audit has no warnings (blocks and overrides never qualify)."
    )
    teams = models.ManyToManyField(
        "inventory.Team", blank=True, related_name="+", help_text="Only these teams' plans (none: every team)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "standard-change policy"
        verbose_name_plural = "standard-change policies"

    def __str__(self) -> str:
        return self.name


class ApprovalRule(models.Model):
    """Plans of at least `min_vms` VMs need `approvers` distinct approvers (the largest matching rule wins)."""

    min_vms = models.PositiveIntegerField(unique=True, help_text="Applies to plans with at least this many VMs.")
    approvers = models.PositiveSmallIntegerField(default=2, help_text="Distinct approvers needed (2 or more).")

    class Meta:
        ordering = ["min_vms"]

    def __str__(self) -> str:
        return f"{self.approvers} approvers from {self.min_vms} VMs"

    def clean(self) -> None:
        if self.approvers is not None and not 2 <= self.approvers <= 5:
            raise ValidationError({"approvers": "Between 2 and 5 approvers."})
        if self.min_vms is not None and self.min_vms < 1:
            raise ValidationError({"min_vms": "At least 1 VM."})


class Approval(models.Model):
    """One decision on a submitted plan: who, when, approve or reject, and why."""

    plan = models.ForeignKey("migrations_app.MigrationPlan", on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision = models.CharField(max_length=8, choices=Decision.choices)
    kind = models.CharField(max_length=10, choices=ApprovalKind.choices, default=ApprovalKind.MANUAL)
    policy = models.ForeignKey(StandardChangePolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    audit = models.ForeignKey(
        "migrations_app.Audit", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    comment = models.TextField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "approver"], condition=Q(approver__isnull=False), name="one_decision_per_approver"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} of plan {self.plan_id}"


class EmergencyReview(models.Model):
    """An emergency change ran without the normal approval; another approver reviews it afterwards."""

    plan = models.OneToOneField("migrations_app.MigrationPlan", on_delete=models.CASCADE, related_name="emergency")
    ran_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    ran_at = models.DateTimeField(auto_now_add=True)
    justification = models.TextField()
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review = models.TextField(blank=True)

    class Meta:
        ordering = ["ran_at"]

    def __str__(self) -> str:
        return f"emergency change {self.plan_id}"
