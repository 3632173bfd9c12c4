"""B-SYNC: inventory sync of a host with 1,000 domains (libvirt test driver node file).

(a) first sync into an empty inventory, (b) re-sync with nothing changed, each interleaved with the
baseline "the libvirt calls alone" (listAllDomains + XMLDesc(0) of every domain), plus the number of
database queries of both at 100 and at 1,000 domains, which must be the same.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from bench.common import count_queries, interleaved, setup_django, timed, timing_result

DOMAINS = 1000
QUERY_SIZES = (100, 1000)
PAIRS = 5
FIRST_SYNC_TARGET_S = 3.0
RESYNC_TARGET_S = 1.0
TEAMS = ("payments", "analytics")
_NS = uuid.UUID("6f1d3c52-8e0b-4c4e-9a57-0b3c1f0d2a11")


def _domains(count: int, prefix: str) -> list[str]:
    """`count` domains with one disk and one NIC each, half of them tagged for each team."""
    from tests.base import domain_xml

    return [
        domain_xml(
            f"{prefix}-{i:04d}",
            str(uuid.uuid5(_NS, f"{prefix}-{i}")),
            mac=f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
            team=TEAMS[i % 2],
            disk_format="raw" if i % 3 == 0 else "qcow2",
        )
        for i in range(count)
    ]


def _make_host(count: int) -> Any:
    from inventory.models import Host
    from tests.base import write_node_file

    name = f"bench-sync-{count}"
    _remove_host(name)
    return Host.objects.create(name=name, uri=write_node_file(name, _domains(count, name)))


def _clear_inventory(host: Any) -> None:
    """Forget everything a sync stored for the host (VMs with their disks and NICs, pools, networks)."""
    from inventory.models import Network, StoragePool, VirtualMachine

    VirtualMachine.objects.filter(host=host).delete()
    StoragePool.objects.filter(host=host).delete()
    Network.objects.filter(host=host).delete()


def _remove_host(name: str) -> None:
    from inventory.models import Host

    for host in Host.objects.filter(name=name):
        _clear_inventory(host)
        Path(host.uri.removeprefix("test://")).unlink(missing_ok=True)
        host.delete()


def _libvirt_alone(uri: str) -> None:
    """The baseline: what any sync has to ask libvirt for, and nothing else."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains(0):
            dom.XMLDesc(0)
    finally:
        conn.close()


def _sync(host: Any, **expect: int) -> None:
    from inventory.services.sync import sync_host

    result = sync_host(host.pk)
    got = {k: getattr(result, k) for k in expect}
    if not result.ok or got != expect:
        raise RuntimeError(f"sync of {host.name} went wrong: {result.as_dict()}")


def _query_counts(count: int) -> tuple[int, int]:
    """(queries of a first sync, queries of a re-sync) of a host with `count` domains."""
    host = _make_host(count)
    try:
        with count_queries() as first:
            _sync(host, created=count)
        with count_queries() as again:
            _sync(host, unchanged=count)
        return first[0], again[0]
    finally:
        _remove_host(host.name)


def run() -> list[dict[str, Any]]:
    setup_django()
    from inventory.models import Team

    created_teams = [slug for slug in TEAMS if Team.objects.get_or_create(slug=slug, defaults={"name": slug})[1]]
    try:
        return _measure()
    finally:
        Team.objects.filter(slug__in=created_teams).delete()


def _measure() -> list[dict[str, Any]]:
    host = _make_host(DOMAINS)
    inputs = {"domains": DOMAINS, "disks_per_domain": 1, "nics_per_domain": 1, "pairs": PAIRS}
    results = []
    try:

        def first_sync() -> float:
            _clear_inventory(host)  # untimed: every repetition starts from an empty inventory
            return timed(lambda: _sync(host, created=DOMAINS))

        def resync() -> float:
            return timed(lambda: _sync(host, unchanged=DOMAINS))

        def baseline() -> float:
            return timed(lambda: _libvirt_alone(host.uri))

        interleaved(first_sync, baseline, pairs=1)  # warm-up, not reported
        first, base_first = interleaved(first_sync, baseline, PAIRS)
        results.append(
            timing_result("first_sync", inputs, first, FIRST_SYNC_TARGET_S, base_first, "libvirt list + XMLDesc")
        )
        resync()  # warm-up, not reported
        again, base_again = interleaved(resync, baseline, PAIRS)
        results.append(timing_result("resync", inputs, again, RESYNC_TARGET_S, base_again, "libvirt list + XMLDesc"))
    finally:
        _remove_host(host.name)

    counts = {size: _query_counts(size) for size in QUERY_SIZES}
    for label, index in (("queries_first_sync", 0), ("queries_resync", 1)):
        small, large = (counts[size][index] for size in QUERY_SIZES)
        results.append(
            {
                "name": label,
                "inputs": {"domains": list(QUERY_SIZES)},
                "unit": "queries",
                f"queries_{QUERY_SIZES[0]}": small,
                f"queries_{QUERY_SIZES[1]}": large,
                "target": "does not grow with the number of domains",
                "pass": small == large,
            }
        )
    return results
