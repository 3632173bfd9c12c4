"""The VM page lists the VM's backups with their age, and the source disks a cold move keeps."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from inventory.models import Host, VirtualMachine
from migrations_app.models import Backup, RetainedDisk
from migrations_app.services.backups import latest_verified_backup
from tests.base import PASSWORD, make_personas


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    return make_personas()


def test_the_vm_page_lists_backups_with_their_age_and_kept_disks(people: dict[str, Any]) -> None:
    host = Host.objects.create(name="hb1", uri="test:///default")
    vm = VirtualMachine.objects.create(uuid=uuid.uuid4(), name="web-9", host=host, team=people["payments"])
    now = timezone.now()
    old = Backup.objects.create(
        vm=vm, vm_name=vm.name, vm_uuid=vm.uuid, host=host, pool="vmportal-backups", method="copy",
        state="ready", verified=True, total_bytes=3 * 1024 * 1024, created_at=now - timedelta(days=3),
        expires_at=now + timedelta(days=11), disks=[{"target": "vda", "format": "qcow2"}],
    )  # fmt: skip
    Backup.objects.create(
        vm=vm, vm_name=vm.name, vm_uuid=vm.uuid, host=host, pool="vmportal-backups", method="push",
        state="failed", error="The backup job failed.", created_at=now - timedelta(hours=2),
    )  # fmt: skip
    RetainedDisk.objects.create(
        vm=vm, host=host, target="vda", path="/srv/x/web-9.vmdk", retain_until=now + timedelta(days=14)
    )
    client = Client()
    assert client.login(username="alice", password=PASSWORD)
    page = client.get(vm.get_absolute_url())
    assert page.status_code == 200
    text = page.content.decode()
    assert "Backups" in text and "3\xa0days" in text and "2\xa0hours" in text
    assert "The backup job failed." in text and "verified" in text
    assert "/srv/x/web-9.vmdk" in text
    # BAK-RECENT's one function: verified and young enough, or nothing
    assert latest_verified_backup(vm, timedelta(days=7)) == old
    assert latest_verified_backup(vm, timedelta(days=1)) is None
