"""Teams own VMs; app owners see the VMs of their teams."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Team(models.Model):
    """A group of app owners. Membership gives visibility of the team's VMs."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True, help_text="Matches the team tag in libvirt metadata.")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
