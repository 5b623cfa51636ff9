"""The ``rfcx`` command line (typer): one sub-command per stage of the system."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from rfcx.cli_engine import DEFAULT_RUNS, DEFAULT_STORE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rfcx: bioacoustic species detection at scale (feature store, training recipe, batch inference).",
)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


DISTRIBUTED_COMMANDS = ("build-store", "train", "infer")  # what runs under torchrun (infer: with --batch)


@app.callback()
def _main(ctx: typer.Context,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from rfcx.process_group import DistributedError, torchrun_launch

    try:
        launch = torchrun_launch()
    except DistributedError as exc:
        _fail(str(exc))
    if launch is not None and launch.world > 1 and ctx.invoked_subcommand not in DISTRIBUTED_COMMANDS:
        _fail(f"`rfcx {ctx.invoked_subcommand}` runs as one process; start it without torchrun (torchrun runs "
              f"{', '.join(DISTRIBUTED_COMMANDS[:-1])} and infer --batch)")


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the data set into (competition layout).")],
    train: Annotated[int, typer.Option("--train", help="Number of train clips.")] = 100,
    test: Annotated[int, typer.Option("--test", help="Number of test clips.")] = 40,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each clip in seconds.")] = 60.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    background: Annotated[
        list[Path] | None, typer.Option("--background", help="Real recordings (FLAC files or folders of them; "
                                        "repeat the option) to mix in as background, one per clip.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes generating clips.")] = 1,
    mix: Annotated[
        str, typer.Option("--mix", help="zipf (default): a skewed species mix shared by train and test with labels "
                          "as sparse as the competition's; labels: the species follow the labels (--tp-fraction, "
                          "--label-density).")
    ] = "zipf",
    zipf_s: Annotated[float, typer.Option("--zipf", help="zipf mix: presence weight of the species of rank r is "
                                          "r^-S (0: uniform).")] = 1.0,
    species_per_clip: Annotated[float, typer.Option("--species-per-clip", help="zipf mix: mean species per clip "
                                                    "(Poisson).")] = 1.5,
    tp_per_clip: Annotated[float, typer.Option("--tp-per-clip", help="zipf mix: TP boxes per train clip "
                                               "(competition: 0.26).")] = 0.26,
    fp_per_clip: Annotated[float, typer.Option("--fp-per-clip", help="zipf mix: FP boxes per train clip "
                                               "(competition: 1.6).")] = 1.6,
    tp_balance: Annotated[float, typer.Option("--tp-balance", help="zipf mix: 1 spreads the TP boxes evenly over "
                                              "the species (as the competition's tables), 0 makes them follow "
                                              "presence.")] = 1.0,
    tp_fraction: Annotated[
        float | None,
        typer.Option("--tp-fraction", help="labels mix: share of train clips with TP boxes, in (0, 1] (default: "
                     "real ~24 %)."),
    ] = None,
    label_density: Annotated[
        float,
        typer.Option("--label-density", help="labels mix: label more of each train clip, >= 1: up to round(D) calls "
                     "per TP species and ~D times the FP rows (default 1: the real sparsity)."),
    ] = 1.0,
) -> None:
    """Write a synthetic data set in the competition's layout (train/, test/, train_tp.csv, ...)."""
    from rfcx.synth.dataset import Mix, synthesize

    try:
        if mix not in ("zipf", "labels"):
            raise ValueError(f"--mix must be zipf or labels, got {mix!r}")
        species_mix = None
        if mix == "zipf":
            if tp_fraction is not None or label_density != 1.0:
                raise ValueError("--tp-fraction and --label-density belong to --mix labels; --mix zipf sets the "
                                 "label density with --tp-per-clip and --fp-per-clip")
            species_mix = Mix(zipf_s=zipf_s, species_per_clip=species_per_clip, tp_per_clip=tp_per_clip,
                              fp_per_clip=fp_per_clip, tp_balance=tp_balance)
        s = synthesize(out_dir, n_train=train, n_test=test, seconds=seconds, seed=seed, background=background or None,
                       workers=workers, tp_fraction=tp_fraction, label_density=label_density, mix=species_mix)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(
        f"wrote {s.n_train} train + {s.n_test} test clips of {s.seconds:g} s, {s.n_tp_rows} TP and {s.n_fp_rows} FP "
        f"boxes to {s.out_dir} in {s.elapsed_s:.1f} s"
    )


