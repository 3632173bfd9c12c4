"""`vmportal`: list VMs, plan from CSV, audit, submit, approve, watch a run, evacuate a host — through the
REST API with a personal token (VMPORTAL_URL, VMPORTAL_TOKEN or --url/--token).

Exit codes: 0 done; 1 the portal could not be reached or answered an error; 2 the request was refused
(bad input, not allowed, wrong state); 3 the plan ended without moving every VM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import requests
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

TERMINAL_PLAN = {"succeeded", "partially_succeeded", "failed", "cancelled", "rejected", "superseded"}
TERMINAL_RUN = {"succeeded", "failed", "rolled_back", "cancelled"}
WAITING_AUDIT = {"draft", "auditing"}

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


class Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(error.get("message") or f"HTTP {status}")


class Client:
    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.base = url.rstrip("/") + "/api/v1/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["Accept"] = "application/json"
        self.timeout = timeout

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base + path.lstrip("/"), timeout=self.timeout, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"code": "error", "message": response.text[:300]}}
        if response.status_code >= 400:
            raise Refused(response.status_code, body)
        return body

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, data: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=data or {})

    def every(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            body = self.get(path, page=page, page_size=500, **params)
            yield from body["results"]
            if not body.get("next"):
                return
            page += 1


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[escape("" if v is None else str(v)) for v in row])
    return table


# ---- commands -------------------------------------------------------------------------------------


def cmd_vms(client: Client, args: argparse.Namespace) -> int:
    rows = [
        [
            v["name"],
            v["uuid"],
            v["host"],
            v["team"],
            v["state"],
            v["vcpus"],
            f"{v['memory'] // 2**20} MiB",
            v["application_group"],
        ]
        for v in client.every("vms/", host=args.host, team=args.team, name=args.name)
    ]
    console.print(
        _table(f"{len(rows)} VMs", ["name", "uuid", "host", "team", "state", "vCPUs", "memory", "group"], rows)
    )
    return 0


def cmd_plan_csv(client: Client, args: argparse.Namespace) -> int:
    with open(args.file, encoding="utf-8-sig") as f:
        text = f.read()
    try:
        plan = client.post("plans/import-csv/", {"csv": text, "name": args.name or ""})
    except Refused as exc:
        rows = exc.body.get("error", {}).get("rows")
        if rows:
            errors.print(f"[bold red]{escape(str(exc))}[/]")
            errors.print(_table("Refused rows", ["line", "problem"], [[r["line"], r["message"]] for r in rows]))
            return 2
        raise
    console.print(
        f"Plan [bold]{plan['id']}[/] “{escape(plan['name'])}” created ({plan['status']}); its audit is under way."
    )
    if args.wait:
        return show_audit(client, plan["id"], wait=True)
    return 0


def _wait_for_audit(client: Client, plan_id: int, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with console.status(f"Auditing plan {plan_id}…"):
        while True:
            plan = client.get(f"plans/{plan_id}/")
            if plan["status"] not in WAITING_AUDIT or time.monotonic() > deadline:
                return dict(plan)
            time.sleep(1)


def show_audit(client: Client, plan_id: int, wait: bool) -> int:
    plan = _wait_for_audit(client, plan_id) if wait else client.get(f"plans/{plan_id}/")
    audit = client.get(f"plans/{plan_id}/audit/")
    console.print(
        f"Plan {plan_id}: [bold]{plan['status']}[/] — audit {audit['status']}, "
        f"{audit['blocks']} block(s), {audit['warnings']} warning(s)."
    )
    if audit["results"]:
        rows = [[r["vm"], r["check_id"], r["severity"], r["message"]] for r in audit["results"]]
        console.print(_table("Findings", ["VM", "check", "severity", "message"], rows))
    items = list(client.every(f"plans/{plan_id}/items/"))
    cannot = [[i["vm_name"], i["destination_reason"]] for i in items if not i["destination"]]
    if cannot:
        console.print(_table("Cannot move", ["VM", "why"], cannot))
    waves = client.get(f"plans/{plan_id}/waves/")
    if waves["waves"]:
        rows = [
            [w["number"], w["items"], f"{w['start_s']:.0f} s", f"{w['end_s']:.0f} s", "yes" if w["in_window"] else "NO"]
            for w in waves["waves"]
        ]
        console.print(_table(f"Waves: {waves['summary']}", ["wave", "VMs", "starts", "ends", "in window"], rows))
    for key, why in sorted(waves["problems"].items(), key=lambda kv: int(kv[0]))[:20]:
        console.print(f"[yellow]item {key}: {escape(why)}[/]")
    return 2 if plan["status"] == "blocked" else 0


def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    if args.again:
        client.post(f"plans/{args.plan}/audit/")
    return show_audit(client, args.plan, wait=args.wait or args.again)


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    plan = client.post(f"plans/{args.plan}/submit/")
    console.print(f"Plan {plan['id']} is {plan['status']}.")
    return 0


def cmd_decide(client: Client, args: argparse.Namespace) -> int:
    plan = client.post(f"plans/{args.plan}/{args.command}/", {"comment": args.comment})
    console.print(f"Plan {plan['id']} is {plan['status']}.")
    return 0


def watch(client: Client, plan_id: int, interval: float = 1.0) -> int:
    """Live progress bars: one per VM of the plan and one for the whole plan, until the plan ends."""
    tasks: dict[int, TaskID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        total = len(list(client.every(f"plans/{plan_id}/items/")))
        overall = progress.add_task(f"plan {plan_id}", total=max(total, 1), state="")
        while True:
            plan = client.get(f"plans/{plan_id}/")
            runs = {r["item"]: r for r in sorted(client.every("runs/", plan=plan_id), key=lambda r: r["id"])}
            for run in runs.values():
                if run["id"] not in tasks:
                    tasks[run["id"]] = progress.add_task(
                        escape(f"{run['vm_name']} → {run['destination']} ({run['mode']})"), total=100, state=""
                    )
                done = run["status"] in TERMINAL_RUN
                percent = 100.0 if run["status"] == "succeeded" else float(run["percent"] or 0)
                progress.update(tasks[run["id"]], completed=percent, state=run["status"] + ("" if not done else ""))
            finished = sum(1 for r in runs.values() if r["status"] in TERMINAL_RUN)
            progress.update(overall, completed=finished, state=plan["status"])
            if plan["status"] in TERMINAL_PLAN:
                break
            time.sleep(interval)
    console.print(f"Plan {plan_id} {plan['status']}: {escape(plan['status_reason'])}")
    return 0 if plan["status"] == "succeeded" else 3


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    plan_id = args.plan
    if args.run:
        plan_id = client.get(f"runs/{args.run}/")["plan"]
    return watch(client, plan_id, args.interval)


def cmd_evacuate(client: Client, args: argparse.Namespace) -> int:
    result = client.post(f"hosts/{args.host}/evacuate/")
    console.print(
        f"Host {escape(args.host)} is in maintenance; plan(s) {', '.join(map(str, result['plans'])) or 'none'}."
    )
    if result["cannot_move"]:
        rows = [[c["vm"], c["why"]] for c in result["cannot_move"]]
        console.print(_table("Cannot move", ["VM", "why"], rows))
    code = 0
    for plan_id in result["plans"]:
        code = max(code, show_audit(client, plan_id, wait=True))
        if args.submit and code == 0:
            plan = client.post(f"plans/{plan_id}/submit/")
            console.print(f"Plan {plan_id} submitted: {plan['status']}.")
    return code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmportal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default=os.environ.get("VMPORTAL_URL", "http://127.0.0.1:8000"))
    p.add_argument("--token", default=os.environ.get("VMPORTAL_TOKEN", ""), help="default: $VMPORTAL_TOKEN")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("vms", help="list the VMs you may see")
    s.add_argument("--host")
    s.add_argument("--team")
    s.add_argument("--name", help="part of the name")
    s.set_defaults(func=cmd_vms)
    s = sub.add_parser("plan-csv", help="create a plan from a CSV (vm,destination,mode,window,group)")
    s.add_argument("file")
    s.add_argument("--name")
    s.add_argument("--wait", action="store_true", help="wait for the audit and show it")
    s.set_defaults(func=cmd_plan_csv)
    s = sub.add_parser("audit", help="show a plan's audit and waves")
    s.add_argument("plan", type=int)
    s.add_argument("--again", action="store_true", help="audit the draft plan again first")
    s.add_argument("--wait", action="store_true", help="wait while the plan is being audited")
    s.set_defaults(func=cmd_audit)
    s = sub.add_parser("submit", help="send a ready plan to the approvers")
    s.add_argument("plan", type=int)
    s.set_defaults(func=cmd_submit)
    for name in ("approve", "reject"):
        s = sub.add_parser(name, help=f"{name} a plan waiting for approval")
        s.add_argument("plan", type=int)
        s.add_argument("--comment", required=True)
        s.set_defaults(func=cmd_decide)
    s = sub.add_parser("watch", help="follow a plan's runs with live progress bars until it ends")
    group = s.add_mutually_exclusive_group(required=True)
    group.add_argument("plan", type=int, nargs="?")
    group.add_argument("--run", type=int, help="follow the plan of this run")
    s.add_argument("--interval", type=float, default=1.0)
    s.set_defaults(func=cmd_watch)
    s = sub.add_parser("evacuate", help="empty a host for maintenance: plan every VM away (admins)")
    s.add_argument("host")
    s.add_argument("--submit", action="store_true", help="submit the plans once audited and unblocked")
    s.set_defaults(func=cmd_evacuate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.token:
        errors.print("No token: create one on your account page (/account/tokens/) and set VMPORTAL_TOKEN.")
        return 2
    client = Client(args.url, args.token)
    try:
        return int(args.func(client, args))
    except Refused as exc:
        errors.print(f"[bold red]Refused ({exc.status}):[/] {escape(str(exc))}")
        fields = exc.body.get("error", {}).get("fields") if isinstance(exc.body, dict) else None
        for field, problems in (fields or {}).items():
            errors.print(f"  {escape(field)}: {escape(str(problems))}")
        return 1 if exc.status >= 500 or exc.status == 401 else 2
    except requests.RequestException as exc:
        errors.print(f"[bold red]Cannot reach the portal at {escape(args.url)}:[/] {escape(str(exc))}")
        return 1
    except OSError as exc:
        errors.print(f"[bold red]{escape(str(exc))}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
