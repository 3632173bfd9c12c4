"""Settings come from the environment; malformed values stop start-up with a clear message."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from inventory.hypervisor.errors import InvalidURI
from tests.base import REPO, manage_with_env
from vmportal.env import env_bool, env_int, env_list, env_str


def test_env_helpers_parse_and_refuse(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("X_BOOL", "yes")
    assert env_bool("X_BOOL", False) is True
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL='maybe' is not a boolean"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("X_INT", 1, minimum=1)
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "from-a-file"
    with pytest.raises(ImproperlyConfigured, match="X_MISSING must be set"):
        env_str("X_MISSING", required=True)


PRODUCTION = {
    "VMPORTAL_DEBUG": "0",
    "VMPORTAL_TESTING": "0",
    "VMPORTAL_SECRET_KEY": "p" * 30 + "-production-secret-key-from-the-environment",
    "VMPORTAL_ALLOWED_HOSTS": "portal.example.com",
}


_manage = manage_with_env


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VMPORTAL_SECRET_KEY": ""}, "VMPORTAL_SECRET_KEY must be set"),
        ({"VMPORTAL_SECRET_KEY": "short"}, "at least 50 characters"),
        ({"VMPORTAL_ALLOWED_HOSTS": ""}, "VMPORTAL_ALLOWED_HOSTS must list"),
        ({"VMPORTAL_DATABASE_URL": "mysql://db/vmportal"}, "must be a postgres:// URL"),
        ({"VMPORTAL_REDIS_URL": "http://redis"}, "VMPORTAL_REDIS_URL must start with"),
        ({"VMPORTAL_SYNC_INTERVAL": "often"}, "VMPORTAL_SYNC_INTERVAL='often' is not a whole number"),
        ({"VMPORTAL_DEBUG": "perhaps"}, "VMPORTAL_DEBUG='perhaps' is not a boolean"),
    ],
)
def test_malformed_settings_stop_start_up_with_a_clear_message(env: dict[str, str], message: str) -> None:
    result = _manage("check", **{**PRODUCTION, **env})
    assert result.returncode != 0
    assert message in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_env_example_lists_every_variable_the_settings_read() -> None:
    import re

    used = set(re.findall(r'"(VMPORTAL_[A-Z_]+)"', (REPO / "vmportal" / "settings.py").read_text()))
    listed = set(re.findall(r"^#?\s*(VMPORTAL_[A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert used <= listed, f"missing from .env.example: {sorted(used - listed)}"


def test_invalid_uri_is_a_hypervisor_error_with_a_message() -> None:
    exc = InvalidURI("nope")
    assert exc.message == "nope" and str(exc) == "nope"
