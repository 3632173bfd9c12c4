"""Where a backup goes by default, and which backups survive the loss of the VM's host (pure rule)."""

from __future__ import annotations

from typing import Any

from inventory.models import StoragePool
from migrations_app import backupplace


def _pool(host_id: int, name: str, available: int = 0, **extra: Any) -> StoragePool:
    return StoragePool(host_id=host_id, name=name, available=available, **{"present": True, "active": True, **extra})


def test_a_local_disk_vm_is_backed_up_to_the_roomiest_backup_pool_on_another_host() -> None:
    pools = [
        _pool(1, "local", 10**12),
        _pool(1, "backup", 10**12),  # on the VM's own host: never chosen
        _pool(2, "backup", 10**9),
        _pool(3, "backup", 10**10),
        _pool(4, "backup", 10**11, active=False),
    ]
    place = backupplace.choose(1, False, pools)
    assert (place.host_id, place.pool, place.shared) == (3, "backup", False)
    assert place.survives(1) and not place.survives(3)
    # a host that may not receive backups (disabled, unreachable) is skipped
    assert backupplace.choose(1, False, pools, usable_hosts={1, 2}).host_id == 2


def test_without_a_backup_pool_elsewhere_shared_storage_then_the_vms_own_host() -> None:
    pools = [_pool(1, "local"), _pool(1, "nfs", shared_by_admin=True), _pool(2, "local")]
    place = backupplace.choose(1, False, pools)
    assert (place.host_id, place.pool, place.shared) == (1, "nfs", True) and place.survives(1)
    last = backupplace.choose(1, False, [_pool(1, "local"), _pool(2, "local")])
    assert (last.host_id, last.pool, last.shared) == (1, "", False)
    assert not last.survives(1) and "own host" in last.why


def test_a_vm_on_shared_storage_is_backed_up_beside_its_disks(settings: Any) -> None:
    place = backupplace.choose(1, True, [_pool(2, "backup")])
    assert (place.host_id, place.pool, place.shared) == (1, "", True)
    settings.BACKUP_POOL = ""
    assert backupplace.choose(1, False, [_pool(2, "backup")]).host_id == 1


def test_which_backups_survive_the_loss_of_the_vms_host() -> None:
    assert backupplace.survives_host_loss(2, False, 1)
    assert backupplace.survives_host_loss(1, True, 1)
    assert not backupplace.survives_host_loss(1, False, 1)
    assert not backupplace.survives_host_loss(None, False, 1)
