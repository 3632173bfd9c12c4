"""Shared personas and helpers for the tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from inventory.hypervisor.domxml import METADATA_NS
from inventory.models import Host, Team
from inventory.permissions import APPROVERS, AUDITORS
from inventory.services.accounts import ensure_roles

REPO = Path(__file__).resolve().parent.parent
LABCTL = REPO / "lab" / "labctl"
TESTDRIVER_DIR = Path(settings.LIBVIRT_TEST_DIRS[0])
PASSWORD = "correct-horse-battery-staple"


def make_personas() -> dict[str, Any]:
    """alice (owner, payments), bob (owner, analytics), carol (approver), dave (auditor), eve (no team)."""
    ensure_roles()
    users = get_user_model().objects
    payments = Team.objects.get_or_create(slug="payments", defaults={"name": "Payments"})[0]
    analytics = Team.objects.get_or_create(slug="analytics", defaults={"name": "Analytics"})[0]
    people: dict[str, Any] = {"payments": payments, "analytics": analytics}
    for name in ("alice", "bob", "carol", "dave", "eve"):
        people[name] = users.create_user(name, password=PASSWORD)
    payments.members.add(people["alice"])
    analytics.members.add(people["bob"])
    people["carol"].groups.add(Group.objects.get(name=APPROVERS))
    people["carol"].is_staff = True
    people["carol"].save()
    people["dave"].groups.add(Group.objects.get(name=AUDITORS))
    return people


# ---- libvirt test driver node files -------------------------------------------------------------


def domain_xml(
    name: str,
    uuid: str,
    *,
    team: str = "",
    mac: str = "52:54:00:00:00:01",
    network: str = "default",
    disk_format: str = "qcow2",
    state: str = "running",
    memory_kib: int = 131072,
) -> str:
    team_xml = (
        f'<metadata><vmportal:owner xmlns:vmportal="{METADATA_NS}"><vmportal:team>{team}</vmportal:team>'
        f"</vmportal:owner></metadata>"
        if team
        else ""
    )
    from xml.sax.saxutils import escape

    return (
        f"<domain type='test'><name>{escape(name)}</name><uuid>{uuid}</uuid>{team_xml}"
        f"<memory unit='KiB'>{memory_kib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices><disk type='file' device='disk'><driver name='qemu' type='{disk_format}' cache='none'/>"
        f"<source file='/default-pool/{uuid}.img'/><target dev='vda' bus='virtio'/></disk>"
        f"<interface type='network'><mac address='{mac}'/><source network='{network}'/><model type='virtio'/></interface>"
        f"</devices></domain>"
    )


def write_node_file(
    name: str, domains: list[str], *, with_pool: bool = True, networks: tuple[str, ...] = ("default",)
) -> str:
    """Write a test-driver node file inside the allowed directory; return its test:/// URI."""
    TESTDRIVER_DIR.mkdir(parents=True, exist_ok=True)
    pool = (
        "<pool type='dir'><name>default-pool</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>"
        "<capacity unit='GiB'>100</capacity><allocation>0</allocation><available unit='GiB'>100</available>"
        "<target><path>/default-pool</path></target></pool>"
        if with_pool
        else ""
    )
    net = "".join(
        f"<network><name>{n}</name><forward mode='bridge'/><bridge name='br{i}'/></network>"
        for i, n in enumerate(networks)
    )
    body = (
        "<node><cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
        f"<threads>1</threads><active>4</active></cpu><memory>16777216</memory>{net}{pool}{''.join(domains)}</node>"
    )
    path = TESTDRIVER_DIR / f"{name}.xml"
    path.write_text(body)
    return f"test://{path}"


def node_file_host(name: str, domains: list[str], **kwargs: Any) -> Host:
    return Host.objects.create(name=name, uri=write_node_file(name, domains, **kwargs))


# ---- the lab ------------------------------------------------------------------------------------


LAB_LOCK = Path("/run/vmportal-lab.lock")
_lab_lock: IO[str] | None = None


def hold_lab_lock() -> None:
    """Take the lab for this process until it exits: one test session or benchmark at a time drives the
    lab's daemons (its guests, namespaces and addresses are fixed), whichever checkout it runs from."""
    global _lab_lock
    if _lab_lock is not None:
        return
    inherited = os.environ.get("VMPORTAL_LAB_LOCK_FD", "")
    if inherited.isdigit() and os.path.samestat(os.fstat(int(inherited)), LAB_LOCK.stat()):
        # a wrapper that already holds the lock for several runs (`scripts/with-lab-lock`) passed its
        # descriptor: locking that same open file succeeds at once
        handle = open(int(inherited), "a", closefd=False)  # noqa: SIM115 (held until the process exits)
    else:
        handle = LAB_LOCK.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"\nwaiting for another lab user to finish ({LAB_LOCK}) …", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    _lab_lock = handle


SERVICES_LOCK = Path("/run/vmportal-services.lock")
_services_lock: IO[str] | None = None


def share_services() -> None:
    """Every test session uses PostgreSQL and Redis: it holds a shared lock on them for its whole run, so
    that a test which must restart one of them (`services_to_myself`) waits until no other session runs."""
    global _services_lock
    if _services_lock is None:
        _services_lock = SERVICES_LOCK.open("a")
        fcntl.flock(_services_lock, fcntl.LOCK_SH)


@contextlib.contextmanager
def services_to_myself() -> Iterator[None]:
    """Hold PostgreSQL and Redis exclusively (for a test that restarts one), then share them again.
    Only a session holding the lab lock does this, and sessions take the lab lock before the shared one,
    so two sessions never wait for each other in a circle."""
    share_services()
    assert _services_lock is not None
    fcntl.flock(_services_lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(_services_lock, fcntl.LOCK_SH)


def lab_up() -> dict[str, Any]:
    """Bring the lab up (idempotent, seconds when it already runs) and return its lab.json."""
    subprocess.run([str(LABCTL), "up"], check=True, stdout=subprocess.DEVNULL)
    return json.loads(settings.LAB_STATE_FILE.read_text())


def manage_with_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a fresh process with exactly these VMPORTAL_* variables (none inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VMPORTAL_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def labctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LABCTL), *args], check=check, capture_output=True, text=True)
