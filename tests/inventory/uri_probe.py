"""Open libvirt URIs one after another through the portal's own adapter, for tests/inventory/test_uri_libvirt.py.

Run as `python -m tests.inventory.uri_probe IN.json OUT.json MARKER_DIR TIMEOUT` under strace. Before each
URI it calls connect() on the UNIX socket path MARKER_DIR/<index> (which does not exist), so the trace
shows where each URI's system calls begin. The outcome of every open goes to OUT.json.
"""

from __future__ import annotations

import json
import socket
import sys
import time

from inventory.hypervisor.connection import connect
from inventory.hypervisor.errors import HypervisorError


def mark(marker_dir: str, index: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(f"{marker_dir}/{index}")
        except OSError:
            pass


def main() -> None:
    source, target, marker_dir, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    uris = json.loads(open(source).read())
    outcomes = []
    for index, uri in enumerate(uris):
        mark(marker_dir, index)
        start = time.monotonic()
        try:
            with connect(uri, timeout=timeout):
                outcome = "opened"
        except HypervisorError as exc:
            outcome = f"{type(exc).__name__}: {exc.message} {exc.raw}"
        outcomes.append({"uri": uri, "outcome": outcome, "seconds": round(time.monotonic() - start, 3)})
    mark(marker_dir, len(uris))
    with open(target, "w") as fh:
        json.dump(outcomes, fh)


if __name__ == "__main__":
    main()
