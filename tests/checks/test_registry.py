"""The catalogue is complete and the registry behaves as documented (no lab needed)."""

from __future__ import annotations

import pytest

from inventory.hypervisor.facts import parse_cpuset
from migrations_app.checks import REGISTRY, register
from migrations_app.choices import Area

CATALOGUE = {
    Area.HYPERVISOR: ["HC-FORMAT", "HC-MACHINE", "HC-CPU", "HC-VERSION", "HC-ARCH", "HC-FIRMWARE"],
    Area.NETWORK: ["NET-MAPPED", "NET-MAC", "NET-TYPE", "NET-FILTER"],
    Area.RESOURCES: ["RES-MEM", "RES-CPU", "RES-HOST", "RES-NAME"],
    Area.STORAGE: [
        "STO-SHARED",
        "STO-SPACE",
        "STO-CACHE",
        "STO-SHAREABLE",
        "STO-BACKING",
        "STO-SNAPSHOTS",
        "STO-MEDIA",
        "STO-JOBS",
    ],
    Area.DEPENDENCIES: [
        "DEP-HOSTDEV",
        "DEP-IDENTITY",
        "DEP-PINNING",
        "DEP-TPM",
        "DEP-GROUP",
        "BAK-RECENT",
        "PROC-STATE",
        "PROC-BUSY",
        "PROC-WINDOW",
        "PROC-FRESH",
    ],
}


def test_every_pre_migration_check_of_the_catalogue_is_registered_in_its_area() -> None:
    expected = {cid: area for area, ids in CATALOGUE.items() for cid in ids}
    assert {cid: check.area for cid, check in REGISTRY.items()} == expected
    for check in REGISTRY.values():
        assert check.func.__doc__, check.id  # the title shown beside the result


def test_a_check_id_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        register("HC-FORMAT", Area.HYPERVISOR)(lambda ctx: None)  # type: ignore[arg-type,return-value]


def test_cpusets_are_read_like_libvirt_does() -> None:
    assert parse_cpuset("0-3,^2,6") == {0, 1, 3, 6}
    assert parse_cpuset("7") == {7}
    assert parse_cpuset("") == set() and parse_cpuset("x,1") == {1}
