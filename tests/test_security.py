"""Security hardening: each rule below fails without its fix.

1. the migration URI is checked wherever it can be set (admin included) and right before libvirt gets it;
3. nothing leaks between teams (host pages, the memory check's evidence);
4. rate limits, the audits' own queue, bounds on what a hypervisor can make the portal store;
5. test mode refused beside production settings, the Content-Security-Policy, safe file names.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import django_rq
import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse

from inventory.hypervisor import OperationFailed
from inventory.hypervisor.names import check_volume_name, safe_file_name
from inventory.hypervisor.storage import _volume_xml
from inventory.models import Host, VirtualMachine
from inventory.services.sync import MAX_TEXT_CHARS, MAX_XML_CHARS, sync_host
from migrations_app import jobs as migration_jobs
from migrations_app.checks.registry import OTHER_TEAMS
from migrations_app.choices import Area, AuditStatus, Severity
from migrations_app.engine.shared import RunRefused, peer_uri
from migrations_app.models import Audit, AuditLogEntry, CheckResult, MigrationPlan
from migrations_app.services import plans as plan_services
from tests.base import REPO, domain_xml, manage_with_env, node_file_host

pytestmark = pytest.mark.django_db
PAY = "aaaaaaaa-3333-0000-0000-000000000001"


@pytest.fixture
def world(people: dict[str, Any]) -> dict[str, Any]:
    src = node_file_host(
        "sec-src", [domain_xml("pay-sec", PAY, team="payments", mac="52:54:00:30:00:01", network="n")], networks=("n",)
    )
    dst = node_file_host("sec-dst", [], networks=("n",))
    assert sync_host(src.pk).ok and sync_host(dst.pk).ok
    vm = VirtualMachine.objects.get(uuid=PAY)
    return {**people, "src": src, "dst": dst, "vm": vm}


# ---- 1. the migration URI ------------------------------------------------------------------------------


def test_the_admin_refuses_a_migration_uri_outside_the_allow_list(client: Client, world: dict[str, Any]) -> None:
    host: Host = world["src"]
    client.force_login(world["carol"])
    url = reverse("admin:inventory_host_change", args=[host.pk])
    form = client.get(url).context["adminform"].form
    data = {k: ("" if v is None else v) for k, v in form.initial.items() if k in form.fields}
    data["migration_uri"] = "qemu+ssh://10.0.0.9/system?keyfile=/etc/vmportal/keys/k;command=/bin/sh"
    response = client.post(url, data)
    assert response.status_code == 200 and "command=" in response.content.decode()
    host.refresh_from_db()
    assert host.migration_uri == ""

    data["migration_uri"] = "qemu+tls://10.0.0.9/system"
    data["max_outgoing"] = "3"
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    host.refresh_from_db()
    assert host.migration_uri == "qemu+tls://10.0.0.9/system" and host.max_outgoing == 3
    entry = AuditLogEntry.objects.get(verb="host.update", target_id=str(host.pk))
    assert entry.actor == world["carol"]
    assert entry.before["migration_uri"] == "" and entry.after["migration_uri"] == "qemu+tls://10.0.0.9/system"


def test_the_engine_checks_the_migration_uri_again_before_libvirt_gets_it(world: dict[str, Any]) -> None:
    host: Host = world["dst"]
    # a row written before the allow-list tightened, or behind the services' back
    Host.objects.filter(pk=host.pk).update(migration_uri="qemu+ssh://10.0.0.9/system?netcat=/tmp/evil")
    host.refresh_from_db()
    with pytest.raises(RunRefused, match="netcat"):
        peer_uri(host)
    Host.objects.filter(pk=host.pk).update(migration_uri="qemu+tcp://10.0.0.9/system")
    host.refresh_from_db()
    assert peer_uri(host) == "qemu+tcp://10.0.0.9/system"


def test_sync_refuses_a_stored_uri_outside_the_allow_list(world: dict[str, Any]) -> None:
    host: Host = world["src"]
    Host.objects.filter(pk=host.pk).update(uri="qemu+ssh://10.0.0.9/system?command=/bin/sh")
    result = sync_host(host.pk)
    host.refresh_from_db()
    assert not result.ok and "command=" in host.last_error and host.reachability == "unreachable"


# ---- 3. nothing leaks between teams ---------------------------------------------------------------------


def test_app_owners_see_host_names_capacity_and_health_only(client: Client, world: dict[str, Any]) -> None:
    host: Host = world["src"]
    Host.objects.filter(pk=host.pk).update(
        migration_uri="qemu+tls://sec-src.storage.example.com/system",
        last_error="The host's libvirt daemon cannot be reached.",
        last_error_raw="Failed to connect socket to '/var/run/secret-socket-path'",
    )
    secrets_on_page = [
        host.uri,
        "sec-src.storage.example.com",
        "/var/run/secret-socket-path",
        host.pools.get().target_path,
        "Host CPU XML",
    ]
    url = reverse("inventory:host_detail", args=[host.name])
    client.force_login(world["alice"])
    page = client.get(url).content.decode()
    assert "sec-src" in page and "Memory" in page and "cannot be reached" in page
    assert [s for s in secrets_on_page if s in page] == []
    client.force_login(world["carol"])
    page = client.get(url).content.decode()
    assert [s for s in secrets_on_page if s not in page] == []


def test_the_memory_check_names_other_teams_moves_to_approvers_only(client: Client, world: dict[str, Any]) -> None:
    plan = plan_services.create_plan(world["alice"], vm_ids=[world["vm"].pk], destination_id=world["dst"].pk)
    audit = Audit.objects.create(plan=plan, status=AuditStatus.DONE, reason="edit")
    CheckResult.objects.create(
        audit=audit,
        item=plan.items.get(),
        check_id="RES-MEM",
        area=Area.RESOURCES,
        severity=Severity.PASS,
        message="enough memory",
        evidence={
            "source": {"memory": 1},
            "destination": {
                "free": 10,
                "approved inbound": {
                    "count": 1,
                    "memory": 4242424242,
                    OTHER_TEAMS: [{"plan": "Analytics quarter-end move", "vm": "ana-ledger-7", "memory": 4242424242}],
                },
            },
        },
    )
    url = reverse("migrations_app:plan_detail", args=[plan.pk])
    client.force_login(world["alice"])
    page = client.get(url).content.decode()
    assert "4242424242" in page  # counts and totals
    assert "ana-ledger-7" not in page and "Analytics quarter-end move" not in page
    for who in ("carol", "dave"):
        client.force_login(world[who])
        page = client.get(url).content.decode()
        assert "ana-ledger-7" in page and "Analytics quarter-end move" in page


# ---- 4. abuse and limits --------------------------------------------------------------------------------


@override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "plan-audit": "2/h", "plan-create": "1/h"})
def test_plan_creation_and_reaudits_are_rate_limited_per_user(client: Client, world: dict[str, Any]) -> None:
    client.force_login(world["alice"])
    create = {"vms": [world["vm"].pk], "destination": world["dst"].pk, "mode": "auto", "change_type": "normal"}
    create |= {"max_downtime_ms": 300, "parallel_connections": 1, "compression": "none"}
    create |= {"on_no_convergence": "abort", "shutdown_timeout_s": 120}
    assert client.post(reverse("migrations_app:plan_create"), create).status_code == 302
    refused = client.post(reverse("migrations_app:plan_create"), create)
    assert refused.status_code == 429 and "at most 1 times per h" in refused.content.decode()
    assert MigrationPlan.objects.count() == 1

    plan = MigrationPlan.objects.get()
    url = reverse("migrations_app:plan_reaudit", args=[plan.pk])
    audits = plan.audits.count()
    assert [client.post(url).status_code for _ in range(3)] == [302, 302, 429]
    assert plan.audits.count() == audits + 2
    client.force_login(world["bob"])  # per user: another owner is not held up
    assert client.post(reverse("migrations_app:plan_reaudit", args=[plan.pk])).status_code != 429


@override_settings(RATE_LIMITS={**settings.RATE_LIMITS, "host-test": "2/m"})
def test_test_connection_is_rate_limited_per_user(client: Client, world: dict[str, Any]) -> None:
    client.force_login(world["carol"])
    url = reverse("inventory:host_test_connection", args=["sec-src"])
    assert [client.post(url).status_code for _ in range(3)] == [302, 302, 429]


def test_audits_run_on_their_own_queue_and_worker(world: dict[str, Any]) -> None:
    plan = plan_services.create_plan(world["alice"], vm_ids=[world["vm"].pk], destination_id=world["dst"].pk)
    job_id = migration_jobs.enqueue_audit(plan.audits.get().pk)
    try:
        job = django_rq.get_queue("audits").fetch_job(job_id)
        assert job is not None and job.origin == "audits"
    finally:
        django_rq.get_queue("audits").remove(job_id)
    serve = (REPO / "scripts" / "serve").read_text()
    workers = re.findall(r"rqworker (?:--with-scheduler )?([a-z ]+?)(?: >|$)", serve, re.MULTILINE)
    assert "audits" in workers and all("audits" not in w.split() for w in workers if w != "audits"), workers


def test_what_a_hypervisor_reports_is_bounded_with_a_note(world: dict[str, Any]) -> None:
    vm_uuid = str(uuid.UUID(int=333))
    huge = domain_xml("chatty", vm_uuid, team="payments").replace(
        "<memory", f"<title>{'t' * 400}</title><description>{'d' * (MAX_XML_CHARS + 1000)}</description><memory"
    )
    host = node_file_host("sec-chatty", [huge])
    assert sync_host(host.pk).ok
    vm = VirtualMachine.objects.get(uuid=vm_uuid)
    assert len(vm.description) < MAX_TEXT_CHARS + 100 and "more characters were not stored" in vm.description
    assert len(vm.xml) < MAX_XML_CHARS + 100 and vm.xml.endswith("more characters were not stored -->")
    assert len(vm.title) == 255


# ---- 5. configuration and defence in depth ---------------------------------------------------------------


_manage = manage_with_env


@pytest.mark.parametrize(
    "production",
    [
        {"VMPORTAL_ALLOWED_HOSTS": "portal.example.com"},
        {"VMPORTAL_SECRET_KEY": "k" * 60},
        {"VMPORTAL_CSRF_TRUSTED_ORIGINS": "https://portal.example.com"},
        {"VMPORTAL_BEHIND_TLS_PROXY": "1"},
    ],
)
def test_test_mode_refuses_to_start_beside_production_settings(production: dict[str, str]) -> None:
    result = _manage("check", VMPORTAL_TESTING="1", **production)
    assert result.returncode != 0
    assert "VMPORTAL_TESTING=1 is for the test suite" in result.stderr and next(iter(production)) in result.stderr


def test_production_trusts_no_lab_socket_directory() -> None:
    production = {"VMPORTAL_SECRET_KEY": "p" * 60, "VMPORTAL_ALLOWED_HOSTS": "portal.example.com"}
    code = "from django.conf import settings; print(settings.LIBVIRT_SOCKET_DIRS)"
    result = _manage("shell", "-c", code, **production)
    assert result.returncode == 0, result.stderr
    assert "vmportal-lab" not in result.stdout and "/run/libvirt" in result.stdout
    assert "vmportal-lab" in str(settings.LIBVIRT_SOCKET_DIRS)  # tests and development use the lab


def test_every_page_carries_a_content_security_policy_without_inline_script(
    client: Client, world: dict[str, Any]
) -> None:
    client.force_login(world["alice"])
    for url in ("/", "/vms/", "/plans/", "/login/", "/no-such-page/"):
        policy = client.get(url).headers.get("Content-Security-Policy", "")
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives.get("script-src") == "'self'", (url, policy)
        assert "unsafe" not in policy and directives.get("object-src") == "'none'"
        assert directives.get("frame-ancestors") == "'none'"


def test_templates_have_no_inline_script_or_event_handlers() -> None:
    for template in (REPO / "templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert not re.search(r"\son[a-z]+\s*=", text), template
        assert "javascript:" not in text, template


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ("vmportal-backup", "../../etc/cron.d/x", "b1", "vda.qcow2"),
            "vmportal-backup-.._.._etc_cron.d_x-b1-vda.qcow2",
        ),
        (("..", "vda.raw"), "vda.raw"),
        (("web 01", "sd$(reboot)a.qcow2"), "web_01-sd_reboot_a.qcow2"),
        (("", ""), "unnamed"),
    ],
)
def test_file_names_built_from_vm_names_and_targets_are_one_plain_component(
    parts: tuple[str, ...], expected: str
) -> None:
    name = safe_file_name(*parts)
    assert name == expected and "/" not in name and check_volume_name(name) == name


@pytest.mark.parametrize("name", ["../escape.qcow2", "..", "a/b", "x\x00y", ""])
def test_no_volume_is_defined_with_a_name_that_is_not_one_plain_file_name(name: str) -> None:
    with pytest.raises(OperationFailed, match="single plain file name"):
        _volume_xml(name, 1024, "qcow2")
