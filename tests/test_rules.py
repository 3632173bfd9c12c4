"""The rules the checks, the prediction, the scheduler and the engines share (migrations_app.rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from migrations_app import rules

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "source_shared", "destination", "destination_shared", "copied"),
    [
        ("shared", True, "shared", True, False),  # stays put: only memory moves
        ("shared", True, "shared", False, True),  # same name, but local on the destination
        ("shared", True, "local", False, True),  # mapped to another pool
        ("shared", True, "other-shared", True, True),
        ("local", False, "local", False, True),
        ("local", False, "local", True, True),
        ("", True, "", True, True),  # a disk in no known pool is copied
    ],
)
def test_disk_copied(
    source: str, source_shared: bool, destination: str, destination_shared: bool, copied: bool
) -> None:
    assert rules.disk_copied(source, source_shared, destination, destination_shared) is copied


def test_fits_window_counts_what_is_left_of_it() -> None:
    hour = timedelta(hours=1)
    assert rules.fits_window(600, None, None, NOW) is None
    assert rules.fits_window(None, NOW, NOW + hour, NOW) is None
    assert rules.fits_window(3600, NOW, NOW + hour, NOW) is True
    assert rules.fits_window(3601, NOW, NOW + hour, NOW) is False
    # a window that started half an hour ago leaves half an hour
    assert rules.window_left_s(NOW - hour / 2, NOW + hour / 2, NOW) == 1800
    assert rules.fits_window(1801, NOW - hour / 2, NOW + hour / 2, NOW) is False
    # a future window counts whole; a past one leaves nothing
    assert rules.window_left_s(NOW + hour, NOW + 2 * hour, NOW) == 3600
    assert rules.window_left_s(NOW - 2 * hour, NOW - hour, NOW) == 0
    assert rules.fits_window(1, NOW - 2 * hour, NOW - hour, NOW) is False


def test_plan_options_are_one_list_with_one_set_of_bounds() -> None:
    """The browser form, the API and the service accept the same options within the same bounds."""
    from api.serializers import PlanOptionsSerializer, PlanSerializer
    from migrations_app.forms import PlanOptionsForm
    from migrations_app.services.plans import OPTION_FIELDS, OPTION_RANGES, PlanError, _clean_options

    form, api = PlanOptionsForm().fields, PlanOptionsSerializer().fields
    assert set(form) == set(OPTION_FIELDS) == set(api)
    assert set(OPTION_FIELDS) <= set(PlanSerializer.Meta.fields)
    for key, (low, high) in OPTION_RANGES.items():
        assert (getattr(form[key], "min_value", None), getattr(form[key], "max_value", None)) == (low, high), key
        assert (getattr(api[key], "min_value", None), getattr(api[key], "max_value", None)) == (low, high), key
        _clean_options({key: low})
        _clean_options({key: high})
        for outside in (low - 1, high + 1):
            with pytest.raises(PlanError):
                _clean_options({key: outside})


def test_a_disk_goes_to_the_pool_its_map_names_else_to_its_own_pools_namesake() -> None:
    assert rules.destination_pool({"vda": {"pool": "fast"}}, "vda", "local") == "fast"
    assert rules.destination_pool({"vda": {"pool": ""}}, "vda", "local") == "local"
    assert rules.destination_pool({}, "vdb", "shared") == "shared"
    assert rules.destination_pool({"vda": {"pool": ""}}, "vda", "") == ""  # nowhere to go: the engine refuses
