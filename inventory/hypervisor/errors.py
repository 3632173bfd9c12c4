"""The project's own hypervisor errors.

libvirt raises one exception type with numeric codes and messages written for libvirt developers.
The adapter turns each into one of these, with a message a person understands (`str(exc)`) and the
raw libvirt text kept beside it (`exc.raw`) for the "details" link.
"""

from __future__ import annotations


class HypervisorError(Exception):
    """Base class. `message` is for people; `raw` is libvirt's own text, if any."""

    def __init__(self, message: str, *, raw: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw
        self.code = code


class InvalidURI(HypervisorError):
    """The libvirt URI is malformed or not allowed (never opened)."""


class HostUnreachable(HypervisorError):
    """The host did not answer: daemon stopped, network down, DNS, timeout."""


class AuthenticationFailed(HypervisorError):
    """The host answered but refused our credentials."""


class NotFound(HypervisorError):
    """A domain, network, pool or volume does not exist on the host."""


class OperationFailed(HypervisorError):
    """The host refused or failed an operation."""


class Unsupported(HypervisorError):
    """The host's libvirt or driver does not offer this API."""
