"""Commands of the training side: ``train`` (rounds 0..N, resumable) and ``report`` (every round beside the
yardsticks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfcx.cli import options
from rfcx.cli.core import app
from rfcx.cli.options import DEFAULT_RUNS, DEFAULT_STORE
from rfcx.errors import NotFoundError


@app.command()
def train(
    round_: Annotated[int, typer.Option("--round", help="Run rounds 0..N (complete ones are skipped).")] = 0,
    store: Annotated[str, typer.Option("--store", help="Feature store (from build-store).")] = DEFAULT_STORE,
    runs: options.Runs = DEFAULT_RUNS,
    config: Annotated[
        str, typer.Option("--config", help="A named config (seed, cpu, tiny) or a TOML/YAML file.")
    ] = "cpu",
    folds: Annotated[int | None, typer.Option("--folds", help="Override the config's fold count.")] = None,
    device: Annotated[str | None, typer.Option("--device", help=f"{options.DEVICES} (default: the config's).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: key=value (repeatable).")
    ] = None,
    until_converged: Annotated[
        bool, typer.Option("--until-converged", help="Stop when the held-out signal stops improving.")
    ] = False,
    oracle: Annotated[
        bool,
        typer.Option(
            "--oracle",
            help="The ceiling: the same config trained on every call's "
            "truth (synthetic data's calls_truth.csv), one round, into RUNS/oracle; "
            "each round's report then shows it.",
        ),
    ] = False,
    equal_compute: Annotated[
        bool,
        typer.Option(
            "--equal-compute",
            help="The yardstick of the pseudo labels: round 0 of the same config trained for as many epochs as "
            "the pseudo-label rounds, into RUNS/equal-compute; each round's report then shows it and the "
            "pseudo-label gain over it.",
        ),
    ] = False,
) -> None:
    """Train the bootstrap round and the pseudo-label rounds 1..N (resumable)."""
    from rfcx.process_group import launched
    from rfcx.train.config import apply_overrides, get_config
    from rfcx.train.rounds import train_rounds
    from store.device import resolve_device

    cfg = apply_overrides(get_config(config), set_ or [])
    with launched(resolve_device(device or cfg.device).type == "cuda") as group:  # torchrun: one rank of many
        train_rounds(
            store,
            runs,
            cfg,
            until_round=round_,
            folds=folds,
            device=device,
            until_converged=until_converged,
            echo=typer.echo,
            group=group,
            oracle=oracle,
            equal_compute=equal_compute,
        )


@app.command()
def report(runs: options.LocalRuns = Path(DEFAULT_RUNS)) -> None:
    """Test LWLRAP of every complete round beside random, prior-only, the oracle and round 0 trained as long."""
    from rfcx.runs.directory import RunDir
    from rfcx.runs.report import format_round_table
    from rfcx.scoring.yardsticks import round_table

    if not runs.is_dir():
        raise NotFoundError(f"{runs}: run directory not found")
    best = RunDir(runs).best_round()
    typer.echo(format_round_table(round_table(runs), best["round"] if best else None))
