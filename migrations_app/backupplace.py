"""Where a VM's backup goes, and whether a backup survives the loss of the VM's host. One rule, used
by the backup engine (to place a backup) and by the audit (BAK-RECENT, to judge one).

A failure domain here is a host with its local storage: a backup file on the VM's own host, outside
shared storage, is lost together with the VM it is meant to protect. A backup survives the VM's host
when its files are on another host or on shared storage (reachable from every host).

The default place, in this order:
1. every disk of the VM is on shared storage: the backup goes beside each disk, on that storage;
2. a pool named `VMPORTAL_BACKUP_POOL` (default `backup`) on another host that is enabled and not
   known to be unreachable: the one with the most free space;
3. a shared pool on the VM's host: the one with the most free space;
4. otherwise beside each disk on the VM's own host: a backup all the same, but one that shares the
   VM's failure domain (BAK-RECENT warns about it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from inventory.models import StoragePool

#: Backup.pool of a backup whose files lie beside each disk, in the disk's own pool
BESIDE_EACH_DISK = "beside each disk"


def backup_pool_name() -> str:
    return str(settings.BACKUP_POOL)


@dataclass(frozen=True)
class BackupPlace:
    host_id: int
    pool: str  # "" = beside each disk, in the disk's own pool
    shared: bool  # the files are on shared storage
    why: str

    def survives(self, vm_host_id: int | None) -> bool:
        return survives_host_loss(self.host_id, self.shared, vm_host_id)


def survives_host_loss(backup_host_id: int | None, on_shared_storage: bool, vm_host_id: int | None) -> bool:
    """Whether a backup on `backup_host_id` outlives the loss of the VM's host."""
    return on_shared_storage or (backup_host_id is not None and backup_host_id != vm_host_id)


def choose(
    vm_host_id: int, disks_shared: bool, pools: Iterable[StoragePool], usable_hosts: set[int] | None = None
) -> BackupPlace:
    """The default place for a backup of a VM on `vm_host_id` (see the module's docstring).

    `pools`: the inventory's storage pools (any hosts); `usable_hosts`: hosts that may receive a
    backup (None: all). `disks_shared`: every disk of the VM is on shared storage.
    """
    if disks_shared:
        return BackupPlace(vm_host_id, "", True, "beside each disk, on shared storage")
    live = [p for p in pools if p.present and p.active]
    name = backup_pool_name()
    remote = [
        p
        for p in live
        if name and p.name == name and p.host_id != vm_host_id and (usable_hosts is None or p.host_id in usable_hosts)
    ]
    if remote:
        best = max(remote, key=lambda p: (p.available, -p.host_id))
        return BackupPlace(best.host_id, best.name, best.shared, f"pool '{best.name}' on another host")
    shared = [p for p in live if p.host_id == vm_host_id and p.shared]
    if shared:
        best = max(shared, key=lambda p: (p.available, p.name))
        return BackupPlace(vm_host_id, best.name, True, f"shared pool '{best.name}'")
    return BackupPlace(
        vm_host_id,
        "",
        False,
        f"beside each disk on the VM's own host: no pool '{name}' on another host and no shared storage",
    )
