from typing import Any

import pytest

from tests.base import lab_up, make_personas


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Rate-limit counters live in the shared Redis cache and outlive a test session: each test starts
    without any (only this checkout's cache keys are removed)."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{settings.CACHES['default']['KEY_PREFIX']}:*"):
        client.delete(key)


@pytest.fixture
def people(db: None) -> dict[str, Any]:
    return make_personas()


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """The real libvirt lab (three daemons in network namespaces), without the guests an earlier test
    session left behind when it was killed (this session holds the lab lock, so none of them is in use)."""
    from tests.labguests import remove_leftovers

    description = lab_up()
    remove_leftovers(description)
    return description


from tests.labguests import lab_guests  # noqa: E402,F401  (fixture)


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: a session without lab tests does not wait
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """A session that will drive the lab waits for it to be free first (outside any test's timeout), then
    shares PostgreSQL and Redis with the other sessions (in this order: see tests.base.services_to_myself)."""
    from tests.base import hold_lab_lock, share_services

    if any(item.get_closest_marker("lab") or "lab" in getattr(item, "fixturenames", ()) for item in items):
        hold_lab_lock()
    share_services()
