"""Post-migration validation as a phase of a run: the baseline before the move, the VAL-* checks right
after the switch-over (each result stored and published as it completes) and the report. It sits
beside the engine, below the services; the "move back" plan a failed live move offers is a service
(`migrations_app.services.validation`).

The engines call two functions and nothing else: `take_baseline(run)` before the VM leaves the
source, and `run_phase(run)` once it runs on the destination; the engine then decides from the
returned report (a cold move rolls back, a live move ends failed and offers the move back).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from inventory.hypervisor import guest as hvg
from inventory.models import StoragePool
from migrations_app import events
from migrations_app.choices import Mode, ValidationOutcome, ValidationStatus
from migrations_app.engine.runstate import LEASE_SECONDS
from migrations_app.engine.shared import libvirt_timeout
from migrations_app.models import MigrationRun, Probe, ValidationReport, ValidationResult
from migrations_app.validation import REGISTRY, Finding, ProbeSpec, ValidationContext, Waits, domain_summary, run_check
from migrations_app.validation.registry import warn

log = logging.getLogger(__name__)


def _timeout() -> float:
    return libvirt_timeout()


def waits_for(mode: str) -> Waits:
    """A live move's guest is already up; a cold move's guest is booting while it is validated."""
    if mode == Mode.COLD:
        return Waits(
            agent_s=float(getattr(settings, "VALIDATION_BOOT_WAIT_S", 90)),
            console_s=float(getattr(settings, "VALIDATION_CONSOLE_S", 8)),
            console_max_s=float(getattr(settings, "VALIDATION_BOOT_WAIT_S", 90)) + 30,
            probe_s=float(getattr(settings, "VALIDATION_PROBE_WAIT_S", 20)),
        )
    return Waits(
        agent_s=5.0,
        console_s=float(getattr(settings, "VALIDATION_LIVE_CONSOLE_S", 3)),
        console_max_s=30.0,
        probe_s=5.0,
    )


# ---- before the move ----------------------------------------------------------------------------------


def take_baseline(run: MigrationRun) -> ValidationReport:
    """Read the guest on the source (definition, and what its agent says) for the checks to compare
    with after the move. Never raises: what could not be read is recorded and the checks say so."""
    uuid = str(run.vm.uuid)
    baseline: dict[str, Any] = {}
    try:
        view = hvg.read_domain(run.source.uri, uuid, _timeout())
        baseline["domain"] = domain_summary(view)
        if not view.reachable:
            baseline["error"] = view.error
        if view.running and view.domain is not None and view.domain.has_guest_agent:
            baseline["agent"] = hvg.agent_facts(run.source.uri, uuid, _timeout(), wait_s=3.0).as_dict()
    except Exception as exc:  # the move goes on; the checks will say they cannot compare
        log.warning("baseline of run %s failed", run.pk, exc_info=True)
        baseline["error"] = str(exc)
    report, _ = ValidationReport.objects.update_or_create(
        run=run,
        defaults={"baseline": baseline, "baseline_at": timezone.now(), "status": ValidationStatus.PENDING},
    )
    return report


# ---- after the switch-over ----------------------------------------------------------------------------


def _probes(run: MigrationRun, baseline: dict[str, Any]) -> list[ProbeSpec]:
    addresses = (baseline.get("agent") or {}).get("addresses") or {}
    fallback = next(
        (ip for ips in addresses.values() for ip in ips if ":" not in ip and not ip.startswith("127.")),
        "",
    )
    return [
        ProbeSpec(
            kind=p.kind,
            address=p.address or fallback,
            port=p.port,
            path=p.path or "/",
            expect_status=p.expect_status,
        )
        for p in Probe.objects.filter(vm_id=run.vm_id).order_by("pk")
    ]


def context_for(run: MigrationRun, report: ValidationReport, waits: Waits | None = None) -> ValidationContext:
    options = run.options or {}
    scratch = run.scratch or {}  # the engine's working state: libvirt flags, cold transfer reports
    baseline = dict(report.baseline or {})
    if run.mode == Mode.COLD and report.baseline_at is not None:
        baseline["cold_downtime_s"] = round((timezone.now() - report.baseline_at).total_seconds(), 1)
    since = (timezone.now() - run.transferred_at).total_seconds() if run.transferred_at else None
    pools = dict(
        StoragePool.objects.filter(host_id=run.destination_id, present=True).values_list("name", "target_path")
    )
    limit = options.get("max_downtime_ms")
    return ValidationContext(
        uuid=str(run.vm.uuid),
        mode=run.mode,
        source_uri=run.source.uri,
        destination_uri=run.destination.uri,
        source_name=run.source.name,
        destination_name=run.destination.name,
        baseline=baseline,
        network_map={k.lower(): v for k, v in (options.get("network_map") or {}).items() if v},
        storage_map=dict(options.get("storage_map") or {}),
        pool_paths=pools,
        transfers=list(scratch.get("transfers") or []),
        downtime_ms=run.downtime_ms,
        max_downtime_ms=int(limit) if limit else None,
        postcopy="postcopy" in str(scratch.get("flags", "")) and run.downtime_ms is None,
        seconds_since_move=since,
        probes=_probes(run, baseline),
        waits=waits or waits_for(run.mode),
        timeout=_timeout(),
    )


def result_payload(row: ValidationResult) -> dict[str, Any]:
    return {
        "check_id": row.check_id,
        "severity": row.outcome,  # the live pages' name for it
        "outcome": row.outcome,
        "message": row.message,
        "evidence": row.evidence,
        "remediation": row.remediation,
        "at": row.at.isoformat(),
        "duration_ms": row.duration_ms,
    }


def counts(outcomes: list[str]) -> dict[str, int]:
    return {
        "passed": sum(o in (ValidationOutcome.PASS, ValidationOutcome.INFO) for o in outcomes),
        "warned": sum(o == ValidationOutcome.WARN for o in outcomes),
        "failed": sum(o == ValidationOutcome.FAIL for o in outcomes),
    }


def status_of(outcomes: list[str]) -> str:
    if ValidationOutcome.FAIL in outcomes:
        return ValidationStatus.FAILED
    if ValidationOutcome.WARN in outcomes:
        return ValidationStatus.WARNED
    return ValidationStatus.PASSED


@contextmanager
def _lease_kept(run_id: int) -> Iterator[None]:
    """Renew the run's lease while the checks wait for the guest (longer than a lease, for a booting VM)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(max(1.0, LEASE_SECONDS / 3)):
                events.heartbeat(run_id, lease_seconds=LEASE_SECONDS)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"validation-lease-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_phase(run: MigrationRun, waits: Waits | None = None) -> ValidationReport:
    with _lease_kept(run.pk):
        return _run_phase(run, waits)


