"""``python -m bench``: run every benchmark, one JSON line each, into bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from bench import report
from bench.common import RESULTS

# replicas_bench after latency_bench: its one-replica baseline is latency_bench's figures.
BENCHMARKS = [
    "storage_bench",
    "backfill_bench",
    "ingest_bench",
    "memory_bench",
    "latency_bench",
    "replicas_bench",
    "training_bench",
    "global_bench",
]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("only", nargs="*", help="benchmark module names (default: all)")
    args = parser.parse_args()
    # One id per run: a benchmark that reuses another's figures as its baseline (replicas_bench)
    # takes them only from the same run.
    os.environ["BENCH_RUN_ID"] = str(time.time_ns())
    if not args.only:
        RESULTS.unlink(missing_ok=True)  # a full run writes a fresh file
    failed = []
    t_all = time.perf_counter()
    for name in args.only or BENCHMARKS:
        t0 = time.perf_counter()
        result = importlib.import_module(f"bench.{name}").main()
        print(f"# {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if not result.get("ok", True):
            failed.append(name)
    print(f"# all: {time.perf_counter() - t_all:.1f}s", file=sys.stderr)
    results = report.load()
    print(report.table(results), file=sys.stderr)
    print(report.table(results, report.EXTRA_ROWS, report.EXTRA_SIZES), file=sys.stderr)
    print(report.accuracy_table(results), file=sys.stderr)
    if failed:
        print(f"# targets missed: {', '.join(failed)} (see bench/results.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
