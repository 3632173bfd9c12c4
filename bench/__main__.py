"""`python -m bench` runs every benchmark; `python -m bench b_sync …` runs the ones named."""

from __future__ import annotations

import importlib
import sys
import traceback

from bench.common import BENCH_DIR, drop_database, emit, setup_django


def available() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("b_*.py"))


def main(argv: list[str]) -> int:
    known = available()
    names = argv or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(known)}", file=sys.stderr)
        return 2
    setup_django()
    from tests.base import hold_lab_lock

    hold_lab_lock()  # benchmarks drive the lab and need it to themselves
    failed: list[str] = []
    errors = 0
    try:
        for name in names:
            try:
                results = importlib.import_module(f"bench.{name}").run()
            except Exception:
                traceback.print_exc()
                errors += 1
                continue
            for result in results:
                emit(name, result)
                if not result.get("pass", True):
                    failed.append(result["name"])
    finally:
        drop_database()
    if failed:
        print(f"targets missed: {', '.join(failed)}", file=sys.stderr)
    # Benchmarks report; only a benchmark that could not run makes the command fail.
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
