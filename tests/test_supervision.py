"""`make run` survives a worker's death: scripts/supervise starts a crashed process again, and the systemd
units in deploy/systemd/ restart every part of the portal."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
from pathlib import Path

import django_rq
import pytest

from migrations_app.jobs import MIGRATION_QUEUE
from tests.base import REPO
from tests.engine.conftest import worker_env
from tests.engine.linux import wait_for

UNITS = REPO / "deploy" / "systemd"


def _worker_pids() -> set[int]:
    from rq.worker import Worker

    queue = django_rq.get_queue(MIGRATION_QUEUE)
    return {w.pid for w in Worker.all(queue=queue) if w.pid and Path(f"/proc/{w.pid}").exists()}


@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_is_started_again_and_stopping_the_supervisor_stops_it(tmp_path: Path) -> None:
    log = tmp_path / "mover.log"
    before = _worker_pids()
    supervisor = subprocess.Popen(  # noqa: S603
        [
            str(REPO / "scripts" / "supervise"),
            "mover",
            str(log),
            sys.executable,
            "manage.py",
            "rqworker",
            MIGRATION_QUEUE,
        ],
        cwd=REPO,
        env={**worker_env(), "SUPERVISE_PAUSE_S": "0.5"},
        start_new_session=True,
    )
    try:
        first = wait_for(lambda: _worker_pids() - before, timeout=60)
        (pid,) = first
        os.kill(pid, signal.SIGKILL)
        second = wait_for(lambda: _worker_pids() - before - first, timeout=60)
        assert "mover exited with status 137" in log.read_text()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        (new_pid,) = second
        wait_for(lambda: not Path(f"/proc/{new_pid}").exists() or _zombie(new_pid), timeout=30)
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_every_part_of_the_portal_has_a_unit_that_restarts_it() -> None:
    services = sorted(p.name for p in UNITS.glob("*.service"))
    commands = {}
    for name in services:
        unit = _unit(name)
        assert unit["Service"]["Restart"] == "always", name
        assert unit["Service"]["EnvironmentFile"] == "/etc/vmportal/env", name
        commands[name] = unit["Service"]["ExecStart"]
    joined = " ".join(commands.values())
    for part in ("daphne", "rqworker --with-scheduler sync default", "rqcron vmportal.cron", "watch_runs"):
        assert part in joined, part
    assert "rqworker" in commands["vmportal-worker@.service"]
    wanted = _unit("vmportal.target")["Unit"]["Wants"].split()
    for name in services:
        if "@" in name:
            assert any(w.startswith(name.split("@")[0] + "@") for w in wanted)
        else:
            assert name in wanted, name
    # the templated worker serves the queue named by its instance, up to the first "-"
    script = commands["vmportal-worker@.service"].split("'")[1].replace("$$", "$").replace("%%", "%")
    out = subprocess.run(["/bin/sh", "-c", script.replace("exec ", "echo "), "migrations-2"], capture_output=True)  # noqa: S603
    assert out.stdout.decode().split()[-1] == "migrations"


def test_make_run_supervises_every_process() -> None:
    serve = (REPO / "scripts" / "serve").read_text()
    started = [line for line in serve.splitlines() if line.strip().startswith("keep ")]
    assert len(started) >= 6
    assert any("watch_runs" in line for line in started) and any("daphne" in line for line in started)
    # nothing is started outside the supervisor
    others = [line for line in serve.splitlines() if ("manage.py" in line or "daphne" in line) and line not in started]
    assert not [line for line in others if not line.lstrip().startswith("#")], others
