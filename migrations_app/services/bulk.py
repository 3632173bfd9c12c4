"""Plans of many VMs: CSV import, application groups, and host evacuation.

- `import_csv`: every row is validated and every problem reported with its line number; a CSV with
  any bad row creates nothing (`CSVError` carries the list). A good CSV becomes one draft plan through
  `plans.create_plan` (which queues its audit; the audit plans the waves).
- `set_application_group`: the group DEP-GROUP and the wave planner keep together (VM page, CSV).
- `evacuate`: marks a host in maintenance (nothing new lands there) and builds one plan per owning team
  moving every VM of the host to a destination the audit chooses (live where possible); VMs that cannot
  be planned (no team) are reported with the reason, and the audit reports VMs no host can take.
"""

from __future__ import annotations

import csv
import io
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils.dateparse import parse_datetime

from inventory.models import Host, VirtualMachine
from inventory.services import groups
from migrations_app.choices import Mode
from migrations_app.models import MigrationPlan
from migrations_app.services import auditlog, plans
from migrations_app.services.plans import PlanError
from vmportal import access
from vmportal.access import Action

COLUMNS = ("vm", "destination", "mode", "window", "group")
MAX_CSV_BYTES = 2 * 1024 * 1024
MAX_GROUP_CHARS = groups.MAX_GROUP_CHARS
#: an evacuation moves every VM of a host, however many
MAX_EVACUATION_ITEMS = 5000


