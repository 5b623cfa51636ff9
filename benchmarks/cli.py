"""``rfcx bench``: a command the benchmarks add to rfcx's command line (entry point ``rfcx.commands``), so that
rfcx itself never imports them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfcx.errors import RfcxError


class BenchmarkFailed(RfcxError):
    """One benchmark or more raised; bench.md says which and why."""


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (minutes on 2 cores): indicative.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for bench.json, bench.md and the PNG plots.")] = Path(
        "demo/bench"
    ),
    runs: Annotated[
        str | None,
        typer.Option(
            "--runs", help="A trained run directory or URL (with --store): LWLRAP of fcn vs exact.", show_default=False
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="The feature store (path or URL) that run was trained on (with --runs).", show_default=False
        ),
    ] = None,
    quality_runs: Annotated[
        list[str] | None,
        typer.Option(
            "--quality-runs",
            help="NAME=DIR run directory of a training variant (repeatable): LWLRAP by round; "
            "NAME=VARIANT@SEED for one data seed of a variant (mean and spread over its seeds).",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Run only this benchmark (repeatable): store_build, store_reads, training_input, inference, quality.",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="torch threads (default: torch's choice, or OMP_NUM_THREADS).", show_default=False
        ),
    ] = None,
) -> None:
    """Benchmark every stage against what a user would pick instead (bench.json, bench.md, plots)."""
    from benchmarks.run import run_bench

    result = run_bench(
        out, quick=quick, runs=runs, store=store, quality_runs=quality_runs, only=only, threads=threads, echo=typer.echo
    )
    typer.echo(f"wrote {', '.join(str(out / f) for f in result['files'])} ({result['wall_s']:.0f} s)")
    failed = [b["name"] for b in result["benchmarks"] if b.get("error")]
    if failed:
        raise BenchmarkFailed(f"benchmark(s) failed: {', '.join(failed)} (see {out / 'bench.md'})")


def register(app: typer.Typer) -> None:
    """Add ``bench`` to ``app`` (rfcx.cli loads this through the ``rfcx.commands`` entry point)."""
    app.command()(bench)
