"""``python -m bench``: run every benchmark, one JSON line each, into bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHMARKS = ["storage_bench", "ingest_bench", "latency_bench", "training_bench"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("only", nargs="*", help="benchmark module names (default: all)")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        t0 = time.perf_counter()
        result = importlib.import_module(f"bench.{name}").main()
        print(f"# {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        if not result.get("ok", True):
            failed.append(name)
    if failed:
        print(f"# targets missed: {', '.join(failed)} (see bench/results.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
