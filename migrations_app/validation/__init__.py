"""The CHECKS.md post-migration validation catalogue (VAL-*): importing this package registers every
check; `REGISTRY` maps check ids to checks in the order they run."""

from . import checks  # noqa: F401  (registration)
from .context import ProbeSpec, ValidationContext, Waits, domain_summary
from .registry import REGISTRY, Finding, ValidationCheck, register, run_check, worst

__all__ = [
    "REGISTRY",
    "Finding",
    "ProbeSpec",
    "ValidationCheck",
    "ValidationContext",
    "Waits",
    "domain_summary",
    "register",
    "run_check",
    "worst",
]
