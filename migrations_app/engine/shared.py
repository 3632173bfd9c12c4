"""What the live and cold engines (and the reconciler) share."""

from __future__ import annotations

from django.conf import settings


def libvirt_timeout() -> float:
    """Seconds a libvirt connection may take to open (VMPORTAL_LIBVIRT_CONNECT_TIMEOUT, always set)."""
    return float(settings.LIBVIRT_CONNECT_TIMEOUT)
