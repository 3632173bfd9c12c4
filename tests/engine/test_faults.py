"""Faults around a live move: cancel and worker death during the backup phase, the destination's guest
bridge removed between audit and cutover, PostgreSQL and Redis restarted mid-move. Each ends with the VM
on exactly one host, running, and a run whose final state says what happened."""

from __future__ import annotations

import glob
import subprocess
import threading
from typing import Any

import libvirt
import pytest
from django.db import connection
from django.utils import timezone

from inventory.hypervisor import migrate as hv
from inventory.models import Host
from migrations_app.choices import TERMINAL_RUN_STATES, RunStatus
from migrations_app.engine import live
from migrations_app.models import Backup, MigrationRun
from migrations_app.services.runs import request_cancel, start_item
from tests.base import labctl, services_to_myself
from tests.cold.conftest import cold_item
from tests.engine.conftest import Workers, plan_item
from tests.engine.linux import define_linux, http, wait_for
from tests.labguests import DiskSpec, LabGuests, NicSpec

pytestmark = [pytest.mark.lab]


def _ended(run_id: int, timeout: float = 400) -> MigrationRun:
    def ended() -> bool:
        try:
            return MigrationRun.objects.get(pk=run_id).status in TERMINAL_RUN_STATES
        except Exception:  # the database is restarting: ask again
            connection.close()
            return False

    wait_for(ended, timeout=timeout)
    return MigrationRun.objects.get(pk=run_id)


def _disk_guest(lab_guests: LabGuests) -> Any:
    # enough written data that the push backup takes a while
    return lab_guests.define(
        "h1",
        memory_mib=64,
        disks=[DiskSpec(pool="local", format="raw", capacity_mib=1024, write_mib=768)],
        nics=[NicSpec(network="app-net")],
    )


