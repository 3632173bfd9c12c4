"""Rules of the code base that a reviewer would otherwise have to remember."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.base import REPO

APP_DIRS = ["vmportal", "inventory", "migrations_app", "api", "vmportal_cli"]
ADAPTER = REPO / "inventory" / "hypervisor"


def _modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, by its full dotted name
    (`from a.b import c` counts as both a.b and a.b.c, since c may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _modules(path)}


def _offenders(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    """'file: module' for every import of a forbidden module (or anything below it)."""
    return sorted(
        f"{path.relative_to(REPO) if REPO in path.parents else path.name}: {name}"
        for path in files
        for name in _modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_only_the_hypervisor_adapter_imports_libvirt() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for folder in APP_DIRS
        for path in (REPO / folder).rglob("*.py")
        if ADAPTER not in path.parents and "libvirt" in _imports(path)
    ]
    assert offenders == []


#: what sits above the engine: the services, the RQ jobs and everything that serves requests
ABOVE_THE_ENGINE = (
    "migrations_app.services",
    "migrations_app.jobs",
    "migrations_app.plan_jobs",
    "migrations_app.worker",
    "migrations_app.views",
    "migrations_app.run_views",
    "migrations_app.workflow_views",
    "migrations_app.manage_views",
    "migrations_app.consumers",
    "migrations_app.forms",
    "vmportal.cron",
)
#: the engine, the checks and what they share, below the services: they never call up
BELOW_THE_SERVICES = [
    *sorted((REPO / "migrations_app" / "engine").rglob("*.py")),
    *sorted((REPO / "migrations_app" / "checks").rglob("*.py")),
    *sorted((REPO / "migrations_app" / "validation").rglob("*.py")),
    *(REPO / "migrations_app" / f"{name}.py" for name in ("events", "auditlog", "rules", "prediction", "choices")),
]
MODELS = [
    *sorted((REPO / "inventory" / "models").rglob("*.py")),
    *sorted((REPO / "migrations_app" / "models").rglob("*.py")),
]


def test_the_engine_and_the_checks_never_import_the_layers_above_them() -> None:
    """adapter ← checks/engine ← services ← views/jobs/consumers: the engine claims, finishes and recovers
    runs itself (engine.runstate, engine.recovery) and tells the services through signals."""
    assert len(BELOW_THE_SERVICES) > 10
    assert _offenders(BELOW_THE_SERVICES, ABOVE_THE_ENGINE) == []


def test_models_import_no_services() -> None:
    assert _offenders(MODELS, ("inventory.services", "migrations_app.services", "migrations_app.engine")) == []


def test_the_layering_test_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The rule above would catch an engine module importing a service again, even inside a function."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        (REPO / "migrations_app" / "engine" / "live.py").read_text()
        + "\n\ndef later() -> None:\n    from migrations_app.services import runs\n"
    )
    assert _offenders([probe], ABOVE_THE_ENGINE) == [
        "probe.py: migrations_app.services",
        "probe.py: migrations_app.services.runs",
    ]


def test_inventory_uses_only_the_audit_log_writer_below_its_views() -> None:
    """The inventory app sits below migrations_app. Outside its views and commands (which compose pages
    and set up the lab from both apps) it imports only the audit-log writer, a leaf module whose model
    lives in migrations_app (see README, "Layers")."""
    files = [
        path
        for path in sorted((REPO / "inventory").rglob("*.py"))
        if path.name not in ("views.py", "manage_views.py") and "management" not in path.parts
    ]
    uses = {line.split(": ")[1] for line in _offenders(files, ("migrations_app",))}
    assert uses <= {"migrations_app", "migrations_app.auditlog"}


def test_only_events_writes_run_status_and_progress() -> None:
    """`events` is the one writer of a run's status and progress (durable row first, then the channel
    layer): no other module updates those fields on MigrationRun rows."""
    watched = {"status", "percent", "phase_detail", "bytes_processed", "bytes_remaining", "bytes_total"}
    offenders = []
    for folder in APP_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            if path == REPO / "migrations_app" / "events.py" or "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "update"
                    and "MigrationRun.objects" in ast.unparse(node.func.value)
                    and watched & {k.arg for k in node.keywords if k.arg}
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_templates_never_mark_text_safe() -> None:
    for template in (REPO / "templates").rglob("*.html"):
        text = template.read_text()
        assert "|safe" not in text and "autoescape off" not in text, template
