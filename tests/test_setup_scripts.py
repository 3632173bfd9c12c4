"""The set-up scripts say what is wrong in words, never with a stack trace."""

from __future__ import annotations

import os
import subprocess
from urllib.parse import quote

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


def test_a_database_name_with_quotes_is_created_as_named_not_run_as_sql() -> None:
    """The set-up script quotes what it puts into SQL: a name with ' and " is a name, not SQL."""
    import psycopg
    from django.conf import settings
    from psycopg import sql

    base = settings.DATABASES["default"]
    name = f"{base['NAME']}_q'x\"y;select--"
    url = f"postgres://{base['USER']}@{base['HOST']}:{base['PORT']}/{quote(name, safe='')}"
    admin = f"host={base['HOST']} port={base['PORT']} user={base['USER']} dbname=postgres"
    try:
        result = _services(VMPORTAL_DATABASE_URL=url)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(admin) as conn:
            assert conn.execute("select 1 from pg_database where datname = %s", [name]).fetchone() == (1,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
