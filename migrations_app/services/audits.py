"""Running the pre-migration audit (placeholder until the check catalogue lands)."""

from __future__ import annotations


def run_audit(audit_id: int) -> dict[str, object]:
    raise NotImplementedError
