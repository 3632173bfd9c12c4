"""Fixtures for post-migration validation on the real lab."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.engine.conftest import lab_hosts, people  # noqa: F401  (fixtures)
from tests.engine.linux import GATEWAY


class OneShotPanic:
    """An HTTP server on the app segment's gateway address that a lab guest asks once at boot
    (`vmportal.onboot=`): it answers "panic N" once after `arm()`, and "ok" before and after. So the
    guest panics when it boots on the destination, and not when the rollback starts it on the source."""

    def __init__(self, delay_s: int) -> None:
        self.delay_s = delay_s
        self.armed = False
        self.answers: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                answer = f"panic {owner.delay_s}" if owner.armed else "ok"
                owner.armed = False
                owner.answers.append(answer)
                body = answer.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((GATEWAY, 0), Handler)
        self.url = f"http://{GATEWAY}:{self.server.server_address[1]}/boot"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arm(self) -> None:
        self.armed = True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def panic_server() -> Iterator[OneShotPanic]:
    server = OneShotPanic(delay_s=1)
    try:
        yield server
    finally:
        server.close()
