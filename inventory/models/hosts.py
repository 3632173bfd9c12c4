"""Hypervisor hosts."""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from inventory.choices import Reachability


class Host(models.Model):
    """A libvirt host the portal reads and moves VMs between.

    The URI was validated against the allow-list when it was saved through `services.hosts`.
    Capability fields are a copy of what the host reported at the last successful sync.
    """

    name = models.SlugField(max_length=64, unique=True)
    uri = models.CharField("libvirt URI", max_length=512, unique=True)
    migration_uri = models.CharField(
        "migration URI",
        max_length=512,
        blank=True,
        help_text="How other hosts reach this one for peer-to-peer migration (e.g. qemu+tls://host/system).",
    )
    site = models.CharField(max_length=100, blank=True)
    cluster = models.CharField(max_length=100, blank=True)
    enabled = models.BooleanField(default=True, help_text="Disabled hosts are not offered as destinations.")
    maintenance = models.BooleanField(default=False)

    reachability = models.CharField(max_length=16, choices=Reachability.choices, default=Reachability.UNKNOWN)
    last_error = models.TextField(blank=True)
    last_error_raw = models.TextField(blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_sync_ms = models.PositiveIntegerField(null=True, blank=True)

    # capabilities
    hostname = models.CharField(max_length=255, blank=True)
    host_uuid = models.CharField(max_length=64, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    cpu_model = models.CharField(max_length=100, blank=True)
    cpu_vendor = models.CharField(max_length=100, blank=True)
    cpu_xml = models.TextField(blank=True)
    cpus = models.PositiveIntegerField(default=0, help_text="Logical CPUs.")
    sockets = models.PositiveIntegerField(default=0)
    cores = models.PositiveIntegerField(default=0)
    threads = models.PositiveIntegerField(default=0)
    memory_total = models.BigIntegerField(default=0)
    memory_free = models.BigIntegerField(default=0)
    hypervisor_type = models.CharField(max_length=32, blank=True)
    hypervisor_version = models.CharField(max_length=32, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    virt_type = models.CharField(max_length=16, blank=True, help_text="kvm or qemu (software emulation).")
    machine_types = models.JSONField(default=list, blank=True)
    domain_capabilities = models.TextField(blank=True)

    # limits and policy
    max_outgoing = models.PositiveSmallIntegerField(default=2, help_text="Concurrent outgoing moves.")
    max_incoming = models.PositiveSmallIntegerField(default=2, help_text="Concurrent incoming moves.")
    cpu_overcommit = models.DecimalField(max_digits=5, decimal_places=2, default=4)
    memory_reserve = models.BigIntegerField(default=512 * 1024 * 1024, help_text="Bytes kept free for the host itself.")
    link_mib_s = models.PositiveIntegerField(
        "migration link speed (MiB/s)",
        null=True,
        blank=True,
        help_text="What a migration to or from this host can reach; used for predictions until past moves tell.",
    )

    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("inventory:host_detail", args=[self.name])

    @property
    def memory_used(self) -> int:
        return max(self.memory_total - self.memory_free, 0)

    @property
    def is_reachable(self) -> bool:
        return self.reachability == Reachability.REACHABLE
