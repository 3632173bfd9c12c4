"""The permission matrix, generated from the URL resolver: every route and form action of the portal,
as each persona — owner of team A (alice), owner of team B (bob), approver (carol), auditor (dave),
anonymous — and the approver on a plan of her own. A new URL fails `test_every_route_is_in_the_matrix`
until it is given its expected outcomes here.

Outcomes: "ok" (the permission layer let the request through: 200, 400 for a refused form, or a redirect
that is not to the login page), "login" (redirect to the login page), 403, 404 (other teams' objects),
405 (a form action asked with GET).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from migrations_app.choices import PlanStatus
from migrations_app.models import (
    Approval,
    ApprovalRule,
    ChangeFreeze,
    ChangeWindow,
    MigrationPlan,
    MigrationRun,
    NetworkMapping,
    Notification,
    Probe,
    StandardChangePolicy,
)
from tests.workflow.conftest import login, pending

pytestmark = pytest.mark.django_db

PERSONAS = ("owner_a", "owner_b", "approver", "auditor", "anonymous")
USERS = {"owner_a": "alice", "owner_b": "bob", "approver": "carol", "approver_own": "carol", "auditor": "dave"}


def _walk(patterns: list[Any], namespace: str | None = None) -> Any:
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = ":".join(x for x in (namespace, p.namespace) if x) or None
            yield from _walk(p.url_patterns, ns)
        elif isinstance(p, URLPattern):
            yield (f"{namespace}:{p.name}" if namespace else p.name), p


ROUTES = {name: pattern for name, pattern in _walk(get_resolver().url_patterns)}
SITE_ADMIN = sorted(n for n in ROUTES if n.split(":")[0] in ("admin", "django_rq"))
#: the REST API's routes have their own matrix (tests/api/test_api_matrix.py): JSON answers, 401 not a login page
PORTAL = sorted(n for n in ROUTES if n not in SITE_ADMIN and not n.startswith("api:"))


def outcomes(
    owner_a: str, owner_b: str, approver: str, auditor: str, approver_own: str | None = None
) -> dict[str, str]:
    found = {"owner_a": owner_a, "owner_b": owner_b, "approver": approver, "auditor": auditor, "anonymous": "login"}
    if approver_own is not None:
        found["approver_own"] = approver_own
    return found


EVERYONE = outcomes("ok", "ok", "ok", "ok")
ADMINS = outcomes("403", "403", "ok", "403")
ADMINS_AND_AUDITORS = outcomes("403", "403", "ok", "ok")
TEAM_VIEW = outcomes("ok", "404", "ok", "ok", approver_own="ok")
TEAM_CHANGE = outcomes("ok", "404", "ok", "403", approver_own="ok")
DECIDE = outcomes("403", "404", "ok", "403", approver_own="403")
PLANNERS = outcomes("ok", "ok", "ok", "403")
GET_ONLY_POST_IS_FORM = "GET+POST"

#: route → {method: expected outcome per persona}. POST-only routes answer GET with 405 once logged in.
MATRIX: dict[str, dict[str, dict[str, str]]] = {
    "login": {"GET": {p: "ok" for p in PERSONAS}, "POST": {p: "ok" for p in PERSONAS}},
    "logout": {"GET": {p: "405" for p in PERSONAS}, "POST": {p: "login" for p in PERSONAS}},
    "inventory:dashboard": {"GET": EVERYONE},
    "inventory:host_register": {"GET": ADMINS, "POST": ADMINS},
    "inventory:host_detail": {"GET": EVERYONE},
    "inventory:host_test_connection": {"POST": ADMINS},
    "inventory:host_sync": {"POST": ADMINS},
    "inventory:vm_list": {"GET": EVERYONE},
    "inventory:vm_detail": {"GET": TEAM_VIEW},
    "inventory:vm_assign_team": {"POST": outcomes("403", "404", "ok", "403")},
    "inventory:vm_set_group": {"POST": TEAM_CHANGE},
    "migrations_app:plan_list": {"GET": EVERYONE},
    "migrations_app:plan_create": {"GET": PLANNERS, "POST": PLANNERS},
    "migrations_app:plan_detail": {"GET": TEAM_VIEW},
    "migrations_app:plan_update_item": {"POST": TEAM_CHANGE},
    "migrations_app:plan_update_options": {"POST": TEAM_CHANGE},
    "migrations_app:plan_reaudit": {"POST": TEAM_CHANGE},
    "migrations_app:plan_submit": {"POST": TEAM_CHANGE},
    "migrations_app:plan_cancel": {"POST": TEAM_CHANGE},
    "migrations_app:plan_override": {"POST": DECIDE},
    "migrations_app:plan_again": {"POST": TEAM_CHANGE},
    "migrations_app:plan_decide": {"POST": DECIDE},
    "migrations_app:plan_emergency": {"POST": DECIDE},
    "migrations_app:plan_review": {"POST": DECIDE},
    "migrations_app:approval_queue": {"GET": ADMINS_AND_AUDITORS},
    "runs:run_detail": {"GET": TEAM_VIEW},
    "runs:run_cancel": {"POST": TEAM_CHANGE},
    "runs:run_validation": {"GET": TEAM_VIEW},
    "runs:run_validation_json": {"GET": TEAM_VIEW},
    "runs:run_move_back": {"POST": TEAM_CHANGE},
    "runs:vm_probes": {"GET": outcomes("ok", "404", "ok", "ok"), "POST": outcomes("ok", "404", "ok", "403")},
    "runs:probe_delete": {"POST": outcomes("ok", "404", "ok", "403")},
    "runs:history": {"GET": EVERYONE},
    "runs:export_csv": {"GET": EVERYONE},
    "runs:export_json": {"GET": EVERYONE},
    "manage:team_list": {"GET": ADMINS_AND_AUDITORS, "POST": ADMINS},
    "manage:team_detail": {"GET": ADMINS_AND_AUDITORS},
    "manage:team_member_add": {"POST": ADMINS},
    "manage:team_member_remove": {"POST": ADMINS},
    "manage:ownership": {"GET": ADMINS_AND_AUDITORS, "POST": ADMINS},
    **{
        f"manage:{kind}_{view}": spec
        for kind in ("windows", "freezes", "policies", "approval-rules", "network-mappings")
        for view, spec in (
            ("list", {"GET": ADMINS_AND_AUDITORS, "POST": ADMINS}),
            ("edit", {"GET": ADMINS, "POST": ADMINS}),
            ("delete", {"POST": ADMINS}),
        )
    },
    "notifications": {"GET": EVERYONE},
    "notifications_read": {"POST": EVERYONE},
    "audit_log": {"GET": ADMINS_AND_AUDITORS},
    "account_tokens": {"GET": EVERYONE, "POST": EVERYONE},
    "account_token_revoke": {"POST": outcomes("ok", "404", "404", "404", approver_own="404")},
}

#: what a form action is sent (enough for the action to run, so "ok" means it really went through)
POST_DATA: dict[str, dict[str, Any]] = {
    "login": {"username": "nobody", "password": "wrong"},
    "migrations_app:plan_decide": {"decision": "approve", "comment": "Looks fine to me."},
    "migrations_app:plan_cancel": {"confirm": "yes"},
    "runs:run_cancel": {"confirm": "yes"},
    "runs:vm_probes": {"kind": "tcp", "port": "22"},
    "migrations_app:plan_review": {"comment": "Reviewed."},
    "migrations_app:plan_emergency": {"justification": "The host is failing right now.", "confirm": "on"},
    "manage:team_member_add": {"username": "bob"},
    "account_tokens": {"name": "a script"},
    "inventory:vm_set_group": {"group": "shop"},
}


def test_every_route_is_in_the_matrix() -> None:
    assert sorted(MATRIX) == PORTAL, "classify the new or removed routes in MATRIX"


@pytest.fixture
def scene(world: dict[str, Any]) -> dict[str, Any]:
    """Plan A (alice's, team payments, waiting for approval) with a queued run; plan C (carol's own, same
    team); a notification; one row of every admin setting."""
    plan_a = pending(world, "alice")
    plan_c = pending(world, "carol", vms=("pay-2",))
    item = plan_a.items.select_related("vm").get()
    run = MigrationRun.objects.create(item=item, vm=item.vm, source=world["src"], destination=world["dst"], mode="live")
    Notification.objects.create(user=world["alice"], plan=plan_a, verb="plan.pending_approval", title="t")
    probe = Probe.objects.create(vm=item.vm, kind="tcp", port=80)
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    settings_rows = {
        "windows": ChangeWindow.objects.create(name="w", start=now, end=now + timedelta(hours=1)),
        "freezes": ChangeFreeze.objects.create(name="f", start=now, end=now + timedelta(hours=1)),
        "policies": StandardChangePolicy.objects.create(name="p"),
        "approval-rules": ApprovalRule.objects.create(min_vms=10, approvers=2),
        "network-mappings": NetworkMapping.objects.get(),
    }
    from api.tokens import create as create_token

    alice_token = create_token(world["alice"], "alice's script")[0]
    return {
        **world,
        "plan_a": plan_a,
        "plan_c": plan_c,
        "run": run,
        "probe": probe,
        "settings_rows": settings_rows,
        "alice_token": alice_token,
    }


def _kwargs(name: str, pattern: URLPattern, scene: dict[str, Any], persona: str) -> dict[str, Any]:
    plan = scene["plan_c" if persona == "approver_own" else "plan_a"]
    values: dict[str, Any] = {}
    for key in pattern.pattern.converters:  # type: ignore[attr-defined]
        if key == "pk" and name == "account_token_revoke":
            values[key] = scene["alice_token"].pk
        elif key == "pk" and name.startswith("runs:run_"):
            values[key] = scene["run"].pk
        elif key == "pk" and name == "runs:probe_delete":
            values[key] = scene["probe"].pk
        elif key == "vm_id":
            values[key] = scene["plan_a"].items.get().vm_id
        elif key == "pk" and name.startswith("manage:"):
            values[key] = scene["settings_rows"][name.split(":")[1].rsplit("_", 1)[0]].pk
        elif key == "pk":
            values[key] = plan.pk
        elif key == "item_id":
            values[key] = plan.items.get().pk
        elif key == "name":
            values[key] = "src"
        elif key == "uuid":
            values[key] = scene["pay-1"].uuid
        elif key == "slug":
            values[key] = "payments"
        else:
            raise AssertionError(f"{name}: no value for <{key}>")
    return values


def _outcome(response: Any) -> str:
    if response.status_code == 302 and "/login/" in response["Location"]:
        return "login"
    if response.status_code in (200, 302, 400):
        return "ok"
    return str(response.status_code)


def _personas(name: str) -> tuple[str, ...]:
    plan_route = "approver_own" in next(iter(MATRIX.get(name, {"": {}}).values()))
    return (*PERSONAS, "approver_own") if plan_route else PERSONAS


@pytest.mark.parametrize("name", PORTAL)
def test_route_answers_each_persona_as_the_matrix_says(client: Client, scene: dict[str, Any], name: str) -> None:
    for persona in _personas(name):
        # each persona meets the same scene: what one persona's request changed is rolled back
        with transaction.atomic():
            _check(client, scene, name, persona)
            transaction.set_rollback(True)
        client.logout()


def _check(client: Client, scene: dict[str, Any], name: str, persona: str) -> None:
    if persona in USERS:
        login(client, scene[USERS[persona]])
    url = reverse(name, kwargs=_kwargs(name, ROUTES[name], scene, persona))
    plan = scene["plan_c" if persona == "approver_own" else "plan_a"]
    before = MigrationPlan.objects.values_list("status", flat=True).get(pk=plan.pk)
    spec = MATRIX[name]
    for method in ("GET", "POST"):
        if method in spec:
            expected = spec[method][persona]
        elif persona == "anonymous":
            expected = "login"
        else:
            expected = "405"
        if method == "POST":
            response = client.post(url, POST_DATA.get(name, {}))
        else:
            response = client.get(url)
        got = _outcome(response)
        assert got == expected, f"{method} {url} as {persona}: {got}, expected {expected}"
        if got == "403":
            text = response.content.decode()
            assert "Nothing was changed" in text and any(
                reason in text
                for reason in ("read-only", "own plan", "Only approvers", "Only the plan", "another approver")
            ), text
        if got in ("403", "404", "login", "405"):
            # a refused request changed nothing
            assert MigrationPlan.objects.values_list("status", flat=True).get(pk=plan.pk) == before
    if name == "migrations_app:plan_decide":
        approved = Approval.objects.filter(plan=plan).exists()
        assert approved == (spec["POST"][persona] == "ok"), persona
        if approved:
            assert MigrationPlan.objects.get(pk=plan.pk).status in (PlanStatus.APPROVED, PlanStatus.SCHEDULED)


def test_the_layer_and_the_querysets_agree_on_who_sees_what(scene: dict[str, Any]) -> None:
    from inventory.models import VirtualMachine
    from vmportal.access import visible

    for person in ("alice", "bob", "carol", "dave"):
        user = scene[person]
        for model in (VirtualMachine, MigrationPlan):
            shown = set(model.objects.visible_to(user).values_list("pk", flat=True))  # type: ignore[attr-defined]
            assert {o.pk for o in model.objects.all() if visible(user, o)} == shown, (person, model)


#: the admin site's own sign-in pages are open to everyone
PUBLIC_SITE_ADMIN = {"admin:login", "admin:logout"}


def _site_admin_url(name: str) -> str:
    if name.endswith(":None"):
        return "/admin/no-such-page/"  # the admin's unnamed catch-all
    values = {"app_label": "migrations_app", "object_id": "1", "id": "1", "url": "x", "token": "x"}
    pattern = ROUTES[name]
    kwargs: dict[str, Any] = {}
    for key, converter in getattr(pattern.pattern, "converters", {}).items():
        kwargs[key] = 0 if type(converter).__name__ == "IntConverter" else values.get(key, "x")
    for key in pattern.pattern.regex.groupindex:
        kwargs.setdefault(key, values.get(key, "x"))
    return reverse(name, kwargs=kwargs)


def test_the_django_admin_and_the_queue_pages_refuse_everyone_but_staff(client: Client, scene: dict[str, Any]) -> None:
    """Every route of the Django admin and of the queue pages. What staff may do there is the admin
    site's own permission system; here: nobody else gets in."""
    client.raise_request_exception = False
    urls = {name: _site_admin_url(name) for name in SITE_ADMIN}
    for persona in ("anonymous", "owner_a", "owner_b", "auditor"):
        client.logout()
        if persona in USERS:
            if scene[USERS[persona]].is_staff:
                continue  # a staff auditor is the admin site's business
            login(client, scene[USERS[persona]])
        for name, url in urls.items():
            response = client.get(url)
            if name in PUBLIC_SITE_ADMIN:
                assert response.status_code in (200, 302), (persona, url, response.status_code)
                continue
            refused = response.status_code in (401, 403) or (
                response.status_code == 302 and "login" in response["Location"]
            )
            assert refused, (persona, url, response.status_code)
    client.logout()
    login(client, scene["carol"])
    for url in urls.values():
        response = client.get(url)
        assert not (response.status_code == 302 and "/login/" in response["Location"]), url


def test_an_unknown_object_and_another_teams_object_answer_the_same(client: Client, scene: dict[str, Any]) -> None:
    login(client, scene["bob"])
    other = client.get(reverse("migrations_app:plan_detail", args=[scene["plan_a"].pk]))
    missing = client.get(reverse("migrations_app:plan_detail", args=[999999]))
    assert other.status_code == missing.status_code == 404
    assert client.get(reverse("inventory:vm_detail", args=[uuid.UUID(int=1)])).status_code == 404
