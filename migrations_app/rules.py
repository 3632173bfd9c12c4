"""Rules that the checks, the prediction, the scheduler and the engines must decide the same way.

Plain functions over plain values (no database, no hosts), so each rule is written once and every
caller gets the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any


def destination_pool(storage_map: Mapping[str, Any], target: str, source_pool: str) -> str:
    """The destination pool of a disk: the one its storage-map entry names, else a pool of the same name
    as its source pool; "" when neither names one (the disk has nowhere to go)."""
    return str((storage_map.get(target) or {}).get("pool") or source_pool or "")


def disk_copied(source_pool: str, source_shared: bool, destination_pool: str, destination_shared: bool) -> bool:
    """Whether a move copies a disk. It stays put (only memory moves) when it is on shared storage and the
    storage map keeps it in the same pool, which is shared on the destination too; everything else is copied."""
    return not (source_shared and destination_shared and bool(source_pool) and source_pool == destination_pool)


def window_left_s(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    """Seconds of the change window still usable from `now` (0 once it is over); None without a window."""
    if start is None or end is None:
        return None
    return max((end - max(start, now)).total_seconds(), 0.0)


def fits_window(predicted_s: float | None, start: datetime | None, end: datetime | None, now: datetime) -> bool | None:
    """Whether a move or plan predicted to take `predicted_s` fits what is left of its window.
    None when there is no window or no prediction."""
    left = window_left_s(start, end, now)
    if left is None or predicted_s is None:
        return None
    return predicted_s <= left
