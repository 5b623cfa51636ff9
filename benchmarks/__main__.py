"""``python -m benchmarks [--quick] [--out DIR] [--runs DIR --store PATH] [--quality-runs NAME=DIR ...]``:
the same as ``rfcx bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.run import BENCHMARKS, run_bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark every stage against what a user would pick instead (the same as `rfcx bench`).",
    )
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes on 2 cores); numbers are indicative")
    ap.add_argument("--out", type=Path, default=Path("demo/bench"), help="where bench.json, bench.md, *.png go")
    ap.add_argument("--runs", help="a trained run directory or URL (with --store): fcn vs exact LWLRAP")
    ap.add_argument("--store", help="the feature store (path or URL) that run was trained on (with --runs)")
    ap.add_argument("--quality-runs", nargs="+", metavar="NAME=DIR", help="run directories of training variants")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice, or OMP_NUM_THREADS)")
    args = ap.parse_args(argv)
    try:
        result = run_bench(
            args.out,
            quick=args.quick,
            runs=args.runs,
            store=args.store,
            quality_runs=args.quality_runs,
            only=args.only,
            threads=args.threads,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(args.out / f) for f in result['files'])} ({result['wall_s']:.0f} s)")
    return 1 if any(b.get("error") for b in result["benchmarks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
