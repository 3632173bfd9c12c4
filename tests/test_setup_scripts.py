"""The set-up scripts say what is wrong in words, never with a stack trace."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.base import REPO


def _services(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "services"), "ensure"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_services_are_reachable_with_the_default_configuration() -> None:
    result = _services()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"VMPORTAL_DATABASE_URL": "mysql://root@127.0.0.1/vmportal"},
            "VMPORTAL_DATABASE_URL must be a postgres:// URL",
        ),
        ({"VMPORTAL_DATABASE_URL": "postgres://nobody-here@127.0.0.1:5432/vmportal"}, "refuses user 'nobody-here'"),
    ],
)
def test_a_wrong_service_configuration_is_explained(env: dict[str, str], message: str) -> None:
    result = _services(**env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
