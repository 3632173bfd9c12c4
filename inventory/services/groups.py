"""Application groups: the application a VM belongs to, set by its owner (VM page, API or CSV). VMs of one
group move in one wave (DEP-GROUP, the wave planner)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from inventory.models import VirtualMachine

MAX_GROUP_CHARS = 100


class GroupError(ValueError):
    """The group was refused; nothing was changed."""


def set_application_group(actor: Any, vm: VirtualMachine, group: str) -> VirtualMachine:
    from migrations_app import auditlog
    from vmportal import access

    access.require(actor, access.Action.PLAN_CREATE, vm)  # the VM's team (and admins), never auditors
    group = group.strip()
    if len(group) > MAX_GROUP_CHARS:
        raise GroupError(f"An application group name has at most {MAX_GROUP_CHARS} characters.")
    with transaction.atomic():
        before = {"app": vm.app}
        vm.app = group
        vm.save(update_fields=["app", "updated_at"])
        auditlog.record(actor, "vm.application_group", vm, before=before, after={"app": group})
    return vm
