"""The post-migration check registry: adding a check is one function and one `@register` line.

A check is a plain function `(ctx: ValidationContext) -> Finding`, registered under its CHECKS.md id;
checks run in registration order, and each result is stored and published as soon as it is known.
A check that cannot decide (the guest agent is absent, a host does not answer) says `warn` with the
reason, never `fail`: only what was seen to be wrong fails a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inventory.hypervisor import HypervisorError
from migrations_app.choices import VALIDATION_RANK, ValidationOutcome

if TYPE_CHECKING:
    from .context import ValidationContext


@dataclass(frozen=True)
class Finding:
    """What one check concluded: outcome, a message for people, what was expected and found, a remedy."""

    outcome: ValidationOutcome
    message: str
    expected: Any = None
    found: Any = None
    remediation: str = ""

    @property
    def evidence(self) -> dict[str, Any]:
        return {"expected": self.expected, "found": self.found}


def passed(message: str, expected: Any = None, found: Any = None) -> Finding:
    return Finding(ValidationOutcome.PASS, message, expected, found)


def info(message: str, expected: Any = None, found: Any = None) -> Finding:
    return Finding(ValidationOutcome.INFO, message, expected, found)


def warn(message: str, expected: Any = None, found: Any = None, remediation: str = "") -> Finding:
    return Finding(ValidationOutcome.WARN, message, expected, found, remediation)


def fail(message: str, expected: Any = None, found: Any = None, remediation: str = "") -> Finding:
    return Finding(ValidationOutcome.FAIL, message, expected, found, remediation)


ValidationFunc = Callable[["ValidationContext"], Finding]


@dataclass(frozen=True)
class ValidationCheck:
    id: str
    func: ValidationFunc

    @property
    def title(self) -> str:
        return (self.func.__doc__ or self.id).strip().splitlines()[0]


REGISTRY: dict[str, ValidationCheck] = {}


def register(check_id: str) -> Callable[[ValidationFunc], ValidationFunc]:
    """Add a post-migration check under its CHECKS.md id."""

    def decorator(func: ValidationFunc) -> ValidationFunc:
        if check_id in REGISTRY:
            raise ValueError(f"Validation check {check_id} is registered twice.")
        REGISTRY[check_id] = ValidationCheck(check_id, func)
        return func

    return decorator


def run_check(check: ValidationCheck, ctx: ValidationContext) -> Finding:
    """Run one check; a host error becomes `warn` with the reason (the check could not decide)."""
    try:
        return check.func(ctx)
    except HypervisorError as exc:
        return warn(
            f"Cannot decide: {exc.message}",
            found={"error": exc.raw or exc.message},
            remediation="Check the host, then look at the VM by hand.",
        )


def worst(outcomes: list[str]) -> str:
    if not outcomes:
        return ""
    return max(outcomes, key=lambda o: VALIDATION_RANK[ValidationOutcome(o)])
