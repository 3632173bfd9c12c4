"""Helpers shared by the benchmarks: a database of their own, timing, statistics and output.

Benchmarks never touch the portal's database: `setup_django()` points Django at a separate database
(`vmportal_bench` on the same server unless VMPORTAL_BENCH_DATABASE_URL says otherwise), creates it
when missing and migrates it. `drop_database()` removes it again at the end of a run.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/vmportal"
BENCH_DATABASE_NAME = "vmportal_bench"

_bench_url: str | None = None


def bench_database_url() -> str:
    """The bench database: VMPORTAL_BENCH_DATABASE_URL, else the portal's server with another name."""
    explicit = os.environ.get("VMPORTAL_BENCH_DATABASE_URL")
    if explicit:
        return explicit
    parts = urlsplit(os.environ.get("VMPORTAL_DATABASE_URL", DEFAULT_DATABASE_URL))
    return urlunsplit(parts._replace(path=f"/{BENCH_DATABASE_NAME}"))


def _split(url: str) -> tuple[str, str]:
    """(URL of the server's maintenance database, name of the database in `url`)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


def _maintenance(url: str, statement: str) -> None:
    import psycopg
    from psycopg import sql

    server, name = _split(url)
    with psycopg.connect(server, autocommit=True) as conn:
        if statement == "create":
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def setup_django() -> None:
    """Configure Django on the bench database (created and migrated if needed). Idempotent."""
    global _bench_url
    if _bench_url is not None:
        return
    portal_name = _split(os.environ.get("VMPORTAL_DATABASE_URL", DEFAULT_DATABASE_URL))[1]
    url = bench_database_url()
    if _split(url)[1] == portal_name:
        raise SystemExit(f"refusing to benchmark in the portal's own database {portal_name!r}")
    _maintenance(url, "create")
    os.environ["VMPORTAL_DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmportal.settings")
    os.environ.setdefault("VMPORTAL_TESTING", "1")
    os.environ.setdefault("VMPORTAL_REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ.setdefault("VMPORTAL_CHANNEL_PREFIX", "vmportal-bench")

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    _bench_url = url


def drop_database() -> None:
    """Drop the bench database, unless VMPORTAL_BENCH_KEEP_DB=1."""
    global _bench_url
    if _bench_url is None or os.environ.get("VMPORTAL_BENCH_KEEP_DB") == "1":
        return
    from django.db import connections

    connections.close_all()
    _maintenance(_bench_url, "drop")
    _bench_url = None


# ---- timing ------------------------------------------------------------------------------------


def timed(func: Callable[[], object]) -> float:
    """Seconds one call of `func` takes."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def interleaved(a: Callable[[], float], b: Callable[[], float], pairs: int = 5) -> tuple[list[float], list[float]]:
    """Run A B A B … `pairs` times. Each callable does its own untimed preparation and returns seconds."""
    times_a, times_b = [], []
    for _ in range(pairs):
        times_a.append(a())
        times_b.append(b())
    return times_a, times_b


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
    }


def timing_result(
    name: str,
    inputs: dict[str, Any],
    samples: list[float],
    target_s: float,
    baseline: list[float] | None = None,
    baseline_name: str = "",
) -> dict[str, Any]:
    """A timing result: medians in seconds; passes when the median is within `target_s`."""
    stats = summary(samples)
    result: dict[str, Any] = {"name": name, "inputs": inputs, "unit": "s", **stats, "samples": len(samples)}
    if baseline:
        base = summary(baseline)
        result["baseline"] = {"name": baseline_name, **base}
        result["ratio"] = round(statistics.median(samples) / statistics.median(baseline), 2)
    result["target"] = f"median <= {target_s} s"
    result["pass"] = statistics.median(samples) <= target_s
    return result


@contextmanager
def count_queries() -> Iterator[list[int]]:
    """`with count_queries() as n:` … afterwards `n[0]` is the number of queries run on the default database."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    box = [0]
    with CaptureQueriesContext(connection) as ctx:
        yield box
    box[0] = len(ctx.captured_queries)


# ---- output ------------------------------------------------------------------------------------


def emit(module: str, result: dict[str, Any]) -> None:
    """Print one result as a JSON line and append it to bench/results/<module>.jsonl."""
    line = json.dumps({"bench": module, "at": datetime.now(UTC).isoformat(timespec="seconds"), **result})
    print(line, flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    with (RESULTS_DIR / f"{module}.jsonl").open("a") as fh:
        fh.write(line + "\n")
