"""CLI commands of the inference side: export, infer, evaluate (registered on rfcx.cli.app)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_STORE = "demo/features.zarr"  # where `make demo` puts them
DEFAULT_RUNS = "demo/runs"


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _formats(value: str) -> tuple[str, ...]:
    choices = {"torchscript": ("torchscript",), "export": ("export",), "both": ("torchscript", "export")}
    if value not in choices:
        _fail(f"--format must be torchscript, export or both, got {value!r}")
    return choices[value]


def export_cmd(
    round_: Annotated[int | None, typer.Option(
        "--round", help="Round whose member checkpoints to export (default: the run's best round, best_round.json; "
                        "else the latest complete one).", show_default=False)] = None,
    runs: Annotated[str, typer.Option("--runs", help="Run directory of `rfcx train` (a folder or an fsspec URL).")] = (
        DEFAULT_RUNS),
    fmt: Annotated[str, typer.Option("--format", help="torchscript (.ts), export (.pt2) or both.")] = "both",
    force: Annotated[bool, typer.Option("--force", help="Export again files newer than their checkpoint.")] = False,
) -> None:
    """Export every member of a round as frozen TorchScript and/or torch.export programs (round{K}/models/)."""
    from rfcx.runs.directory import open_run
    from rfcx.train.export import export_round_files

    formats = _formats(fmt)
    try:
        run = open_run(runs, pull="none" if round_ is not None else "meta")
        if round_ is None:
            round_ = _default_round(run, runs)
        exported = export_round_files(run, round_, formats, force=force)
    except (OSError, ValueError) as exc:  # OSError: FileNotFoundError, a failed upload to a URL
        _fail(str(exc))
    for path in exported.written:
        typer.echo(f"wrote {run.describe(path)}")
    for path in exported.up_to_date:
        typer.echo(f"up to date {run.describe(path)} (newer than its checkpoint; --force writes it again)")


def _default_round(run, runs: str, say=typer.echo) -> int:  # noqa: ANN001 (rfcx.runs.RunDir, print)
    """The round to use when none is asked for: the run's best round (``best_round.json``, written by training
    after every round: the best held-out signal), else (a run from before that file, or one naming a round that is
    not complete) the latest complete round. Says which and why; fails where no round is complete."""
    latest = run.latest_complete()
    if latest is None:
        known = ", ".join(map(str, run.rounds())) or "none"
        _fail(f"{runs}: no complete round to infer with (rounds present: {known}; a round is complete once "
              f"{run.complete_marker(0).name} is written)")
    best = run.best_round()
    if best is not None and run.is_complete(best["round"]):
        k = best["round"]
        value = best.get("value")
        told = f" {value:.4f}" if isinstance(value, (int, float)) else ""
        others = ", ".join(f"round {r}: {v:.4f}" for r, v in (best.get("rounds") or {}).items()
                           if str(r) != str(k) and isinstance(v, (int, float)))
        say(f"round {k}: the run's best round (held-out {best.get('signal', 'signal')}{told}"
                   + (f"; {others}" if others else "") + f", {run.best_round_file.name}); --round K picks another")
        return k
    why = (f"{run.best_round_file.name} names round {best['round']}, which is not complete" if best is not None
           else f"the run has no {run.best_round_file.name} (trained before it was written)")
    say(f"round {latest}: the latest complete round ({why}); --round K picks another")
    return latest


def parse_round(value: str | None) -> int | str | None:
    """``--round`` of ``rfcx infer``: a round number, ``best`` (the run's best round, best_round.json) or ``all``
    (every complete round's models together); None: ``best``."""
    if value is None or value in ("all", "best"):
        return value
    try:
        k = int(value)
    except ValueError:
        k = -1
    if k < 0:
        _fail(f"--round {value!r}: give a round number (0, 1, ...), 'best' or 'all'")
    return k


def _round_models(runs: str, round_: int | str | None, fmt: str,
                  say=typer.echo) -> tuple[str, list[Path], list[int]]:  # noqa: ANN001
    """The exported model files of the requested round(s): a round number; ``best``/None (:func:`_default_round`);
    or ``all``, every complete round's models together (the rounds' ensemble). Returns a label ("round 1",
    "rounds 0-2"), the files and the rounds; clear errors otherwise.

    A run at a URL is mirrored: its JSON files first, then the models of the round (in the local cache)."""
    from engine.export import SUFFIXES
    from rfcx.runs.directory import open_run

    try:
        run = open_run(runs, pull="meta")
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    if not run.root.is_dir():
        _fail(f"{runs}: no such run directory (train with `rfcx train`, or give --runs)")
    if round_ == "all":
        rounds = [k for k in run.rounds() if run.is_complete(k)]
        if not rounds:
            _default_round(run, runs, say)  # fails, naming the rounds present
        if len(rounds) > 1:
            best = run.best_round()
            named = f"; {run.best_round_file.name} names round {best['round']}" if best else ""
            say(f"rounds {', '.join(map(str, rounds))}: every complete round's models together (the rounds' "
                f"ensemble{named}); --round K or --round best uses one round")
    elif round_ in (None, "best"):  # the default (README "A detector that works": the best round beat the rounds'
        rounds = [_default_round(run, runs, say)]  # ensemble on both benchmark-scale sets)
    elif not run.is_complete(round_):
        _fail(f"{run.describe(run.round_dir(round_))}: round {round_} is not complete "
              f"(no {run.complete_marker(round_).name})")
    else:
        rounds = [round_]
    files: list[Path] = []
    for k in rounds:
        try:
            run.fetch(run.models_dir(k), suffix=SUFFIXES[fmt])
        except OSError as exc:
            _fail(f"{run.location}: could not download the models of round {k} ({exc})")
        found = sorted(run.models_dir(k).glob(f"*{SUFFIXES[fmt]}"))
        if not found:
            flag = "torchscript" if fmt == "torchscript" else "export"
            _fail(f"{run.describe(run.models_dir(k))}: no exported {fmt} models (*{SUFFIXES[fmt]}); "
                  f"run `rfcx export --round {k} --runs {runs} --format {flag}`")
        files += found
    label = f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}-{rounds[-1]}"
    return label, files, rounds


FCN_MIN_POSITIONS = 6  # feature positions per window from which fcn was measured within 0.01 LWLRAP of exact


def fcn_caveat(models) -> str:  # noqa: ANN001 (engine.export.LoadedModel)
    """The one line ``rfcx infer --mode fcn`` prints: fcn approximates exact, well only for windows spanning many
    feature positions (README, infer section)."""
    positions = min(int((m.meta.get("fcn") or {}).get("positions", 0)) for m in models)
    if positions >= FCN_MIN_POSITIONS:
        return (f"note: --mode fcn approximates --mode exact (the backbone sees beyond each window); measured within "
                f"0.01 LWLRAP for windows of >= {FCN_MIN_POSITIONS} feature positions (these: {positions})")
    return (f"warning: --mode fcn approximates --mode exact, and these windows span only {positions} feature "
            f"position(s) (< {FCN_MIN_POSITIONS}): it may differ by more than 0.05 LWLRAP; use --mode exact")


def _prior(prior_file: Path | None, fs, n_classes: int):  # noqa: ANN001, ANN202 (store.FeatureStore | None)
    """The class prior: from a labels CSV (recording_id,s0..: 0/1 or soft pseudo labels) or the store's TP boxes."""
    from engine.postprocess import prior_from_boxes, prior_from_labels
    from rfcx.scoring.evaluation import read_scores

    if prior_file is not None:
        labels = read_scores(prior_file, "prior labels")
        if labels.shape[1] - 1 != n_classes:
            _fail(f"{prior_file}: has {labels.shape[1] - 1} classes, the models {n_classes}")
        return prior_from_labels(labels.drop(columns="recording_id").to_numpy())
    if fs is None:
        _fail("--postprocess prior needs --prior FILE (labels CSV) when scoring audio files")
    try:
        tp = fs.boxes("tp")
    except KeyError as exc:
        _fail(f"--postprocess prior: {exc.args[0]}; give --prior FILE instead")
    if tp.empty:
        _fail(f"{fs.path}: no TP boxes to estimate the class prior from; give --prior FILE instead")
    return prior_from_boxes(tp.recording_id, tp.species_id, n_classes)


def infer_cmd(
    ctx: typer.Context,
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="Audio files or folders to score (not in a store); leave out with --batch.", show_default=False)] = None,
    batch: Annotated[bool, typer.Option("--batch", help="Score every clip of a split of the feature store.")] = False,
    store: Annotated[str, typer.Option("--store", help="Feature store (with --batch).")] = DEFAULT_STORE,
    runs: Annotated[str, typer.Option("--runs", help="Run directory of `rfcx train` (a folder or an fsspec URL).")] = (
        DEFAULT_RUNS),
    round_: Annotated[str | None, typer.Option(
        "--round", help="Round to use: K, 'best' (the default: the run's best round, best_round.json) or 'all' "
                        "(every complete round's models together).", show_default=False)] = None,
    split: Annotated[str, typer.Option("--split", help="Split of the store to score (with --batch).")] = "test",
    out: Annotated[Path, typer.Option("--out", help="Submission CSV to write (recording_id,s0..s23).")] = Path(
        "submission.csv"),
    mode: Annotated[str, typer.Option("--mode", help="exact (one forward per window) or fcn (one per clip).")] = "exact",
    postprocess: Annotated[str, typer.Option("--postprocess", help="none, or prior (rescale classes by prior).")] = "none",
    prior_file: Annotated[Path | None, typer.Option(
        "--prior", help="Labels CSV (recording_id,s0..; 0/1 or soft pseudo labels) giving the class prior "
                        "(default: the store's TP boxes).", show_default=False)] = None,
    prior_strength: Annotated[float, typer.Option("--prior-strength", help="Exponent of the prior ratio.")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or gpu.")] = "auto",
    fmt: Annotated[str, typer.Option("--format", help="Exported models to run: torchscript (.ts) or export (.pt2).")] = (
        "torchscript"),
    detections: Annotated[Path | None, typer.Option(
        "--detections", help="Also write the detections above the threshold here: a file, or (raven, audacity) a "
                             "folder of one table per recording when the path has no suffix.",
        show_default=False)] = None,
    detections_level: Annotated[str, typer.Option(
        "--detections-level", help="events (overlapping or touching windows of a species merged, with its "
                                   "frequency band) or windows (one row per window, the former table).")] = "events",
    detections_format: Annotated[str | None, typer.Option(
        "--detections-format", help="csv, parquet, raven (Raven Pro selection tables) or audacity (label tracks); "
                                    "default: parquet for a .parquet path, else csv.", show_default=False)] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Score threshold of --detections (every species "
                                                                 "that no per-species threshold names).")] = 0.5,
    species_thresholds: Annotated[Path | None, typer.Option(
        "--species-thresholds", help="CSV species_id,threshold: per-species thresholds of --detections.",
        show_default=False)] = None,
    target_precision: Annotated[float | None, typer.Option(
        "--target-precision", help="Choose each species' threshold on the round's out-of-fold scores of the "
                                   "store's TP/FP boxes for this precision (README); written beside --detections.",
        show_default=False)] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(
        "--checkpoint-dir", help="Where finished clips are kept so that a killed run resumes "
                                 "(default: .OUT.parts beside --out, removed once OUT is written).",
        show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine).",
        show_default=False)] = None,
    chunk_clips: Annotated[int, typer.Option(
        "--chunk-clips", help="Clips read and scored together; under torchrun, ranks take turns by chunk.")] = 16,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Audio files: stop at the first one that cannot be read (exit code 2) instead of naming it, "
                         "scoring the others and summing up at the end.")] = False,
) -> None:
    """Score clips with the exported ensemble of a round: a feature store's split (--batch) or audio files."""
    from engine.audio_clips import AudioClips, find_audio
    from engine.batch import MODES, infer_clips, merge_shards, resolve_device, shard_ids
    from engine.export import ModelFileError, load_model
    from engine.outputs import check_detections_target, check_writable, write_detections, write_submission
    from engine.postprocess import POSTPROCESS
    from engine.postprocess import postprocess as apply_postprocess
    from store import BadInputError, FeatureStore

    if batch == bool(inputs):
        _fail("give either --batch (score a store's split) or audio FILE_OR_DIR arguments, not both or neither")
    if mode not in MODES:
        _fail(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if postprocess not in POSTPROCESS:
        _fail(f"--postprocess must be one of {', '.join(POSTPROCESS)}, got {postprocess!r}")
    if fmt not in ("torchscript", "export"):
        _fail(f"--format must be torchscript or export, got {fmt!r}")
    if batch_size < 1:
        _fail(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_clips < 1:
        _fail(f"--chunk-clips must be >= 1, got {chunk_clips}")
    from rfcx.process_group import launched, torchrun_launch

    launch = torchrun_launch()  # checked by the command line's callback
    if launch is not None and launch.world > 1 and not batch:
        _fail("`rfcx infer FILE_OR_DIR...` runs as one process; under torchrun use `rfcx infer --batch`")
    if threads is not None:
        if threads < 1:
            _fail(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    try:
        dev = resolve_device(device)
        # under torchrun: this process's place among the ranks (left when the command ends)
        group = ctx.with_resource(launched(dev.type == "cuda"))
    except (RuntimeError, ValueError) as exc:
        _fail(str(exc))
    if dev.type == "cuda" and group.distributed:
        import torch

        dev = torch.device("cuda", torch.cuda.current_device())

    fs = None
    try:
        if batch:
            fs = FeatureStore.open(store)
            if split not in fs.splits:
                _fail(f"{store}: no split {split!r} (has: {', '.join(fs.splits) or 'none'})")
            ids, clips, params = fs.ids(split), fs, fs.params
            where = fs.location.local_path.resolve() if fs.location.is_local else fs.location.display
            source = f"store {where} ({split})"
            order = fs.submission_ids() if split == "test" else None  # else sorted ids
            known = set(ids)
            missing = [rid for rid in order or [] if rid not in known]
            if missing:
                _fail(f"{store}: {len(missing)} recording(s) of the sample submission are not in split {split!r} "
                      f"(e.g. {', '.join(missing[:3])}; rejected at build time? see `rfcx info`)")
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))

    k, files, rounds = _round_models(runs, parse_round(round_), fmt, typer.echo if group.is_main else (lambda *_: None))
    try:
        models = [load_model(f, dev) for f in files]
    except (FileNotFoundError, ModelFileError) as exc:
        _fail(str(exc))

    if mode == "fcn" and group.is_main:
        typer.echo(fcn_caveat(models))

    if not batch:
        from store import MelParams

        params = MelParams.from_dict(models[0].meta["mel"])
        try:
            clips = AudioClips(find_audio(inputs or []), params, skip_bad=not strict)
        except BadInputError as exc:
            _fail(f"{exc} (--strict: stopped at the first file that cannot be read)", code=2)
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        for r in clips.rejected:
            typer.echo(f"skipped {r}")
        if not clips.ids:
            _fail(f"no file to score: the {len(clips.rejected)} file(s) given cannot be read (each named above)")
        ids, order, source = clips.ids, None, clips.fingerprint
    n_classes = int(models[0].meta["n_classes"])
    prior = _prior(prior_file, fs, n_classes) if postprocess == "prior" else None
    try:
        check_writable(out)
        if detections is not None:
            detections_format = check_detections_target(detections, detections_format, detections_level, len(ids))
    except ValueError as exc:
        _fail(str(exc))
    if detections is None and (species_thresholds is not None or target_precision is not None):
        _fail("--species-thresholds and --target-precision set the thresholds of --detections; give --detections")
    settings = None
    if detections is not None and group.is_main:
        settings = _detection_settings(fs if batch else _band_store(store), runs, rounds, n_classes, params, threshold,
                                       species_thresholds, target_precision, detections, detections_format)

    work = checkpoint_dir if checkpoint_dir is not None else out.with_name(f".{out.name}.parts")
    if group.is_main:  # one writer per output: the lock of its checkpoint folder, held to the end of the command
        from store.lock import LockedError, writer_lock

        try:
            ctx.with_resource(writer_lock(work, f"inference output ({out})"))
        except LockedError as exc:
            _fail(str(exc))
    bad_files = list(clips.rejected) if not batch else []

    def skip(recording_id: str, exc: BadInputError) -> None:  # a file that does not decode: named, left out
        from tqdm.auto import tqdm

        bad_files.append(exc.rejection)
        tqdm.write(f"skipped {exc.rejection}")

    mine, mine_work = ids, work
    if group.distributed:  # each rank scores its chunks into a part folder of its own; rank 0 writes the results
        mine = shard_ids(ids, group.rank, group.world, chunk_clips)
        mine_work = work / f"rank{group.rank}-of-{group.world}"
    try:
        clip_scores, window_scores = infer_clips(models, clips, mine, params, mode=mode, batch_size=batch_size,
                                                 progress=progress and group.is_main, checkpoint_dir=mine_work,
                                                 source=source, restart_other=checkpoint_dir is None,
                                                 chunk_clips=chunk_clips, on_bad=None if batch or strict else skip)
    except BadInputError as exc:
        _fail(f"{exc} (" + ("--strict: stopped at the first file that cannot be read; " if strict else "")
              + f"finished clips are kept in {mine_work}; fix or remove the file and run again)",
              code=2 if strict and not batch else 1)
    except (ValueError, KeyError) as exc:
        _fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    if group.distributed:
        try:
            parts = group.gather_after_work((clip_scores, window_scores if detections is not None else None),
                                            "infer --batch: gathering the ranks' scores")
        except RuntimeError as exc:
            _fail(f"{exc} (finished clips are kept in {work}; run again to resume)")
        if not group.is_main:
            return
        clip_scores, window_scores = merge_shards(parts, ids)
    stats = clip_scores.attrs
    if not batch and not len(clip_scores):
        _fail(f"no file to score: the {len(bad_files)} file(s) given cannot be read (each named above)")
    scores = apply_postprocess(clip_scores, postprocess, prior, prior_strength)
    try:
        path = write_submission(scores, out, order)
        if detections is not None:
            files = {rid: f.name for rid, f in clips.files.items()} if not batch else {
                rid: f"{rid}.flac" for rid in ids}
            written = write_detections(window_scores, detections, threshold, level=detections_level,
                                       fmt=detections_format, thresholds=settings.thresholds, bands=settings.bands,
                                       files=files)
    except (OSError, ValueError) as exc:
        _fail(f"{exc} (finished clips are kept in {work})")
    if checkpoint_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    rate = stats["computed_clips"] / stats["seconds"] if stats.get("seconds") else 0.0
    listed = set(order) if order is not None else None
    left_out = [rid for rid in scores["recording_id"] if listed is not None and rid not in listed]
    n_rows = len(order) if order is not None else len(scores)  # the rows written
    typer.echo(f"{k}: {len(models)} {fmt} model(s), mode {mode} on {dev}: scored {stats['computed_clips']} "
               f"clips ({rate:.2f} clips/s)" + (f", resumed {stats['resumed_clips']}" if stats["resumed_clips"] else "")
               + f"; wrote {path} ({n_rows} rows" + (f", postprocess {postprocess})" if postprocess != "none" else ")")
               + (f" and {written.describe(detections)}" if detections is not None else ""))
    if settings is not None:
        for line in settings.notes:
            typer.echo(line)
    if left_out:
        more = f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        typer.echo(f"note: {len(left_out)} scored clip(s) of split {split!r} are not in the sample submission, so not "
                   f"in {path.name}: {', '.join(left_out[:3])}{more}"
                   + (f" (their detections are in {detections})" if detections is not None else ""))
    if bad_files:
        typer.echo(f"skipped {len(bad_files)} of {len(bad_files) + len(scores)} file(s) that cannot be read (each "
                   f"named above; --strict stops at the first)")


def _band_store(store: str):  # noqa: ANN202 (store.FeatureStore | None)
    """Audio files: the store whose TP boxes give the species' frequency bands, where ``--store`` opens."""
    from store import FeatureStore

    try:
        return FeatureStore.open(store)
    except Exception:  # noqa: BLE001 (no store there, or not one: the full band, and a note)
        return None


class _DetectionSettings:
    """Thresholds and frequency bands of ``rfcx infer --detections``, with the lines that say where they came from."""

    def __init__(self, thresholds: dict[int, float], bands, notes: list[str]) -> None:  # noqa: ANN001 (DataFrame)
        self.thresholds, self.bands, self.notes = thresholds, bands, notes


def _detection_settings(fs, runs: str, rounds: list[int], n_classes: int, params, threshold: float,  # noqa: ANN001, PLR0913
                        file: Path | None, target: float | None, detections: Path, fmt: str) -> _DetectionSettings:
    """Per-species thresholds (a file, or chosen on round ``k``'s out-of-fold scores for ``target`` precision)
    and the species' bands (the store's TP boxes); fails early, before any inference."""
    import numpy as np

    from engine.detection_formats import is_folder_target
    from engine.events import species_bands
    from engine.thresholds import read_thresholds, write_thresholds

    if not 0.0 <= threshold <= 1.0:
        _fail(f"--threshold must be in 0..1, got {threshold}")
    if file is not None and target is not None:
        _fail("give --species-thresholds FILE or --target-precision P, not both")
    notes = []
    tp = fp = None
    if fs is not None:
        try:
            tp = fs.boxes("tp")
            fp = fs.boxes("fp")
        except KeyError:
            pass
    bands = species_bands(tp, n_classes, params.sample_rate / 2)
    if tp is None or tp.empty:
        notes.append(f"note: no TP boxes (no store at --store, or none in it): every species' band is the full "
                     f"0-{params.sample_rate / 2:g} Hz")
    thresholds: dict[int, float] = {}
    if file is not None:
        try:
            thresholds = read_thresholds(file, n_classes)
        except (FileNotFoundError, ValueError) as exc:
            _fail(str(exc))
        notes.append(f"thresholds: {len(thresholds)} species from {file}, the others --threshold {threshold:g}")
    elif target is not None:
        from rfcx.runs.directory import open_run
        from rfcx.train.thresholds import oof_thresholds

        if tp is None or fp is None:
            _fail("--target-precision needs the store's TP and FP boxes (the labelled windows); give --store")
        try:
            run = open_run(runs, pull="meta")
            for k in rounds:
                run.fetch(run.round_dir(k) / "members", suffix="predictions.npz")
            thresholds, labelled = oof_thresholds(run, rounds, tp, fp, target)
        except (OSError, ValueError) as exc:
            _fail(str(exc))
        saved = (detections / "thresholds.csv" if is_folder_target(detections, fmt)
                 else detections.with_name(f"{detections.stem}.thresholds.csv"))
        write_thresholds(thresholds, saved)
        kept = sorted(set(range(n_classes)) - set(thresholds))
        median = f" (median {np.median(list(thresholds.values())):.3f})" if thresholds else ""
        which = f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {', '.join(map(str, rounds))}"
        notes.append(f"thresholds: {len(thresholds)} species at precision >= {target:g} on {which}'s out-of-fold "
                     f"scores of {int(labelled.is_tp.sum())} TP / {int((~labelled.is_tp).sum())} FP boxes{median}, "
                     f"written to {saved}; {len(kept)} keep --threshold {threshold:g} (too few TP boxes, or the "
                     "precision is not reached)")
    return _DetectionSettings(thresholds, bands, notes)


def evaluate_cmd(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions: recording_id,s0..s23 (a submission).")],
    truth: Annotated[Path, typer.Option("--truth", help="Truth: recording_id,s0..s23 of 0/1 (test_labels.csv).")],
    train_tp: Annotated[Path | None, typer.Option("--train-tp", help="The training train_tp.csv: adds the "
                                                  "prior-only yardstick (species ranked by their TP recordings).")] = None,
) -> None:
    """LWLRAP of a submission against clip-level truth beside random and prior-only scores, with a per-class table."""
    from rfcx.scoring.evaluation import evaluate

    try:
        result = evaluate(pred, truth, train_tp)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"LWLRAP {result.lwlrap:.4f} on {result.n_clips} clips"
               + (f" ({result.n_extra_predictions} predicted clips without truth ignored)"
                  if result.n_extra_predictions else "")
               + f"  [random {result.yardsticks['random']:.4f}"
               + (f", prior-only {result.yardsticks['prior_only']:.4f}" if result.yardsticks["prior_only"] is not None
                  else "") + "]")
    typer.echo("species  positives  weight  lwlrap")
    for r in result.per_class.itertuples():
        value = f"{r.lwlrap:.4f}" if r.positives else "     -"
        typer.echo(f"{r.species_id:>7}  {r.positives:>9}  {r.weight:6.3f}  {value}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("export")(export_cmd)
    app.command("infer")(infer_cmd)
    app.command("evaluate")(evaluate_cmd)
