"""Opening libvirt connections, and turning libvirt errors into the project's own.

This package is the only code in vmportal that imports `libvirt`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from .errors import (
    AuthenticationFailed,
    HostUnreachable,
    HypervisorError,
    NotFound,
    OperationFailed,
    Unsupported,
)

T = TypeVar("T")

#: libvirt's domain states by the names the inventory stores (inventory.choices.PowerState)
DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
#: states in which the guest runs ("blocked": running, waiting for a resource)
RUNNING_STATES = frozenset({"running", "blocked"})


def state_name(code: int) -> str:
    """The name of a libvirt domain state code ("unknown" for a code this libvirt does not know)."""
    return DOMAIN_STATES.get(code, "unknown")


#: Seconds a connection may take to open when the caller passes none; the portal passes its setting
#: VMPORTAL_LIBVIRT_CONNECT_TIMEOUT (the same 15 s unless configured).
DEFAULT_TIMEOUT_S = 15.0

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_UNREACHABLE = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
}
_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN: "The VM does not exist on this host.",
    libvirt.VIR_ERR_NO_NETWORK: "The network does not exist on this host.",
    libvirt.VIR_ERR_NO_STORAGE_POOL: "The storage pool does not exist on this host.",
    libvirt.VIR_ERR_NO_STORAGE_VOL: "The disk volume does not exist on this host.",
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT: "The snapshot does not exist.",
}
_UNSUPPORTED = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}


def translate(exc: libvirt.libvirtError, context: str = "") -> HypervisorError:
    """Map a libvirt error to one of ours, with a message for people and the raw text kept."""
    code = exc.get_error_code()
    raw = exc.get_error_message() or str(exc)
    prefix = f"{context}: " if context else ""
    if code in _NOT_FOUND:
        return NotFound(prefix + _NOT_FOUND[code], raw=raw, code=code)
    if code == libvirt.VIR_ERR_AUTH_FAILED or code == libvirt.VIR_ERR_AUTH_CANCELLED:
        return AuthenticationFailed(prefix + "The host refused the portal's credentials.", raw=raw, code=code)
    if code in _UNREACHABLE or exc.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
        return HostUnreachable(prefix + "The host's libvirt daemon cannot be reached.", raw=raw, code=code)
    if code in _UNSUPPORTED:
        return Unsupported(prefix + "This host's libvirt does not support that operation.", raw=raw, code=code)
    return OperationFailed(prefix + "The hypervisor refused the operation.", raw=raw, code=code)


def call(func: Callable[[], T], context: str = "") -> T:
    """Run one libvirt call, translating its errors."""
    try:
        return func()
    except libvirt.libvirtError as exc:
        raise translate(exc, context) from None


def version_string(number: int) -> str:
    """libvirt packs versions as major*1e6 + minor*1e3 + release."""
    if not number:
        return ""
    return f"{number // 1_000_000}.{(number // 1000) % 1000}.{number % 1000}"


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    """Open a connection in a thread so an unreachable host cannot hang the caller."""
    result: dict[str, libvirt.virConnect] = {}
    failure: list[libvirt.libvirtError] = []

    def target() -> None:
        try:
            # No credential callbacks: the portal never prompts; keys/certs come from the host's config.
            result["conn"] = libvirt.openAuth(uri, [[], lambda _c, _d: -1, None], 0)
        except libvirt.libvirtError as exc:
            failure.append(exc)

    worker = threading.Thread(target=target, name="libvirt-open", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HostUnreachable(f"The host did not answer within {timeout:.0f} s.", raw=f"timeout opening {uri}")
    if failure:
        error = translate(failure[0])
        if isinstance(error, OperationFailed):
            error = HostUnreachable("The connection to the host could not be opened.", raw=error.raw, code=error.code)
        raise error
    conn = result.get("conn")
    if conn is None:
        raise HostUnreachable("The host's libvirt daemon cannot be reached.")
    return conn


@contextmanager
def connect(uri: str, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[libvirt.virConnect]:
    """A libvirt connection for the duration of a block; closed afterwards whatever happens.

    The URI must already have passed `validate_uri`; callers go through `inventory.services.hosts`.
    """
    conn = _open(uri, timeout)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def lookup_domain(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain:
    """The domain with this UUID on the connection's host (NotFound if it has none)."""
    return call(lambda: conn.lookupByUUIDString(uuid), "looking up the VM")


def elapsed_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
