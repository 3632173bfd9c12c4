"""Benchmarks for vmportal (see PERFORMANCE.md). Run with `python -m bench [module ...]`.

Each benchmark is a module `bench/b_<id>.py` exposing `run() -> list[dict]`; the runner prints one
JSON line per result and appends it to `bench/results/<module>.jsonl`.
"""
