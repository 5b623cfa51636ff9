"""An inference job: the exported models of a round scored over a feature store's split or audio files, written as a
submission (and detections). :func:`run_infer` is what ``rfcx infer`` calls, the way ``rfcx build-store`` calls
:func:`store.build_store`: distribution is passed in (``shard``, ``gather``), the job does the rest.

Resumable: finished clips are kept in a checkpoint folder (``.OUT.parts`` beside the output by default, removed
once the output is written), and a killed job resumes from them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from store.errors import BadInputError, InvalidInputError, MissingKeyError, StoppedAtBadInput

from .windows import DEFAULT_MODE

FCN_MIN_POSITIONS = 6  # feature positions per window from which fcn was measured within 0.01 LWLRAP of exact

# (tp boxes, fp boxes) -> (per-species thresholds, TP boxes, FP boxes used): a run's out-of-fold choice (rfcx)
ThresholdChooser = Callable[[pd.DataFrame, pd.DataFrame], tuple[dict[int, float], int, int]]


class InferError(InvalidInputError):
    """An inference job that cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class InferJob:
    """What to score, with which models, and what to write. Either ``store`` (a feature store's ``split``) or
    ``audio`` (files and folders)."""

    models: Sequence[Path]  # exported model files (one round's, or several rounds' together)
    label: str  # "round 1", "rounds 0-2": how the summary names them
    out: Path  # the submission CSV
    store: str | None = None
    split: str = "test"
    audio: Sequence[Path] = ()
    fmt: str = "torchscript"
    mode: str = DEFAULT_MODE.value
    batch_size: int = 64
    chunk_clips: int = 16
    postprocess: str = "none"
    prior_file: Path | None = None  # labels CSV giving the class prior (default: the store's TP boxes)
    prior_strength: float = 1.0
    detections: Path | None = None
    detections_level: str = "events"
    detections_format: str | None = None
    threshold: float = 0.5
    species_thresholds: Path | None = None  # CSV species_id,threshold
    target_precision: float | None = None  # with ``choose_thresholds``
    choose_thresholds: ThresholdChooser | None = None
    choose_thresholds_source: str = ""  # "round 1": whose out-of-fold scores ``choose_thresholds`` uses
    checkpoint_dir: Path | None = None
    band_store: str | None = None  # audio files: the store whose TP boxes give the species' bands, where it opens
    strict: bool = False
    progress: bool = True

    @property
    def work(self) -> Path:
        """Where finished clips are kept while the job runs."""
        return self.checkpoint_dir if self.checkpoint_dir is not None else self.out.with_name(f".{self.out.name}.parts")


@dataclass
class InferResult:
    """What a job wrote and did; ``lines`` are the notes to print after the summary."""

    path: Path | None = None  # the submission (None on a rank other than 0)
    summary: str = ""
    lines: list[str] = field(default_factory=list)


def fcn_caveat(models: Sequence[Any]) -> str:
    """The one line ``--mode fcn`` prints: fcn approximates exact, well only for windows spanning many feature
    positions (README, infer section)."""
    positions = min(int((m.meta.get("fcn") or {}).get("positions", 0)) for m in models)
    if positions >= FCN_MIN_POSITIONS:
        return (
            f"note: --mode fcn approximates --mode exact (the backbone sees beyond each window); measured within "
            f"0.01 LWLRAP for windows of >= {FCN_MIN_POSITIONS} feature positions (these: {positions})"
        )
    return (
        f"warning: --mode fcn approximates --mode exact, and these windows span only {positions} feature "
        f"position(s) (< {FCN_MIN_POSITIONS}): it may differ by more than 0.05 LWLRAP; use --mode exact"
    )