def _run_phase(run: MigrationRun, waits: Waits | None = None) -> ValidationReport:
    """Run every VAL-* check against the VM in its new place, storing and publishing each result as it
    completes; returns the finished report (`failed` when any check failed)."""
    report = ValidationReport.objects.filter(run=run).first() or take_baseline(run)
    started = time.monotonic()
    report.results.all().delete()  # a re-validation starts from scratch
    report.status = ValidationStatus.RUNNING
    report.started_at = timezone.now()
    report.finished_at = None
    report.save(update_fields=["status", "started_at", "finished_at"])
    events.run_changed(run, phase_detail=f"Validating the VM on {run.destination}")
    ctx = context_for(run, report, waits)
    ctx.start_console()
    outcomes: list[str] = []
    for check in REGISTRY.values():
        t0 = time.monotonic()
        try:
            finding = run_check(check, ctx)
        except Exception as exc:  # a bug in one check must not hide the others' results
            log.exception("validation check %s crashed on run %s", check.id, run.pk)
            finding = warn(f"Cannot decide: the check failed ({exc}).")
        outcomes.append(finding.outcome)
        _store(run, report, check.id, finding, (time.monotonic() - t0) * 1000, outcomes)
    report.status = status_of(outcomes)
    report.finished_at = timezone.now()
    report.duration_ms = round((time.monotonic() - started) * 1000, 1)
    report.waits = waits_ms(ctx.waited)
    report.save(update_fields=["status", "finished_at", "duration_ms", "waits"])
    events.validation_result(
        run.pk,
        {},
        {"status": report.status, "duration_ms": report.duration_ms, "waits_ms": report.waits, **counts(outcomes)},
    )
    return report


#: the checks' deliberate waits, in the order the report names them
WAIT_KINDS = ("agent", "console", "probes")


def waits_ms(waited: dict[str, float]) -> dict[str, float]:
    """The checks' deliberate waits in ms — for the guest agent to answer, the rest of the console's
    window, the owner's probes (retries included) — and their total; the validation's time beyond them
    is its own work."""
    out = {kind: round(waited.get(kind, 0.0) * 1000, 1) for kind in WAIT_KINDS}
    out["total"] = round(sum(out.values()), 1)
    return out


def overhead_ms(report: ValidationReport) -> float | None:
    """The validation's time beyond the checks' own waits."""
    if report.duration_ms is None or not report.waits:
        return None
    return round(report.duration_ms - float(report.waits.get("total", 0.0)), 1)


def _store(
    run: MigrationRun, report: ValidationReport, check_id: str, finding: Finding, ms: float, outcomes: list[str]
) -> None:
    with transaction.atomic():
        row = ValidationResult.objects.create(
            report=report,
            check_id=check_id,
            outcome=finding.outcome,
            message=finding.message[:4000],
            evidence=_jsonable(finding.evidence),
            remediation=finding.remediation,
            at=timezone.now(),
            duration_ms=round(ms, 1),
        )
        events.validation_result(run.pk, result_payload(row), {"status": ValidationStatus.RUNNING, **counts(outcomes)})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def failure_summary(report: ValidationReport) -> str:
    failed = list(report.results.filter(outcome=ValidationOutcome.FAIL).order_by("at", "pk"))
    if not failed:
        return ""
    return "Validation failed: " + "; ".join(f"{r.check_id}: {r.message}" for r in failed)


# ---- reading reports ----------------------------------------------------------------------------------


def report_payload(report: ValidationReport, results: list[ValidationResult] | None = None) -> dict[str, Any]:
    rows = results if results is not None else list(report.results.order_by("at", "pk"))
    outcomes = [r.outcome for r in rows]
    return {
        "status": report.status,
        "status_label": report.get_status_display(),
        **counts(outcomes),
        "duration_ms": report.duration_ms,
        "waits_ms": report.waits or None,
        "overhead_ms": overhead_ms(report),
        "started_at": report.started_at.isoformat() if report.started_at else None,
        "finished_at": report.finished_at.isoformat() if report.finished_at else None,
        "move_back_plan": report.move_back_plan_id,
        "results": [result_payload(r) for r in rows],
    }


def worst_first(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from migrations_app.choices import VALIDATION_RANK

    return sorted(results, key=lambda r: -VALIDATION_RANK[ValidationOutcome(r["outcome"])])
