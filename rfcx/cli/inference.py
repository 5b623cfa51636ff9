"""Commands of the inference side: ``export`` (a round's models as TorchScript / torch.export files), ``infer``
(an :class:`engine.job.InferJob`) and ``evaluate`` (LWLRAP of a submission)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rfcx.cli import options
from rfcx.cli.core import app
from rfcx.cli.options import DEFAULT_RUNS, DEFAULT_STORE, at_least, choice, local_output, round_number
from rfcx.errors import UsageError

if TYPE_CHECKING:
    from rfcx.runs.directory import RunDir

EXPORT_FORMATS = {"torchscript": ("torchscript",), "export": ("export",), "both": ("torchscript", "export")}


@app.command("export")
def export_cmd(
    round_: Annotated[
        int | None,
        typer.Option(
            "--round",
            help="Round whose member checkpoints to export (default: the run's best round, best_round.json; "
            "else the latest complete one).",
            show_default=False,
        ),
    ] = None,
    runs: options.Runs = DEFAULT_RUNS,
    fmt: Annotated[str, typer.Option("--format", help="torchscript (.ts), export (.pt2) or both.")] = "both",
    force: Annotated[bool, typer.Option("--force", help="Export again files newer than their checkpoint.")] = False,
) -> None:
    """Export every member of a round as frozen TorchScript and/or torch.export programs (round{K}/models/)."""
    from rfcx.runs.directory import open_run
    from rfcx.runs.rounds import default_round
    from rfcx.train.export import export_round_files

    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format must be torchscript, export or both, got {fmt!r}")
    run = open_run(runs, pull="none" if round_ is not None else "meta")
    exported = export_round_files(
        run, default_round(run, runs, typer.echo) if round_ is None else round_, EXPORT_FORMATS[fmt], force=force
    )
    for path in exported.written:
        typer.echo(f"wrote {run.describe(path)}")
    for path in exported.up_to_date:
        typer.echo(f"up to date {run.describe(path)} (newer than its checkpoint; --force writes it again)")


@app.command("infer")
def infer_cmd(
    ctx: typer.Context,
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Audio files or folders to score (not in a store); leave out with --batch.", show_default=False
        ),
    ] = None,
    batch: Annotated[bool, typer.Option("--batch", help="Score every clip of a split of the feature store.")] = False,
    store: Annotated[str, typer.Option("--store", help="Feature store (with --batch).")] = DEFAULT_STORE,
    runs: options.Runs = DEFAULT_RUNS,
    round_: Annotated[
        str | None,
        typer.Option(
            "--round",
            help="Round to use: K, 'best' (the default: the run's best round, best_round.json) or 'all' "
            "(every complete round's models together).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of the store to score (with --batch).")] = "test",
    out: Annotated[Path, typer.Option("--out", help="Submission CSV to write (recording_id,s0..s23).")] = Path(
        "submission.csv"
    ),
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="exact (one forward per window; training scores its rounds' test clips so) or fcn (one per clip).",
        ),
    ] = "exact",  # engine.windows.DEFAULT_MODE (not imported here: the command line starts without numpy)
    postprocess: Annotated[
        str, typer.Option("--postprocess", help="none, or prior (rescale classes by prior).")
    ] = "none",
    prior_file: Annotated[
        Path | None,
        typer.Option(
            "--prior",
            help="Labels CSV (recording_id,s0..; 0/1 or soft pseudo labels) giving the class prior "
            "(default: the store's TP boxes).",
            show_default=False,
        ),
    ] = None,
    prior_strength: Annotated[float, typer.Option("--prior-strength", help="Exponent of the prior ratio.")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 64,
    device: options.Device = "auto",
    fmt: Annotated[
        str, typer.Option("--format", help="Exported models to run: torchscript (.ts) or export (.pt2).")
    ] = ("torchscript"),
    detections: Annotated[
        Path | None,
        typer.Option(
            "--detections",
            help="Also write the detections above the threshold here: a file, or (raven, audacity) a "
            "folder of one table per recording when the path has no suffix.",
            show_default=False,
        ),
    ] = None,
    detections_level: Annotated[
        str,
        typer.Option(
            "--detections-level",
            help="events (overlapping or touching windows of a species merged, with its "
            "frequency band) or windows (one row per window, the former table).",
        ),
    ] = "events",
    detections_format: options.DetectionsFormat = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", help="Score threshold of --detections (every species that no per-species threshold names)."
        ),
    ] = 0.5,
    species_thresholds: Annotated[
        Path | None,
        typer.Option(
            "--species-thresholds",
            help="CSV species_id,threshold: per-species thresholds of --detections.",
            show_default=False,
        ),
    ] = None,
    target_precision: Annotated[
        float | None,
        typer.Option(
            "--target-precision",
            help="Choose each species' threshold on the round's out-of-fold scores of the "
            "store's TP/FP boxes for this precision (README); written beside --detections.",
            show_default=False,
        ),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir",
            help="Where finished clips are kept so that a killed run resumes "
            "(default: .OUT.parts beside --out, removed once OUT is written).",
            show_default=False,
        ),
    ] = None,
    threads: options.Threads = None,
    chunk_clips: Annotated[
        int,
        typer.Option(
            "--chunk-clips", help="Clips read and scored together; under torchrun, ranks take turns by chunk."
        ),
    ] = 16,
    progress: options.Progress = True,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Audio files: stop at the first one that cannot be read (exit code 2) instead of naming it, "
            "scoring the others and summing up at the end.",
        ),
    ] = False,
) -> None:
    """Score clips with the exported ensemble of a round: a feature store's split (--batch) or audio files."""
    from engine.export import SUFFIXES
    from engine.job import InferJob, run_infer
    from engine.postprocess import Postprocess
    from engine.windows import Mode
    from rfcx.process_group import launched, torchrun_launch
    from rfcx.runs.rounds import round_models
    from store.device import resolve_device

    if batch == bool(inputs):
        raise UsageError(
            "give either --batch (score a store's split) or audio FILE_OR_DIR arguments, not both or neither"
        )
    local_output(out, "--out")
    local_output(detections, "--detections")
    choice(mode, Mode, "--mode")
    choice(postprocess, Postprocess, "--postprocess")
    choice(fmt, SUFFIXES, "--format")
    at_least(batch_size, 1, "--batch-size")
    at_least(chunk_clips, 1, "--chunk-clips")
    launch = torchrun_launch()  # checked by the command line's callback
    if launch is not None and launch.world > 1 and not batch:
        raise UsageError("`rfcx infer FILE_OR_DIR...` runs as one process; under torchrun use `rfcx infer --batch`")
    if threads is not None:
        import torch

        torch.set_num_threads(at_least(threads, 1, "--threads"))
    dev = resolve_device(device)
    group = ctx.with_resource(launched(dev.type == "cuda"))  # under torchrun: this process's place among the ranks
    if dev.type == "cuda" and group.distributed:
        import torch

        dev = torch.device("cuda", torch.cuda.current_device())
    say = typer.echo if group.is_main else (lambda *_: None)
    chosen = round_models(runs, round_number(round_, also=("best", "all")) if round_ else None, fmt, say)
    rounds = chosen.rounds
    job = InferJob(
        models=chosen.files,
        label=chosen.label,
        out=out,
        store=store if batch else None,
        split=split,
        audio=tuple(inputs or ()),
        fmt=fmt,
        mode=mode,
        batch_size=batch_size,
        chunk_clips=chunk_clips,
        postprocess=postprocess,
        prior_file=prior_file,
        prior_strength=prior_strength,
        detections=detections,
        detections_level=detections_level,
        detections_format=detections_format,
        threshold=threshold,
        species_thresholds=species_thresholds,
        target_precision=target_precision,
        choose_thresholds=_oof_chooser(chosen.run, rounds, target_precision),
        choose_thresholds_source=(
            f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {', '.join(map(str, rounds))}"
        ),
        checkpoint_dir=checkpoint_dir,
        band_store=None if batch else store,
        strict=strict,
        progress=progress,
    )
    result = run_infer(
        job,
        dev,
        shard=(group.rank, group.world),
        gather=lambda obj: group.gather_after_work(obj, "infer --batch: gathering the ranks' scores"),
        echo=typer.echo,
    )
    if group.is_main:
        typer.echo(result.summary)
        for line in result.lines:
            typer.echo(line)


