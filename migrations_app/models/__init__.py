from .auditlog import AuditLogEntry
from .audits import Audit, CheckResult, Override, Prediction
from .backups import Backup, BackupMethod, BackupState, RetainedDisk
from .governance import (
    Approval,
    ApprovalRule,
    ChangeFreeze,
    ChangeWindow,
    EmergencyReview,
    StandardChangePolicy,
)
from .mappings import NetworkMapping
from .notifications import Notification
from .plans import MigrationPlan, PlanItem
from .runs import MigrationRun, ProgressSample
from .validation import Probe, ValidationReport, ValidationResult

__all__ = [
    "Approval",
    "ApprovalRule",
    "ChangeFreeze",
    "ChangeWindow",
    "EmergencyReview",
    "Notification",
    "StandardChangePolicy",
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
    "Probe",
    "Prediction",
    "ProgressSample",
    "RetainedDisk",
    "ValidationReport",
    "ValidationResult",
]
