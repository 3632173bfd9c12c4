"""The portal's own processes for browser tests of the live pages: daphne (pages and websockets) and, when
asked, an RQ worker, on the test database, the tests' Redis and channel prefix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.base import REPO
from tests.live.conftest import process_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], str]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = tempfile.NamedTemporaryFile(prefix="vmportal-live-", suffix=".log", delete=False)
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, *args], cwd=REPO, env=process_env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs.append((proc, log.name))
        return proc

    def daphne(self, port: int) -> subprocess.Popen[bytes]:
        """Serve the portal on 127.0.0.1:`port`; returns once it accepts connections."""
        server = self.start("-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "vmportal.asgi:application")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return server
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, self.logs()
                time.sleep(0.2)

    @staticmethod
    def halt(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{Path(name).read_text()[-3000:]}" for _, name in self.procs)

    def stop(self) -> None:
        for proc, name in self.procs:
            self.halt(proc)
            os.unlink(name)
