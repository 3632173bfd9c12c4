"""The portal in a real browser: hostile names stay inert, owners see only their VMs, logging in and out works.

Set VMPORTAL_UI_SCREENSHOTS=/some/dir to also save full-page screenshots of the pages visited.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import pytest
from django.urls import reverse
from playwright.sync_api import Dialog, Page, expect
from pytest_django.live_server_helper import LiveServer

from inventory.models import VirtualMachine
from inventory.services.sync import sync_host
from tests.base import PASSWORD, domain_xml, make_personas, node_file_host

HOST = "ui-fleet"
PAY_UUID = "aaaaaaaa-0000-0000-0000-0000000000a1"
ANA_UUID = "bbbbbbbb-0000-0000-0000-0000000000b2"
# Names a hypervisor can supply (libvirt refuses '/', so no closing tags)...
HOSTILE = ["<img src=x onerror=alert(1)>", "<svg onload=alert(2)>", "\"quoted\" 'single' & <b>bold<b>"]
# ...and one libvirt would refuse, written straight into the database.
RENAMED = '<script>alert(3)</script>\nline "two"'
XML_QUOTES = {'"': "&quot;", "'": "&apos;"}
SHOTS = os.environ.get("VMPORTAL_UI_SCREENSHOTS", "")


def squash(text: str) -> str:
    """Whitespace as a browser renders it in normal flow: runs (newlines included) become one space."""
    return " ".join(text.split())


def visible_text(page: Page) -> str:
    return squash(page.locator("body").inner_text())


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def watch(page: Page) -> dict[str, list[str]]:
    """Record every dialog (alert/confirm/prompt) and uncaught script error the page produces."""
    seen: dict[str, list[str]] = {"dialogs": [], "errors": []}

    def on_dialog(dialog: Dialog) -> None:
        seen["dialogs"].append(f"{page.url}: {dialog.type} {dialog.message!r}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: seen["errors"].append(f"{page.url}: {exc}"))
    return seen


def log_in(page: Page, live_server: LiveServer, username: str, password: str = PASSWORD) -> None:
    """Fill in and submit the real login form."""
    page.goto(f"{live_server.url}{reverse('login')}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def assert_inert(page: Page) -> None:
    """Nothing the names carry became markup: no injected element, handler attribute or inline script."""
    assert page.locator("[onerror], [onload]").count() == 0, page.url
    assert page.locator("img[src='x'], svg").count() == 0, page.url
    assert page.locator("b", has_text="bold").count() == 0, page.url
    assert page.locator("script:not([src])").count() == 0, page.url


@pytest.fixture
def fleet(transactional_db: None) -> dict[str, Any]:
    """A host synced from a test-driver node file: one VM per team, hostile names, and one renamed in the DB."""
    people = make_personas()
    domains = [
        domain_xml("pay-web", PAY_UUID, team="payments", mac="52:54:00:00:0a:01"),
        domain_xml("ana-batch", ANA_UUID, team="analytics", mac="52:54:00:00:0a:02"),
        domain_xml("to-rename", str(uuid.UUID(int=300)), team="payments", mac="52:54:00:00:0a:03"),
    ] + [
        domain_xml(name, str(uuid.UUID(int=200 + i)), team="payments", mac=f"52:54:00:00:0b:{i:02x}")
        for i, name in enumerate(HOSTILE)
    ]
    host = node_file_host(HOST, domains)
    assert sync_host(host.pk).ok
    assert VirtualMachine.objects.filter(name__in=HOSTILE).count() == len(HOSTILE)
    assert VirtualMachine.objects.filter(name="to-rename").update(name=RENAMED) == 1
    return {**people, "host": host}


def test_hostile_vm_names_render_inert_in_a_browser(page: Page, live_server: LiveServer, fleet: dict[str, Any]) -> None:
    seen = watch(page)
    page.evaluate("alert('probe')")  # the recorder itself works...
    assert len(seen["dialogs"]) == 1
    seen["dialogs"].clear()  # ...and from here on must stay empty

    log_in(page, live_server, "carol")
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator(".who")).to_have_text("carol · approver")
    names = [*HOSTILE, RENAMED]

    # The fleet dashboard lists hosts, not VM names: the host card and the count of visible VMs.
    expect(page.get_by_role("link", name=HOST, exact=True)).to_be_visible()
    assert "6 VMs you can see" in visible_text(page)
    assert_inert(page)
    shot(page, "dashboard")

    page.goto(f"{live_server.url}{reverse('inventory:vm_list')}")
    text = visible_text(page)
    for name in names:
        assert squash(name) in text, name
        expect(page.get_by_role("link", name=squash(name), exact=True)).to_have_count(1)
    assert_inert(page)
    shot(page, "vm_list")

    # The search box echoes the query back into an attribute: a match, then a query that tries to leave it.
    for query, found in (
        (HOSTILE[2][:17], HOSTILE[2]),
        ('"><img src=x onerror=alert(4)>', "No VMs to show with these filters."),
    ):
        page.goto(f"{live_server.url}{reverse('inventory:vm_list')}?q={quote(query)}")
        expect(page.get_by_role("searchbox")).to_have_value(query)
        expect(page.locator("table.vms tbody tr")).to_have_count(1)
        expect(page.locator("table.vms tbody tr")).to_contain_text(found)
        assert_inert(page)

    page.goto(f"{live_server.url}{fleet['host'].get_absolute_url()}")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Host {HOST}")
    text = visible_text(page)
    for name in names:
        assert squash(name) in text, name
    assert_inert(page)
    shot(page, "host_detail")

    vms = list(VirtualMachine.objects.order_by("name"))
    assert len(vms) == 6
    for vm in vms:
        page.goto(f"{live_server.url}{vm.get_absolute_url()}")
        expect(page.get_by_role("heading", level=1)).to_have_text(f"VM {squash(vm.name)}")
        assert squash(vm.name) in squash(page.title()), vm.name
        xml = page.locator("pre.xml")
        expect(xml).to_be_hidden()
        page.get_by_text("Show the XML").click()
        expect(xml).to_be_visible()
        # The XML is shown as text, exactly as libvirt returned it, tags and entity references included.
        assert xml.inner_text().strip() == vm.xml.strip(), vm.name
        assert "<domain type='test'" in xml.inner_text()
        if vm.name in HOSTILE:  # libvirt writes the name as XML character data, entity references visible
            assert f"<name>{escape(vm.name, XML_QUOTES)}</name>" in xml.inner_text(), vm.name
        assert_inert(page)
        if vm.name == HOSTILE[0]:
            shot(page, "vm_detail")

    assert seen["dialogs"] == []
    assert seen["errors"] == []


def test_an_app_owner_sees_only_their_teams_vms(page: Page, live_server: LiveServer, fleet: dict[str, Any]) -> None:
    log_in(page, live_server, "bob")
    expect(page).to_have_url(f"{live_server.url}/")
    assert "1 VM you can see" in visible_text(page)

    page.goto(f"{live_server.url}{reverse('inventory:vm_list')}")
    rows = page.locator("table.vms tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("ana-batch")
    text = visible_text(page)
    for other in ["pay-web", *HOSTILE, RENAMED]:
        assert squash(other) not in text, other
    shot(page, "vm_list_owner")

    response = page.goto(f"{live_server.url}{reverse('inventory:vm_detail', args=[PAY_UUID])}")
    assert response is not None and response.status == 404
    expect(page.locator("body")).to_contain_text(re.compile("not found", re.IGNORECASE))
    assert "pay-web" not in visible_text(page)

    response = page.goto(f"{live_server.url}{reverse('inventory:vm_detail', args=[ANA_UUID])}")
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("VM ana-batch")


def test_wrong_password_is_refused_and_logout_ends_the_session(
    page: Page, live_server: LiveServer, fleet: dict[str, Any]
) -> None:
    login_url = f"{live_server.url}{reverse('login')}"
    log_in(page, live_server, "carol", "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    expect(page).to_have_url(login_url)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    shot(page, "login_error")

    # Still anonymous: a page sends us back to the form, which then returns us where we were going.
    page.goto(f"{live_server.url}{reverse('inventory:vm_list')}")
    expect(page).to_have_url(f"{login_url}?next=/vms/")
    page.get_by_label("User name").fill("carol")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}{reverse('inventory:vm_list')}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Virtual machines")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(login_url)
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(f"{login_url}?next=/")
