"""What a run is asked to do: the plan's options and the item's mappings, typed.

A run keeps this specification in `MigrationRun.options` (the JSON the run page and the history show),
written once when the run is queued. What the engine works out on the way (libvirt flags, the disks it
copies, the rollback state of a cold move, per-disk transfer reports) is kept apart in
`MigrationRun.scratch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrations_app.models import PlanItem

#: QEMU's default downtime limit, used when a spec has none
DEFAULT_MAX_DOWNTIME_MS = 300
#: a guest that does not shut down in this long is forced off (if the plan allows) or the move stops
DEFAULT_SHUTDOWN_TIMEOUT_S = 120


def adapter_network_map(network_map: Mapping[str, str] | None) -> dict[str, str]:
    """A MAC → network map as the adapter takes it: MACs in lower case, unmapped NICs left out."""
    return {mac.lower(): name for mac, name in (network_map or {}).items() if name}


@dataclass(frozen=True)
class RunSpec:
    bandwidth_mib_s: int | None = None
    max_downtime_ms: int = DEFAULT_MAX_DOWNTIME_MS
    auto_converge: bool = False
    postcopy_allowed: bool = False
    on_no_convergence: str = "abort"
    parallel_connections: int = 1
    compression: str = "none"
    #: MAC → destination network name
    network_map: dict[str, str] = field(default_factory=dict)
    #: disk target → {"pool": destination pool, "format": "keep" | "qcow2" | "raw"}
    storage_map: dict[str, dict[str, str]] = field(default_factory=dict)
    fresh_backup: bool = False
    shutdown_timeout_s: int = DEFAULT_SHUTDOWN_TIMEOUT_S
    allow_force_off: bool = False

    @classmethod
    def of_item(cls, item: PlanItem) -> RunSpec:
        """The specification of a run of `item`: its plan's options and its own mappings."""
        plan = item.plan
        return cls.of(
            {
                "bandwidth_mib_s": plan.bandwidth_mib_s,
                "max_downtime_ms": plan.max_downtime_ms,
                "auto_converge": plan.auto_converge,
                "postcopy_allowed": plan.postcopy_allowed,
                "on_no_convergence": plan.on_no_convergence,
                "parallel_connections": plan.parallel_connections,
                "compression": plan.compression,
                "network_map": dict(item.network_map),
                "storage_map": dict(item.storage_map),
                "fresh_backup": plan.fresh_backup,
                "shutdown_timeout_s": plan.shutdown_timeout_s,
                "allow_force_off": plan.allow_force_off,
            }
        )

    @classmethod
    def of(cls, options: Mapping[str, Any] | None) -> RunSpec:
        """The specification stored on a run (`run.options`). Missing or empty values take the defaults;
        keys that are not part of the specification (older runs kept working state there) are ignored."""
        given = options or {}
        defaults = cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = given.get(f.name)
            if value is None or value == "":
                continue
            default = getattr(defaults, f.name)
            if isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int) or f.name == "bandwidth_mib_s":
                value = int(value)
            elif isinstance(default, dict):
                value = dict(value)
            values[f.name] = value
        return cls(**values)

    def as_options(self) -> dict[str, Any]:
        return asdict(self)

    def live_network_map(self) -> dict[str, str]:
        """The network map as the adapter takes it (`adapter_network_map`)."""
        return adapter_network_map(self.network_map)
