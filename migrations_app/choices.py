"""Status enums of plans, audits and runs, with the named sets the rest of the code relies on."""

from django.db import models


class PlanStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    AUDITING = "auditing", "Auditing"
    READY = "ready", "Ready to submit"
    BLOCKED = "blocked", "Blocked by the audit"
    PENDING_APPROVAL = "pending_approval", "Waiting for approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    SCHEDULED = "scheduled", "Scheduled"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded", "Partially succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    SUPERSEDED = "superseded", "Superseded"


#: plans whose items may still be edited (each edit re-runs the audit)
EDITABLE_PLAN_STATES = frozenset({PlanStatus.DRAFT, PlanStatus.AUDITING, PlanStatus.READY, PlanStatus.BLOCKED})
#: plans that hold their VMs (PROC-BUSY) and, once approved, their destination's resources (RES-MEM)
ACTIVE_PLAN_STATES = frozenset(
    {
        PlanStatus.DRAFT,
        PlanStatus.AUDITING,
        PlanStatus.READY,
        PlanStatus.BLOCKED,
        PlanStatus.PENDING_APPROVAL,
        PlanStatus.APPROVED,
        PlanStatus.SCHEDULED,
        PlanStatus.RUNNING,
    }
)
APPROVED_PLAN_STATES = frozenset({PlanStatus.APPROVED, PlanStatus.SCHEDULED, PlanStatus.RUNNING})
TERMINAL_PLAN_STATES = frozenset(
    {
        PlanStatus.SUCCEEDED,
        PlanStatus.PARTIALLY_SUCCEEDED,
        PlanStatus.FAILED,
        PlanStatus.CANCELLED,
        PlanStatus.REJECTED,
        PlanStatus.SUPERSEDED,
    }
)


#: plans that can still be cancelled (every state that is not terminal)
CANCELLABLE_PLAN_STATES = frozenset(set(PlanStatus) - TERMINAL_PLAN_STATES)


class Decision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class ApprovalKind(models.TextChoices):
    MANUAL = "manual", "By an approver"
    STANDARD = "standard", "Automatically, by a standard-change policy"
    EMERGENCY = "emergency", "Emergency change, run at once by an approver"


class Scope(models.TextChoices):
    GLOBAL = "global", "Everything"
    HOST = "host", "One host"
    TEAM = "team", "One team"


class Mode(models.TextChoices):
    AUTO = "auto", "Auto (live whenever the audit allows it)"
    LIVE = "live", "Live"
    COLD = "cold", "Cold"


class ChangeType(models.TextChoices):
    STANDARD = "standard", "Standard"
    NORMAL = "normal", "Normal"
    EMERGENCY = "emergency", "Emergency"


class NoConvergence(models.TextChoices):
    ABORT = "abort", "Abort cleanly (the VM keeps running on the source)"
    POSTCOPY = "postcopy", "Switch to post-copy"


class Compression(models.TextChoices):
    NONE = "none", "None"
    ZSTD = "zstd", "zstd (multifd)"
    ZLIB = "zlib", "zlib (multifd)"
    XBZRLE = "xbzrle", "XBZRLE (repeated pages)"


class TargetFormat(models.TextChoices):
    KEEP = "keep", "Keep the current format"
    QCOW2 = "qcow2", "qcow2"
    RAW = "raw", "raw"


class Severity(models.TextChoices):
    PASS = "pass", "Pass"
    INFO = "info", "Info"
    WARN = "warn", "Warning"
    BLOCK = "block", "Block"


#: worst first
SEVERITY_RANK = {Severity.BLOCK: 3, Severity.WARN: 2, Severity.INFO: 1, Severity.PASS: 0}


class Area(models.TextChoices):
    HYPERVISOR = "hypervisor", "Hypervisor compatibility"
    NETWORK = "network", "Network"
    RESOURCES = "resources", "Resources"
    STORAGE = "storage", "Storage"
    DEPENDENCIES = "dependencies", "Dependencies and backup"


class AuditStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    ERRORED = "errored", "Errored"


class Verdict(models.TextChoices):
    CONVERGES = "converges", "Converges"
    NEEDS_AUTO_CONVERGE = "needs_auto_converge", "Needs auto-converge"
    WILL_NOT_CONVERGE = "will_not_converge", "Will not converge at this bandwidth"
    NOT_APPLICABLE = "n/a", "Not applicable"
    UNKNOWN = "unknown", "Cannot tell"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PREFLIGHT = "preflight", "Pre-flight"
    BACKUP = "backup", "Taking a backup"
    TRANSFERRING = "transferring", "Transferring"
    CUTOVER = "cutover", "Cutting over"
    VERIFYING = "verifying", "Verifying"
    SUCCEEDED = "succeeded", "Succeeded"
    ROLLING_BACK = "rolling_back", "Rolling back"
    ROLLED_BACK = "rolled_back", "Rolled back"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_RUN_STATES = frozenset({RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK, RunStatus.FAILED, RunStatus.CANCELLED})
#: runs that occupy a host's concurrency slots
ACTIVE_RUN_STATES = frozenset(
    {
        RunStatus.PREFLIGHT,
        RunStatus.BACKUP,
        RunStatus.TRANSFERRING,
        RunStatus.CUTOVER,
        RunStatus.VERIFYING,
        RunStatus.ROLLING_BACK,
        RunStatus.CANCELLING,
    }
)


class ValidationOutcome(models.TextChoices):
    """What one post-migration validation check found (`fail` fails the run)."""

    PASS = "pass", "Pass"
    INFO = "info", "Info"
    WARN = "warn", "Warning"
    FAIL = "fail", "Fail"


#: worst first
VALIDATION_RANK = {
    ValidationOutcome.FAIL: 3,
    ValidationOutcome.WARN: 2,
    ValidationOutcome.INFO: 1,
    ValidationOutcome.PASS: 0,
}


class ValidationStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the move"
    RUNNING = "running", "Validating"
    PASSED = "passed", "Passed"
    WARNED = "warned", "Passed with warnings"
    FAILED = "failed", "Failed"


class ProbeKind(models.TextChoices):
    TCP = "tcp", "TCP port open"
    HTTP = "http", "HTTP status"
