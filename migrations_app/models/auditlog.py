"""The append-only audit log."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class AuditLogEntry(models.Model):
    """One state change: who did what to which object, with the values before and after.

    Rows are only ever inserted (through `migrations_app.auditlog.record`); saving an
    existing row or deleting one raises, the admin shows them read-only, and the database itself refuses
    UPDATE and DELETE of a row (a trigger, migration 0006).
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Kept even if the account is renamed.")
    verb = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    comment = models.TextField(blank=True)
    source_address = models.GenericIPAddressField(null=True, blank=True, help_text="Where the request came from.")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.verb} {self.target_repr}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("Audit log entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ValueError("Audit log entries are append-only.")
