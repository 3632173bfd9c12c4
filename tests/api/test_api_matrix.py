"""The API's permission matrix, generated from the URL resolver like the pages' (tests/workflow/
test_permission_matrix.py): every API route, as every persona, with every method. A new API route fails
`test_every_api_route_is_in_the_matrix` until it is classified here.

Outcomes: "ok" (the permission layer let the request through: 2xx, or 400/409 when the payload or the
plan's state is refused), 401 (not signed in), 403 (signed in, not allowed), 404 (another team's object,
or no such endpoint), 405 (method not offered).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from migrations_app.models import MigrationPlan, MigrationRun
from tests.api.conftest import token_client
from tests.workflow.test_permission_matrix import ROUTES, scene  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db

PERSONAS = ("owner_a", "owner_b", "approver", "auditor", "anonymous", "approver_own")
USERS = {"owner_a": "alice", "owner_b": "bob", "approver": "carol", "approver_own": "carol", "auditor": "dave"}


def outcomes(
    owner_a: str, owner_b: str, approver: str, auditor: str, approver_own: str | None = None
) -> dict[str, str]:
    return {
        "owner_a": owner_a,
        "owner_b": owner_b,
        "approver": approver,
        "auditor": auditor,
        "anonymous": "401",
        "approver_own": approver_own or approver,
    }


EVERYONE = outcomes("ok", "ok", "ok", "ok")
ADMINS = outcomes("403", "403", "ok", "403")
ADMINS_AND_AUDITORS = outcomes("403", "403", "ok", "ok")
TEAM_VIEW = outcomes("ok", "404", "ok", "ok")
TEAM_CHANGE = outcomes("ok", "404", "ok", "403")
DECIDE = outcomes("403", "404", "ok", "403", approver_own="403")
PLANNERS = outcomes("ok", "ok", "ok", "403")
NOWHERE = {p: "404" for p in PERSONAS}
NOT_THE_LOG = outcomes("403", "403", "405", "405")

MATRIX: dict[str, dict[str, dict[str, str]]] = {
    "api:root": {"GET": NOWHERE, "POST": NOWHERE, "PATCH": NOWHERE},
    "api:not_found": {"GET": NOWHERE, "POST": NOWHERE, "PATCH": NOWHERE},
    "api:schema": {"GET": EVERYONE},
    "api:docs": {"GET": EVERYONE},
    "api:host-list": {"GET": EVERYONE},
    "api:host-detail": {"GET": EVERYONE},
    "api:host-evacuate": {"POST": ADMINS},
    "api:vm-list": {"GET": EVERYONE},
    "api:vm-detail": {"GET": TEAM_VIEW},
    "api:vm-group": {"POST": TEAM_CHANGE},
    "api:plan-list": {"GET": EVERYONE, "POST": PLANNERS},
    "api:plan-import-csv": {"POST": PLANNERS},
    "api:plan-detail": {"GET": TEAM_VIEW, "PATCH": TEAM_CHANGE},
    "api:plan-items": {"GET": TEAM_VIEW},
    "api:plan-item": {"PATCH": TEAM_CHANGE},
    "api:plan-audit": {"GET": TEAM_VIEW, "POST": TEAM_CHANGE},
    "api:plan-waves": {"GET": TEAM_VIEW},
    "api:plan-submit": {"POST": TEAM_CHANGE},
    "api:plan-cancel": {"POST": TEAM_CHANGE},
    "api:plan-approve": {"POST": DECIDE},
    "api:plan-reject": {"POST": DECIDE},
    "api:run-list": {"GET": EVERYONE},
    "api:run-detail": {"GET": TEAM_VIEW},
    "api:run-samples": {"GET": TEAM_VIEW},
    "api:run-validation": {"GET": TEAM_VIEW},
    "api:run-cancel": {"POST": TEAM_CHANGE},
    "api:backup-list": {"GET": EVERYONE},
    # the role is checked before the method: others hear 403 whatever they send
    "api:auditlog-list": {"GET": ADMINS_AND_AUDITORS, "POST": NOT_THE_LOG, "PATCH": NOT_THE_LOG},
}

PAYLOADS: dict[str, dict[str, Any]] = {
    "api:plan-approve": {"comment": "Looks fine to me."},
    "api:plan-reject": {"comment": "Not this week."},
    "api:vm-group": {"group": "shop"},
    "api:plan-detail": {"max_downtime_ms": 400},
    "api:plan-item": {"wave": 2},
}

API_ROUTES = sorted(n for n in ROUTES if n.startswith("api:"))


def test_every_api_route_is_in_the_matrix() -> None:
    assert sorted(MATRIX) == API_ROUTES, "classify the new or removed API routes in MATRIX"


def _kwargs(name: str, objects: dict[str, Any], persona: str) -> dict[str, Any]:
    plan: MigrationPlan = objects["plan_c" if persona == "approver_own" else "plan_a"]
    values: dict[str, Any] = {}
    for key in ROUTES[name].pattern.regex.groupindex:
        if key == "pk" and name.startswith("api:run-"):
            values[key] = objects["run"].pk if persona != "approver_own" else objects["run_c"].pk
        elif key == "pk":
            values[key] = plan.pk
        elif key == "item_id":
            values[key] = plan.items.get().pk
        elif key == "name":
            values[key] = "src"
        elif key == "uuid":
            values[key] = objects["pay-1"].uuid
        elif key == "rest":
            values[key] = "v1/no-such-endpoint/"
        else:
            raise AssertionError(f"{name}: no value for <{key}>")
    return values


def _outcome(response: Any) -> str:
    if response.status_code in (200, 201, 202, 400, 409):
        return "ok"
    return str(response.status_code)


@pytest.fixture
def clients(scene: dict[str, Any]) -> dict[str, APIClient]:  # noqa: F811
    made = {persona: token_client(scene[user]) for persona, user in USERS.items() if persona != "approver_own"}
    made["approver_own"] = made["approver"]
    made["anonymous"] = APIClient()
    item = scene["plan_c"].items.select_related("vm").get()
    scene["run_c"] = MigrationRun.objects.create(
        item=item, vm=item.vm, source=scene["src"], destination=scene["dst"], mode="live"
    )
    return made


@pytest.mark.parametrize("name", API_ROUTES)
def test_api_route_answers_each_persona_as_the_matrix_says(
    clients: dict[str, APIClient],
    scene: dict[str, Any],  # noqa: F811
    name: str,
) -> None:
    spec = MATRIX[name]
    for persona in PERSONAS:
        url = reverse(name, kwargs=_kwargs(name, scene, persona))
        plan = scene["plan_c" if persona == "approver_own" else "plan_a"]
        for method in ("GET", "POST", "PATCH"):
            with transaction.atomic():
                before = MigrationPlan.objects.values_list("status", flat=True).get(pk=plan.pk)
                expected = spec.get(method, {}).get(persona) or ("401" if persona == "anonymous" else "405")
                call = getattr(clients[persona], method.lower())
                response = call(url, PAYLOADS.get(name, {}), format="json") if method != "GET" else call(url)
                got = _outcome(response)
                assert got == expected, (
                    f"{method} {url} as {persona}: {got} ({response.content[:200]!r}), expected {expected}"
                )
                assert response["Content-Type"].startswith(("application/json", "application/vnd.oai", "text/html"))
                if got != "ok" and name != "api:docs":  # the docs page is HTML
                    body = json.loads(response.content)
                    assert body["error"]["code"] and body["error"]["message"]
                    after = MigrationPlan.objects.values_list("status", flat=True).get(pk=plan.pk)
                    assert after == before, f"a refused {method} {url} changed the plan"
                transaction.set_rollback(True)