@app.command("build-store")
def build_store_cmd(
    data: Annotated[Path, typer.Option("--data", help="Data folder: train/, test/, train_tp.csv, train_fp.csv.")],
    store: Annotated[str, typer.Option("--store", help="Feature store to create or extend (a .zarr folder or an "
                                       "fsspec URL: s3://bucket/features.zarr).")],
    backend: Annotated[str, typer.Option("--backend", help="auto (default: DALI on a GPU, torch on the CPU, where "
                                         "each measured fastest; an existing store keeps its own), dali or torch.")
                       ] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")] = "auto",
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad input (exit code 2).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Clips decoded per pipeline run.")] = 8,
    repair: Annotated[bool, typer.Option("--repair", help="First read every stored chunk, and decode the damaged "
                                         "clips again from their audio (the others are left as they are).")] = False,
) -> None:
    """Decode every clip and store its log-mel spectrogram in a chunked Zarr store (resumable)."""
    import os

    from tqdm.auto import tqdm

    from rfcx.process_group import launched
    from store import BadInputError, FeatureStore, build_store
    from store.builder import resolve_device
    from store.rejections import is_grouped

    if backend not in ("auto", "dali", "torch"):
        _fail(f"--backend must be auto, dali or torch, got {backend!r}")
    try:
        use_cuda = resolve_device(device) == "gpu"
        with launched(use_cuda) as group:
            summary = build_store(
                data, store, backend=backend, device=device, strict=strict, batch_size=batch_size,
                # defects one line each as found; the causes many rows share are grouped at the end (_print_store)
                on_reject=lambda r: None if is_grouped(r) else tqdm.write(f"rejected {r}"), progress=group.is_main,
                shard=(group.rank, group.world),
                gather=lambda obj: group.gather_after_work(obj, "build-store"),
                threads=max(1, (os.cpu_count() or 1) // group.local_world), repair=repair,
            )
    except BadInputError as exc:
        _fail(f"{exc} (--strict: stopped at the first bad input; what was stored before stays stored)", code=2)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    if not group.is_main:
        return
    for message in summary.warnings:
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    repaired = len({(d.split, d.recording_id) for d in summary.repaired})
    typer.echo(
        f"backend {summary.backend} on {summary.device}: stored {sum(summary.stored.values()) - repaired} new clips "
        f"({summary.clips_per_s:.2f} clips/s, {summary.x_realtime:.0f}x real time), "
        + (f"repaired {repaired} damaged clip{'s' if repaired != 1 else ''}, " if summary.checked is not None else "")
        + f"skipped {sum(summary.skipped.values())} already stored, {len(summary.rejected)} rejected"
        + (f", {summary.resampled} resampled to 48 kHz" if summary.resampled else "")
    )
    if summary.checked is not None:
        _print_check(summary.checked, "--repair: ")
        for damage in summary.repaired:
            typer.echo(f"  repaired {damage} (decoded again from its audio)")
    _print_store(FeatureStore.open(store))


@app.command()
def info(
    store: Annotated[str, typer.Option("--store", help="Feature store to describe.")],
    check: Annotated[bool, typer.Option("--check", help="Also read every chunk of every clip (a progress bar) and "
                                        "list the damaged clips (exit code 1 when any).")] = False,
) -> None:
    """Describe a feature store: clips and hours per split, boxes, rejected inputs, submission rows without a clip;
    with --check, whether every stored chunk reads back as written."""
    from store import FeatureStore

    try:
        fs = FeatureStore.open(store)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    _print_store(fs)
    if check:
        report = fs.verify()
        _print_check(report)
        if not report.ok:
            n = len(report.damaged_clips)
            _fail(f"{store}: {n} damaged clip{'s' if n != 1 else ''}; run `rfcx build-store --repair --data DIR "
                  f"--store {store}` to decode {'them' if n != 1 else 'it'} again from the audio")


def _print_check(report, prefix: str = "") -> None:  # noqa: ANN001 (store.integrity.VerifyReport)
    unchecked = (f"; {report.without_checksum} clip(s) written before checksums: only decompression checked"
                 if report.without_checksum else "")
    found = (f"{len(report.damaged_clips)} damaged clip(s)" if report.damaged else "none damaged")
    typer.echo(f"{prefix}checked {report.clips} clips ({report.chunks} chunks): {found}{unchecked}")
    for damage in report.damaged:
        typer.echo(f"  damaged {damage}")


def _print_store(fs) -> None:  # noqa: ANN001 (store.FeatureStore)
    from store.rejections import defects, rejected_csv_path, summarize

    s = fs.summary()
    p = fs.params
    typer.echo(f"store {s['path']}  (log-mel: {p.n_mels} mels, n_fft {p.n_fft}, hop {p.hop}, {p.sample_rate} Hz, "
               f"{p.f_min:g}-{p.f_max:g} Hz; built with {s['backend']})")
    for split, d in s["splits"].items():
        typer.echo(f"  {split:<5} {d['clips']:>6} clips  {d['hours']:8.2f} h")
    typer.echo(f"  boxes: {s['tp_boxes']} TP, {s['fp_boxes']} FP;  rejected inputs: {s['rejected']}")
    rejections = fs.rejections()
    shown = defects(rejections)  # each defect on its own line; the causes many rows share, grouped
    for r in shown[:20]:
        typer.echo(f"    rejected {r}")
    if len(shown) > 20:
        typer.echo(f"    ... and {len(shown) - 20} more (FeatureStore.rejected())")
    for line in summarize(rejections):
        typer.echo(f"    rejected {line}")
    listed = rejected_csv_path(fs.location) if rejections else None
    if listed is not None and listed.is_file():
        typer.echo(f"    every rejected input: {listed}")
    order, missing = fs.submission_ids(), fs.missing_submission_ids()
    if missing:
        more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
        typer.echo(f"  sample submission: {len(missing)} of its {len(order)} recordings have no stored test clip "
                   f"(e.g. {', '.join(missing[:3])}{more}): no audio file, or rejected above; `rfcx infer --batch` "
                   f"refuses to write a submission without them")


@app.command()
def train(
    round_: Annotated[int, typer.Option("--round", help="Run rounds 0..N (complete ones are skipped).")] = 0,
    store: Annotated[str, typer.Option("--store", help="Feature store (from build-store).")] = "demo/features.zarr",
    runs: Annotated[str, typer.Option("--runs", help="Run directory (one per config; a folder or an fsspec URL, "
                                      "mirrored in a local cache).")] = "demo/runs",
    config: Annotated[str, typer.Option("--config", help="A named config (seed, cpu, tiny) or a TOML/YAML file.")] = "cpu",
    folds: Annotated[int | None, typer.Option("--folds", help="Override the config's fold count.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or gpu (default: the config's).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config field: key=value (repeatable).")] = None,
    until_converged: Annotated[bool, typer.Option("--until-converged", help="Stop when the held-out signal stops improving.")] = False,
    oracle: Annotated[bool, typer.Option("--oracle", help="The ceiling: the same config trained on every call's "
                                         "truth (synthetic data's calls_truth.csv), one round, into RUNS/oracle; "
                                         "each round's report then shows it.")] = False,
) -> None:
    """Train the bootstrap round and the pseudo-label rounds 1..N (resumable)."""
    import yaml

    from rfcx.train.config import get_config
    from rfcx.train.rounds import train_rounds

    try:
        cfg = get_config(config)
        if set_:
            overrides = {}
            for item in set_:
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"--set takes key=value, got {item!r}")
                overrides[key.strip()] = yaml.safe_load(value)
            cfg = cfg.replace(**overrides)
        if device is not None and device not in ("auto", "cpu", "gpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or gpu, got {device!r}")
        from rfcx.process_group import launched
        from rfcx.train.context import resolve_device

        with launched(resolve_device(device or cfg.device).type == "cuda") as group:  # torchrun: one rank of many
            train_rounds(store, runs, cfg, until_round=round_, folds=folds, device=device,
                         until_converged=until_converged, echo=typer.echo, group=group, oracle=oracle)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # OSError: FileNotFoundError, a failed upload
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else _cause(str(exc)))


