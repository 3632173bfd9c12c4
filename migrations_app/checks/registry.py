"""The check registry: adding a check is one function and one `@register` line.

A check is a plain function `(ctx: CheckContext) -> Outcome`. The registry records which facts it
needs (the guest as read on its source, the source host, the destination host); when one of them
could not be read, the runner answers `warn` with the reason instead of calling the check, so no
check ever blocks on missing data. `destination=True` marks checks whose answer depends on the
destination host: those are the hard checks a candidate destination must pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inventory.hypervisor import HypervisorError
from migrations_app.choices import SEVERITY_RANK, Area, Severity

if TYPE_CHECKING:
    from .context import CheckContext

GUEST = "guest"
SOURCE = "source"
DESTINATION = "destination"


@dataclass(frozen=True)
class Outcome:
    """What one check concluded: severity, a message for people, the values looked at, a remediation."""

    severity: Severity
    message: str
    source: Any = None
    destination: Any = None
    remediation: str = ""

    @property
    def evidence(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination}


#: Evidence under this key names other teams' plans or VMs. App owners are shown counts and totals
#: only; people who see everything (approvers, auditors) also see what is listed here.
OTHER_TEAMS = "names (approvers and auditors only)"


def evidence_for(evidence: Any, sees_everything: bool) -> Any:
    """The evidence as a viewer may see it: without the OTHER_TEAMS parts unless they see everything."""
    if sees_everything:
        return evidence
    if isinstance(evidence, dict):
        return {k: evidence_for(v, False) for k, v in evidence.items() if k != OTHER_TEAMS}
    if isinstance(evidence, list):
        return [evidence_for(v, False) for v in evidence]
    return evidence


def passed(message: str, source: Any = None, destination: Any = None) -> Outcome:
    return Outcome(Severity.PASS, message, source, destination)


def info(message: str, source: Any = None, destination: Any = None, remediation: str = "") -> Outcome:
    return Outcome(Severity.INFO, message, source, destination, remediation)


def warn(message: str, source: Any = None, destination: Any = None, remediation: str = "") -> Outcome:
    return Outcome(Severity.WARN, message, source, destination, remediation)


def block(message: str, source: Any = None, destination: Any = None, remediation: str = "") -> Outcome:
    return Outcome(Severity.BLOCK, message, source, destination, remediation)


def by_mode(mode: str, live: Severity, cold: Severity) -> Severity:
    return live if mode == "live" else cold


CheckFunc = Callable[["CheckContext"], Outcome]


@dataclass(frozen=True)
class Check:
    id: str
    area: Area
    func: CheckFunc
    needs: frozenset[str] = field(default_factory=frozenset)
    destination: bool = False  # the answer depends on the destination host (a hard check for candidates)

    @property
    def title(self) -> str:
        return (self.func.__doc__ or self.id).strip().splitlines()[0]


REGISTRY: dict[str, Check] = {}


def register(
    check_id: str, area: Area, *, needs: tuple[str, ...] = (), destination: bool = False
) -> Callable[[CheckFunc], CheckFunc]:
    """Add a check to the catalogue under its CHECKS.md id."""

    def decorator(func: CheckFunc) -> CheckFunc:
        if check_id in REGISTRY:
            raise ValueError(f"Check {check_id} is registered twice.")
        REGISTRY[check_id] = Check(check_id, area, func, frozenset(needs), destination)
        return func

    return decorator


def run_check(check: Check, ctx: CheckContext) -> Outcome:
    """Run one check; missing facts or a host error become `warn` with the reason (never `block`)."""
    missing = ctx.missing(check.needs)
    if missing:
        return warn(f"Cannot decide: {missing}", remediation=_remedy_missing(ctx, check.needs))
    try:
        return check.func(ctx)
    except HypervisorError as exc:
        return warn(
            f"Cannot decide: {exc.message}",
            source=None,
            destination={"error": exc.raw or exc.message},
            remediation="Run the audit again once the host answers.",
        )


def _remedy_missing(ctx: CheckContext, needs: frozenset[str]) -> str:
    """Advice that fits why the facts are missing (in the order `CheckContext.missing` looks)."""
    if (SOURCE in needs or GUEST in needs) and ctx.source_facts is None:
        return f"Make {ctx.source.name} reachable again (Test connection on its page) and run the audit again."
    if GUEST in needs and ctx.guest is None:
        return f"Sync {ctx.source.name} to find where the VM went, then plan its move again."
    if ctx.destination is None:
        return (
            "Choose a destination host for this VM, or fix what turned each host down (shown with the VM) "
            "and let the portal choose again."
        )
    return (
        f"Make {ctx.destination.name} reachable again (Test connection on its page), or choose another destination, "
        "and run the audit again."
    )


def evaluate(ctx: CheckContext, checks: list[Check] | None = None) -> dict[str, tuple[Check, Outcome]]:
    """Run checks (all by default) for one item in the context's mode."""
    return {c.id: (c, run_check(c, ctx)) for c in (checks if checks is not None else list(REGISTRY.values()))}


def blocking(results: dict[str, tuple[Check, Outcome]]) -> set[str]:
    return {cid for cid, (_c, o) in results.items() if o.severity == Severity.BLOCK}


def worst(severities: list[str]) -> str:
    if not severities:
        return ""
    return max(severities, key=lambda s: SEVERITY_RANK[Severity(s)])
