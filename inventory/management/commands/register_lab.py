import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inventory.hypervisor import InvalidURI
from inventory.models import Host, Network, StoragePool
from inventory.services.hosts import HostError, register_host
from inventory.services.sync import sync_host

LAB_SHARED_POOL = "shared"


class Command(BaseCommand):
    help = "Register the hosts of the local lab (from its lab.json) and sync them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--state", default=str(settings.LAB_STATE_FILE), help="Path of the lab's lab.json.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with open(options["state"]) as fh:
                lab = json.load(fh)
        except OSError as exc:
            raise CommandError(
                f"Cannot read the lab state {options['state']}: {exc.strerror}. Run `make lab` first."
            ) from None
        for entry in lab["hosts"]:
            host = Host.objects.filter(name=entry["name"]).first()
            if host is None:
                try:
                    host = register_host(
                        None,
                        name=entry["name"],
                        uri=entry["uri"],
                        migration_uri=entry.get("migration_uri", ""),
                        site="lab",
                        sync=False,
                    )
                except (HostError, InvalidURI) as exc:
                    raise CommandError(f"{entry['name']}: {exc}") from None
                self.stdout.write(f"registered {host.name}")
            result = sync_host(host.pk)
            # libvirt cannot tell a directory pool on a cluster file system from a local one; the lab's
            # "shared" pool is one, so it is marked as an admin would.
            StoragePool.objects.filter(host=host, name=LAB_SHARED_POOL).update(shared_by_admin=True)
            state = "ok" if result.ok else f"unreachable: {result.error}"
            self.stdout.write(f"synced {host.name}: {state}, {result.created + result.updated + result.unchanged} VMs")
        self._map_networks(lab["hosts"])

    def _map_networks(self, hosts: list[dict[str, Any]]) -> None:
        """The lab names one segment differently on each host (app-net, app-lan, applan): map every pair,
        as an admin would on the Network mappings page, so a first plan finds its networks."""
        from migrations_app.services.configuration import ensure_network_mapping

        found = {(n.host.name, n.name): n for n in Network.objects.filter(host__name__in=[h["name"] for h in hosts])}
        added = 0
        for src in hosts:
            for dst in hosts:
                if src["name"] == dst["name"]:
                    continue
                for net in src.get("networks", []):
                    target = next((m for m in dst.get("networks", []) if m["segment"] == net["segment"]), None)
                    if target is None:
                        continue
                    a, b = found.get((src["name"], net["name"])), found.get((dst["name"], target["name"]))
                    if a is not None and b is not None:
                        added += ensure_network_mapping(None, a, b, note=f"lab segment {net['segment']}")
        self.stdout.write(f"network mappings: {added} added")
