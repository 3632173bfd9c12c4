from typing import Any

import pytest

from tests.base import lab_up, make_personas


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Any:
    """Personas are made for nearly every test; a deliberately slow password hash would dominate the run
    (the login rate limit and the login pages work the same with any hasher)."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    return make_personas()


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """The real libvirt lab (three daemons in network namespaces)."""
    return lab_up()


from tests.labguests import lab_guests  # noqa: E402,F401  (fixture)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """A session that will drive the lab waits for it to be free first (outside any test's timeout)."""
    if any(item.get_closest_marker("lab") or "lab" in getattr(item, "fixturenames", ()) for item in items):
        from tests.base import hold_lab_lock

        hold_lab_lock()
