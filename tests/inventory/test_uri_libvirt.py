"""The URI allow-list proven against libvirt itself, not against the validator's own reading.

Every URI the validator accepts — from a corpus of hostile and benign URIs and from property-based
variants (random separators, percent-encodings, duplicated names, letter case) — is opened through real
libvirt-python by the portal's own adapter, in a child process run under `strace`. Recording stubs stand
first on PATH for ssh, nc and friends. The test then asserts, from what the kernel saw:

- no program ran but the `ssh` stub, and the stub ran only with arguments the allow-list permits
  (no other ssh binary, key files only from the key directory, host key checks on, libvirt's standard
  remote helper with the standard `nc`);
- no UNIX socket outside the allowed directories was connected to, and no TCP connection left loopback.

A few refused URIs are then opened on purpose, bypassing the validator, to show that this observer does
see the attacks it is there to catch (a program run through `;command=`, a second `socket=`, `netcat=`).
"""

from __future__ import annotations

import codecs
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.hypervisor import InvalidURI, ParsedURI, validate_uri
from inventory.hypervisor.uri import libvirt_query_sections
from tests.base import REPO
from tests.inventory.uri_corpus import CORPUS, OK

STUBS = ("ssh", "nc", "netcat", "ncat", "socat", "virt-ssh-helper", "evil", "libvirtd", "virtqemud", "sshpass")
HOSTS = ("127.0.0.1", "127.0.0.2", "localhost", "[::1]")
NSCD = {"/var/run/nscd/socket", "/run/nscd/socket"}
TIMEOUT = 5.0
REMOTE_COMMAND = re.compile(
    r"^sh -c 'which virt-ssh-helper 1>/dev/null 2>&1; if test \$\? = 0; then\s+virt-ssh-helper "
    r"'qemu:///system(\?mode=(auto|direct|legacy))?'; else\s+if 'nc' -q 2>&1 \| grep \"requires an argument\" "
    r">/dev/null 2>&1; then ARG=-q0;else ARG=;fi;'nc' \$ARG -U /var/run/libvirt/(libvirt|virtqemud)-sock; fi'$"
)


@dataclass
class Lab:
    root: Path
    keys: Path
    sockets: Path
    stubs: Path
    markers: Path
    log: Path
    outside: Path
    socket_dirs: list[str] = field(default_factory=list)

    def fill(self, template: str) -> str:
        return (
            template.replace("{K_ENC}", str(self.keys).lstrip("/").replace("/", "%2F"))
            .replace("{S_ENC}", str(self.sockets).lstrip("/").replace("/", "%2F"))
            .replace("{K}", str(self.keys))
            .replace("{S}", str(self.sockets))
            .replace("{X}", str(self.stubs))
        )

    def validate(self, uri: str) -> ParsedURI:
        return validate_uri(uri, socket_dirs=self.socket_dirs, key_dirs=[str(self.keys)], test_dirs=[], allow_test=True)


def make_lab(root: Path) -> Lab:
    lab = Lab(
        root=root,
        keys=root / "keys",
        sockets=root / "sockets",
        stubs=root / "bin",
        markers=root / "markers",
        log=root / "stub.log",
        outside=root / "outside",
    )
    for folder in (lab.keys / "pki", lab.sockets / "h1", lab.stubs, lab.markers, lab.outside):
        folder.mkdir(parents=True)
    (lab.keys / "id_ed25519").write_text("not a real key\n")
    lab.socket_dirs = [str(lab.sockets), "/run/libvirt", "/var/run/libvirt"]
    for name in STUBS:
        stub = lab.stubs / name
        # records its name and every argument (NUL-separated, one record per line) and fails at once
        stub.write_text(f'#!/bin/sh\nprintf "%s\\0" "$0" "$@" >> {lab.log}\nprintf "\\n" >> {lab.log}\nexit 1\n')
        stub.chmod(0o755)
    return lab


# ---- property-based variants ----------------------------------------------------------------------

NAMES = ("keyfile", "socket", "no_tty", "mode", "pkipath", "command", "netcat", "proxy", "name", "no_verify") + (
    "authfile",
    "known_hosts",
    "sshauth",
    "tls_priority",
    "no_sanity",
    "auth",
)