def _oof_chooser(run: RunDir, rounds: list[int], target: float | None):  # noqa: ANN202 (engine.job.ThresholdChooser)
    """``--target-precision``: the thresholds chosen on the rounds' out-of-fold scores of the store's boxes."""
    if target is None:
        return None

    def choose(tp, fp):  # noqa: ANN001, ANN202 (DataFrames -> thresholds, TP count, FP count)
        from rfcx.train.thresholds import oof_thresholds

        for k in rounds:
            run.fetch(run.round_dir(k) / "members", suffix="predictions.npz")
        thresholds, labelled = oof_thresholds(run, rounds, tp, fp, target)
        return thresholds, int(labelled.is_tp.sum()), int((~labelled.is_tp).sum())

    return choose


@app.command("evaluate")
def evaluate_cmd(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions: recording_id,s0..s23 (a submission).")],
    truth: Annotated[Path, typer.Option("--truth", help="Truth: recording_id,s0..s23 of 0/1 (test_labels.csv).")],
    train_tp: Annotated[
        Path | None,
        typer.Option(
            "--train-tp",
            help="The training train_tp.csv: adds the prior-only yardstick (species ranked by their TP recordings).",
        ),
    ] = None,
) -> None:
    """LWLRAP of a submission against clip-level truth beside random and prior-only scores, with a per-class table."""
    from rfcx.scoring.evaluation import evaluate

    result = evaluate(pred, truth, train_tp)
    assert result.yardsticks is not None  # evaluate() always sets them
    typer.echo(
        f"LWLRAP {result.lwlrap:.4f} on {result.n_clips} clips"
        + (
            f" ({result.n_extra_predictions} predicted clips without truth ignored)"
            if result.n_extra_predictions
            else ""
        )
        + f"  [random {result.yardsticks['random']:.4f}"
        + (f", prior-only {result.yardsticks['prior_only']:.4f}" if result.yardsticks["prior_only"] is not None else "")
        + "]"
    )
    typer.echo("species  positives  weight  lwlrap")
    for r in result.per_class.itertuples():
        value = f"{r.lwlrap:.4f}" if r.positives else "     -"
        typer.echo(f"{r.species_id:>7}  {r.positives:>9}  {r.weight:6.3f}  {value}")
