"""Virtual machines, their disks, NICs and passthrough devices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.urls import reverse

from inventory.choices import Firmware, PowerState, TeamSource
from inventory.permissions import sees_everything

if TYPE_CHECKING:
    from inventory.permissions import AnyUser


class VirtualMachineQuerySet(models.QuerySet["VirtualMachine"]):
    def visible_to(self, user: AnyUser) -> VirtualMachineQuerySet:
        """The one permission-carrying queryset: every view, API and consumer starts here."""
        if not user.is_authenticated:
            return self.none()
        if sees_everything(user):
            return self
        return self.filter(team__members=user.pk)

    def present(self) -> VirtualMachineQuerySet:
        return self.filter(present=True)


class VirtualMachine(models.Model):
    """A VM, identified across hosts by its libvirt UUID.

    Sync keys on `uuid`: a VM that moved keeps its row and gets a new `host`; a VM that disappeared
    is marked `present=False` with `missing_since`, never deleted.
    """

    uuid = models.UUIDField(unique=True)
    name = models.CharField(max_length=255, db_index=True)
    host = models.ForeignKey("inventory.Host", on_delete=models.PROTECT, related_name="vms")
    state = models.CharField(max_length=16, choices=PowerState.choices, default=PowerState.UNKNOWN)
    state_reason = models.IntegerField(default=0)
    persistent = models.BooleanField(default=True)
    autostart = models.BooleanField(default=False)
    virt_type = models.CharField(max_length=16, blank=True)
    vcpus = models.PositiveIntegerField(default=0)
    memory = models.BigIntegerField(default=0, help_text="Current memory, bytes.")
    max_memory = models.BigIntegerField(default=0, help_text="Maximum memory, bytes.")
    cpu_mode = models.CharField(max_length=32, blank=True)
    cpu_model = models.CharField(max_length=100, blank=True)
    machine_type = models.CharField(max_length=64, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    firmware = models.CharField(max_length=8, choices=Firmware.choices, default=Firmware.BIOS)
    title = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    has_guest_agent = models.BooleanField(default=False)
    snapshot_count = models.PositiveIntegerField(default=0)
    hostdevs = models.JSONField(default=list, blank=True, help_text="Passthrough devices (type, mode, address).")

    team = models.ForeignKey("inventory.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="vms")
    team_source = models.CharField(max_length=16, choices=TeamSource.choices, default=TeamSource.NONE, blank=True)
    team_tag = models.CharField(max_length=100, blank=True, help_text="Team tag found in the libvirt metadata.")
    app = models.CharField(max_length=100, blank=True)
    labels = models.JSONField(default=dict, blank=True)

    present = models.BooleanField(default=True)
    missing_since = models.DateTimeField(null=True, blank=True)
    also_defined_on = models.JSONField(
        default=list,
        blank=True,
        help_text="Other hosts holding an inactive definition with the same UUID (e.g. kept after a cold move).",
    )
    xml = models.TextField(blank=True, help_text="Domain XML as last seen.")
    fingerprint = models.CharField(max_length=64, blank=True, help_text="Hash of what sync read; unchanged → skipped.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = VirtualMachineQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["host", "present"]), models.Index(fields=["team", "name"])]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("inventory:vm_detail", args=[self.uuid])

    @property
    def application_group(self) -> str:
        """The application the VM belongs to: set by its owner (page or CSV), else its libvirt label."""
        return self.app or str((self.labels or {}).get("app", ""))


class Disk(models.Model):
    """One disk, CD-ROM or floppy of a VM, as its domain XML and its pool describe it."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    target = models.CharField(max_length=32)
    bus = models.CharField(max_length=16, blank=True)
    device = models.CharField(max_length=16, default="disk")
    source_type = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=1024, blank=True)
    pool = models.ForeignKey(
        "inventory.StoragePool", null=True, blank=True, on_delete=models.SET_NULL, related_name="disks"
    )
    format = models.CharField(max_length=16, blank=True)
    cache = models.CharField(max_length=16, blank=True)
    shareable = models.BooleanField(default=False)
    readonly = models.BooleanField(default=False)
    capacity = models.BigIntegerField(null=True, blank=True)
    allocation = models.BigIntegerField(null=True, blank=True)
    backing_chain = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["vm", "target"]

    def __str__(self) -> str:
        return f"{self.vm.name}:{self.target}"


class NIC(models.Model):
    """A network interface of a VM."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="nics")
    mac = models.CharField(max_length=17, db_index=True)
    type = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=32, blank=True)
    source_network = models.CharField(max_length=255, blank=True)
    source_bridge = models.CharField(max_length=64, blank=True)
    source_dev = models.CharField(max_length=64, blank=True)
    network = models.ForeignKey(
        "inventory.Network", null=True, blank=True, on_delete=models.SET_NULL, related_name="nics"
    )
    target_dev = models.CharField(max_length=64, blank=True)
    filter = models.CharField(max_length=100, blank=True)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["vm", "order"]
        verbose_name = "NIC"

    def __str__(self) -> str:
        return f"{self.vm.name}:{self.mac}"
