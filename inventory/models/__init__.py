from .hosts import Host
from .networks import Network
from .storage import StoragePool
from .teams import Team
from .vms import NIC, Disk, VirtualMachine

__all__ = ["NIC", "Disk", "Host", "Network", "StoragePool", "Team", "VirtualMachine"]