def _prior(job: InferJob, fs: Any, n_classes: int) -> np.ndarray:
    """The class prior: from a labels CSV (recording_id,s0..: 0/1 or soft pseudo labels) or the store's TP boxes."""
    from .outputs import read_scores
    from .postprocess import prior_from_boxes, prior_from_labels

    if job.prior_file is not None:
        labels = read_scores(job.prior_file, "prior labels")
        if labels.shape[1] - 1 != n_classes:
            raise InferError(f"{job.prior_file}: has {labels.shape[1] - 1} classes, the models {n_classes}")
        return prior_from_labels(labels.drop(columns="recording_id").to_numpy())
    if fs is None:
        raise InferError("--postprocess prior needs --prior FILE (labels CSV) when scoring audio files")
    try:
        tp = fs.boxes("tp")
    except KeyError as exc:
        raise MissingKeyError(f"--postprocess prior: {exc.args[0]}; give --prior FILE instead") from exc
    if tp.empty:
        raise InferError(f"{fs.path}: no TP boxes to estimate the class prior from; give --prior FILE instead")
    return prior_from_boxes(tp.recording_id, tp.species_id, n_classes)


def _open_band_store(store: str | None) -> Any:
    """Audio files: the store whose TP boxes give the species' frequency bands, where ``store`` opens."""
    from store import FeatureStore

    if store is None:
        return None
    try:
        return FeatureStore.open(store)
    except Exception:  # noqa: BLE001 (no store there, or not one: the full band, and a note)
        return None


@dataclass
class _DetectionSettings:
    """Thresholds and frequency bands of the detections, with the lines that say where they came from."""

    thresholds: dict[int, float]
    bands: pd.DataFrame
    notes: list[str]


def _detection_settings(job: InferJob, fs: Any, n_classes: int, params: Any, fmt: str) -> _DetectionSettings:
    """Per-species thresholds (a file, or chosen on the run's out-of-fold scores for a target precision) and the
    species' bands (the store's TP boxes); fails early, before any inference."""
    from .detection_formats import is_folder_target
    from .events import species_bands
    from .thresholds import read_thresholds, write_thresholds

    assert job.detections is not None
    if not 0.0 <= job.threshold <= 1.0:
        raise InferError(f"--threshold must be in 0..1, got {job.threshold}")
    if job.species_thresholds is not None and job.target_precision is not None:
        raise InferError("give --species-thresholds FILE or --target-precision P, not both")
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
        notes.append(
            f"note: no TP boxes (no store at --store, or none in it): every species' band is the full "
            f"0-{params.sample_rate / 2:g} Hz"
        )
    thresholds: dict[int, float] = {}
    if job.species_thresholds is not None:
        thresholds = read_thresholds(job.species_thresholds, n_classes)
        notes.append(
            f"thresholds: {len(thresholds)} species from {job.species_thresholds}, the others --threshold "
            f"{job.threshold:g}"
        )
    elif job.target_precision is not None:
        if tp is None or fp is None:
            raise InferError(
                "--target-precision needs the store's TP and FP boxes (the labelled windows); give --store"
            )
        if job.choose_thresholds is None:
            raise InferError("--target-precision needs a run's out-of-fold scores to choose the thresholds on")
        thresholds, n_tp, n_fp = job.choose_thresholds(tp, fp)
        saved = (
            job.detections / "thresholds.csv"
            if is_folder_target(job.detections, fmt)
            else job.detections.with_name(f"{job.detections.stem}.thresholds.csv")
        )
        write_thresholds(thresholds, saved)
        kept = sorted(set(range(n_classes)) - set(thresholds))
        median = f" (median {np.median(list(thresholds.values())):.3f})" if thresholds else ""
        notes.append(
            f"thresholds: {len(thresholds)} species at precision >= {job.target_precision:g} on "
            f"{job.choose_thresholds_source}'s out-of-fold scores of {n_tp} TP / {n_fp} FP boxes{median}, "
            f"written to {saved}; {len(kept)} keep --threshold {job.threshold:g} (too few TP boxes, or the "
            "precision is not reached)"
        )
    return _DetectionSettings(thresholds, bands, notes)


