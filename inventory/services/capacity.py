"""How full each host is: the figures behind the capacity bars of the fleet dashboard and the host page.

One grouped query for the VMs and one for the pools, whatever the number of hosts; the live fleet view
sends the same rows over the websocket, so the page and the stream never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Case, Count, F, FloatField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, NullIf
from django.template.defaultfilters import filesizeformat

from inventory.choices import PowerState, Reachability
from inventory.models import Host, StoragePool, VirtualMachine


def raw_percent(part: int | None, whole: int | None) -> int:
    return round(100 * (part or 0) / whole) if whole else 0


def percent(part: int | None, whole: int | None) -> int:
    """For the bar: 0–100 (the text beside it shows the real figure, overcommit included)."""
    return max(0, min(100, raw_percent(part, whole)))


def by_attention(hosts: QuerySet[Host]) -> QuerySet[Host]:
    """Unreachable hosts first, then those in maintenance, then the fullest (memory), then by name."""
    return hosts.annotate(
        attention=Case(
            When(reachability=Reachability.UNREACHABLE, then=Value(0)),
            When(maintenance=True, then=Value(1)),
            default=Value(2),
        ),
        memory_fill=Cast(F("memory_total") - F("memory_free"), FloatField()) / NullIf(F("memory_total"), 0),
    ).order_by("attention", F("memory_fill").desc(nulls_last=True), "name")


def summary() -> dict[str, int]:
    """How many hosts there are and how many need attention (one query)."""
    return Host.objects.aggregate(
        total=Count("id"),
        unreachable=Count("id", filter=Q(reachability=Reachability.UNREACHABLE)),
        maintenance=Count("id", filter=Q(maintenance=True)),
        disabled=Count("id", filter=Q(enabled=False)),
    )


def usage(hosts: Iterable[Host]) -> list[dict[str, Any]]:
    """Per-host usage rows, in the order of `hosts`."""
    hosts = list(hosts)
    ids = [h.pk for h in hosts]
    vm_stats = {
        row["host"]: row
        for row in VirtualMachine.objects.filter(present=True, host_id__in=ids)
        .values("host")
        .annotate(
            total=Count("id"),
            running=Count("id", filter=Q(state=PowerState.RUNNING)),
            vcpus=Sum("vcpus", filter=Q(state=PowerState.RUNNING)),
            memory=Sum("memory", filter=Q(state=PowerState.RUNNING)),
        )
    }
    pool_stats = {
        row["host"]: row
        for row in StoragePool.objects.filter(present=True, active=True, host_id__in=ids)
        .values("host")
        .annotate(capacity=Sum("capacity"), allocation=Sum("allocation"))
    }
    rows = []
    for host in hosts:
        vms = vm_stats.get(host.pk, {})
        pools = pool_stats.get(host.pk, {})
        rows.append(
            {
                "host": host,
                "vm_total": vms.get("total", 0),
                "vm_running": vms.get("running", 0),
                "vcpus": vms.get("vcpus") or 0,
                "vcpu_pct": percent(vms.get("vcpus"), host.cpus),
                "memory_used": host.memory_used,
                "memory_pct": percent(host.memory_used, host.memory_total),
                "storage_capacity": pools.get("capacity") or 0,
                "storage_allocation": pools.get("allocation") or 0,
                "storage_pct": percent(pools.get("allocation"), pools.get("capacity")),
                "memory_text": f"{filesizeformat(host.memory_used)} of {filesizeformat(host.memory_total)}",
                "vcpu_text": f"{vms.get('vcpus') or 0} vCPUs running on {host.cpus} CPUs",
                "storage_text": f"{filesizeformat(pools.get('allocation') or 0)} of {filesizeformat(pools.get('capacity') or 0)}",
            }
        )
    return rows


def usage_payload(row: dict[str, Any]) -> dict[str, Any]:
    """One usage row as plain data for the websocket (the host as its id and the flags people see)."""
    host: Host = row["host"]
    return {
        "id": host.pk,
        "name": host.name,
        "reachability": host.reachability,
        "reachability_label": host.get_reachability_display(),
        "maintenance": host.maintenance,
        "enabled": host.enabled,
        "last_error": host.last_error,
        **{k: row[k] for k in ("vm_total", "vm_running", "memory_pct", "vcpu_pct", "storage_pct")},
        **{k: str(row[k]) for k in ("memory_text", "vcpu_text", "storage_text")},
    }
