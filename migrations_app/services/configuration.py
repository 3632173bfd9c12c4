"""Admins' change-control settings (windows, freezes, standard-change policies, approver thresholds,
network mappings): saved and deleted with an audit-log row each, by admins only."""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.forms.models import model_to_dict

from migrations_app.services import auditlog
from vmportal import access
from vmportal.access import Action


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The row's values as JSON-safe data (dates as ISO strings, related rows as their ids)."""
    values = model_to_dict(obj)
    for key, value in list(values.items()):
        if isinstance(value, list):
            values[key] = [getattr(v, "pk", v) for v in value]
    return json.loads(json.dumps(values, cls=DjangoJSONEncoder, default=str))


def save(actor: Any, form: Any) -> models.Model:
    """Save a bound, valid ModelForm of a setting; audit-logged with the values before and after."""
    access.require(actor, Action.CHANGE_CONTROL_MANAGE)
    instance = form.instance
    before = snapshot(type(instance).objects.get(pk=instance.pk)) if instance.pk else {}
    with transaction.atomic():
        obj = form.save()
        label = obj._meta.model_name
        auditlog.record(actor, f"{label}.{'update' if before else 'create'}", obj, before=before, after=snapshot(obj))
    return obj


def delete(actor: Any, obj: models.Model) -> None:
    access.require(actor, Action.CHANGE_CONTROL_MANAGE)
    with transaction.atomic():
        auditlog.record(actor, f"{obj._meta.model_name}.delete", obj, before=snapshot(obj))
        obj.delete()


def ensure_network_mapping(actor: Any, source: Any, destination: Any, note: str = "") -> bool:
    """Map `source` (a network on one host) to `destination` (on another) unless the source already has a
    mapping to that host; True when one was added (audit-logged)."""
    from migrations_app.models import NetworkMapping

    access.require(actor, Action.CHANGE_CONTROL_MANAGE)
    if source.host_id == destination.host_id:
        raise ValueError("A mapping joins networks of two different hosts.")
    with transaction.atomic():
        if NetworkMapping.objects.filter(source=source, destination_host=destination.host_id).exists():
            return False
        mapping = NetworkMapping.objects.create(source=source, destination=destination, note=note[:200])
        auditlog.record(actor, "networkmapping.create", mapping, after=snapshot(mapping))
    return True
