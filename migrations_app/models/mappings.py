"""Default network mappings between hosts, kept by admins; plans inherit them."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class NetworkMapping(models.Model):
    """Source network (on its host) → destination network on another host.

    A plan item's NICs inherit these; the owner may override per NIC among the destination's networks.
    """

    source = models.ForeignKey("inventory.Network", on_delete=models.CASCADE, related_name="mappings_out")
    destination = models.ForeignKey("inventory.Network", on_delete=models.CASCADE, related_name="mappings_in")
    destination_host = models.ForeignKey("inventory.Host", on_delete=models.CASCADE, related_name="+", editable=False)
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["source__host__name", "source__name"]
        constraints = [
            models.UniqueConstraint(fields=["source", "destination_host"], name="one_mapping_per_destination_host"),
        ]

    def __str__(self) -> str:
        return f"{self.source} → {self.destination}"

    def save(self, *args: object, **kwargs: object) -> None:
        self.destination_host_id = self.destination.host_id
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        if self.source_id and self.destination_id and self.source.host_id == self.destination.host_id:
            raise ValidationError("A mapping joins networks of two different hosts.")
