"""Storage pools of a host."""

from __future__ import annotations

from django.db import models


class StoragePool(models.Model):
    """A libvirt storage pool.

    `shared` says whether other hosts see the same storage (so a live move copies only memory).
    libvirt reports it only through the pool type (netfs, gluster, rbd…); a directory pool on a
    cluster file system looks local to libvirt, so admins may mark it shared (`shared_by_admin`).
    """

    host = models.ForeignKey("inventory.Host", on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=255)
    uuid = models.CharField(max_length=64, blank=True)
    type = models.CharField(max_length=32, blank=True)
    target_path = models.CharField(max_length=1024, blank=True)
    active = models.BooleanField(default=True)
    shared_by_type = models.BooleanField(default=False)
    shared_by_admin = models.BooleanField(default=False)
    capacity = models.BigIntegerField(default=0)
    allocation = models.BigIntegerField(default=0)
    available = models.BigIntegerField(default=0)
    present = models.BooleanField(default=True)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="pool_unique_per_host")]

    def __str__(self) -> str:
        return f"{self.host.name}/{self.name}"

    @property
    def shared(self) -> bool:
        return self.shared_by_type or self.shared_by_admin
