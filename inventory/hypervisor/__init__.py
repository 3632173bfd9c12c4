"""The hypervisor adapter: the only package in vmportal that imports libvirt.

Everything it returns is a plain dataclass from `types`; every libvirt error leaves it as one of the
exceptions in `errors`, with a message a person understands.
"""

from .errors import (
    AuthenticationFailed,
    HostUnreachable,
    HypervisorError,
    InvalidURI,
    NotFound,
    OperationFailed,
    Unsupported,
)
from .reader import read_host, test_connection
from .types import ConnectionReport, DiskInfo, DomainInfo, HostInfo, HostSnapshot, NetworkInfo, NicInfo, PoolInfo
from .uri import ParsedURI, validate_uri

__all__ = [
    "AuthenticationFailed",
    "ConnectionReport",
    "DiskInfo",
    "DomainInfo",
    "HostInfo",
    "HostSnapshot",
    "HostUnreachable",
    "HypervisorError",
    "InvalidURI",
    "NetworkInfo",
    "NicInfo",
    "NotFound",
    "OperationFailed",
    "ParsedURI",
    "PoolInfo",
    "Unsupported",
    "read_host",
    "test_connection",
    "validate_uri",
]
