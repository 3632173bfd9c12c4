"""The workflow world (two teams' VMs on test-driver hosts) with API clients for each persona."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from api import tokens
from tests.workflow.conftest import world  # noqa: F401  (fixture)


def token_client(user: Any) -> APIClient:
    _token, secret = tokens.create(user, "tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


@pytest.fixture
def api(world: dict[str, Any]) -> dict[str, APIClient]:  # noqa: F811
    clients = {name: token_client(world[name]) for name in ("alice", "bob", "carol", "dave")}
    clients["anonymous"] = APIClient()
    return clients
