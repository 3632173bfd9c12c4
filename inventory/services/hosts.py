"""Host registration and connection checks — the rules, callable from views, commands and tests."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import transaction

from inventory.choices import TeamSource
from inventory.hypervisor import ConnectionReport, InvalidURI, ParsedURI, test_connection, validate_uri
from inventory.models import Host, Team, VirtualMachine
from inventory.permissions import require_admin
from migrations_app import auditlog

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class HostError(ValueError):
    """A registration or change request that the rules refuse; the message says why."""


def check_uri(uri: str) -> ParsedURI:
    """Validate a libvirt URI against the configured allow-list (raises InvalidURI)."""
    return validate_uri(
        uri.strip(),
        socket_dirs=settings.LIBVIRT_SOCKET_DIRS,
        key_dirs=settings.LIBVIRT_KEY_DIRS,
        test_dirs=settings.LIBVIRT_TEST_DIRS,
        allow_test=settings.LIBVIRT_TEST_DRIVER,
    )


def check_migration_uri(uri: str) -> str:
    """A migration URI is what other hosts dial, so it must name a remote host."""
    if not uri.strip():
        return ""
    parsed = check_uri(uri)
    if not parsed.is_remote:
        raise InvalidURI("The migration URI must name this host as other hosts reach it, e.g. qemu+tls://host/system.")
    return parsed.uri


#: what an admin may change on a registered host (the name and capabilities are not among them)
EDITABLE_FIELDS = (
    "uri",
    "migration_uri",
    "site",
    "cluster",
    "enabled",
    "maintenance",
    "max_outgoing",
    "max_incoming",
    "cpu_overcommit",
    "memory_reserve",
    "link_mib_s",
)


def _host_values(host: Host) -> dict[str, Any]:
    values: dict[str, Any] = {"name": host.name}
    for key in EDITABLE_FIELDS:
        value = getattr(host, key)
        values[key] = str(value) if key == "cpu_overcommit" else value
    return values


def register_host(
    actor: Any, *, name: str, uri: str, migration_uri: str = "", site: str = "", sync: bool = True
) -> Host:
    """Create a host after validating its name and URIs; queue its first sync after commit."""
    require_admin(actor, "register hosts")
    name = name.strip().lower()
    if not NAME_RE.match(name):
        raise HostError("Use 1–63 lowercase letters, digits and hyphens for the host name.")
    parsed = check_uri(uri)
    migration = check_migration_uri(migration_uri)
    with transaction.atomic():
        if Host.objects.filter(name=name).exists():
            raise HostError(f"A host named '{name}' is already registered.")
        if Host.objects.filter(uri=parsed.uri).exists():
            raise HostError("A host with this URI is already registered.")
        host = Host.objects.create(name=name, uri=parsed.uri, migration_uri=migration, site=site.strip()[:100])
        auditlog.record(actor, "host.register", host, after=_host_values(host))
        if sync:
            from inventory import jobs

            transaction.on_commit(lambda: jobs.enqueue_sync(host.pk))
    return host


def update_host(actor: Any, host: Host, **changes: Any) -> Host:
    """Change a host's settings (URIs re-validated); audit-logged with before and after."""
    require_admin(actor, "change hosts")
    before = _host_values(host)
    if "uri" in changes:
        changes["uri"] = check_uri(changes["uri"]).uri
    if "migration_uri" in changes:
        changes["migration_uri"] = check_migration_uri(changes["migration_uri"])
    with transaction.atomic():
        for key, value in changes.items():
            if key not in EDITABLE_FIELDS:
                raise HostError(f"'{key}' cannot be changed here.")
            setattr(host, key, value)
        host.save()
        auditlog.record(actor, "host.update", host, before=before, after=_host_values(host))
    return host


def probe_host(host: Host) -> ConnectionReport:
    """ "Test connection": reachability and versions, without changing the inventory."""
    check_uri(host.uri)  # the allow-list may have tightened since registration
    return test_connection(host.uri, timeout=settings.LIBVIRT_CONNECT_TIMEOUT)


def assign_team(actor: Any, vms: list[VirtualMachine], team: Team | None) -> int:
    """Admins assign VMs to a team (or clear it); wins over metadata tags from then on."""
    from vmportal import access

    access.require(actor, access.Action.OWNERSHIP_MANAGE)
    changed = 0
    with transaction.atomic():
        for vm in vms:
            before = {"team": vm.team.slug if vm.team else None, "team_source": vm.team_source}
            vm.team = team
            vm.team_source = TeamSource.ADMIN if team else TeamSource.NONE
            vm.save(update_fields=["team", "team_source"])
            auditlog.record(
                actor,
                "vm.assign_team",
                vm,
                before=before,
                after={"team": team.slug if team else None, "team_source": vm.team_source},
            )
            changed += 1
    return changed
