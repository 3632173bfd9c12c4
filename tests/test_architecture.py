"""Rules of the code base that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.base import REPO

APP_DIRS = ["vmportal", "inventory", "migrations_app", "api", "vmportal_cli"]
ADAPTER = REPO / "inventory" / "hypervisor"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_hypervisor_adapter_imports_libvirt() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for folder in APP_DIRS
        for path in (REPO / folder).rglob("*.py")
        if ADAPTER not in path.parents and "libvirt" in _imports(path)
    ]
    assert offenders == []


def test_templates_never_mark_text_safe() -> None:
    for template in (REPO / "templates").rglob("*.html"):
        text = template.read_text()
        assert "|safe" not in text and "autoescape off" not in text, template
