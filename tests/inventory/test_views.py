"""Pages: who sees what, forms that refuse bad input, escaping, and query counts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory.models import Host, VirtualMachine
from inventory.services.sync import sync_host
from migrations_app.models import AuditLogEntry
from tests.base import PASSWORD, domain_xml, node_file_host

pytestmark = pytest.mark.django_db

# libvirt itself refuses '/' in names, so the names a real hypervisor can supply carry no closing tags;
# the test below also writes names libvirt would refuse straight into the database.
HOSTILE = ["<img src=x onerror=alert(1)>", "\"quoted\" 'single' & <b>bold<b>", "<svg onload=alert(2)>"]
PAY_UUID = "aaaaaaaa-0000-0000-0000-000000000001"
ANA_UUID = "bbbbbbbb-0000-0000-0000-000000000002"


def login(client: Client, user: Any) -> Client:
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def fleet(people: dict[str, Any]) -> dict[str, Any]:
    domains = [
        domain_xml("pay-web", PAY_UUID, team="payments", mac="52:54:00:00:01:01"),
        domain_xml("ana-batch", ANA_UUID, team="analytics", mac="52:54:00:00:01:02"),
    ] + [
        domain_xml(name, str(uuid.UUID(int=100 + i)), team="payments", mac=f"52:54:00:00:02:{i:02x}")
        for i, name in enumerate(HOSTILE)
    ]
    host = node_file_host("fleet-a", domains)
    assert sync_host(host.pk).ok
    return {**people, "host": host}


def test_pages_need_a_login(client: Client, fleet: dict[str, Any]) -> None:
    for url in (
        reverse("inventory:dashboard"),
        reverse("inventory:vm_list"),
        reverse("inventory:vm_detail", args=[PAY_UUID]),
        reverse("inventory:host_detail", args=["fleet-a"]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_an_app_owner_sees_only_their_teams_vms(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["bob"])
    page = client.get(reverse("inventory:vm_list")).content.decode()
    assert "ana-batch" in page and "pay-web" not in page
    host_page = client.get(reverse("inventory:host_detail", args=["fleet-a"])).content.decode()
    assert "ana-batch" in host_page and "pay-web" not in host_page


def test_it_returns_404_for_another_teams_vm(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["bob"])
    response = client.get(reverse("inventory:vm_detail", args=[PAY_UUID]))
    assert response.status_code == 404
    assert "not one of your teams" in response.content.decode()  # the portal's own page, with a way back
    assert client.get(reverse("inventory:vm_detail", args=[ANA_UUID])).status_code == 200
    login(client, fleet["eve"])  # in no team
    assert client.get(reverse("inventory:vm_detail", args=[ANA_UUID])).status_code == 404


def test_approvers_and_auditors_see_everything(client: Client, fleet: dict[str, Any]) -> None:
    for who in ("carol", "dave"):
        login(client, fleet[who])
        assert client.get(reverse("inventory:vm_detail", args=[PAY_UUID])).status_code == 200
        page = client.get(reverse("inventory:vm_list")).content.decode()
        assert "pay-web" in page and "ana-batch" in page


def test_owners_and_auditors_cannot_register_hosts(client: Client, fleet: dict[str, Any]) -> None:
    for who in ("alice", "dave"):
        login(client, fleet[who])
        assert client.get(reverse("inventory:host_register")).status_code == 403
        response = client.post(reverse("inventory:host_register"), {"name": "x1", "uri": "test:///default"})
        assert response.status_code == 403
        assert client.post(reverse("inventory:host_sync", args=["fleet-a"])).status_code == 403
    assert not Host.objects.filter(name="x1").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("qemu+ext:///system?command=/bin/sh", "runs an arbitrary local command"),
        ("qemu+ssh://kvm1/system?netcat=/bin/nc", "arbitrary program on the remote host"),
        ("qemu+unix:///system?socket=/tmp/x.sock", "allowed directories"),
        ("qemu+ssh://kvm1/system?keyfile=/root/.ssh/id_rsa", "allowed directories"),
        ("not a uri", "spaces or control characters"),
    ],
)
def test_registration_refuses_bad_uris_and_saves_nothing(
    client: Client, fleet: dict[str, Any], uri: str, message: str
) -> None:
    login(client, fleet["carol"])
    response = client.post(reverse("inventory:host_register"), {"name": "kvm1", "uri": uri})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Host.objects.filter(name="kvm1").exists()
    assert not AuditLogEntry.objects.filter(verb="host.register").exists()


def test_an_admin_registers_a_host_and_its_sync_is_queued(
    client: Client, fleet: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    login(client, fleet["carol"])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("inventory:host_register"), {"name": "kvm1", "uri": "qemu+tls://kvm1.example.com/system"}
        )
    host = Host.objects.get(name="kvm1")
    assert response.status_code == 302 and response["Location"] == host.get_absolute_url()
    assert len(callbacks) == 1  # the first sync, enqueued after commit
    entry = AuditLogEntry.objects.get(verb="host.register")
    assert entry.actor == fleet["carol"] and entry.after["uri"] == "qemu+tls://kvm1.example.com/system"


def test_a_duplicate_host_name_is_refused(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["carol"])
    response = client.post(reverse("inventory:host_register"), {"name": "fleet-a", "uri": "test:///default"})
    assert "already registered" in response.content.decode()
    assert Host.objects.filter(name="fleet-a").count() == 1


def test_test_connection_reports_versions(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["carol"])
    response = client.post(reverse("inventory:host_test_connection", args=["fleet-a"]), follow=True)
    text = response.content.decode()
    assert "answered in" in text and "libvirt 9." in text


def test_hostile_vm_names_render_inert_on_every_page(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["carol"])
    VirtualMachine.objects.filter(name=HOSTILE[1]).update(name='<script>alert(3)</script>\nline "two"')
    urls = [
        reverse("inventory:dashboard"),
        reverse("inventory:vm_list"),
        reverse("inventory:vm_list") + "?q=%3C",
        reverse("inventory:host_detail", args=["fleet-a"]),
    ]
    urls += [vm.get_absolute_url() for vm in VirtualMachine.objects.all()]
    for url in urls:
        html = client.get(url).content.decode()
        for raw in ("<img src=x", "<svg onload", "<script>alert", "<b>bold"):
            assert raw not in html, (url, raw)
    detail = client.get(VirtualMachine.objects.get(name=HOSTILE[0]).get_absolute_url()).content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail  # shown, escaped, in title, heading and XML
    listing = client.get(reverse("inventory:vm_list")).content.decode()
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in listing


def test_vm_list_filters_and_searches(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["carol"])
    page = client.get(reverse("inventory:vm_list"), {"team": "analytics"}).content.decode()
    assert "ana-batch" in page and "pay-web" not in page
    page = client.get(reverse("inventory:vm_list"), {"q": PAY_UUID}).content.decode()
    assert "pay-web" in page and "ana-batch" not in page
    page = client.get(reverse("inventory:vm_list"), {"host": "nope"}).content.decode()
    assert "No VMs to show" in page


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_list_pages_do_not_grow_queries_with_rows(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["carol"])
    urls = [
        reverse("inventory:dashboard"),
        reverse("inventory:vm_list"),
        reverse("inventory:host_detail", args=["fleet-a"]),
    ]
    before = {url: _queries(client, url) for url in urls}
    more = [
        domain_xml(f"more-{i}", str(uuid.UUID(int=5000 + i)), team="payments", mac=f"52:54:00:00:09:{i:02x}")
        for i in range(40)
    ]
    sync_host(node_file_host("fleet-b", more).pk)
    after = {url: _queries(client, url) for url in urls}
    assert before == after
    assert max(after.values()) <= 15


def test_an_admin_assigns_a_team_and_it_is_audited(client: Client, fleet: dict[str, Any]) -> None:
    login(client, fleet["carol"])
    response = client.post(reverse("inventory:vm_assign_team", args=[PAY_UUID]), {"team": fleet["analytics"].pk})
    assert response.status_code == 302
    vm = VirtualMachine.objects.get(uuid=PAY_UUID)
    assert vm.team == fleet["analytics"]
    assert AuditLogEntry.objects.filter(verb="vm.assign_team", target_id=str(vm.pk)).exists()
    login(client, fleet["alice"])
    # another team's VM: 404 (its existence is not given away); one of her own team's: 403 (owners cannot)
    assert client.post(reverse("inventory:vm_assign_team", args=[ANA_UUID]), {"team": ""}).status_code == 404
    own = VirtualMachine.objects.filter(team=fleet["payments"]).first()
    assert own is not None
    assert client.post(reverse("inventory:vm_assign_team", args=[own.uuid]), {"team": ""}).status_code == 403


def test_csrf_is_enforced_on_posts(fleet: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    login(client, fleet["carol"])
    assert client.post(reverse("inventory:host_sync", args=["fleet-a"])).status_code == 403


def test_audit_log_is_append_only(fleet: dict[str, Any]) -> None:
    from migrations_app.services.auditlog import record

    entry = record(fleet["carol"], "test.verb", fleet["host"])
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    with pytest.raises(ValueError, match="append-only"):
        entry.delete()
