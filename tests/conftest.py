from typing import Any

import pytest

from tests.base import lab_up, make_personas


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    return make_personas()


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """The real libvirt lab (three daemons in network namespaces)."""
    return lab_up()


from tests.labguests import lab_guests  # noqa: E402,F401  (fixture)
