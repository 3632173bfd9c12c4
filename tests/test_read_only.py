"""Read-only roles are read-only: an auditor tries every write path the URL resolver knows — the portal's
pages, the Django admin (add, change, delete, every changelist action) and the job-queue pages — and
nothing changes, neither in the database nor in the job queues.

The walk is generated from the resolver (tests/routes.py), so a URL added later is walked too, or the
test fails asking for a sample value for it. A control run shows the same requests do change things
when the right person sends them, so the walk is not vacuous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import django_rq
import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.apps import apps
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.forms.models import model_to_dict
from django.test import Client, RequestFactory
from django.utils import timezone
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.models import Backup, MigrationPlan, NetworkMapping, RetainedDisk
from migrations_app.services import plans as plan_services
from tests.base import domain_xml, node_file_host
from tests.routes import Route, fill, routes

pytestmark = pytest.mark.django_db

PAY = "aaaaaaaa-2222-0000-0000-000000000001"
ANA = "bbbbbbbb-2222-0000-0000-000000000002"
#: unnamed patterns and a path each (the admin's catch-all answers any unknown admin path)
UNNAMED = {"/admin/(?P<url>.*)$": ["/admin/no-such-page/"]}


@pytest.fixture
def world(people: dict[str, Any]) -> Iterator[dict[str, Any]]:
    src = node_file_host(
        "ro-src",
        [
            domain_xml("pay-ro", PAY, team="payments", mac="52:54:00:20:00:01", network="net-a"),
            domain_xml("ana-ro", ANA, team="analytics", mac="52:54:00:20:00:02", network="net-a"),
        ],
        networks=("net-a",),
    )
    dst = node_file_host("ro-dst", [], networks=("net-b",))
    assert sync_host(src.pk).ok and sync_host(dst.pk).ok
    vm = VirtualMachine.objects.get(uuid=PAY)
    plan = plan_services.create_plan(people["alice"], vm_ids=[vm.pk], destination_id=dst.pk)
    NetworkMapping.objects.create(source=src.networks.get(), destination=dst.networks.get(), note="ro")
    Backup.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=src)
    RetainedDisk.objects.create(
        vm=vm, host=src, path="/default-pool/kept.img", retain_until=timezone.now() + timedelta(days=1)
    )
    # what the login guard records (shown to admins in the admin site)
    AccessAttempt.objects.create(username="mallory", ip_address="192.0.2.1", failures_since_start=1)
    AccessLog.objects.create(username="alice", ip_address="192.0.2.2")
    AccessFailureLog.objects.create(username="mallory", ip_address="192.0.2.1")
    people["dave"].is_staff = True  # auditors are staff with view permissions, as in production
    people["dave"].save()
    queue = django_rq.get_queue("default")
    queued = queue.enqueue("inventory.jobs.sync_host", 0)
    failed = queue.enqueue("inventory.jobs.sync_host", 0)
    queue.remove(failed)
    failed.set_status(JobStatus.FAILED)
    FailedJobRegistry(queue=queue).add(failed, ttl=600, exc_string="failed on purpose")
    yield {**people, "src": src, "dst": dst, "vm": vm, "plan": plan, "jobs": [queued, failed], "queue": queue}
    for job in (queued, failed):
        if Job.exists(job.id, connection=queue.connection):
            job.delete()


def fingerprint() -> dict[str, str]:
    """A digest of every table and of every job queue and registry. Sessions, login times and the records
    of signing in (the login page writes them for anyone, by design) are left out."""
    state: dict[str, str] = {}
    for model in apps.get_models():
        if model._meta.label in ("sessions.Session", "axes.AccessLog", "axes.AccessAttempt", "axes.AccessFailureLog"):
            continue
        if not model._meta.managed:
            continue
        rows_qs = model._base_manager.all()
        if model._meta.label == "api.ApiToken":
            continue  # an auditor may have API tokens of their own: read-only access for scripts
        if model._meta.label == "migrations_app.AuditLogEntry":
            rows_qs = rows_qs.exclude(verb__startswith="auth.").exclude(verb__startswith="token.")
        rows = list(rows_qs.order_by("pk").values())
        for row in rows:
            row.pop("last_login", None)
        state[model._meta.label] = hashlib.sha256(repr(rows).encode()).hexdigest()
    for name in django_rq.settings.QUEUES:
        queue = django_rq.get_queue(name)
        # registries without their time-based clean-up: entries of earlier tests expire on their own
        registries = [queue.get_job_ids()] + [
            r.get_job_ids(cleanup=False)
            for r in (
                queue.failed_job_registry,
                queue.started_job_registry,
                queue.finished_job_registry,
                queue.scheduled_job_registry,
                queue.deferred_job_registry,
                queue.canceled_job_registry,
            )
        ]
        state[f"rq:{name}"] = repr(registries)
    return state


def samples(world: dict[str, Any], route: Route) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {
        "name": [world["src"].name],
        "uuid": [PAY, ANA],
        "pk": [world["plan"].pk],
        "item_id": [world["plan"].items.get().pk],
        "vm_id": [world["vm"].pk],
        "app_label": ["inventory", "migrations_app", "auth", "axes"],
        "slug": [world["payments"].slug],
        "content_type_id": [ContentType.objects.get_for_model(Host).pk],
        "object_id": [world["src"].pk],
        "queue_index": [django_rq.settings.get_queues_map()["default"]],  # django-rq numbers queues by sorted name
        "job_id": [job.id for job in world["jobs"]],
        "result_id": ["no-such-result"],
        "key": ["rq:worker:no-such-worker"],
        "scheduler_index": [0],
        "connection_index": [0],
        "scheduler_name": ["no-such-scheduler"],
        "cron_job_name": ["no-such-job"],
        "token": ["nosuchtoken"],
        "id": [world["carol"].pk, world["dave"].pk],
        "rest": ["v1/no-such-endpoint/"],
    }
    # admin object pages: an object of the route's own model
    model = model_of(route, required=False)
    if model is not None and "object_id" in route.params:
        objects = list(model._base_manager.order_by("pk").values_list("pk", flat=True)[:1])
        assert objects, f"add an object of {model._meta.label} to the world so {route.name} is walked"
        values["object_id"] = objects
    return values


def model_of(route: Route, required: bool = True) -> Any:
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}_"
        if route.name.startswith(prefix):
            return model
    assert not required, f"no admin model for {route.name}"
    return None


def payloads(world: dict[str, Any], route: Route, admin_user: Any) -> list[dict[str, Any]]:
    """What to POST: form data that would be accepted from someone allowed to do it."""
    vm: VirtualMachine = world["vm"]
    portal = {
        "team": world["analytics"].pk,
        "confirm": "yes",
        "reason": "A reason long enough to be accepted.",
        "destination": world["dst"].pk,
        "vms": [vm.pk],
        "name": "ro-new",
        "uri": "test:///default",
        "mode": "auto",
        "change_type": "normal",
        "max_downtime_ms": "300",
        "parallel_connections": "1",
        "compression": "none",
        "on_no_convergence": "abort",
        "shutdown_timeout_s": "120",
        "auto_converge": "on",
        "fresh_backup": "on",
        f"net-{vm.nics.get().mac}": "net-b",
        "action": "delete",
        "job_ids": [job.id for job in world["jobs"]],
        "_selected_action": [job.id for job in world["jobs"]],
        "post": "yes",
    }
    if model_of(route, required=False) is None:
        return [portal]
    if route.name.endswith("_changelist"):
        model = model_of(route)
        model_admin = admin.site._registry[model]
        request = RequestFactory().get("/")
        request.user = admin_user
        ids = [str(pk) for pk in model._base_manager.values_list("pk", flat=True)]
        return [
            {"action": action, "_selected_action": ids, "post": "yes"} for action in model_admin.get_actions(request)
        ]
    if route.name.endswith(("_change", "_add")):
        model = model_of(route)
        instance = model._base_manager.order_by("pk").first()
        data = {k: v for k, v in model_to_dict(instance).items() if v is not None} if instance else {}
        return [{**portal, **{k: (v.pk if hasattr(v, "pk") else v) for k, v in data.items()}, "_save": "Save"}]
    return [portal]


def test_an_auditor_changes_nothing_anywhere(client: Client, world: dict[str, Any]) -> None:
    dave = world["dave"]
    client.force_login(dave)
    assert client.get("/admin/").status_code == 200  # inside the admin: the walk below is not vacuous
    all_routes = routes()
    assert any(r.name.startswith("django_rq:") for r in all_routes) and any(
        r.name.startswith("admin:") for r in all_routes
    )

    before = fingerprint()
    walked = 0
    for route in all_routes:
        for url in fill(route, samples(world, route), UNNAMED):
            client.force_login(dave)  # a logout route must not end the walk early
            if route.name.startswith("django_rq:"):
                response = client.get(url)
                assert response.status_code == 403, f"the queue page {url} must be closed to auditors"
            else:
                client.get(url)
            for data in payloads(world, route, world["carol"]):
                client.force_login(dave)  # a logout route must not end the walk early
                client.post(url, data)
                walked += 1
                after = fingerprint()
                changed = sorted(k for k in before if before[k] != after[k])
                assert not changed, f"an auditor's POST to {url} ({route.name or route.pattern}) changed {changed}"
    assert walked > 100


@pytest.mark.parametrize(
    ("who", "route_name", "data"),
    [
        ("carol", "inventory:vm_assign_team", {"team": "analytics"}),
        ("carol", "admin:inventory_virtualmachine_changelist", {"action": "clear_team"}),
        ("carol", "django_rq:clear", {"post": "yes"}),
        ("alice", "migrations_app:plan_reaudit", {}),
    ],
)
def test_the_same_requests_from_the_right_person_do_change_things(
    client: Client, world: dict[str, Any], who: str, route_name: str, data: dict[str, Any]
) -> None:
    route = next(r for r in routes() if r.name == route_name)
    url = fill(route, samples(world, route), UNNAMED)[0]
    if data.get("team"):
        data = {"team": world[data["team"]].pk}
    if data.get("action"):
        data = {**data, "_selected_action": [str(world["vm"].pk)], "post": "yes"}
    client.force_login(world[who])
    before = fingerprint()
    client.post(url, data)
    assert fingerprint() != before


def test_an_auditor_cannot_rerun_an_audit_and_an_owner_is_told_what_a_rerun_drops(
    client: Client, world: dict[str, Any]
) -> None:
    plan: MigrationPlan = world["plan"]
    client.force_login(world["dave"])
    count = plan.audits.count()
    response = client.post(f"/plans/{plan.pk}/audit/", follow=True)
    assert plan.audits.count() == count and "read-only" in response.content.decode()
    client.force_login(world["alice"])
    client.post(f"/plans/{plan.pk}/audit/")
    assert plan.audits.count() == count + 1
    from migrations_app.models import AuditLogEntry

    assert AuditLogEntry.objects.filter(verb="plan.reaudit", target_id=str(plan.pk)).exists()


def test_admin_actions_that_write_are_offered_to_admins_only(world: dict[str, Any]) -> None:
    request = RequestFactory().get("/")
    for model, action in ((VirtualMachine, "clear_team"), (RetainedDisk, "release")):
        model_admin = admin.site._registry[model]
        request.user = world["dave"]
        assert action not in model_admin.get_actions(request)
        request.user = world["carol"]
        assert action in model_admin.get_actions(request)


def test_approvers_reach_the_queue_pages_and_auditors_do_not_see_the_link(
    client: Client, world: dict[str, Any]
) -> None:
    client.force_login(world["carol"])
    assert client.get("/admin/rq/").status_code == 200
    assert "/admin/rq/" in client.get("/").content.decode()
    client.force_login(world["dave"])
    assert "/admin/rq/" not in client.get("/").content.decode()
    assert client.get("/admin/django_rq/dashboard/").status_code == 404  # django-rq's own admin entry is off
