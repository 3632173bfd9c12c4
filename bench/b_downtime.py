"""B-DOWNTIME: guest downtime that libvirt's completed job stats report for the B-LIVE moves.

Target: median <= 300 ms (QEMU's default limit) and no move above the configured limit. The downtime of
the virsh baseline moves (same guests, QEMU's default limit) is shown beside.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import summary
from bench.livebench import measure

TARGET_MS = 300


def run() -> list[dict[str, Any]]:
    data = measure()
    results = []
    for key in ("idle", "busy"):
        m = data[key]
        stats = summary(m.portal_downtime_ms)
        results.append(
            {
                "name": f"downtime_{key}",
                "inputs": m.inputs,
                "unit": "ms",
                **stats,
                "samples": len(m.portal_downtime_ms),
                "baseline": {"name": "virsh migrate (QEMU default limit)", **summary(m.virsh_downtime_ms)},
                "limit_ms": m.limit_ms,
                "target": f"median <= {TARGET_MS} ms; every move <= the configured {m.limit_ms} ms",
                "pass": statistics.median(m.portal_downtime_ms) <= TARGET_MS
                and max(m.portal_downtime_ms) <= m.limit_ms,
            }
        )
    return results
