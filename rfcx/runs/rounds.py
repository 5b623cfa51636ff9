"""Which round(s) of a run a command uses: the one asked for, the run's best round (``best_round.json``), or every
complete round together; and their exported model files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rfcx.errors import RunError
from rfcx.runs.directory import RunDir, open_run


def default_round(run: RunDir, runs: str, say: Callable[[str], None]) -> int:
    """The round to use when none is asked for: the run's best round (``best_round.json``, written by training
    after every round: the best held-out signal), else (a run from before that file, or one naming a round that is
    not complete) the latest complete round. Says which and why; a :class:`RunError` where no round is complete."""
    latest = run.latest_complete()
    if latest is None:
        known = ", ".join(map(str, run.rounds())) or "none"
        raise RunError(
            f"{runs}: no complete round to infer with (rounds present: {known}; a round is complete once "
            f"{run.complete_marker(0).name} is written)"
        )
    best = run.best_round()
    if best is not None and run.is_complete(best["round"]):
        k = best["round"]
        value = best.get("value")
        told = f" {value:.4f}" if isinstance(value, (int, float)) else ""
        others = ", ".join(
            f"round {r}: {v:.4f}"
            for r, v in (best.get("rounds") or {}).items()
            if str(r) != str(k) and isinstance(v, (int, float))
        )
        say(
            f"round {k}: the run's best round (held-out {best.get('signal', 'signal')}{told}"
            + (f"; {others}" if others else "")
            + f", {run.best_round_file.name}); --round K picks another"
        )
        return k
    why = (
        f"{run.best_round_file.name} names round {best['round']}, which is not complete"
        if best is not None
        else f"the run has no {run.best_round_file.name} (trained before it was written)"
    )
    say(f"round {latest}: the latest complete round ({why}); --round K picks another")
    return latest


@dataclass(frozen=True)
class RoundModels:
    """The exported models a command runs, and where they come from."""

    run: RunDir  # the run, opened (and mirrored, at a URL) once
    label: str  # "round 1", "rounds 0-2"
    files: list[Path]
    rounds: list[int]


def round_models(runs: str, round_: int | str | None, fmt: str, say: Callable[[str], None]) -> RoundModels:
    """The exported model files of the requested round(s): a round number; ``best``/None (:func:`default_round`);
    or ``all``, every complete round's models together (the rounds' ensemble); a :class:`RunError` otherwise.

    A run at a URL is mirrored: its JSON files first, then the models of the round (in the local cache)."""
    from engine.export import SUFFIXES

    run = open_run(runs, pull="meta")
    if not run.root.is_dir():
        raise RunError(f"{runs}: no such run directory (train with `rfcx train`, or give --runs)")
    if round_ == "all":
        rounds = [k for k in run.rounds() if run.is_complete(k)]
        if not rounds:
            default_round(run, runs, say)  # fails, naming the rounds present
        if len(rounds) > 1:
            best = run.best_round()
            named = f"; {run.best_round_file.name} names round {best['round']}" if best else ""
            say(
                f"rounds {', '.join(map(str, rounds))}: every complete round's models together (the rounds' "
                f"ensemble{named}); --round K or --round best uses one round"
            )
    elif round_ in (None, "best"):  # the default (README "A detector that works": the best round beat the rounds'
        rounds = [default_round(run, runs, say)]  # ensemble on both benchmark-scale sets)
    elif not run.is_complete(int(round_)):
        raise RunError(
            f"{run.describe(run.round_dir(int(round_)))}: round {round_} is not complete "
            f"(no {run.complete_marker(int(round_)).name})"
        )
    else:
        rounds = [int(round_)]
    files: list[Path] = []
    for k in rounds:
        try:
            run.fetch(run.models_dir(k), suffix=SUFFIXES[fmt])
        except OSError as exc:
            raise RunError(f"{run.location}: could not download the models of round {k} ({exc})") from exc
        found = sorted(run.models_dir(k).glob(f"*{SUFFIXES[fmt]}"))
        if not found:
            flag = "torchscript" if fmt == "torchscript" else "export"
            raise RunError(
                f"{run.describe(run.models_dir(k))}: no exported {fmt} models (*{SUFFIXES[fmt]}); "
                f"run `rfcx export --round {k} --runs {runs} --format {flag}`"
            )
        files += found
    label = f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}-{rounds[-1]}"
    return RoundModels(run, label, files, rounds)