def _case(draw: Any, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


def _encode(draw: Any, text: str) -> str:
    """Percent-encode a random choice of characters (always the ones a URI cannot carry raw)."""
    chosen = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    out = []
    for char, encode in zip(text, chosen, strict=True):
        must = not re.match(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?]", char)
        if encode or must:
            hexed = "".join(f"%{b:02X}" for b in char.encode())
            out.append(hexed.lower() if draw(st.booleans()) else hexed)
        else:
            out.append(char)
    return "".join(out)


GOOD_PARAMS = {
    "qemu+ssh": ("keyfile", "no_tty", "mode"),
    "qemu+tls": ("pkipath", "mode"),
    "qemu+tcp": ("mode",),
    "qemu+unix": ("socket", "mode"),
    "qemu": ("socket", "mode"),
}


@st.composite
def hostile_uris(draw: Any, lab: Lab) -> str:
    """Mostly well-formed URIs with random encodings, case and separators; the rest mixes in hostile parts."""
    benign = draw(st.integers(min_value=0, max_value=9)) < 6
    if benign:
        scheme = draw(st.sampled_from(sorted(GOOD_PARAMS)))
    else:
        scheme = draw(st.sampled_from(["qemu+ssh", "qemu+unix", "qemu+tls", "qemu", "qemu+ext", "QEMU+SSH"]))
    remote = scheme.lower() not in ("qemu", "qemu+unix", "qemu+ext")
    authority = ""
    if remote:
        users = ["", "root@", "virt.admin@"] + ([] if benign else ["-oProxyCommand=x@", "%2Dl@", "a b@", "r:pw@"])
        ports = ["", ":22", ":2222", ":16599"] + ([] if benign else [":0", ":", ":99999"])
        user = draw(st.sampled_from(users)) if scheme == "qemu+ssh" or not benign else ""
        authority = user + draw(st.sampled_from(HOSTS)) + draw(st.sampled_from(ports))
    path = "/system" if benign else draw(st.sampled_from(["/system"] * 6 + ["/session", "/system/", "/%73ystem"]))
    good = {
        "keyfile": [f"{lab.keys}/id_ed25519"],
        "pkipath": [f"{lab.keys}/pki"],
        "socket": [f"{lab.sockets}/h1/libvirt-sock", "/run/libvirt/libvirt-sock", "/var/run/libvirt/virtqemud-sock"],
        "no_tty": ["0", "1"],
        "mode": ["auto", "direct", "legacy"],
    }
    bad = {
        "keyfile": ["/root/.ssh/id_rsa", f"{lab.keys}/../../etc/shadow", "-oProxyCommand=x"],
        "pkipath": ["/etc"],
        "socket": [f"{lab.outside}/sock", f"{lab.sockets}/../outside/sock"],
        "no_tty": ["yes", ""],
        "mode": ["session"],
    }
    hostile_values = [f"{lab.stubs}/evil", "nc", "test:///default", "1", "/etc/shadow", f"{lab.outside}/sock"]
    names = list(GOOD_PARAMS.get(scheme, ())) or list(NAMES)
    if benign:
        chosen = draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True))
    else:
        chosen = draw(st.lists(st.sampled_from(names + list(NAMES)), max_size=4))
    sections = []
    for name in chosen:
        if benign:
            value = draw(st.sampled_from(good[name]))
        else:
            value = draw(st.sampled_from(good.get(name, []) + bad.get(name, []) + hostile_values))
            if draw(st.integers(min_value=0, max_value=3)) == 0:  # smuggle a second parameter into the value
                extra = draw(st.sampled_from(NAMES))
                value += draw(st.sampled_from([";", "&", "%3B", "%26", "%3b"])) + extra + "=" + f"{lab.stubs}/evil"
        sections.append(_encode(draw, _case(draw, name)) + "=" + _encode(draw, value))
    query = ""
    if sections:
        query = "?" + sections[0]
        separators = [";", "&"] if benign else ["&", ";", "&&", ";;", "&;"]
        for section in sections[1:]:
            query += draw(st.sampled_from(separators)) + section
    return f"{scheme}://{authority}{path}{query}"


