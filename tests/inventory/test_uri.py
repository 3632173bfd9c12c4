"""The libvirt URI allow-list: each refused class, and what is accepted."""

from __future__ import annotations

import pytest

from inventory.hypervisor import InvalidURI, validate_uri

SOCKETS = ["/var/lib/vmportal-lab", "/run/libvirt"]
KEYS = ["/etc/vmportal/keys"]
TESTS = ["/srv/testdriver"]


def check(uri: str, allow_test: bool = True):  # type: ignore[no-untyped-def]
    return validate_uri(uri, socket_dirs=SOCKETS, key_dirs=KEYS, test_dirs=TESTS, allow_test=allow_test)


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@kvm-a12.example.com/system",
        "qemu+ssh://kvm-a12.example.com:2222/system?keyfile=/etc/vmportal/keys/id_ed25519&no_tty=1",
        "qemu+tls://kvm-a12.example.com/system?pkipath=/etc/vmportal/keys/kvm-a12",
        "qemu+tcp://10.77.0.1/system",
        "qemu+tcp://[fd00::1]/system",
        "qemu+unix:///system?socket=/var/lib/vmportal-lab/h1/run/libvirt/libvirt-sock",
        "qemu:///system",
        "test:///default",
        "test:///srv/testdriver/node.xml",
    ],
)
def test_it_accepts_allowed_uris(uri: str) -> None:
    assert check(uri).uri == uri


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (
            "qemu+ssh://kvm-a12.example.com/system?KeyFile=%2Fetc%2Fvmportal%2Fkeys%2Fk",
            "qemu+ssh://kvm-a12.example.com/system?keyfile=/etc/vmportal/keys/k",
        ),
        (
            "qemu+ssh://KVM-A12.example.com/system?no_tty=1;keyfile=/etc/vmportal/keys/k",
            "qemu+ssh://kvm-a12.example.com/system?no_tty=1&keyfile=/etc/vmportal/keys/k",
        ),
        ("qemu+tcp://[FD00::1]:16509/system", "qemu+tcp://[fd00::1]:16509/system"),
    ],
)
def test_the_stored_uri_is_rebuilt_from_what_was_checked(given: str, stored: str) -> None:
    parsed = check(given)
    assert parsed.uri == stored
    assert check(stored) == parsed


