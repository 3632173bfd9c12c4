"""Backups of VMs (definition + disks) and the source disks a cold move keeps for a while."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class BackupState(models.TextChoices):
    TAKING = "taking", "Being taken"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    PRUNED = "pruned", "Pruned"


class BackupMethod(models.TextChoices):
    PUSH = "push", "libvirt push backup (VM running)"
    COPY = "copy", "Copy (VM stopped)"


class Backup(models.Model):
    """One backup of one VM: its definition and every writable disk, on one host's backup pool
    (migrations_app.backupplace says where, and whether it survives the loss of the VM's host).

    `disks`: one entry per disk: {"target", "format", "capacity", "size", "pool", "volume", "path",
    "sha256", "chunks"} — `size` is the backup file's length, `sha256` the digest of its chunk
    digests (see inventory.hypervisor.storage.Chunk), so a later read-back can be compared exactly.
    """

    vm = models.ForeignKey(
        "inventory.VirtualMachine", null=True, blank=True, on_delete=models.SET_NULL, related_name="backups"
    )
    vm_name = models.CharField(max_length=255)
    vm_uuid = models.UUIDField(db_index=True)
    host = models.ForeignKey(
        "inventory.Host",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="backups",
        help_text="Where the files are.",
    )
    pool = models.CharField(max_length=255, blank=True)
    on_shared_storage = models.BooleanField(
        default=False, help_text="Every file is on shared storage (it survives the loss of any one host)."
    )
    run = models.ForeignKey(
        "migrations_app.MigrationRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="backups"
    )
    method = models.CharField(max_length=8, choices=BackupMethod.choices)
    state = models.CharField(max_length=8, choices=BackupState.choices, default=BackupState.TAKING, db_index=True)
    vm_was_running = models.BooleanField(default=False)
    definition_xml = models.TextField(blank=True)
    disks = models.JSONField(default=list, blank=True)
    total_bytes = models.BigIntegerField(default=0, help_text="Bytes of the backup files.")
    bytes_sent = models.BigIntegerField(default=0, help_text="Data bytes actually copied (holes are skipped).")
    verified = models.BooleanField(default=False)
    verified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["vm", "state", "verified", "created_at"])]

    def __str__(self) -> str:
        return f"backup {self.pk} of {self.vm_name} ({self.state})"


class RetainedDisk(models.Model):
    """A source disk left behind by a cold move, kept until `retain_until` or until an admin releases it."""

    vm = models.ForeignKey(
        "inventory.VirtualMachine", null=True, blank=True, on_delete=models.SET_NULL, related_name="retained_disks"
    )
    run = models.ForeignKey(
        "migrations_app.MigrationRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="retained_disks"
    )
    host = models.ForeignKey("inventory.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    target = models.CharField(max_length=32)
    pool = models.CharField(max_length=255, blank=True)
    path = models.CharField(max_length=1024)
    format = models.CharField(max_length=16, blank=True)
    size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    retain_until = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.CharField(max_length=150, blank=True, help_text="A user name, or 'retention'.")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.path} on {self.host_id}"