def property_variants(lab: Lab) -> tuple[list[str], int]:
    """Run the property-based variants through the validator; return the accepted ones and how many ran."""
    accepted: list[str] = []
    seen = [0]

    @settings(
        max_examples=600,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(hostile_uris(lab))
    def check(uri: str) -> None:
        seen[0] += 1
        try:
            parsed = lab.validate(uri)
        except InvalidURI:
            return
        # what is stored reads back the same, and libvirt's own cut of it gives exactly the checked params
        assert lab.validate(parsed.uri) == parsed
        query = parsed.uri.partition("?")[2]
        assert [(n, v) for n, v in libvirt_query_sections(query)] == list(parsed.params.items())
        accepted.append(uri)

    check()
    return accepted, seen[0]


# ---- observing libvirt ----------------------------------------------------------------------------


def _cstring(text: str) -> str:
    return codecs.escape_decode(text.encode())[0].decode("utf-8", "replace")  # type: ignore[no-any-return]


EXECVE = re.compile(r'execve\("((?:[^"\\]|\\.)*)"')
UNIX = re.compile(r'connect\(\d+, \{sa_family=AF_UNIX, sun_path=(@?)"((?:[^"\\]|\\.)*)"')
INET = re.compile(r'connect\(\d+, \{sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
INET6 = re.compile(r'connect\(\d+, \{sa_family=AF_INET6, sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"')
OTHER_FAMILY = re.compile(r"connect\(\d+, \{sa_family=(?!AF_UNIX|AF_INET6?\b)(\w+)")


def _inside(path: str, dirs: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == os.path.realpath(d) or real.startswith(os.path.realpath(d) + "/") for d in dirs)


def _check_ssh(argv: list[str], lab: Lab) -> list[str]:
    """Problems with one recorded ssh invocation, compared with what the allow-list permits."""
    problems = []
    if os.path.basename(argv[0]) != "ssh":
        problems.append(f"ran as {argv[0]!r}")
    args = argv[1:]
    i = 0
    while i < len(args) and args[i] != "--":
        opt = args[i]
        value = args[i + 1] if i + 1 < len(args) else ""
        if opt == "-p" and value.isdigit():
            i += 2
        elif opt == "-l" and re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$", value):
            i += 2
        elif opt == "-i" and _inside(value, [str(lab.keys)]):
            i += 2
        elif opt == "-e" and value == "none":
            i += 2
        elif opt == "-o" and value == "BatchMode=yes":
            i += 2
        elif opt == "-T":
            i += 1
        else:
            problems.append(f"option {opt!r} {value!r}")
            i += 1
    rest = args[i + 1 :]
    if len(rest) != 2:
        problems.append(f"expected host and remote command after '--', got {rest!r}")
        return problems
    host, command = rest
    if host not in {h.strip("[]") for h in HOSTS}:
        problems.append(f"host {host!r}")
    if not REMOTE_COMMAND.match(command):
        problems.append(f"remote command {command!r}")
    return problems


def observe(lab: Lab, uris: list[str]) -> tuple[dict[int, list[str]], list[dict[str, Any]], dict[int, list[str]]]:
    """Open every URI under strace; return problems per URI index, the outcomes, and the events per index."""
    (lab.root / "in.json").write_text(json.dumps(uris))
    trace = lab.root / "trace.txt"
    env = {
        "PATH": f"{lab.stubs}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(lab.root),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
    }
    strace = shutil.which("strace")
    assert strace, "strace is needed (scripts/bootstrap test installs it)"
    subprocess.run(
        [strace, "-f", "-qq", "--seccomp-bpf", "-e", "trace=execve,connect", "-s", "4096", "-o", str(trace)]
        + [sys.executable, "-m", "tests.inventory.uri_probe", str(lab.root / "in.json"), str(lab.root / "out.json")]
        + [str(lab.markers), str(TIMEOUT)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    outcomes = json.loads((lab.root / "out.json").read_text())
    records = [r.split("\0")[:-1] for r in lab.log.read_text().split("\n") if r] if lab.log.exists() else []
    problems: dict[int, list[str]] = {}
    events: dict[int, list[str]] = {}
    current = -1
    stub_runs = 0
    ports = {16509, 16514} | {int(m) for u in uris for m in re.findall(r"^[^?]*:(\d+)/", u)}
    for line in trace.read_text().splitlines():
        unix = UNIX.search(line)
        if unix and not unix.group(1) and _cstring(unix.group(2)).startswith(f"{lab.markers}/"):
            current = int(_cstring(unix.group(2)).rsplit("/", 1)[1])
            continue
        if current < 0:
            continue  # the probe's own start-up
        found: list[str] = []
        if execve := EXECVE.search(line):
            program = _cstring(execve.group(1))
            events.setdefault(current, []).append(f"exec {program}")
            record = records[stub_runs] if program.startswith(f"{lab.stubs}/") and stub_runs < len(records) else None
            stub_runs += record is not None
            if program != str(lab.stubs / "ssh"):
                found.append(f"ran {program}")
            elif record is not None:
                found += [f"ssh {p}" for p in _check_ssh(record, lab)]
        elif unix:
            path = _cstring(unix.group(2))
            events.setdefault(current, []).append(f"unix {path}")
            if unix.group(1) or not (_inside(path, lab.socket_dirs) or path in NSCD):
                found.append(f"connected to the UNIX socket {unix.group(1)}{path}")
        elif inet := INET.search(line) or INET6.search(line):
            port, address = int(inet.group(1)), inet.group(2)
            events.setdefault(current, []).append(f"tcp {address}:{port}")
            if not ipaddress.ip_address(address).is_loopback or port not in ports:
                found.append(f"connected to {address}:{port}")
        elif other := OTHER_FAMILY.search(line):
            found.append(f"connected with {other.group(1)}")
        if found:
            problems.setdefault(current, []).extend(found)
    assert stub_runs == len(records), "every stub record matches a stub execve in the trace"
    return problems, outcomes, events


def test_every_uri_the_allow_list_accepts_is_safe_when_libvirt_opens_it(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    corpus = [(lab.fill(template), expected) for template, expected in CORPUS]
    assert len(corpus) >= 100

    accepted = []
    for uri, expected in corpus:
        try:
            lab.validate(uri)
        except InvalidURI as exc:
            assert expected != OK, f"{uri!r} should be accepted: {exc.message}"
        else:
            assert expected == OK, f"{uri!r} should be refused"
            accepted.append(uri)
    variants, ran = property_variants(lab)
    assert ran >= 500 and len(set(variants)) >= 100, (ran, len(set(variants)))

    # The stored form of an accepted URI is opened too (it is what the portal hands to libvirt later).
    to_open = list(dict.fromkeys(accepted + variants + [lab.validate(u).uri for u in accepted + variants]))
    canaries = [
        lab.fill("qemu+ssh://127.0.0.1/system?keyfile={K}/id_ed25519;command={X}/evil"),
        f"qemu+unix:///system?socket={lab.sockets}/h1/s;socket={lab.outside}/sock",
        lab.fill("qemu+ssh://127.0.0.1/system?netcat={X}/evil"),
        lab.fill("qemu+ssh://127.0.0.1/system?no_verify=1"),
    ]
    for canary in canaries:
        try:
            lab.validate(canary)
        except InvalidURI:
            pass
        else:
            raise AssertionError(f"the canary {canary!r} must be refused by the validator")

    problems, outcomes, events = observe(lab, to_open + canaries)

    assert len(outcomes) == len(to_open) + len(canaries)
    hung = [o["uri"] for o in outcomes if "did not answer within" in o["outcome"]]
    assert hung == [], "every open must finish (so each system call is attributed to its URI)"
    bad = {to_open[i]: p for i, p in problems.items() if i < len(to_open)}
    assert bad == {}, json.dumps(bad, indent=1)[:4000]

    # The observation is live: each accepted ssh URI ran the stub, each socket= was dialled.
    for index, uri in enumerate(to_open):
        parsed = lab.validate(uri)
        seen = events.get(index, [])
        if parsed.transport == "ssh":
            assert seen.count(f"exec {lab.stubs / 'ssh'}") == 1, (uri, seen)
        if "socket" in parsed.params:
            assert f"unix {parsed.params['socket']}" in seen, (uri, seen)
        if parsed.transport == "tcp":
            assert any(e.startswith("tcp ") for e in seen), (uri, seen)

    # ... and it sees the attacks the validator refuses.
    caught = {canaries[i - len(to_open)]: p for i, p in problems.items() if i >= len(to_open)}
    assert any(f"ran {lab.stubs / 'evil'}" in p for p in caught.get(canaries[0], [])), caught
    assert any(str(lab.outside) in p for p in caught.get(canaries[1], [])), caught
    assert any("remote command" in p and "evil" in p for p in caught.get(canaries[2], [])), caught
    assert any("StrictHostKeyChecking=no" in p for p in caught.get(canaries[3], [])), caught
