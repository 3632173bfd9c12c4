"""The REST API: authentication (hashed tokens, sessions with CSRF), JSON errors, the permission layer,
and every endpoint used as a script would."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from api.models import ApiToken
from inventory.models import Host
from migrations_app.choices import AuditStatus, PlanStatus
from migrations_app.models import AuditLogEntry, Backup, MigrationPlan, MigrationRun, ProgressSample
from migrations_app.services import audits as audit_services
from migrations_app.services import plans as plan_services
from tests.base import PASSWORD
from tests.workflow.conftest import audited, make_plan

pytestmark = pytest.mark.django_db


def error(response: Any) -> dict[str, Any]:
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return body["error"]


def run_latest_audit(plan: MigrationPlan) -> None:
    audit = plan_services.latest_audit(plan)
    assert audit is not None and audit.status == AuditStatus.QUEUED
    assert audit_services.run_audit(audit.pk)["claimed"]
    plan.refresh_from_db()


# ---- authentication --------------------------------------------------------------------------------


def test_no_credentials_a_bad_token_and_a_revoked_token_are_refused_as_json(
    api: dict[str, APIClient], world: dict[str, Any]
) -> None:
    assert error(api["anonymous"].get("/api/v1/vms/"))["code"] == "not_authenticated"
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token vmp_not-a-real-token")
    response = bad.get("/api/v1/vms/")
    assert response.status_code == 401 and "not valid" in error(response)["message"]
    assert api["alice"].get("/api/v1/vms/").status_code == 200
    for token in ApiToken.objects.filter(user=world["alice"]):
        token.revoked_at = token.created_at
        token.save()
    assert api["alice"].get("/api/v1/vms/").status_code == 401


def test_tokens_are_created_and_revoked_on_ones_own_page_and_only_a_hash_is_kept(world: dict[str, Any]) -> None:
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    page = client.post("/account/tokens/", {"name": "cron <script>"})
    assert page.status_code == 200
    secret = page.context["secret"]
    assert secret.startswith("vmp_") and secret in page.content.decode()
    assert "cron &lt;script&gt;" in page.content.decode()  # the name is escaped
    token = ApiToken.objects.get(user=world["alice"])
    assert token.digest != secret and secret not in repr(list(ApiToken.objects.values()))
    by_token = APIClient()
    by_token.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert by_token.get("/api/v1/plans/").status_code == 200
    # bob cannot revoke alice's token; alice can
    other = Client()
    assert other.login(username="bob", password=PASSWORD)
    assert other.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    assert client.get("/account/tokens/").content.decode().count("Revoke") == 1
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    assert by_token.get("/api/v1/plans/").status_code == 401
    assert AuditLogEntry.objects.filter(verb__in=["token.create", "token.revoke"]).count() == 2


def test_the_browser_session_works_and_needs_the_csrf_token_to_write(world: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    assert client.get("/api/v1/vms/").status_code == 200
    plan = make_plan(world)
    response = client.post(f"/api/v1/plans/{plan.pk}/cancel/")
    assert response.status_code == 403 and "CSRF" in error(response)["message"]
    plan.refresh_from_db()
    assert plan.status != PlanStatus.CANCELLED
    client.get("/account/tokens/")  # any page sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(f"/api/v1/plans/{plan.pk}/cancel/", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200 and response.json()["status"] == PlanStatus.CANCELLED


def test_unknown_api_paths_and_other_teams_objects_are_json_404s(
    api: dict[str, APIClient], world: dict[str, Any]
) -> None:
    for path in ("/api/", "/api/v2/plans/", "/api/v1/no-such-thing/"):
        response = api["alice"].get(path)
        assert response.status_code == 404 and error(response)["code"] == "not_found", path
    plan = make_plan(world)
    assert api["bob"].get(f"/api/v1/plans/{plan.pk}/").status_code == 404
    assert api["bob"].get("/api/v1/plans/999999/").status_code == 404
    assert error(api["bob"].get(f"/api/v1/vms/{world['pay-1'].uuid}/"))["code"] == "not_found"
    response = api["alice"].delete(f"/api/v1/plans/{plan.pk}/")
    assert response.status_code == 405 and error(response)["code"] == "method_not_allowed"


# ---- inventory -------------------------------------------------------------------------------------------


def test_vms_are_listed_by_team_filtered_and_paginated(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    alice = api["alice"].get("/api/v1/vms/").json()
    assert sorted(v["name"] for v in alice["results"]) == ["pay-1", "pay-2", "pay-3"] and alice["count"] == 3
    assert [v["name"] for v in api["bob"].get("/api/v1/vms/").json()["results"]] == ["ana-1"]
    assert api["carol"].get("/api/v1/vms/").json()["count"] == 4
    assert api["alice"].get("/api/v1/vms/", {"name": "pay-2"}).json()["count"] == 1
    page = api["carol"].get("/api/v1/vms/", {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"]
    bad = api["alice"].get("/api/v1/vms/", {"state": "exploded"})
    assert bad.status_code == 400 and "state" in error(bad)["fields"]
    hosts = api["bob"].get("/api/v1/hosts/").json()
    assert {h["name"] for h in hosts["results"]} == {"src", "dst"}
    assert api["bob"].get("/api/v1/hosts/src/").json()["name"] == "src"


def test_the_owner_sets_an_application_group_others_cannot(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    url = f"/api/v1/vms/{world['pay-1'].uuid}/group/"
    assert api["alice"].post(url, {"group": "shop"}, format="json").json()["application_group"] == "shop"
    assert api["bob"].post(url, {"group": "x"}, format="json").status_code == 404
    assert api["dave"].post(url, {"group": "x"}, format="json").status_code == 403
    assert api["alice"].post(url, {"group": "x" * 101}, format="json").status_code == 400
    world["pay-1"].refresh_from_db()
    assert world["pay-1"].app == "shop"


# ---- plans ---------------------------------------------------------------------------------------------


def test_a_plan_from_create_to_approval_through_the_api(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    created = api["alice"].post(
        "/api/v1/plans/",
        {"vms": [str(world["pay-1"].uuid), str(world["pay-2"].uuid)], "destination": "dst", "name": "api plan"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    plan = MigrationPlan.objects.get(pk=created.json()["id"])
    assert plan.name == "api plan" and plan.items.count() == 2
    run_latest_audit(plan)
    audit = api["alice"].get(f"/api/v1/plans/{plan.pk}/audit/").json()
    assert audit["status"] == AuditStatus.DONE and audit["plan_status"] == plan.status
    waves = api["alice"].get(f"/api/v1/plans/{plan.pk}/waves/").json()
    assert sum(w["items"] for w in waves["waves"]) == 2 and waves["summary"]
    items = api["alice"].get(f"/api/v1/plans/{plan.pk}/items/").json()["results"]
    assert {i["destination"] for i in items} == {"dst"} and all(i["wave"] >= 1 for i in items)
    if plan.status == PlanStatus.BLOCKED:  # the test driver may block a check; the workflow is what is tested
        audited(plan)
    # options of a draft: an auditor may not, another team cannot see it, the owner can
    assert api["dave"].patch(f"/api/v1/plans/{plan.pk}/", {"max_downtime_ms": 500}, format="json").status_code == 403
    assert api["bob"].patch(f"/api/v1/plans/{plan.pk}/", {"max_downtime_ms": 500}, format="json").status_code == 404
    edited = api["alice"].patch(f"/api/v1/plans/{plan.pk}/", {"max_downtime_ms": 500}, format="json")
    assert edited.status_code == 200 and edited.json()["max_downtime_ms"] == 500
    audited(plan)  # the new audit stands in as clean: the workflow is what is tested here
    submitted = api["alice"].post(f"/api/v1/plans/{plan.pk}/submit/")
    assert submitted.status_code == 200 and submitted.json()["status"] == PlanStatus.PENDING_APPROVAL
    again = api["alice"].post(f"/api/v1/plans/{plan.pk}/submit/")
    assert again.status_code == 409 and error(again)["code"] == "conflict"
    # four eyes: the requester cannot approve, an approver can; a comment is required
    assert api["alice"].post(f"/api/v1/plans/{plan.pk}/approve/", {"comment": "ok"}, format="json").status_code == 403
    assert api["carol"].post(f"/api/v1/plans/{plan.pk}/approve/", {}, format="json").status_code == 400
    approved = api["carol"].post(f"/api/v1/plans/{plan.pk}/approve/", {"comment": "Looks right."}, format="json")
    assert approved.status_code == 200 and approved.json()["status"] in (PlanStatus.APPROVED, PlanStatus.SCHEDULED)


def test_approvers_own_plans_need_another_approver_and_rejecting_needs_a_comment(
    api: dict[str, APIClient], world: dict[str, Any]
) -> None:
    from tests.workflow.conftest import pending

    own = pending(world, "carol", vms=("pay-2",))
    response = api["carol"].post(f"/api/v1/plans/{own.pk}/reject/", {"comment": "No."}, format="json")
    assert response.status_code == 403 and "four eyes" in error(response)["message"]
    plan = pending(world, "alice")
    rejected = api["carol"].post(f"/api/v1/plans/{plan.pk}/reject/", {"comment": "Not this week."}, format="json")
    assert rejected.json()["status"] == PlanStatus.REJECTED


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "vms"),
        ({"vms": "pay-1"}, "vms"),
        ({"vms": ["not-a-uuid"]}, "vms"),
        ({"vms": []}, "vms"),
        ({"vms": ["aaaaaaaa-2222-0000-0000-000000000001"], "mode": "teleport"}, "mode"),
        ({"vms": ["aaaaaaaa-2222-0000-0000-000000000001"], "max_downtime_ms": -1}, "max_downtime_ms"),
        ({"vms": ["aaaaaaaa-2222-0000-0000-000000000001"], "window_start": "2030-01-02T00:00Z"}, "non_field_errors"),
        (
            {
                "vms": ["aaaaaaaa-2222-0000-0000-000000000001"],
                "window_start": "2030-01-02T00:00Z",
                "window_end": "2030-01-01T00:00Z",
            },
            "non_field_errors",
        ),
        ({"vms": ["aaaaaaaa-2222-0000-0000-000000000001"], "destination": "nowhere"}, "destinations"),
        ({"vms": ["bbbbbbbb-2222-0000-0000-000000000001"]}, "vms"),  # another team's VM: as if unknown
        ({"vms": ["aaaaaaaa-2222-0000-0000-000000000001"], "destination": "src"}, "non_field_errors"),
        ({"vms": ["aaaaaaaa-2222-0000-0000-000000000001"], "destinations": {"x": "dst"}}, "destinations"),
    ],
)
def test_malformed_plans_are_refused_field_by_field_and_nothing_is_created(
    api: dict[str, APIClient], world: dict[str, Any], payload: dict[str, Any], field: str
) -> None:
    response = api["alice"].post("/api/v1/plans/", payload, format="json")
    assert response.status_code == 400, response.json()
    assert field in error(response)["fields"], response.json()
    assert not MigrationPlan.objects.exists()


def test_bodies_that_are_not_json_objects_are_refused(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    bad = api["alice"].post("/api/v1/plans/", "{not json", content_type="application/json")
    assert bad.status_code == 400 and error(bad)["code"] == "invalid"
    listed = api["alice"].post("/api/v1/plans/", "[1, 2]", content_type="application/json")
    assert listed.status_code == 400
    xml = api["alice"].post("/api/v1/plans/", "<plan/>", content_type="application/xml")
    assert xml.status_code == 415 and error(xml)["code"] == "unsupported_media_type"


def test_items_are_edited_only_by_the_team_and_only_with_real_hosts(
    api: dict[str, APIClient], world: dict[str, Any]
) -> None:
    plan = make_plan(world)
    item = plan.items.get()
    url = f"/api/v1/plans/{plan.pk}/items/{item.pk}/"
    assert api["bob"].patch(url, {"wave": 2}, format="json").status_code == 404
    assert api["dave"].patch(url, {"wave": 2}, format="json").status_code == 403
    assert api["alice"].patch(url, {"wave": 0}, format="json").status_code == 400
    assert api["alice"].patch(url, {"destination": "nowhere"}, format="json").status_code == 400
    assert api["alice"].patch(url, {"network_map": {"52:54:00:30:00:01": "no-net"}}, format="json").status_code == 409
    response = api["alice"].patch(url, {"destination": "auto", "wave": 3}, format="json")
    assert response.status_code == 200 and response.json()["destination"] is None
    assert response.json()["wave"] == 3
    assert api["alice"].patch(f"/api/v1/plans/{plan.pk}/items/999999/", {}, format="json").status_code == 404
    reaudit = api["alice"].post(f"/api/v1/plans/{plan.pk}/audit/")
    assert reaudit.status_code in (202, 409)
    assert api["dave"].post(f"/api/v1/plans/{plan.pk}/audit/").status_code == 403


def test_cancel_follows_the_permission_layer(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    plan = make_plan(world)
    assert api["bob"].post(f"/api/v1/plans/{plan.pk}/cancel/").status_code == 404
    assert api["dave"].post(f"/api/v1/plans/{plan.pk}/cancel/").status_code == 403
    assert api["alice"].post(f"/api/v1/plans/{plan.pk}/cancel/").json()["status"] == PlanStatus.CANCELLED
    assert error(api["alice"].post(f"/api/v1/plans/{plan.pk}/cancel/"))["code"] == "conflict"


# ---- runs, backups, audit log --------------------------------------------------------------------------


def test_runs_their_samples_validation_and_cancel(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    plan = make_plan(world)
    item = plan.items.select_related("vm").get()
    run = MigrationRun.objects.create(item=item, vm=item.vm, source=world["src"], destination=world["dst"], mode="live")
    from django.utils import timezone

    ProgressSample.objects.create(run=run, at=timezone.now(), phase="precopy", percent=40)
    assert [r["id"] for r in api["alice"].get("/api/v1/runs/").json()["results"]] == [run.pk]
    assert api["bob"].get("/api/v1/runs/").json()["count"] == 0
    assert api["bob"].get(f"/api/v1/runs/{run.pk}/").status_code == 404
    assert api["alice"].get(f"/api/v1/runs/{run.pk}/").json()["vm_name"] == "pay-1"
    assert api["alice"].get("/api/v1/runs/", {"plan": plan.pk, "status": "queued"}).json()["count"] == 1
    samples = api["alice"].get(f"/api/v1/runs/{run.pk}/samples/").json()
    assert samples["results"][0]["percent"] == 40
    assert api["alice"].get(f"/api/v1/runs/{run.pk}/validation/").json() == {"run": run.pk, "report": None}
    assert api["dave"].post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 403
    assert api["bob"].post(f"/api/v1/runs/{run.pk}/cancel/").status_code == 404
    cancelled = api["alice"].post(f"/api/v1/runs/{run.pk}/cancel/")
    assert cancelled.status_code == 200, cancelled.json()
    run.refresh_from_db()
    assert run.cancel_requested or run.status == "cancelled"


def test_backups_are_listed_by_team(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    for name in ("pay-1", "ana-1"):
        vm = world[name]
        Backup.objects.create(vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, host=world["src"], method="cold")
    assert [b["vm_name"] for b in api["alice"].get("/api/v1/backups/").json()["results"]] == ["pay-1"]
    assert [b["vm_name"] for b in api["bob"].get("/api/v1/backups/").json()["results"]] == ["ana-1"]
    assert api["dave"].get("/api/v1/backups/").json()["count"] == 2
    assert api["carol"].get("/api/v1/backups/", {"vm": str(world["ana-1"].uuid)}).json()["count"] == 1


def test_the_audit_log_is_for_approvers_and_auditors(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    make_plan(world)
    refused = api["alice"].get("/api/v1/audit-log/")
    assert refused.status_code == 403 and "auditors" in error(refused)["message"]
    entries = api["dave"].get("/api/v1/audit-log/", {"verb": "plan.create"}).json()
    assert entries["count"] == 1 and entries["results"][0]["actor_name"] == "alice"
    assert api["anonymous"].get("/api/v1/audit-log/").status_code == 401
    assert api["dave"].post("/api/v1/audit-log/", {}).status_code == 405
    # times with offsets the database cannot hold (schemathesis found this one) are converted or refused
    assert api["dave"].get("/api/v1/audit-log/", {"since": "1969-06-24T01:24:42-16:12"}).status_code == 200
    odd = api["dave"].get("/api/v1/audit-log/", {"since": "0001-01-01T00:00:00+18:00"})
    assert odd.status_code == 400 and "since" in error(odd)["fields"]


def test_evacuation_is_for_admins_and_marks_the_host(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    assert api["alice"].post("/api/v1/hosts/src/evacuate/").status_code == 403
    assert api["dave"].post("/api/v1/hosts/src/evacuate/").status_code == 403
    response = api["carol"].post("/api/v1/hosts/src/evacuate/")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert Host.objects.get(name="src").maintenance
    planned = MigrationPlan.objects.filter(pk__in=body["plans"])
    assert sorted(i.vm.name for p in planned for i in p.items.select_related("vm")) == [
        "ana-1",
        "pay-1",
        "pay-2",
        "pay-3",
    ]
    assert {p.team.slug for p in planned} == {"payments", "analytics"}


# ---- the schema and the browsable page -----------------------------------------------------------------


def test_the_schema_and_its_page_are_served_locally(api: dict[str, APIClient], world: dict[str, Any]) -> None:
    schema = api["alice"].get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    doc = schema.json()
    assert doc["openapi"].startswith("3.") and "/api/v1/plans/{id}/submit/" in doc["paths"]
    assert "tokenAuth" in doc["components"]["securitySchemes"]
    assert api["anonymous"].get("/api/v1/schema/").status_code == 401
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    page = client.get("/api/v1/docs/")
    html = page.content.decode()
    assert page.status_code == 200 and "swagger-ui" in html
    assert "https://" not in html and "http://" not in html.replace("http://testserver", "")  # no CDN
    script = client.get("/api/v1/docs/?script=")
    assert script.status_code == 200 and b"SwaggerUIBundle" in script.content


def test_the_owner_sets_the_group_on_the_vm_page(world: dict[str, Any]) -> None:
    vm = world["pay-1"]
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    page = client.get(f"/vms/{vm.uuid}/").content.decode()
    assert f"/vms/{vm.uuid}/group/" in page
    client.post(f"/vms/{vm.uuid}/group/", {"group": "shop <b>"})
    vm.refresh_from_db()
    assert vm.app == "shop <b>" and "shop &lt;b&gt;" in client.get(f"/vms/{vm.uuid}/").content.decode()
    auditor = Client()
    assert auditor.login(username="dave", password=PASSWORD)
    assert f"/vms/{vm.uuid}/group/" not in auditor.get(f"/vms/{vm.uuid}/").content.decode()
    assert auditor.post(f"/vms/{vm.uuid}/group/", {"group": "x"}).status_code == 403
    vm.refresh_from_db()
    assert vm.app == "shop <b>"
