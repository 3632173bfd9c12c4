"""Status enums of the inventory, with the named sets the rest of the code relies on."""

from django.db import models


class Reachability(models.TextChoices):
    UNKNOWN = "unknown", "Not checked yet"
    REACHABLE = "reachable", "Reachable"
    UNREACHABLE = "unreachable", "Unreachable"


class PowerState(models.TextChoices):
    RUNNING = "running", "Running"
    BLOCKED = "blocked", "Blocked"
    PAUSED = "paused", "Paused"
    SHUTDOWN = "shutdown", "Shutting down"
    SHUTOFF = "shutoff", "Shut off"
    CRASHED = "crashed", "Crashed"
    PMSUSPENDED = "pmsuspended", "Suspended"
    NOSTATE = "nostate", "No state"
    UNKNOWN = "unknown", "Unknown"


#: states in which a guest is executing or holds memory on its host
ACTIVE_STATES = frozenset(
    {
        PowerState.RUNNING,
        PowerState.BLOCKED,
        PowerState.PAUSED,
        PowerState.PMSUSPENDED,
        PowerState.SHUTDOWN,
        PowerState.CRASHED,
    }
)


class TeamSource(models.TextChoices):
    NONE = "", "Unassigned"
    METADATA = "metadata", "From the VM's libvirt metadata"
    ADMIN = "admin", "Assigned by an admin"


class Firmware(models.TextChoices):
    BIOS = "bios", "BIOS"
    UEFI = "uefi", "UEFI"
