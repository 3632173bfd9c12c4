"""The "move back" plan a live move that failed validation offers: audited and approved like any other
plan. The validation phase itself sits below the services, in `migrations_app.validation.phase`."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from migrations_app.choices import Mode, ValidationStatus
from migrations_app.models import MigrationPlan, MigrationRun, ValidationReport
from migrations_app.services import auditlog
from migrations_app.services.plans import PlanError, _option_values, create_plan
from migrations_app.validation.phase import (  # noqa: F401  (the pages read reports through the services)
    counts,
    failure_summary,
    report_payload,
    result_payload,
    worst_first,
)

# ---- a failed live move: the one-click move back --------------------------------------------------------


def may_move_back(run: MigrationRun) -> bool:
    """A live run that failed validation, whose VM is on the destination, and not offered back yet."""
    report = getattr(run, "validation", None)
    return (
        run.mode == Mode.LIVE
        and report is not None
        and report.status == ValidationStatus.FAILED
        and report.move_back_plan_id is None
        and run.vm.host_id == run.destination_id
    )


def offer_move_back(actor: Any, run: MigrationRun) -> MigrationPlan:
    """A draft plan moving the VM back to its source, audited like any other; the requester submits it
    for approval (a standard-change policy may approve it at once)."""
    with transaction.atomic():
        report = ValidationReport.objects.select_for_update().filter(run=run).first()
        if report is not None:
            run.validation = report
        if report is None or not may_move_back(run):
            raise PlanError("A move back is offered once, for a live move that failed validation.")
        options = {
            k: v
            for k, v in _option_values(run.item.plan).items()
            if k not in ("window_start", "window_end", "name", "mode", "change_type")
        }
        plan = create_plan(
            actor,
            vm_ids=[run.vm_id],
            destination_id=run.source_id,
            name=f"Move {run.vm.name} back to {run.source.name}"[:120],
            mode=Mode.LIVE,
            **options,
        )
        report.move_back_plan = plan
        report.save(update_fields=["move_back_plan"])
        auditlog.record(actor, "run.move_back", run, after={"plan": plan.pk}, comment=failure_summary(report)[:1000])
    return plan
