from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.models import Host
from inventory.services.sync import sync_host


class Command(BaseCommand):
    help = "Sync the inventory of every enabled host (or the named ones) now, in this process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("hosts", nargs="*", help="Host names; default: all enabled hosts.")
        parser.add_argument(
            "--queue", action="store_true", help="Queue the syncs for the workers instead of running them here."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hosts = Host.objects.filter(enabled=True)
        if options["hosts"]:
            hosts = Host.objects.filter(name__in=options["hosts"])
            missing = set(options["hosts"]) - set(hosts.values_list("name", flat=True))
            if missing:
                raise CommandError(f"Unknown host(s): {', '.join(sorted(missing))}")
        if options["queue"]:
            from inventory.jobs import enqueue_sync

            ids = list(hosts.values_list("pk", flat=True))
            for host_id in ids:
                enqueue_sync(host_id)
            self.stdout.write(f"{len(ids)} host sync(s) queued.")
            return
        for host in hosts:
            result = sync_host(host.pk)
            if result.ok:
                self.stdout.write(
                    f"{host.name}: {result.created} new, {result.updated} changed, "
                    f"{result.unchanged} unchanged, {result.missing} missing ({result.elapsed_ms} ms)"
                )
            else:
                self.stdout.write(self.style.WARNING(f"{host.name}: unreachable — {result.error}"))