def _cause(message: str) -> str:
    """The error's own line where a worker process passed it on wrapped in its traceback (torch's DataLoader:
    ``Caught DamagedStoreError in DataLoader worker process 0. Original Traceback ...``): the last line,
    without the exception's class name."""
    if "Original Traceback" not in message:
        return message
    last = next((ln for ln in reversed(message.strip().splitlines()) if ln.strip()), message)
    name, sep, rest = last.partition(": ")
    return rest if sep and " " not in name else last


@app.command()
def report(
    runs: Annotated[Path, typer.Option("--runs", help="Run directory (local).")] = Path("demo/runs"),
) -> None:
    """Test LWLRAP of every complete round beside random, prior-only and the oracle, and the gap closed."""
    from rfcx.runs.report import format_round_table
    from rfcx.scoring.yardsticks import round_table

    if not runs.is_dir():
        _fail(f"{runs}: run directory not found")
    from rfcx.runs.directory import RunDir

    best = RunDir(runs).best_round()
    typer.echo(format_round_table(round_table(runs), best["round"] if best else None))


@app.command()
def review(
    runs: Annotated[Path, typer.Option("--runs", help="Run directory (local).")] = Path(DEFAULT_RUNS),
    store: Annotated[str, typer.Option("--store", help="The feature store the run was trained on (the spectrograms "
                                       "are cut from it).")] = DEFAULT_STORE,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the page into: index.html, img/, audio/ (a "
                                      "page written there before is replaced).")] = Path("demo/review"),
    round_: Annotated[str, typer.Option("--round", help="'all' (every complete round) or a round K (the table "
                                        "shows rounds 0..K; events and pseudo labels of round K).")] = "all",
    detections: Annotated[Path | None, typer.Option(
        "--detections", help="Events to show: a file or folder `rfcx infer --detections` wrote (csv, parquet, raven, "
                             "audacity; events or windows); default: the round's ensemble on the store's test clips.",
        show_default=False)] = None,
    detections_format: Annotated[str | None, typer.Option(
        "--detections-format", help="Format of --detections (default: guessed from the file).",
        show_default=False)] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Data folder (train/, test/) to cut the audio snippets from; without it, no players.",
        show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", help="Events shown per species (best peak score first).")] = 5,
    train_clips: Annotated[int, typer.Option("--train-clips", help="Train clips with boxes shown per species, "
                                             "above their pseudo labels.")] = 2,
    threshold: Annotated[float, typer.Option("--threshold", help="Score threshold of the events made from the "
                                             "round's test scores (without --detections).")] = 0.5,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    screenshot: Annotated[Path | None, typer.Option(
        "--screenshot", help="Also save a screenshot of the page here (PNG; needs Chromium, Debian's chromium "
                             "package).", show_default=False)] = None,
    screenshot_sections: Annotated[str | None, typer.Option(
        "--screenshot-sections", help="Sections the screenshot shows, comma-separated ids: rounds, round-K, "
                                      "species-S (default: the page from its top).", show_default=False)] = None,
    screenshot_height: Annotated[int, typer.Option("--screenshot-height", help="Height of the screenshot in pixels "
                                                   "(1280 wide).")] = 2000,
) -> None:
    """A static HTML page of a run (one folder that opens offline): each round beside the yardsticks, its loss
    curves and per-class AP; per species the top events (spectrogram, audio snippet, score) and train clips with
    their TP/FP boxes above the pseudo labels they produced."""
    from rfcx.review import write_review

    if round_ != "all":
        try:
            k = int(round_)
        except ValueError:
            k = -1
        if k < 0:
            _fail(f"--round {round_!r}: give a round number (0, 1, ...) or 'all'")
    try:
        summary = write_review(runs, store, out, k if round_ != "all" else "all", detections, detections_format, data,
                               top=top, train_clips=train_clips, threshold=threshold, progress=progress)
    except (OSError, ValueError) as exc:  # OSError: FileNotFoundError
        _fail(str(exc))
    for note in summary.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {summary.index} (rounds {', '.join(map(str, summary.rounds))}: {summary.events} events, "
               f"{summary.images} images, {summary.snippets} audio snippets; {summary.seconds:.0f} s)")
    if screenshot is not None:
        from .review.browser import screenshot as take_screenshot

        sections = [s.strip() for s in (screenshot_sections or "").split(",") if s.strip()]
        try:
            shot = take_screenshot(summary.index, screenshot, sections or None, height=screenshot_height)
            typer.echo(f"wrote {shot}")
        except (OSError, RuntimeError) as exc:  # OSError: no Chromium, or it did not run
            _fail(f"--screenshot: {exc} (the page itself is written)")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes (minutes on 2 cores): indicative.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for bench.json, bench.md and the PNG plots.")] = Path(
        "demo/bench"),
    runs: Annotated[str | None, typer.Option(
        "--runs", help="A trained run directory or URL (with --store): LWLRAP of fcn vs exact.",
        show_default=False)] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="The feature store (path or URL) that run was trained on (with --runs).",
        show_default=False)] = None,
    quality_runs: Annotated[list[str] | None, typer.Option(
        "--quality-runs", help="NAME=DIR run directory of a training variant (repeatable): LWLRAP by round.",
        show_default=False)] = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only this benchmark (repeatable): store_build, store_reads, training_input, inference, "
                       "quality.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="torch threads (default: torch's choice, or OMP_NUM_THREADS).", show_default=False)] = None,
) -> None:
    """Benchmark every stage against what a user would pick instead (bench.json, bench.md, plots)."""
    from benchmarks.run import run_bench

    try:
        result = run_bench(out, quick=quick, runs=runs, store=store, quality_runs=quality_runs, only=only,
                           threads=threads, echo=typer.echo)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {', '.join(str(out / f) for f in result['files'])} ({result['wall_s']:.0f} s)")
    failed = [b["name"] for b in result["benchmarks"] if b.get("error")]
    if failed:
        _fail(f"benchmark(s) failed: {', '.join(failed)} (see {out / 'bench.md'})")


def _register_more() -> None:
    """Commands kept in modules of their own register themselves on ``app``."""
    from rfcx import cli_engine

    cli_engine.register(app)


_register_more()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
