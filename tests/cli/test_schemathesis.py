"""Schemathesis against the OpenAPI document the server serves: generated requests (valid and not) to
every operation, as an admin and as an app owner, find no server error and no response that breaks the
document (status codes, content types, bodies). Bounded: a few examples per operation."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from migrations_app.choices import PlanStatus
from migrations_app.models import MigrationPlan
from tests.cli.test_cli import fleet, portal  # noqa: F401  (fixtures)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 8


@pytest.mark.parametrize("who", ["carol", "alice"])
def test_generated_requests_find_no_server_error_and_no_schema_violation(
    portal: str,  # noqa: F811
    fleet: dict[str, Any],  # noqa: F811
    who: str,
) -> None:
    headers = {"Authorization": f"Token {fleet['tokens'][who]}"}
    config = SchemathesisConfig.from_dict({"headers": headers})
    schema = schemathesis.openapi.from_url(f"{portal}/api/v1/schema/", config=config)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) > 25
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for operation in operations:
        label = operation.label

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            response = case.call_and_validate(base_url=portal, headers=headers, checks=CHECKS, timeout=30)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            exercise()
        except BaseException as exc:  # hypothesis reports several failures as an exception group
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:1500]}")  # every operation's, not the first
    assert not failures, "\n\n".join(failures)
    print(who, statuses)
    assert sum(statuses.values()) >= 3 * len(operations)  # the examples really went out
    assert set(statuses) & {200, 201, 202} and set(statuses) & {400, 404}  # accepted and refused requests
    # the portal still works afterwards
    assert MigrationPlan.objects.exclude(status__in=list(PlanStatus)).count() == 0
