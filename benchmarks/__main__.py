"""`python -m benchmarks [--quick] [--only NAME ...] [--out PATH]`: run, print, save JSON."""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks import env

#: name -> module; the order of the table.
BENCHMARKS = {
    "live": "benchmarks.bench_live",
    "chain": "benchmarks.bench_chain",
    "backfill": "benchmarks.bench_backfill",
    "queries": "benchmarks.bench_queries",
    "flow": "benchmarks.bench_flow",
    "journal": "benchmarks.bench_journal",
    "views": "benchmarks.bench_views",
    "s3": "benchmarks.bench_s3",
    "cli": "benchmarks.bench_cli",
    "universe": "benchmarks.bench_universe",
    "day": "benchmarks.bench_day",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env.prepare()  # before anything imports Prefect
    from benchmarks.harness import format_table, not_available, write_json

    figures = []
    timings: dict[str, float] = {}
    for name in args.only or list(BENCHMARKS):
        print(f"== {name} ...", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            got = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            got = [not_available(name, "(whole benchmark)", f"{type(exc).__name__}: {exc}", None)]
        timings[name] = round(time.perf_counter() - start, 1)
        print(format_table(got), flush=True)
        figures += got
    print("\n== all figures\n" + format_table(figures))
    meta = {
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seconds": timings,
    }
    write_json(figures, args.out, meta)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