def test_the_query_is_cut_where_libvirt_cuts_it() -> None:
    from inventory.hypervisor.uri import libvirt_query_sections, unescape

    # '&' ends a section whenever one is left in the rest of the query; ';' only when none is
    assert libvirt_query_sections("a=1;b=2&c=3") == [("a", "1;b=2"), ("c", "3")]
    assert libvirt_query_sections("a=1&b=2;c=3") == [("a", "1"), ("b", "2"), ("c", "3")]
    assert libvirt_query_sections("a&&=b") == [("a", None), ("", None), ("", "b")]
    assert unescape("%41%4%zz%2f%") == b"A%4%zz/%"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("qemu+ext:///system?command=/bin/sh", "runs an arbitrary local command"),
        ("qemu+ssh://host/system?command=/bin/sh", "arbitrary local program"),
        ("qemu+ssh://host/system?netcat=/tmp/evil", "arbitrary program on the remote host"),
        ("qemu+ssh://host/system?proxy=netcat", "changes which program"),
        ("qemu+unix:///system?socket=/tmp/evil.sock", "inside one of the allowed directories"),
        ("qemu+unix:///system?socket=/var/lib/vmportal-lab/../../../tmp/x", "plain absolute path"),
        ("qemu+ssh://host/system?keyfile=/root/.ssh/id_rsa", "inside one of the allowed directories"),
        ("qemu+ssh://host/system?known_hosts=/etc/shadow", "libssh transports"),
        ("qemu+tls://host/system?pkipath=/etc", "inside one of the allowed directories"),
        ("qemu+tls://host/system?no_verify=1", "turns off TLS certificate and SSH host key checks"),
        ("qemu+ssh://host/system?name=test:///etc/passwd", "different driver"),
        ("qemu+libssh2://host/system", "only the 'ssh' transport"),
        ("xen+ssh://host/system", "not an allowed transport"),
        ("lxc:///system", "not an allowed transport"),
        ("vbox:///session", "not an allowed transport"),
        ("test:///etc/passwd", "test driver URI must be"),
        ("qemu+ssh://host/system?foo=bar", "Unknown or unsupported"),
        ("qemu+ssh://host/system?keyfile=/etc/vmportal/keys/a&keyfile=/etc/vmportal/keys/b", "appears twice"),
        ("qemu+ssh://host/system?keyfile=relative/key", "absolute path"),
        ("qemu+ssh://host/system?sshauth=password", "libssh transports"),
        ("qemu+ssh://host/system?no_tty=yes", "not allowed with qemu+ssh; use one of"),
        ("qemu+ssh://user:secret@host/system", "no password"),
        ("qemu+ssh://-oProxyCommand=x@host/system", "must not start with '-'"),
        ("qemu+ssh://host/system?keyfile=/etc/vmportal/keys/k;command=/bin/sh", "'command=' is not allowed"),
        ("qemu+ssh://host/system?keyfile=/etc/vmportal/keys/k%3Bcommand=/bin/sh", "once percent-decoded"),
        ("qemu+ssh://host/system?KEYFILE=/etc/vmportal/keys/a&keyfile=/etc/vmportal/keys/b", "appears twice"),
        ("qemu+ssh://host/system?Command=/bin/sh", "'command=' is not allowed"),
        ("qemu+ssh://host/system?%63ommand=/bin/sh", "'command=' is not allowed"),
        ("qemu+ssh://host/system?authfile=/etc/shadow", "arbitrary file"),
        ("qemu+ssh://host/system?mode=direct", "not allowed with qemu+ssh"),
        ("qemu+unix:///system?socket=/run/libvirt/x%00/../../tmp/y", "once percent-decoded"),
        ("qemu+unix:///system?socket=/run/libvirt/../../tmp/y", "plain absolute path"),
        ("qemu+ssh://host/system?=x&no_tty=1", "empty parameter"),
        ("QEMU+SSH://host/system", "lower case"),
        ("qemu+ssh:///system", "needs a host name"),
        ("qemu+ssh://ho$t/system", "not a valid host name"),
        ("qemu+ssh://host/system#frag", "fragment"),
        ("qemu+ssh://host/root", "must end in /system"),
        ("qemu:///session", "must end in /system"),
        ("qemu+unix://otherhost/system", "must not name a host"),
        ("qemu+ssh://host/system\n?command=x", "control characters"),
        ("qemu+ssh://host /system", "spaces or control characters"),
        ("qemu+ssh://h%6fst/system", "Percent-encoded"),
        ("//host/system", "no scheme"),
        ("", "Enter a libvirt URI"),
        ("qemu+ssh://" + "a" * 600 + "/system", "longer than"),
        ("qemu+tcp://host:99999/system", "port must be a number"),
        (
            "qemu+unix:///system?socket=/run/libvirt/libvirt-sock&keyfile=/etc/vmportal/keys/k",
            "not allowed with qemu+unix",
        ),
    ],
)
def test_it_refuses_dangerous_or_malformed_uris(uri: str, reason: str) -> None:
    with pytest.raises(InvalidURI) as exc:
        check(uri)
    assert reason in exc.value.message


def test_test_driver_is_refused_when_disabled() -> None:
    with pytest.raises(InvalidURI, match="test driver is disabled"):
        check("test:///default", allow_test=False)


def test_a_symlink_out_of_the_socket_dir_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "sock").symlink_to("/etc/passwd")
    with pytest.raises(InvalidURI, match="allowed directories"):
        validate_uri(
            f"qemu+unix:///system?socket={allowed}/sock",
            socket_dirs=[str(allowed)],
            key_dirs=[],
            test_dirs=[],
            allow_test=False,
        )
