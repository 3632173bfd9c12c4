"""Validation of libvirt connection URIs against an allow-list, reading each URI the way libvirt does.

A libvirt URI is more than an address: some transports and query parameters make the client run a
command (`qemu+ext`, `command=`, `netcat=`) or read files (`socket=`, `keyfile=`, `pkipath=`,
`authfile=`, the test driver's node file). Hosts are registered through the browser, and the migration
URI is dialled by the hypervisors' own daemons, so a URI must never become a way to run something or
read something on the portal's machines or on a hypervisor.

A check is only as good as its agreement with the program that reads the URI afterwards, so the query
is split here exactly as libvirt splits it (`virURIParseParams` in libvirt's src/util/viruri.c):

- sections end at the next `&`; only when no `&` is left in the rest of the query does `;` end one;
- a section is `name=value` split at its first `=`; `name` alone means an empty value; `=value` is
  silently skipped by libvirt;
- name and value are then percent-decoded (libxml2's `xmlURIUnescapeString`: `%XX` with two hex digits
  becomes one byte, any other `%` stays as it is), and a decoded NUL ends the C string;
- the remote driver matches names without regard to case, and the last of two equal names wins.

On top of that reading the rules refuse anything ambiguous: a decoded name or value holding `&`, `;` or
`=`, control characters, bytes outside printable ASCII, a name given twice in any case, an empty
section, a user name starting with `-`, and percent-encoding outside the query. The URI that passes is
rebuilt from its parts (`ParsedURI.uri`), so what is stored and handed to libvirt is exactly what was
checked. Everything outside the allow-list is refused with a message saying why.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

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
    "no_tty": ("qemu+ssh",),
    "pkipath": ("qemu+tls",),
    "mode": ("qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+unix", "qemu"),
}

REFUSED_PARAMS: dict[str, str] = {
    "command": "'command=' makes libvirt run an arbitrary local program",
    "netcat": "'netcat=' makes libvirt run an arbitrary program on the remote host",
    "proxy": "'proxy=' changes which program libvirt runs to reach the host",
    "name": "'name=' lets the URI reach a different driver on the remote host",
    "no_verify": "'no_verify=' turns off TLS certificate and SSH host key checks",
    "no_sanity": "'no_sanity=' turns off TLS certificate sanity checks",
    "tls_priority": "'tls_priority=' can weaken TLS",
    "authfile": "'authfile=' makes libvirt read credentials from an arbitrary file",
    "auth": "'auth=' changes how the portal authenticates; use SSH keys or TLS certificates",
    "known_hosts": "'known_hosts=' only applies to the libssh transports, which the portal does not use",
    "known_hosts_verify": "'known_hosts_verify=' only applies to the libssh transports, which the portal does not use",
    "sshauth": "'sshauth=' only applies to the libssh transports, which the portal does not use",
}

ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "no_tty": ("0", "1"),
    "mode": ("auto", "direct", "legacy"),
    "mode@qemu+ssh": ("auto", "legacy"),  # libvirt has no direct socket mode over ssh
}

#: parameters naming a path on the portal's machine, and which configured directories it must be in
PATH_PARAMS = {"socket": "socket", "keyfile": "key", "pkipath": "key"}

#: the characters libxml2 accepts anywhere in a URI (RFC 3986: unreserved, sub-delims, gen-delims, %)
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]*$")
_SHAPE = re.compile(r"^(?P<scheme>[^:/?]*)://(?P<authority>[^/?]*)(?P<path>[^?]*)(?:\?(?P<query>.*))?$", re.DOTALL)
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_PATH_VALUE_RE = re.compile(r"^/[A-Za-z0-9._+@,:/-]*$")
_TEST_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]+$")
_SEPARATORS = frozenset("&;=")
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class ParsedURI:
    """A libvirt URI that passed validation; `uri` is rebuilt from the checked parts."""

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


# ---- libvirt's reading of a URI ------------------------------------------------------------------


def unescape(text: str) -> bytes:
    """Percent-decoding as libxml2's xmlURIUnescapeString does it: `%` followed by two hex digits is
    one byte; any other `%` is kept literally. Returns bytes, because the result may be any byte."""
    raw = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and chr(raw[i + 1]) in _HEX and chr(raw[i + 2]) in _HEX:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def libvirt_query_sections(query: str) -> list[tuple[str, str | None]]:
    """The raw (name, value) sections of a query, cut where libvirt's virURIParseParams cuts them.

    `value` is None for a bare `name`; a section libvirt skips (empty, or `=value`) comes back as
    ("", value) so the caller can refuse it instead of letting it vanish silently.
    """
    sections: list[tuple[str, str | None]] = []
    rest = query
    while rest:
        end = rest.find("&")
        if end < 0:
            end = rest.find(";")
        if end < 0:
            end = len(rest)
        section = rest[:end]
        eq = section.find("=")
        if not section:
            sections.append(("", None))
        elif eq < 0:
            sections.append((section, None))
        else:
            sections.append((section[:eq], section[eq + 1 :]))
        rest = rest[end + 1 :]
    return sections


def _decoded(raw: str, what: str) -> str:
    """Decode like libvirt, then insist on printable ASCII without separators (no ambiguity left)."""
    data = unescape(raw)
    if any(b < 0x21 or b > 0x7E for b in data):
        raise InvalidURI(f"{what} contains spaces, control characters or non-ASCII bytes once percent-decoded.")
    text = data.decode("ascii")
    if _SEPARATORS & set(text):
        raise InvalidURI(f"{what} contains '&', ';' or '=' once percent-decoded; libvirt would read it differently.")
    return text


# ---- the allow-list ------------------------------------------------------------------------------


def _inside(path: str, directories: list[str]) -> bool:
    real = os.path.realpath(path)
    for directory in directories:
        base = os.path.realpath(directory)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return True
    return False


def _plain_path(value: str) -> bool:
    """Absolute, without '.', '..' or empty segments: the path means what it says."""
    if not _PATH_VALUE_RE.match(value):
        return False
    segments = value.split("/")[1:]
    return all(s not in ("", ".", "..") for s in segments) or value == "/"


def _host(authority: str, scheme: str) -> tuple[str, str, int | None]:
    """(user, host, port) of an authority, or InvalidURI."""
    if "%" in authority:
        raise InvalidURI("Percent-encoded characters are not allowed in the host or user name.")
    userinfo, at, hostport = authority.rpartition("@")
    if at and "@" in userinfo:
        raise InvalidURI("The URI names more than one user ('@' appears twice).")
    if ":" in userinfo:
        raise InvalidURI("Put no password in the URI; use SSH keys or TLS certificates.")
    user = userinfo
    if at and not user:
        raise InvalidURI("The user name before '@' is empty.")
    port: int | None = None
    port_text: str | None = None
    if hostport.startswith("["):
        inner, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise InvalidURI("The IPv6 address is missing its closing ']'.")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidURI(f"'{inner}' is not a valid IPv6 address.") from None
        host = inner.lower()
        if after:
            if not after.startswith(":"):
                raise InvalidURI("The URI is malformed after the IPv6 address.")
            port_text = after[1:]
    else:
        host, colon, rest = hostport.partition(":")
        port_text = rest if colon else None
        host = host.lower()
        if host and not _HOSTNAME_RE.match(host):
            raise InvalidURI(f"'{host}' is not a valid host name or address.")
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or not 1 <= int(port_text) <= 65535:
            raise InvalidURI("The port must be a number from 1 to 65535.")
        port = int(port_text)
    if user:
        if not _USER_RE.match(user):
            raise InvalidURI(
                "The user name may contain only letters, digits, '.', '_' and '-', and must not start with '-'."
            )
        if scheme != "qemu+ssh":
            raise InvalidURI("A user name is only meaningful for qemu+ssh URIs.")
    return user, host, port


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
    if re.search(r"[\x00-\x20\x7f]", uri):
        raise InvalidURI("The URI contains spaces or control characters.")
    if "#" in uri:
        raise InvalidURI("The URI must not have a #fragment.")
    if not _URI_CHARS.match(uri):
        raise InvalidURI("The URI contains characters that are not allowed in a URI (quote them as %XX in the query).")
    shape = _SHAPE.match(uri)
    if not shape:
        if "://" not in uri:
            raise InvalidURI(
                "The URI has no scheme; start it with qemu+ssh://, qemu+tls://, qemu+tcp://, qemu+unix:// or qemu://."
            )
        raise InvalidURI("The URI is malformed.")
    scheme, authority, path, query = shape["scheme"], shape["authority"], shape["path"], shape["query"]

    if not scheme:
        raise InvalidURI(
            "The URI has no scheme; start it with qemu+ssh://, qemu+tls://, qemu+tcp://, qemu+unix:// or qemu://."
        )
    if not _SCHEME_RE.match(scheme):
        raise InvalidURI("The URI's scheme is malformed.")
    driver, _, transport = scheme.lower().partition("+")
    if transport in REFUSED_SCHEMES:
        raise InvalidURI(f"'{scheme}' is not allowed: {REFUSED_SCHEMES[transport]}.")
    if scheme not in ALLOWED_SCHEMES:
        allowed = ", ".join(s for s in ALLOWED_SCHEMES if s != "test")
        if scheme.lower() in ALLOWED_SCHEMES:
            raise InvalidURI(f"Write the scheme in lower case: {scheme.lower()}://…")
        raise InvalidURI(f"'{scheme}' is not an allowed transport. Allowed: {allowed}.")
    needs_host, _ = ALLOWED_SCHEMES[scheme]

    user, host, port = _host(authority, scheme)
    if needs_host and not host:
        raise InvalidURI(f"A {scheme} URI needs a host name, e.g. {scheme}://host.example.com/system.")
    if not needs_host and (host or user or port):
        raise InvalidURI(
            f"A {scheme} URI connects locally and must not name a host (use three slashes: {scheme}:///system)."
        )

    if "%" in path:
        raise InvalidURI("Percent-encoded characters are not allowed in the path.")
    if driver == "qemu":
        if path != "/system":
            raise InvalidURI("A QEMU URI must end in /system, e.g. qemu+ssh://host/system.")
    else:  # test driver
        if not allow_test:
            raise InvalidURI("The libvirt test driver is disabled on this portal (VMPORTAL_ALLOW_TEST_DRIVER).")
        if path != "/default" and not (
            path.endswith(".xml") and _TEST_PATH_RE.match(path) and _plain_path(path) and _inside(path, test_dirs)
        ):
            raise InvalidURI(
                "A test driver URI must be test:///default or name an .xml node file inside an allowed directory."
            )
        if query is not None:
            raise InvalidURI("A test driver URI takes no parameters.")

    params = _params(query or "", scheme, socket_dirs=socket_dirs, key_dirs=key_dirs) if query is not None else {}
    if query is not None and not params:
        raise InvalidURI("The URI ends in '?' without parameters.")

    netloc = ""
    if host:
        netloc = (f"{user}@" if user else "") + (f"[{host}]" if ":" in host else host)
        netloc += f":{port}" if port is not None else ""
    canonical = f"{scheme}://{netloc}{path}"
    if params:
        canonical += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return ParsedURI(
        uri=canonical,
        scheme=scheme,
        driver=driver,
        transport=transport or ("unix" if driver == "qemu" else ""),
        host=host,
        port=port,
        user=user,
        path=path,
        params=params,
    )


def _params(query: str, scheme: str, *, socket_dirs: list[str], key_dirs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for raw_name, raw_value in libvirt_query_sections(query):
        if not raw_name:
            raise InvalidURI("The query has an empty parameter (a doubled separator or '=' without a name).")
        name = _decoded(raw_name, "A parameter name").lower()
        if raw_value is None or raw_value == "":
            raise InvalidURI(f"The parameter '{name}' has no value.")
        if name in params:
            raise InvalidURI(f"The parameter '{name}' appears twice.")
        if name in REFUSED_PARAMS:
            raise InvalidURI(f"'{name}=' is not allowed: {REFUSED_PARAMS[name]}.")
        if name not in ALLOWED_PARAMS:
            raise InvalidURI(f"Unknown or unsupported URI parameter '{name}'.")
        if scheme not in ALLOWED_PARAMS[name]:
            raise InvalidURI(f"'{name}=' is not allowed with {scheme}.")
        value = _decoded(raw_value, f"The value of '{name}='")
        allowed = ALLOWED_VALUES.get(f"{name}@{scheme}", ALLOWED_VALUES.get(name))
        if allowed is not None and value not in allowed:
            raise InvalidURI(f"'{name}={value}' is not allowed with {scheme}; use one of: {', '.join(allowed)}.")
        kind = PATH_PARAMS.get(name)
        if kind:
            if not value.startswith("/"):
                raise InvalidURI(f"'{name}=' must be an absolute path.")
            if not _plain_path(value):
                raise InvalidURI(
                    f"'{name}=' must be a plain absolute path: letters, digits and . _ + @ , : - only, "
                    "without '.', '..' or empty segments."
                )
            dirs = socket_dirs if kind == "socket" else key_dirs
            if not _inside(value, dirs):
                raise InvalidURI(
                    f"'{name}=' must point inside one of the allowed directories: {', '.join(dirs) or '(none configured)'}."
                )
        params[name] = value
    return params
