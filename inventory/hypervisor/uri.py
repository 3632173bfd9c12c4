"""Validation of libvirt connection URIs against an allow-list.

A libvirt URI is more than an address: some transports and query parameters make the client run a
command (`qemu+ext`, `command=`, `netcat=`) or read files (`socket=`, `keyfile=`, `pkipath=`,
`known_hosts=`, the test driver's node file). Hosts are registered through the browser, so a URI must
never become a way to run something or read something on the portal's machines. Only the transports
and parameters below are accepted; everything else is refused with a message saying why.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from .errors import InvalidURI

MAX_URI_LENGTH = 512

#: scheme → (needs a remote host, description)
ALLOWED_SCHEMES: dict[str, tuple[bool, str]] = {
    "qemu": (False, "local QEMU daemon"),
    "qemu+unix": (False, "QEMU daemon over a local UNIX socket"),
    "qemu+ssh": (True, "QEMU daemon over SSH"),
    "qemu+tls": (True, "QEMU daemon over TLS"),
    "qemu+tcp": (True, "QEMU daemon over plain TCP (trusted networks only)"),
    "test": (False, "libvirt test driver (development and tests)"),
}

REFUSED_SCHEMES: dict[str, str] = {
    "ext": "the 'ext' transport runs an arbitrary local command",
    "libssh": "only the 'ssh' transport is supported for SSH",
    "libssh2": "only the 'ssh' transport is supported for SSH",
}

#: parameter → schemes where it is allowed
ALLOWED_PARAMS: dict[str, tuple[str, ...]] = {
    "socket": ("qemu+unix", "qemu"),
    "keyfile": ("qemu+ssh",),
    "known_hosts": ("qemu+ssh",),
    "known_hosts_verify": ("qemu+ssh",),
    "sshauth": ("qemu+ssh",),
    "no_tty": ("qemu+ssh",),
    "pkipath": ("qemu+tls",),
    "mode": ("qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix"),
}

REFUSED_PARAMS: dict[str, str] = {
    "command": "'command=' makes libvirt run an arbitrary local program",
    "netcat": "'netcat=' makes libvirt run an arbitrary program on the remote host",
    "proxy": "'proxy=' changes which program libvirt runs to reach the host",
    "name": "'name=' lets the URI reach a different driver on the remote host",
    "no_verify": "'no_verify=' turns off TLS certificate checks",
    "tls_priority": "'tls_priority=' can weaken TLS",
}

ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "known_hosts_verify": ("normal", "auto"),
    "sshauth": ("agent", "privkey", "agent,privkey", "privkey,agent"),
    "no_tty": ("0", "1"),
    "mode": ("auto", "direct", "legacy"),
}

PATH_PARAMS = {"socket": "socket", "keyfile": "key", "known_hosts": "key", "pkipath": "key"}

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+$")
_USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\s]")


@dataclass(frozen=True)
class ParsedURI:
    """A libvirt URI that passed validation."""

    uri: str
    scheme: str
    driver: str
    transport: str
    host: str = ""
    port: int | None = None
    user: str = ""
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def is_remote(self) -> bool:
        return bool(self.host)

    @property
    def is_test(self) -> bool:
        return self.driver == "test"


def _inside(path: str, directories: list[str]) -> bool:
    real = os.path.realpath(path)
    for directory in directories:
        base = os.path.realpath(directory)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return True
    return False


def validate_uri(
    uri: str,
    *,
    socket_dirs: list[str],
    key_dirs: list[str],
    test_dirs: list[str],
    allow_test: bool,
) -> ParsedURI:
    """Return the parsed URI, or raise `InvalidURI` with a reason a person can act on."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidURI("Enter a libvirt URI, for example qemu+ssh://root@host.example.com/system.")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidURI(f"The URI is longer than {MAX_URI_LENGTH} characters.")
    if _CONTROL_RE.search(uri):
        raise InvalidURI("The URI contains spaces or control characters.")
    if "%" in uri.split("?", 1)[0]:
        raise InvalidURI("Percent-encoded characters are not allowed in the scheme, host or path.")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"The URI is malformed: {exc}.") from None

    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURI(
            "The URI has no scheme; start it with qemu+ssh://, qemu+tls://, qemu+tcp://, qemu+unix:// or qemu://."
        )
    driver, _, transport = scheme.partition("+")
    if transport in REFUSED_SCHEMES:
        raise InvalidURI(f"'{scheme}' is not allowed: {REFUSED_SCHEMES[transport]}.")
    if scheme not in ALLOWED_SCHEMES:
        allowed = ", ".join(s for s in ALLOWED_SCHEMES if s != "test")
        raise InvalidURI(f"'{scheme}' is not an allowed transport. Allowed: {allowed}.")
    needs_host, _ = ALLOWED_SCHEMES[scheme]
    if parts.fragment:
        raise InvalidURI("The URI must not have a #fragment.")

    host = parts.hostname or ""
    user = parts.username or ""
    if parts.password is not None:
        raise InvalidURI("Put no password in the URI; use SSH keys or TLS certificates.")
    if needs_host:
        if not host:
            raise InvalidURI(f"A {scheme} URI needs a host name, e.g. {scheme}://host.example.com/system.")
        if not (_HOSTNAME_RE.match(host) or (":" in host and _IPV6_RE.match(host))):
            raise InvalidURI(f"'{host}' is not a valid host name or address.")
        if user and not _USER_RE.match(user):
            raise InvalidURI("The user name may contain only letters, digits, '.', '_' and '-'.")
        if user and scheme != "qemu+ssh":
            raise InvalidURI("A user name is only meaningful for qemu+ssh URIs.")
    elif host or user or port:
        raise InvalidURI(
            f"A {scheme} URI connects locally and must not name a host (use three slashes: {scheme}:///system)."
        )

    path = parts.path
    if driver == "qemu":
        if path not in ("/system", "/session"):
            raise InvalidURI("A QEMU URI must end in /system (or /session), e.g. qemu+ssh://host/system.")
    else:  # test driver
        if not allow_test:
            raise InvalidURI("The libvirt test driver is disabled on this portal (VMPORTAL_ALLOW_TEST_DRIVER).")
        if path != "/default":
            if not path.endswith(".xml") or not _inside(path, test_dirs):
                raise InvalidURI(
                    "A test driver URI must be test:///default or name an .xml node file inside an allowed directory."
                )

    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise InvalidURI("The query string of the URI is malformed.") from None
    for key, value in pairs:
        if key in params:
            raise InvalidURI(f"The parameter '{key}' appears twice.")
        if key in REFUSED_PARAMS:
            raise InvalidURI(f"'{key}=' is not allowed: {REFUSED_PARAMS[key]}.")
        if key not in ALLOWED_PARAMS:
            raise InvalidURI(f"Unknown or unsupported URI parameter '{key}'.")
        if scheme not in ALLOWED_PARAMS[key]:
            raise InvalidURI(f"'{key}=' is not allowed with {scheme}.")
        if _CONTROL_RE.search(value) or not value:
            raise InvalidURI(f"The value of '{key}=' is empty or contains spaces or control characters.")
        if key in ALLOWED_VALUES and value not in ALLOWED_VALUES[key]:
            raise InvalidURI(f"'{key}={value}' is not allowed; use one of: {', '.join(ALLOWED_VALUES[key])}.")
        kind = PATH_PARAMS.get(key)
        if kind:
            if not os.path.isabs(value):
                raise InvalidURI(f"'{key}=' must be an absolute path.")
            dirs = socket_dirs if kind == "socket" else key_dirs
            if not _inside(value, dirs):
                raise InvalidURI(
                    f"'{key}=' must point inside one of the allowed directories: {', '.join(dirs) or '(none configured)'}."
                )
        params[key] = value

    return ParsedURI(
        uri=uri,
        scheme=scheme,
        driver=driver,
        transport=transport or ("unix" if driver == "qemu" else ""),
        host=host,
        port=port,
        user=user,
        path=path,
        params=params,
    )
