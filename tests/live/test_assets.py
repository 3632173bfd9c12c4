"""The browser assets: from the npm registry at set-up time, never committed; the portal's own scripts
never turn data into markup."""

from __future__ import annotations

import json
import re
import subprocess

from tests.base import REPO

#: ways a script could turn a string into markup or code
HTML_SINKS = re.compile(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(")


def test_scripts_put_data_in_pages_as_text_only() -> None:
    scripts = sorted((REPO / "static" / "js").glob("*.js"))
    assert scripts
    for script in scripts:
        assert not HTML_SINKS.search(script.read_text()), script


def test_third_party_assets_come_from_the_lock_file_and_are_not_committed() -> None:
    package = json.loads((REPO / "package.json").read_text())
    lock = json.loads((REPO / "package-lock.json").read_text())
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} must be pinned exactly, not {version!r}"
        locked = lock["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")
    tracked = subprocess.run(
        ["git", "ls-files", "static/vendor", "node_modules"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert tracked.stdout == ""
    # …and the set-up step put them where the pages load them from
    assert (REPO / "static" / "vendor" / "uplot" / "uPlot.iife.min.js").stat().st_size > 10_000


def test_pages_load_nothing_from_other_sites() -> None:
    remote = re.compile(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", re.IGNORECASE)
    for template in (REPO / "templates").rglob("*.html"):
        assert not remote.search(template.read_text()), template
