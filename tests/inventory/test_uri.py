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
    ("uri", "reason"),
    [
        ("qemu+ext:///system?command=/bin/sh", "runs an arbitrary local command"),
        ("qemu+ssh://host/system?command=/bin/sh", "arbitrary local program"),
        ("qemu+ssh://host/system?netcat=/tmp/evil", "arbitrary program on the remote host"),
        ("qemu+ssh://host/system?proxy=netcat", "changes which program"),
        ("qemu+unix:///system?socket=/tmp/evil.sock", "inside one of the allowed directories"),
        ("qemu+unix:///system?socket=/var/lib/vmportal-lab/../../../tmp/x", "inside one of the allowed directories"),
        ("qemu+ssh://host/system?keyfile=/root/.ssh/id_rsa", "inside one of the allowed directories"),
        ("qemu+ssh://host/system?known_hosts=/etc/shadow", "inside one of the allowed directories"),
        ("qemu+tls://host/system?pkipath=/etc", "inside one of the allowed directories"),
        ("qemu+tls://host/system?no_verify=1", "turns off TLS certificate checks"),
        ("qemu+ssh://host/system?name=test:///etc/passwd", "different driver"),
        ("qemu+libssh2://host/system", "only the 'ssh' transport"),
        ("xen+ssh://host/system", "not an allowed transport"),
        ("lxc:///system", "not an allowed transport"),
        ("vbox:///session", "not an allowed transport"),
        ("test:///etc/passwd", "test driver URI must be"),
        ("qemu+ssh://host/system?foo=bar", "Unknown or unsupported"),
        ("qemu+ssh://host/system?keyfile=/etc/vmportal/keys/a&keyfile=/etc/vmportal/keys/b", "appears twice"),
        ("qemu+ssh://host/system?keyfile=relative/key", "absolute path"),
        ("qemu+ssh://host/system?sshauth=password", "not allowed; use one of"),
        ("qemu+ssh://user:secret@host/system", "no password"),
        ("qemu+ssh:///system", "needs a host name"),
        ("qemu+ssh://ho$t/system", "not a valid host name"),
        ("qemu+ssh://host/system#frag", "fragment"),
        ("qemu+ssh://host/root", "must end in /system"),
        ("qemu+unix://otherhost/system", "must not name a host"),
        ("qemu+ssh://host/system\n?command=x", "control characters"),
        ("qemu+ssh://host /system", "spaces or control characters"),
        ("qemu+ssh://h%6fst/system", "Percent-encoded"),
        ("//host/system", "no scheme"),
        ("", "Enter a libvirt URI"),
        ("qemu+ssh://" + "a" * 600 + "/system", "longer than"),
        ("qemu+tcp://host:99999/system", "malformed"),
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
