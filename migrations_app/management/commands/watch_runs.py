import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from migrations_app.services import reconcile


class Command(BaseCommand):
    help = (
        "Watch the moves in progress: a run whose worker died (RQ failed its job, its process is gone, or "
        "its lease ran out) is adopted within seconds. Runs beside the workers (scripts/serve, systemd)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=2.0, help="Seconds between checks (default 2).")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        reconcile.watch(max(0.5, options["interval"]))
