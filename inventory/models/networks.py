"""Virtual networks of a host."""

from __future__ import annotations

from django.db import models


class Network(models.Model):
    """A libvirt network (name, bridge, forward mode). Names differ between hosts; mappings join them."""

    host = models.ForeignKey("inventory.Host", on_delete=models.CASCADE, related_name="networks")
    name = models.CharField(max_length=255)
    uuid = models.CharField(max_length=64, blank=True)
    bridge = models.CharField(max_length=64, blank=True)
    forward_mode = models.CharField(max_length=32, blank=True)
    active = models.BooleanField(default=True)
    present = models.BooleanField(default=True)

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [models.UniqueConstraint(fields=["host", "name"], name="network_unique_per_host")]

    def __str__(self) -> str:
        return f"{self.host.name}/{self.name}"
