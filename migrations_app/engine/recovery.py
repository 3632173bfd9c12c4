"""Pure decisions about a live move that ended, was aborted, or lost its worker.

Both the live engine (when libvirt's job returns an error) and the reconciler (when a run's lease
expired) ask both hosts where the VM's UUID is (`inventory.hypervisor.migrate.locate`) and must reach
the same conclusion from the same facts. These functions take those plain facts and return the
conclusion; they touch neither the database nor a host, so they are tested over plain inputs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from inventory.hypervisor.migrate import DomainLocation
from migrations_app.choices import RunStatus


class Whereabouts(enum.StrEnum):
    """Where the VM is, judged from what the source and the destination report."""

    UNREACHABLE = "unreachable"  # a host did not answer: cannot tell yet
    MOVED = "moved"  # runs on the destination only: the move happened
    BOTH = "both"  # runs on both hosts (an interrupted post-copy?): an admin decides
    ON_SOURCE = "on source"  # runs on the source only: the move did not happen
    NOT_RUNNING = "not running"  # runs nowhere: the portal never starts a guest by itself


def whereabouts(source: DomainLocation, destination: DomainLocation) -> Whereabouts:
    if not source.reachable or not destination.reachable:
        return Whereabouts.UNREACHABLE
    if destination.running and not source.running:
        return Whereabouts.MOVED
    if source.running and destination.running:
        return Whereabouts.BOTH
    if source.running:
        return Whereabouts.ON_SOURCE
    return Whereabouts.NOT_RUNNING


@dataclass(frozen=True)
class Failure:
    """How a live move that did not move the VM ends: its terminal status and the message for people."""

    status: str
    message: str


def live_failure(aborted_by: str, error: str, *, max_downtime_ms: int, max_move_s: int) -> Failure:
    """The terminal state of a live move whose job ended without moving the VM.

    `aborted_by` is who aborted libvirt's job: "cancel" (a user), "policy" (the convergence policy gave
    up), "timeout" (the move took too long) or "" (libvirt failed on its own: its `error` is the message).
    """
    if aborted_by == "cancel":
        return Failure(RunStatus.CANCELLED, "Cancelled: the live move was aborted.")
    if aborted_by == "policy":
        return Failure(
            RunStatus.FAILED,
            f"The guest did not converge: it dirties memory faster than it can be sent, even at the maximum "
            f"downtime of {max_downtime_ms} ms; the move was aborted as the plan says.",
        )
    if aborted_by == "timeout":
        return Failure(RunStatus.FAILED, f"The move took longer than the {max_move_s} s allowed and was aborted.")
    return Failure(RunStatus.FAILED, error)