@dataclass
class CSVError(PlanError):
    """The CSV was refused as a whole; `rows` lists (line number, problem) for every bad row."""

    rows: list[tuple[int, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"The CSV was not imported ({len(self.rows)} problem(s)); nothing was created."


def set_application_group(actor: Any, vm: VirtualMachine, group: str) -> VirtualMachine:
    """The owner names the application a VM belongs to (see inventory.services.groups)."""
    try:
        return groups.set_application_group(actor, vm, group)
    except groups.GroupError as exc:
        raise PlanError(str(exc)) from None


def _window(text: str) -> tuple[datetime, datetime] | None:
    """ "2026-12-05T22:00+00:00/2026-12-06T04:00+00:00" → (start, end); "" → None."""
    if not text:
        return None
    start_text, sep, end_text = text.partition("/")
    start, end = parse_datetime(start_text.strip()), parse_datetime(end_text.strip())
    if not sep or start is None or end is None or start.tzinfo is None or end.tzinfo is None:
        raise ValueError(
            "the window must be START/END in ISO 8601 with a time zone, e.g. 2026-12-05T22:00Z/2026-12-06T04:00Z"
        )
    if end <= start:
        raise ValueError("the window must end after it starts")
    return start, end


@dataclass
class _Row:
    line: int
    vm: VirtualMachine
    destination: Host | None
    mode: str
    window: tuple[datetime, datetime] | None
    group: str | None


def parse_csv(actor: Any, text: str) -> list[_Row]:
    """Validate every row; raise CSVError listing every problem, or return the rows."""
    if len(text.encode()) > MAX_CSV_BYTES:
        raise CSVError(rows=[(0, f"The file is larger than {MAX_CSV_BYTES // 1024 // 1024} MiB.")])
    # newline="": the csv module reads the line ends itself (a bare CR is one, as in the files it writes)
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise CSVError(rows=[(1, f"The first line is not CSV: {exc}.")]) from None
    if "vm" not in header:
        raise CSVError(
            rows=[(1, "The first line must name the columns; 'vm' is required (" + ", ".join(COLUMNS) + ").")]
        )
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CSVError(rows=[(1, f"Unknown column(s): {', '.join(unknown)}; known: {', '.join(COLUMNS)}.")])
    reader.fieldnames = header
    try:
        raw = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader]
    except csv.Error as exc:
        raise CSVError(rows=[(reader.line_num, f"This line is not CSV: {exc}.")]) from None
    problems: list[tuple[int, str]] = []
    if not raw:
        raise CSVError(rows=[(1, "The CSV has no rows.")])
    if len(raw) > plans.MAX_PLAN_ITEMS:
        raise CSVError(rows=[(0, f"A plan holds at most {plans.MAX_PLAN_ITEMS} VMs; split the CSV.")])
    # every VM and host the rows name, read once
    names = {r["vm"] for _, r in raw}
    uuids = set()
    for n in names:
        try:
            uuids.add(uuidlib.UUID(n))
        except ValueError:
            pass
    visible = VirtualMachine.objects.visible_to(actor).present()
    by_uuid = {vm.uuid: vm for vm in visible.filter(uuid__in=uuids)}
    by_name: dict[str, list[VirtualMachine]] = {}
    for named in visible.filter(name__in=names):
        by_name.setdefault(named.name, []).append(named)
    hosts = {h.name: h for h in Host.objects.filter(name__in={r.get("destination", "") for _, r in raw})}
    rows: list[_Row] = []
    seen: dict[int, int] = {}
    for line, r in raw:
        errors = []
        key = r.get("vm", "")
        vm: VirtualMachine | None = None
        if not key:
            errors.append("no VM named")
        else:
            try:
                vm = by_uuid.get(uuidlib.UUID(key))
            except ValueError:
                matches = by_name.get(key, [])
                if len(matches) > 1:
                    errors.append(f"more than one VM is called {key!r}; use its UUID")
                vm = matches[0] if len(matches) == 1 else None
            if vm is None and not errors:
                errors.append(f"no VM {key!r} (or it is missing, or not your team's)")
        if vm is not None:
            if vm.pk in seen:
                errors.append(f"VM {vm.name!r} is already on line {seen[vm.pk]}")
            else:
                seen[vm.pk] = line
        dest_name = r.get("destination", "")
        destination = None
        if dest_name and dest_name.lower() != "auto":
            destination = hosts.get(dest_name)
            if destination is None:
                errors.append(f"no host {dest_name!r}")
            else:
                try:
                    plans.check_destination(destination)
                except PlanError as exc:
                    errors.append(str(exc).rstrip("."))
                if vm is not None and destination.pk == vm.host_id:
                    errors.append(f"{vm.name} is already on {destination.name}")
        mode = (r.get("mode") or Mode.AUTO).lower()
        if mode not in Mode.values:
            errors.append(f"mode {r.get('mode')!r} is not one of {', '.join(Mode.values)}")
        window = None
        try:
            window = _window(r.get("window", ""))
        except ValueError as exc:
            errors.append(str(exc))
        group = r.get("group") if "group" in header else None
        if group is not None and len(group) > MAX_GROUP_CHARS:
            errors.append(f"the group name is longer than {MAX_GROUP_CHARS} characters")
        if errors:
            problems.append((line, "; ".join(errors) + "."))
        elif vm is not None:
            rows.append(_Row(line, vm, destination, mode, window, group))
    if not problems:
        teams = {row.vm.team_id for row in rows}
        if None in teams or len(teams) > 1:
            for row in rows:
                if row.vm.team_id is None or row.vm.team_id != rows[0].vm.team_id:
                    problems.append(
                        (row.line, f"{row.vm.name} belongs to another team (or none); one plan is one team's.")
                    )
        for attr, what in (("mode", "mode"), ("window", "change window")):
            first = getattr(rows[0], attr)
            for row in rows:
                if getattr(row, attr) != first:
                    problems.append(
                        (
                            row.line,
                            f"its {what} differs from line {rows[0].line}'s; one plan has one {what}, split the CSV.",
                        )
                    )
    if problems:
        raise CSVError(rows=sorted(problems))
    return rows


def import_csv(actor: Any, text: str, *, name: str = "", **options: Any) -> MigrationPlan:
    """One draft plan from a CSV, all or nothing (see `parse_csv` for the checks)."""
    access.require(actor, Action.PLAN_CREATE)
    rows = parse_csv(actor, text)
    if rows[0].window is not None:
        options["window_start"], options["window_end"] = rows[0].window
    options.setdefault("mode", rows[0].mode)
    if name:
        options["name"] = name
    with transaction.atomic():
        for row in rows:
            if row.group is not None and row.group != row.vm.app:
                set_application_group(actor, row.vm, row.group)
        plan = plans.create_plan(
            actor,
            vm_ids=[row.vm.pk for row in rows],
            destinations={row.vm.pk: row.destination.pk if row.destination else None for row in rows},
            **options,
        )
        auditlog.record(actor, "plan.import_csv", plan, after={"rows": len(rows)})
    return plan


@dataclass
class Evacuation:
    host: Host
    plans: list[MigrationPlan]
    cannot_move: list[dict[str, str]]  # [{"vm", "why"}]


def evacuate(actor: Any, host: Host) -> Evacuation:
    """Empty a host for maintenance: mark it, and plan the move of every VM on it."""
    access.require(actor, Action.HOST_MANAGE, host)
    vms = list(VirtualMachine.objects.filter(host=host, present=True).select_related("team").order_by("name"))
    cannot = [
        {"vm": vm.name, "why": "It belongs to no team; an admin must assign one before it can be planned."}
        for vm in vms
        if vm.team_id is None
    ]
    by_team: dict[int, list[VirtualMachine]] = {}
    for vm in vms:
        if vm.team_id is not None:
            by_team.setdefault(vm.team_id, []).append(vm)
    made = []
    with transaction.atomic():
        if not host.maintenance:
            from inventory.services.hosts import update_host

            update_host(actor, host, maintenance=True)
        for team_vms in by_team.values():
            made.append(
                plans.create_plan(
                    actor,
                    vm_ids=[vm.pk for vm in team_vms],
                    name=f"Evacuate {host.name} ({team_vms[0].team})"[:120],
                    mode=Mode.AUTO,
                    max_items=MAX_EVACUATION_ITEMS,
                )
            )
        auditlog.record(
            actor,
            "host.evacuate",
            host,
            after={"plans": [p.pk for p in made], "vms": len(vms), "cannot_move": [c["vm"] for c in cannot]},
        )
    return Evacuation(host, made, cannot)
