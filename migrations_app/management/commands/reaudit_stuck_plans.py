from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from migrations_app.choices import AuditStatus, PlanStatus
from migrations_app.models import Audit, MigrationPlan
from migrations_app.services import auditlog, plans


class Command(BaseCommand):
    help = (
        "Queue a fresh audit for plans stuck in 'auditing': their newest audit failed, or has been queued or "
        "running for longer than --older-than minutes (a worker died, Redis lost the job)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, default=15, help="Minutes (default 15).")
        parser.add_argument("--dry-run", action="store_true", help="Only list the plans.")

    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = timezone.now() - timedelta(minutes=max(options["older_than"], 1))
        newest = Audit.objects.filter(plan=OuterRef("pk")).order_by("-created_at", "-pk")
        candidates = MigrationPlan.objects.filter(status=PlanStatus.AUDITING).annotate(
            audit_status=Subquery(newest.values("status")[:1]), audit_at=Subquery(newest.values("created_at")[:1])
        )
        stuck = [
            p
            for p in candidates
            if p.audit_status in (None, AuditStatus.ERRORED)  # type: ignore[attr-defined]
            or p.audit_at < cutoff  # type: ignore[attr-defined]
        ]
        if not stuck:
            self.stdout.write("No plan is stuck in auditing.")
            return
        for plan in stuck:
            if options["dry_run"]:
                self.stdout.write(f"plan {plan.pk} ({plan.name}): would be audited again")
                continue
            audit = plans.request_audit(plan, reason="stuck", actor=None)
            auditlog.record(None, "plan.reaudit_stuck", plan, after={"audit": audit.pk})
            self.stdout.write(f"plan {plan.pk} ({plan.name}): audit {audit.pk} queued")
