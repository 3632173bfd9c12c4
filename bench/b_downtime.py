"""B-DOWNTIME: guest downtime that libvirt's completed job stats report for the B-LIVE moves.

Target: median <= 300 ms (QEMU's default limit) and no move above the configured limit. A completed
move without a downtime figure is a miss (counted, never taken as 0 ms), and so is a failed pair. The
downtime of the virsh baseline moves (same guests, QEMU's default limit) is shown beside.
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
        figures = m.portal_downtime_ms
        result: dict[str, Any] = {
            "name": f"downtime_{key}",
            "inputs": m.inputs,
            "unit": "ms",
            **(summary(figures) if figures else {"median": None}),
            "samples": len(figures),
            "missing": m.portal_downtime_missing,
            "failed_pairs": len(m.failures),
            "baseline": {
                "name": "virsh migrate (QEMU default limit)",
                **(summary(m.virsh_downtime_ms) if m.virsh_downtime_ms else {"median": None}),
                "missing": m.virsh_downtime_missing,
            },
            "limit_ms": m.limit_ms,
            "target": f"median <= {TARGET_MS} ms; every move <= the configured {m.limit_ms} ms; every move has a figure",
        }
        result["pass"] = (
            bool(figures)
            and not m.portal_downtime_missing
            and not m.failures
            and statistics.median(figures) <= TARGET_MS
            and max(figures) <= m.limit_ms
        )
        results.append(result)
    return results
