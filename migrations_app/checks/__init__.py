"""The CHECKS.md pre-migration catalogue: one module per group, every check in one registry.

Importing this package registers every check; `REGISTRY` maps check ids to `Check` entries in
catalogue order.
"""

from . import dependencies, hypervisor, network, process, resources, storage  # noqa: F401  (registration)
from .context import AuditEnvironment, BackupEvidence, CheckContext, DiskMove, load_recent_backups
from .registry import REGISTRY, Check, Outcome, blocking, evaluate, register, run_check, worst

__all__ = [
    "REGISTRY",
    "AuditEnvironment",
    "BackupEvidence",
    "Check",
    "CheckContext",
    "DiskMove",
    "Outcome",
    "blocking",
    "evaluate",
    "load_recent_backups",
    "register",
    "run_check",
    "worst",
]
