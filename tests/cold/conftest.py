"""Fixtures for cold moves, transfers and backups on the real lab."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inventory.models import Host, VirtualMachine
from migrations_app.engine import transfer
from migrations_app.models import Backup, MigrationPlan, PlanItem
from migrations_app.services.plans import default_network_map, default_storage_map
from tests.engine.conftest import APP_NETWORK, lab_hosts, people, sync  # noqa: F401  (fixtures)
from tests.labguests import Guest, LabGuests


def cold_item(
    personas: dict[str, Any],
    hosts: dict[str, Host],
    guest: Guest,
    destination: str,
    *,
    formats: dict[str, str] | None = None,
    mode: str = "cold",
    **options: Any,
) -> PlanItem:
    """A plan with one cold item for `guest` (made directly, no audit): app segment mapped by name,
    disks into the destination's `local` pool, formats as given (default keep)."""
    sync(hosts, guest.host, destination)
    vm = VirtualMachine.objects.get(uuid=guest.uuid)
    dest = Host.objects.prefetch_related("networks", "pools").get(pk=hosts[destination].pk)
    options.setdefault("fresh_backup", False)
    options.setdefault("shutdown_timeout_s", 5)
    options.setdefault("allow_force_off", True)  # SeaBIOS guests never finish a graceful shutdown
    plan = MigrationPlan.objects.create(
        name=f"move {guest.name}",
        requester=personas["alice"],
        team=personas["payments"],
        mode=mode,
        status="approved",
        **options,
    )
    storage = default_storage_map(vm, dest)
    for target in storage:
        storage[target] = {"pool": "local", "format": (formats or {}).get(target, "keep")}
    return PlanItem.objects.create(
        plan=plan,
        vm=vm,
        source=vm.host,
        destination=dest,
        mode=mode,
        network_map={mac: APP_NETWORK[destination] for mac in default_network_map(vm, dest)},
        storage_map=storage,
    )


def forget_later(lab_guests: LabGuests, guest: Guest, *names: str) -> None:
    """Volumes a move or backup made under other names: removed with the guest's own afterwards."""
    lab_guests.volumes += [("local", n) for n in names]
    for backup in Backup.objects.filter(vm_uuid=guest.uuid):
        lab_guests.volumes += [(d["pool"], d["volume"]) for d in backup.disks]


FaultHook = Callable[[Callable[[transfer.DiskCopy, int], None] | None], None]


@pytest.fixture
def fault_hook(monkeypatch: pytest.MonkeyPatch) -> FaultHook:
    """fault_hook(fn): from now on fn(copy, chunk_index) is called after each chunk a disk copy has sent
    and the destination acknowledged (it may raise, or disturb a host); fault_hook(None) stops it.
    Undone after the test."""
    send = transfer.DiskCopy._send

    def install(hook: Callable[[transfer.DiskCopy, int], None] | None) -> None:
        if hook is None:
            monkeypatch.setattr(transfer.DiskCopy, "_send", send)
            return

        def send_then_hook(copy: transfer.DiskCopy, index: int) -> None:
            send(copy, index)
            hook(copy, index)

        monkeypatch.setattr(transfer.DiskCopy, "_send", send_then_hook)

    return install