def test_cancel_during_the_backup_phase_aborts_the_backup_and_leaves_the_vm_on_the_source(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = _disk_guest(lab_guests)
    item = cold_item(people, lab_hosts, guest, "h2", mode="live", fresh_backup=True)
    run = start_item(people["alice"], item)
    thread = threading.Thread(target=_execute, args=(run.pk,), daemon=True)
    thread.start()
    wait_for(lambda: MigrationRun.objects.get(pk=run.pk).status == RunStatus.BACKUP, timeout=60, interval=0.05)
    request_cancel(people["alice"], MigrationRun.objects.get(pk=run.pk))
    thread.join(timeout=120)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, (run.status, run.error, run.outcome)
    assert "during the backup" in run.outcome, run.outcome
    assert lab_guests.where(guest) == {"h1": "running"}
    assert not hv.locate(lab_hosts["h1"].uri, guest.uuid).job_active  # the backup job really ended
    assert Backup.objects.get(run=run).state == "failed"


def test_a_worker_killed_during_the_backup_phase_is_adopted_the_backup_aborted_and_the_vm_stays(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    guest = _disk_guest(lab_guests)
    item = cold_item(people, lab_hosts, guest, "h2", mode="live", fresh_backup=True)
    workers.start(VMPORTAL_RUN_LEASE_SECONDS="600")
    workers.start(VMPORTAL_RUN_LEASE_SECONDS="600")
    workers.start_watcher(VMPORTAL_RUN_LEASE_SECONDS="600")
    run = start_item(people["alice"], item)
    # the run says "backup" a moment before the backup is recorded and started: kill once it runs
    wait_for(
        lambda: (
            MigrationRun.objects.get(pk=run.pk).status == RunStatus.BACKUP
            and Backup.objects.filter(run_id=run.pk).exists()
        ),
        timeout=60,
        interval=0.05,
    )
    workers.kill(workers.owner(MigrationRun.objects.get(pk=run.pk).worker))
    run = _ended(run.pk, timeout=120)
    assert run.status == RunStatus.FAILED, (run.status, run.error, run.outcome)
    assert "worker stopped" in run.error and "keeps running on h1" in run.outcome
    assert lab_guests.where(guest) == {"h1": "running"}
    assert not hv.locate(lab_hosts["h1"].uri, guest.uuid).job_active
    assert Backup.objects.get(run=run).state == "failed"


def _execute(run_id: int) -> None:
    try:
        live.execute(run_id)
    finally:
        connection.close()


def test_a_destination_bridge_removed_after_the_audit_is_caught_by_the_pre_flight_recheck(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any]
) -> None:
    guest = lab_guests.define("h1", memory_mib=64, nics=[NicSpec(network="app-net")])
    # a network of its own on h2 over a bridge of its own, so no other guest loses its link
    labctl("exec", "h2", "--", "ip", "link", "add", "br-t-gone", "type", "bridge")
    conn = libvirt.open(lab_guests.hosts["h2"]["uri"])
    net = conn.networkDefineXML(
        "<network><name>t-gone</name><forward mode='bridge'/><bridge name='br-t-gone'/></network>"
    )
    try:
        net.create()
        item = plan_item(people, lab_hosts, guest, "h2")
        item.network_map = {mac: "t-gone" for mac in item.network_map}
        item.save()
        assert hv.network_problems(lab_hosts["h2"].uri, ["t-gone"]) == []  # as the audit saw it
        labctl("exec", "h2", "--", "ip", "link", "del", "br-t-gone")
        assert hv.network_problems(lab_hosts["h2"].uri, ["t-gone"]) == [
            "the bridge br-t-gone of network t-gone is missing on the host"
        ]
        run = start_item(people["alice"], item)
        live.execute(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED, (run.error, run.outcome)
        assert "Pre-flight re-check" in run.error and "br-t-gone" in run.error, (run.error, run.error_raw)
        assert "stays on h1" in run.outcome
        assert lab_guests.where(guest) == {"h1": "running"}
    finally:
        labctl("exec", "h2", "--", "ip", "link", "del", "br-t-gone", check=False)
        for step in (net.destroy, net.undefine):
            try:
                step()
            except libvirt.libvirtError:
                pass
        conn.close()


def _restart_postgresql() -> None:
    version = sorted(p.rsplit("/", 1)[1] for p in glob.glob("/etc/postgresql/*"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)  # noqa: S603,S607
    connection.close()


def _restart_redis() -> None:
    """Stop Redis (its data is lost: it keeps none on disk) and start it again the way it ran."""
    from urllib.parse import urlsplit

    import redis
    from django.conf import settings

    port = urlsplit(settings.REDIS_URL).port or 6379
    client = redis.Redis(port=port)
    conf: dict[str, str] = {}
    for key in ("dir", "logfile", "bind"):
        conf.update(client.config_get(key))  # type: ignore[arg-type]
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # it closes the connection as it stops
    wait_for(lambda: not _answers(client), timeout=30)
    subprocess.run(  # noqa: S603
        [
            "redis-server", "--daemonize", "yes", "--port", str(port), "--bind", *conf["bind"].split(),
            "--save", "", "--appendonly", "no", "--dir", conf["dir"], "--logfile", conf["logfile"],
        ],
        check=True,
    )  # fmt: skip
    wait_for(lambda: _answers(client), timeout=30)


def _answers(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.mark.parametrize("restart", [_restart_postgresql, _restart_redis], ids=["postgresql", "redis"])
def test_a_service_restarted_mid_move_does_not_stop_the_move(
    restart: Any, lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    ip = "10.78.0.75"
    guest = define_linux(lab_guests, "h1", ip)
    boot_id = http(ip, "/cgi-bin/bootid")
    item = plan_item(people, lab_hosts, guest, "h2", bandwidth_mib_s=6, auto_converge=False)
    workers.start()
    # PostgreSQL and Redis to this session first (other sessions finish), so the restart falls mid-move
    with services_to_myself():
        run = start_item(people["alice"], item)
        wait_for(lambda: MigrationRun.objects.get(pk=run.pk).samples.filter(bytes_processed__gt=0).exists(), 120)
        restart()
        restarted = timezone.now()
        run = _ended(run.pk)
        assert run.status == RunStatus.SUCCEEDED, (run.status, run.error, run.outcome)
        # the monitor kept recording after the restart, and the move finished after it
        assert run.samples.filter(at__gt=restarted).exists()
        assert run.finished_at is not None and run.finished_at > restarted
    assert lab_guests.where(guest) == {"h2": "running"}  # running, never left paused
    assert wait_for(lambda: http(ip, "/cgi-bin/bootid"), timeout=30) == boot_id


def test_a_worker_killed_during_the_copy_of_a_cold_move_is_rolled_back_at_once(
    lab_guests: LabGuests, lab_hosts: dict[str, Host], people: dict[str, Any], workers: Workers
) -> None:
    from tests.cold.test_cold_faults import _assert_rolled_back

    guest = _disk_guest(lab_guests)
    item = cold_item(people, lab_hosts, guest, "h2")
    workers.start(VMPORTAL_RUN_LEASE_SECONDS="600")
    workers.start_watcher(VMPORTAL_RUN_LEASE_SECONDS="600")
    run = start_item(people["alice"], item)

    def copying() -> bool:
        current = MigrationRun.objects.get(pk=run.pk)
        return current.status == RunStatus.TRANSFERRING and current.bytes_processed > 0

    wait_for(copying, timeout=120, interval=0.05)
    workers.kill(workers.owner(MigrationRun.objects.get(pk=run.pk).worker))
    run = _ended(run.pk, timeout=180)
    assert run.status == RunStatus.ROLLED_BACK, (run.status, run.error, run.outcome)
    assert run.worker.startswith("reconciler")  # adopted on the dead process's evidence, not a lease
    _assert_rolled_back(lab_guests, guest, "h2")
