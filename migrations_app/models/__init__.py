from .auditlog import AuditLogEntry
from .audits import Audit, CheckResult, Override, Prediction
from .backups import Backup, BackupMethod, BackupState, RetainedDisk
from .mappings import NetworkMapping
from .plans import MigrationPlan, PlanItem
from .runs import MigrationRun, ProgressSample

__all__ = [
    "Audit",
    "AuditLogEntry",
    "Backup",
    "BackupMethod",
    "BackupState",
    "CheckResult",
    "MigrationPlan",
    "MigrationRun",
    "NetworkMapping",
    "Override",
    "PlanItem",
    "Prediction",
    "ProgressSample",
    "RetainedDisk",
]