def run_infer(
    job: InferJob,
    device: Any,
    *,
    shard: tuple[int, int] = (0, 1),  # noqa: PLR0912, PLR0915
    gather: Callable[[Any], list[Any]] | None = None,
    echo: Callable[[str], None] = print,
    lock: bool = True,
) -> InferResult:
    """Run ``job`` on ``device`` (a ``torch.device``); ``shard=(rank, world)`` scores this process's chunks of the
    clips and ``gather`` hands every rank's scores to rank 0, which writes the outputs (the others return an empty
    result). ``echo`` prints what a user should see as it happens (rank 0's only)."""
    from tqdm.auto import tqdm

    from store import FeatureStore, MelParams
    from store.lock import NoLock, writer_lock

    from .audio_clips import AudioClips, find_audio
    from .batch import infer_clips, merge_shards, shard_ids
    from .export import load_model
    from .outputs import check_detections_target, check_writable, write_detections, write_submission
    from .postprocess import postprocess as apply_postprocess

    rank, world = shard
    is_main, distributed = rank == 0, world > 1
    batch = job.store is not None and not job.audio
    say = echo if is_main else (lambda *_: None)
    fs = None
    clips: FeatureStore | AudioClips
    if batch:
        assert job.store is not None  # batch: a store is given
        fs = FeatureStore.open(job.store)
        fs.require_complete()
        if job.split not in fs.splits:
            raise InferError(f"{job.store}: no split {job.split!r} (has: {', '.join(fs.splits) or 'none'})")
        ids, clips, params = fs.ids(job.split), fs, fs.params
        where = fs.location.local_path.resolve() if fs.location.is_local else fs.location.display
        source = f"store {where} ({job.split})"
        order = fs.submission_ids() if job.split == "test" else None  # else sorted ids
        known = set(ids)
        missing = [rid for rid in order or [] if rid not in known]
        if missing:
            raise InferError(
                f"{job.store}: {len(missing)} recording(s) of the sample submission are not in split "
                f"{job.split!r} (e.g. {', '.join(missing[:3])}; rejected at build time? see `rfcx info`)"
            )

    models = [load_model(f, device) for f in job.models]
    if job.mode == "fcn":
        say(fcn_caveat(models))

    if not batch:
        params = MelParams.from_dict(models[0].meta["mel"])
        try:
            clips = AudioClips(find_audio(list(job.audio)), params, skip_bad=not job.strict)
        except BadInputError as exc:
            raise StoppedAtBadInput(f"{exc} (--strict: stopped at the first file that cannot be read)") from exc
        for r in clips.rejected:
            echo(f"skipped {r}")
        if not clips.ids:
            raise InferError(
                f"no file to score: the {len(clips.rejected)} file(s) given cannot be read (each named above)"
            )
        ids, order, source = clips.ids, None, clips.fingerprint
    n_classes = int(models[0].meta["n_classes"])
    prior = _prior(job, fs, n_classes) if job.postprocess == "prior" else None
    check_writable(job.out)
    detections_format = job.detections_format
    if job.detections is not None:
        detections_format = check_detections_target(job.detections, detections_format, job.detections_level, len(ids))
    if job.detections is None and (job.species_thresholds is not None or job.target_precision is not None):
        raise InferError(
            "--species-thresholds and --target-precision set the thresholds of --detections; give --detections"
        )
    settings = None
    if job.detections is not None and is_main:
        assert detections_format is not None  # check_detections_target's, above
        settings = _detection_settings(
            job, fs if batch else _open_band_store(job.band_store), n_classes, params, detections_format
        )

    work = job.work
    # one writer per output: the lock of its checkpoint folder, held until the output is written
    with writer_lock(work, f"inference output ({job.out})") if is_main and lock else NoLock():
        bad_files = list(cast(AudioClips, clips).rejected) if not batch else []  # not batch: audio clips

        def skip(recording_id: str, exc: BadInputError) -> None:  # a file that does not decode: named, left out
            bad_files.append(exc.rejection)
            tqdm.write(f"skipped {exc.rejection}")

        mine, mine_work = ids, work
        if distributed:  # each rank scores its chunks into a part folder of its own; rank 0 writes the results
            mine = shard_ids(ids, rank, world, job.chunk_clips)
            mine_work = work / f"rank{rank}-of-{world}"
        try:
            clip_scores, window_scores = infer_clips(
                models,
                clips,
                mine,
                params,
                mode=job.mode,
                batch_size=job.batch_size,
                progress=job.progress and is_main,
                checkpoint_dir=mine_work,
                source=source,
                restart_other=job.checkpoint_dir is None,
                chunk_clips=job.chunk_clips,
                on_bad=None if batch or job.strict else skip,
            )
        except BadInputError as exc:
            kind = StoppedAtBadInput if job.strict and not batch else InferError
            raise kind(
                f"{exc} ("
                + ("--strict: stopped at the first file that cannot be read; " if job.strict else "")
                + f"finished clips are kept in {mine_work}; fix or remove the file and run again)"
            ) from exc
        if distributed:
            assert gather is not None
            try:
                parts = gather((clip_scores, window_scores if job.detections is not None else None))
            except RuntimeError as exc:  # a rank that failed or did not answer in time
                raise InferError(f"{exc} (finished clips are kept in {work}; run again to resume)") from exc
            if not is_main:
                return InferResult()
            clip_scores, window_scores = merge_shards(parts, ids)
        stats = clip_scores.attrs
        if not batch and not len(clip_scores):
            raise InferError(f"no file to score: the {len(bad_files)} file(s) given cannot be read (each named above)")
        scores = apply_postprocess(clip_scores, job.postprocess, prior, job.prior_strength)
        try:
            path = write_submission(scores, job.out, order)
            if job.detections is not None:
                assert settings is not None
                files = (
                    {rid: f.name for rid, f in cast(AudioClips, clips).files.items()}  # not batch: audio clips
                    if not batch
                    else {rid: f"{rid}.flac" for rid in ids}
                )
                written = write_detections(
                    window_scores,
                    job.detections,
                    job.threshold,
                    level=job.detections_level,
                    fmt=detections_format,
                    thresholds=settings.thresholds,
                    bands=settings.bands,
                    files=files,
                )
        except (OSError, ValueError) as exc:
            raise InferError(f"{exc} (finished clips are kept in {work})") from exc
        if job.checkpoint_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    rate = stats["computed_clips"] / stats["seconds"] if stats.get("seconds") else 0.0
    listed = set(order) if order is not None else None
    left_out = [rid for rid in scores["recording_id"] if listed is not None and rid not in listed]
    n_rows = len(order) if order is not None else len(scores)  # the rows written
    summary = (
        f"{job.label}: {len(models)} {job.fmt} model(s), mode {job.mode} on {device}: scored "
        f"{stats['computed_clips']} clips ({rate:.2f} clips/s)"
        + (f", resumed {stats['resumed_clips']}" if stats["resumed_clips"] else "")
        + f"; wrote {path} ({n_rows} rows"
        + (f", postprocess {job.postprocess})" if job.postprocess != "none" else ")")
        + (f" and {written.describe(job.detections)}" if job.detections is not None else "")
    )
    lines = list(settings.notes) if settings is not None else []
    if left_out:
        more = f" and {len(left_out) - 3} more" if len(left_out) > 3 else ""
        lines.append(
            f"note: {len(left_out)} scored clip(s) of split {job.split!r} are not in the sample submission, "
            f"so not in {path.name}: {', '.join(left_out[:3])}{more}"
            + (f" (their detections are in {job.detections})" if job.detections is not None else "")
        )
    if bad_files:
        lines.append(
            f"skipped {len(bad_files)} of {len(bad_files) + len(scores)} file(s) that cannot be read (each "
            f"named above; --strict stops at the first)"
        )
    return InferResult(path, summary, lines)
