"""``build-store``: decode every clip of ``train/`` and ``test/``, compute its log-mel, write it to the Zarr store.

Resumable and incremental: clips already stored (``complete``) are skipped; a clip whose writing was
interrupted is written again. Bad input is reported with the file (and CSV row) and the reason, skipped and
recorded in the store's ``rejected`` attribute; with ``strict`` the first one raises :class:`BadInputError`.
A ``test_labels.csv`` (clip-level 0/1 truth of the test clips, as ``rfcx synth`` writes it) is checked row by row
and stored too (``tables/test_labels``), and so is a ``calls_truth.csv`` (every call of every clip, as
``rfcx synth`` writes it; ``tables/calls_truth``), which ``rfcx train --oracle`` learns from.

A store keeps the features of one backend: resuming it with the other is refused. With ``repair`` a build first
reads every stored chunk and decodes the damaged clips again (:mod:`store.integrity`).

Its parts: :mod:`store.backends` (which backend, and the log-mel of a batch of files), :mod:`store.writer` (the
store's root, clips, index and tables), :mod:`store.truth` (the truth files); this module plans and runs the build.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm.auto import tqdm

from . import layout
from .audio import AudioInfo, list_audio_files, probe
from .backends import _LogMel, choose_backend
from .dali_pipeline import dali_available
from .device import resolve_device
from .errors import BadInputError, InvalidInputError, NotFoundError, Rejection
from .integrity import Damage, VerifyReport, verify_clips
from .lock import NoLock, writer_lock
from .params import MelParams
from .rejections import update_rejected_csv
from .tables import CheckedTable, check_boxes_against_clips, empty_boxes, read_boxes, read_submission_ids
from .truth import CALLS_FILE, TRUTH_FILE, check_truth_against_clips, read_calls, read_truth
from .writer import INDEX_EVERY, _SplitWriter, _write_table, _write_truth, open_or_create, write_column

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did."""

    store: str
    backend: str
    device: str
    stored: dict[str, int] = field(default_factory=dict)  # newly written this run
    skipped: dict[str, int] = field(default_factory=dict)  # already in the store
    total: dict[str, int] = field(default_factory=dict)  # in the store after the run
    resampled: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what matters and is not a rejected input
    rejected_file: Path | None = None  # every rejection of the build as CSV, beside a local store (rejections.py)
    checked: VerifyReport | None = None  # repair=True: what the check of every stored chunk found
    repaired: list[Damage] = field(default_factory=list)  # repair=True: damage whose clip was decoded again
    audio_seconds: float = 0.0
    elapsed_s: float = 0.0

    @property
    def clips_per_s(self) -> float:
        return sum(self.stored.values()) / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def x_realtime(self) -> float:
        return self.audio_seconds / self.elapsed_s if self.elapsed_s else 0.0


def build_store(
    data_dir: str | Path,
    store_path: str | Path,
    backend: str = "auto",
    device: str = "auto",
    strict: bool = False,
    params: MelParams | None = None,
    batch_size: int = 8,
    progress: bool = True,
    on_reject: Callable[[Rejection], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list[Any]] | None = None,
    threads: int | None = None,
    repair: bool = False,
) -> BuildSummary:
    """Build (or extend) the feature store at ``store_path`` from the competition layout in ``data_dir``.

    ``store_path`` is a local path or an fsspec URL (``s3://...``, with ``storage_options`` for its filesystem;
    see :mod:`store.location`); resuming works the same on both (a clip counts once its ``complete`` is set).

    **Sharded builds**: ``world`` processes that each call this with the same arguments, ``shard=(rank, world)``
    and a ``gather`` (``gather(obj)`` returns every rank's ``obj`` in rank order; it is also the barrier) build
    one store together: rank 0 creates the store, every rank decodes and writes ``todo[rank::world]`` of each
    split's new clips (whole per-clip arrays: no two ranks touch one chunk), and once every shard is written
    rank 0 writes the split indexes, tables and ``rejected`` list (the rejections of all ranks, in the order a
    one-process build finds them), so the store equals a one-process build. Every rank returns rank 0's
    summary of the whole build. ``threads`` caps the threads of this process that decode clips (default: all
    cores) and, with the torch backend on the CPU, compute their log-mel (one clip per thread).

    **Backend**: ``dali``, ``torch`` or ``auto`` (:func:`choose_backend`: DALI on a GPU, torch on the CPU, where
    each measured fastest; an existing store keeps its own).

    **One writer**: a build (rank 0 of a sharded one) holds the store's writer lock (:mod:`store.lock`, a local
    store only) from start to end; a second build of the same store is refused at once with
    :class:`store.lock.LockedError` naming the holder (host, pid, start time).

    **Repair**: with ``repair`` the build first reads every chunk of every stored clip (:mod:`store.integrity`;
    a progress bar) and decodes the damaged clips again from their audio files, as new clips are; the others
    are left as they are. ``summary.checked`` holds what the check found, ``summary.repaired`` the damage
    repaired; a damaged clip without its audio file stays as it is (a warning says so).
    """
    lock = writer_lock(store_path, "feature store", storage_options, beside=True) if shard[0] == 0 else NoLock()
    with lock:
        return _build_store(
            data_dir,
            store_path,
            backend,
            device,
            strict,
            params,
            batch_size,
            progress,
            on_reject,
            storage_options,
            shard,
            gather,
            threads,
            repair,
        )


def _build_store(
    data_dir: str | Path,
    store_path: str | Path,
    backend: str,
    device: str,
    strict: bool,
    params: MelParams | None,
    batch_size: int,
    progress: bool,
    on_reject: Callable[[Rejection], None] | None,
    storage_options: Mapping[str, Any] | None,
    shard: tuple[int, int],
    gather: Callable[[Any], list[Any]] | None,
    threads: int | None,
    repair: bool = False,
) -> BuildSummary:
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise InvalidInputError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    if world > 1 and gather is None:
        raise InvalidInputError("a sharded build (world > 1) needs gather, the ranks' all-gather")
    gather = gather or _alone
    main = rank == 0
    data_dir = Path(data_dir)
    params = params or MelParams()
    if not data_dir.is_dir():
        raise NotFoundError(f"{data_dir}: data folder not found")
    splits = [s for s in layout.SPLITS if (data_dir / s).is_dir()]
    if not splits:
        raise NotFoundError(f"{data_dir}: has neither a train/ nor a test/ folder")
    device = "gpu" if resolve_device(device).type == "cuda" else "cpu"  # the summary's and the backends' word
    backend = choose_backend(backend, device, store_path, storage_options)
    if backend == "dali" and not dali_available():
        log.warning("NVIDIA DALI is not installed: falling back to the torch backend")
        backend = "torch"
    started = time.perf_counter()
    summary = BuildSummary(store=str(store_path), backend=backend, device=device)
    rejections = _Rejections(strict, on_reject)
    reject = rejections.add

    # the tables are read, checked and written by rank 0 alone
    tables = {kind: _read_table(data_dir / f"train_{kind}.csv", params) for kind in layout.TABLE_KINDS} if main else {}
    for table in tables.values():
        for r in table.rejected if table else []:
            reject(r)
    truth_path = data_dir / TRUTH_FILE
    truth = read_truth(truth_path) if main and truth_path.is_file() else None
    for r in truth.rejected if truth else []:
        reject(r)

    root = _open_root(store_path, params, backend, storage_options, splits, main, gather)
    logmel = _LogMel(backend, device, params, batch_size, threads)
    plans = [_plan_split(root, i, split, data_dir / split, params, reject, main) for i, split in enumerate(splits)]
    for plan in plans if main else []:
        if plan.writer.rebuilt:
            _warn(
                summary,
                f"the index of split {plan.split!r} was damaged ({plan.writer.rebuilt}): rebuilt from the clips",
            )
    if repair:  # rank 0 reads every stored chunk; every rank then decodes its share of the damaged clips again
        report = (
            verify_clips(
                root, {p.split: sorted(p.writer.entries) for p in plans}, progress, desc="build-store --repair: check"
            )
            if main
            else None
        )
        summary.checked = report = gather(report)[0]
        for plan in plans:
            _plan_repair(plan, report.damaged, summary, data_dir / plan.split)
    if world > 1:
        gather(None)  # every rank has read what is stored before any rank writes
    rejected_audio: dict[str, set[str]] = {}
    with logmel.threads_for_clips():
        for plan in plans:
            rejected_audio[plan.split] = _build_split(plan, logmel, batch_size, summary, reject, progress, rank, world)
    if world > 1:
        rejected_audio = _merge_shards(
            gather((rejections.found, rejected_audio, summary.stored, summary.resampled, summary.audio_seconds)),
            rejections,
            summary,
        )
    if not main:
        return gather(None)[0]  # rank 0's summary, once the store is whole
    if repair:
        assert summary.checked is not None  # rank 0 of a repair: set by the check above
        gone = {(split, rid) for split, ids in rejected_audio.items() for rid in ids}
        summary.repaired = [
            d
            for d in summary.checked.damaged
            if (d.split, d.recording_id) not in gone
            and any(p.split == d.split and d.recording_id in p.files for p in plans)
        ]
    if world > 1:
        for plan in plans:  # the index of every clip written by any rank
            writer = _SplitWriter(root, plan.split, params)
            writer.write_index()
            summary.total[plan.split] = len(writer.entries)

    rejections.stage = 2
    durations = {}
    if "train" in root:
        ids, n_samples = layout.read_column(root, "train/ids"), layout.read_column(root, "train/n_samples")
        durations = {str(r): int(n) / params.sample_rate for r, n in zip(ids, n_samples)}
    for kind, table in tables.items():
        if table is None:
            rows = empty_boxes()
        else:
            checked = check_boxes_against_clips(
                table, data_dir / f"train_{kind}.csv", durations, rejected_audio.get("train", set())
            )
            for r in checked.rejected:
                reject(r)
            rows = checked.rows
            if kind == "tp" and rows.empty:
                _warn(summary, _no_tp_boxes(data_dir / "train_tp.csv", table, checked))
        _write_table(root.require_group(f"tables/{kind}"), rows)
    submission = data_dir / "sample_submission.csv"
    if submission.is_file():
        ids = np.array(read_submission_ids(submission), dtype=str)
        write_column(root.require_group("tables/sample_submission"), "recording_id", ids)
    if truth is not None:
        test_ids = (
            {str(r) for r in layout.read_column(root, "test/ids")}
            if "test" in root and "ids" in layout.group_at(root, "test")
            else set()
        )
        checked = check_truth_against_clips(truth, truth_path, test_ids, rejected_audio.get("test", set()))
        for r in checked.rejected:
            reject(r)
        _write_truth(root.require_group("tables/test_labels"), checked.rows)
    calls_path = data_dir / CALLS_FILE
    if calls_path.is_file():
        stored = {
            split: {str(r) for r in layout.read_column(root, f"{split}/ids")}
            for split in layout.SPLITS
            if split in root and "ids" in layout.group_at(root, split)
        }
        _write_table(root.require_group("tables/calls_truth"), read_calls(calls_path, stored))
    summary.rejected = rejections.ordered()
    root.attrs["rejected"] = [r.to_dict() for r in summary.rejected]
    summary.rejected_file = update_rejected_csv(store_path, storage_options, summary.rejected)
    summary.elapsed_s = time.perf_counter() - started
    if world > 1:
        gather(summary)  # the others return this summary
    return summary


def _no_tp_boxes(path: Path, table: CheckedTable, checked: CheckedTable) -> str:
    """Why a build keeps no TP box: the table has no rows, or every row was rejected."""
    n_rejected = len(table.rejected) + len(checked.rejected)
    why = (
        "has a header and no rows" if not n_rejected else f"has no usable row ({n_rejected} rejected, each named above)"
    )
    return (
        f"{path}: {why}: the store gets no TP box, and `rfcx train` refuses a store without one "
        f"(round 0 learns from them)"
    )


def _warn(summary: BuildSummary, message: str) -> None:
    """A warning of the summary (the command line prints them; logged at INFO for other callers)."""
    log.info("%s", message)
    summary.warnings.append(message)


def _alone(obj: Any) -> list[Any]:
    """``gather`` of a one-process build."""
    return [obj]


class _Rejections:
    """The rejected inputs of a build with the key that orders them as a one-process build finds them: stage 0
    (the CSVs), stage 1 (the audio: split, batch of the one-process build, probe before decode, file position),
    stage 2 (rows checked against the stored clips)."""

    def __init__(self, strict: bool, on_reject: Callable[[Rejection], None] | None) -> None:
        self.strict, self.on_reject = strict, on_reject
        self.stage = 0
        self.found: list[tuple[tuple, Rejection]] = []

    def add(self, r: Rejection, key: tuple | None = None) -> None:
        if self.strict:
            raise BadInputError(r)
        self.found.append((key if key is not None else (self.stage, len(self.found)), r))
        if self.on_reject:
            self.on_reject(r)

    def ordered(self) -> list[Rejection]:
        return [r for _, r in sorted(self.found, key=lambda kr: kr[0])]


def _open_root(
    store_path: str | Path,
    params: MelParams,
    backend: str,
    storage_options: Mapping[str, Any] | None,
    splits: list[str],
    main: bool,
    gather: Callable[[Any], list[Any]],
) -> zarr.Group:
    """Rank 0 creates (or checks) the store and its split groups; then the other ranks open it."""
    error = None
    if main:
        try:
            root = open_or_create(store_path, params, backend, storage_options)
            for split in splits:
                root.require_group(split).require_group("mel")
        except ValueError as exc:
            error = exc
    first = gather(None if error is None else str(error))[0]
    if error is not None:
        raise error
    if first is not None:
        raise InvalidInputError(first)
    return root if main else open_or_create(store_path, params, backend, storage_options)


def _merge_shards(shards: list[tuple], rejections: _Rejections, summary: BuildSummary) -> dict[str, set[str]]:
    """Every rank's rejections, stored clips and rejected audio ids, added up into this rank's."""
    rejected_audio: dict[str, set[str]] = {}
    rejections.found = [kr for found, *_ in shards for kr in found]
    summary.stored = {split: sum(s[2].get(split, 0) for s in shards) for split in summary.stored}
    summary.resampled = sum(s[3] for s in shards)
    summary.audio_seconds = sum(s[4] for s in shards)
    for _, audio, *_ in shards:
        for split, ids in audio.items():
            rejected_audio.setdefault(split, set()).update(ids)
    return rejected_audio


def _read_table(path: Path, params: MelParams) -> CheckedTable | None:
    if not path.is_file():
        log.warning("%s not found: the store gets an empty table", path)
        return None
    return read_boxes(path, max_hz=params.sample_rate / 2)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _SplitPlan:
    """A split's writer and its clips to store (in file order)."""

    index: int  # of the split in the build
    split: str
    writer: _SplitWriter
    todo: list[Path]
    n_files: int  # distinct recording ids found
    files: dict[str, Path] = field(default_factory=dict)  # recording id -> its audio file, in file order


def _plan_split(
    root: zarr.Group, index: int, split: str, folder: Path, params: MelParams, reject: Callable[..., None], main: bool
) -> _SplitPlan:
    """What is stored and what is to do; duplicate recording ids are rejected (by rank 0)."""
    writer = _SplitWriter(root, split, params)
    seen: dict[str, Path] = {}
    todo: list[Path] = []
    for pos, path in enumerate(list_audio_files(folder)):
        rid = path.stem
        if rid in seen:
            if main:
                reject(
                    Rejection(str(path), f"duplicate recording id {rid} (also {seen[rid].name})", split=split),
                    (1, index, 0, 0, pos),
                )
            continue
        seen[rid] = path
        if not writer.done(rid):
            todo.append(path)
    return _SplitPlan(index, split, writer, todo, len(seen), seen)


def _plan_repair(plan: _SplitPlan, damaged: list[Damage], summary: BuildSummary, folder: Path) -> None:
    """Add the split's damaged clips to its todo (in file order); warn about those without an audio file."""
    redo = {d.recording_id: d for d in damaged if d.split == plan.split}
    for rid, damage in redo.items():
        if rid not in plan.files:
            _warn(
                summary,
                f"{damage}; it has no audio file in {folder}, so it stays as it is (put its audio back "
                f"and run `rfcx build-store --repair` again, or build a new store)",
            )
    wanted = set(plan.todo) | {plan.files[rid] for rid in redo if rid in plan.files}
    plan.todo = [path for path in plan.files.values() if path in wanted]


def _build_split(
    plan: _SplitPlan,
    logmel: _LogMel,
    batch_size: int,
    summary: BuildSummary,
    reject: Callable[..., None],
    progress: bool,
    rank: int = 0,
    world: int = 1,
) -> set[str]:
    """Store this rank's share (``todo[rank::world]``) of the split's new clips; returns the ids whose audio was
    rejected. One process keeps the split's index up to date as it goes; ranks of a sharded build leave it to
    rank 0 at the end.

    The work flows: batch k+1 is handed to the backend (the threads, on the CPU) before batch k's results are
    taken, and each clip is written on a thread as soon as its result is in, while the next ones compute.
    Rejections are reported when their batch's results are taken, in file order, so a ``strict`` build stops
    with every clip before the bad one stored.
    """
    writer, split, params = plan.writer, plan.split, plan.writer.params
    mine = list(enumerate(plan.todo))[rank::world]  # (position in the split's todo, path)
    rejected: set[str] = set()
    summary.skipped[split] = plan.n_files - len(plan.todo)
    stored = 0
    writes: deque[Future] = deque()
    desc = f"build-store {split}" + (f" (rank {rank}/{world}: 1/{world} of the clips)" if world > 1 else "")
    bar = tqdm(total=len(mine), desc=desc, unit="clip", disable=not progress or not mine, dynamic_ncols=True)
    t0, audio_s = time.perf_counter(), 0.0

    def start(
        batch: list[tuple[int, Path]],
    ) -> tuple[list[tuple[int, Path, AudioInfo | Rejection]], Callable[[], Iterable]]:
        """Probe the batch's files and start computing the readable ones."""
        probed: list[tuple[int, Path, AudioInfo | Rejection]] = []
        for pos, path in batch:
            try:
                probed.append((pos, path, probe(path)))
            except BadInputError as exc:
                probed.append((pos, path, exc.rejection))
        return probed, logmel.submit([i for _, _, i in probed if isinstance(i, AudioInfo)])

    try:
        with ThreadPoolExecutor(1) as io:
            batches = _batches(mine, batch_size)
            ahead = start(next(batches)) if mine else None
            while ahead is not None:
                probed, results = ahead
                following = next(batches, None)
                ahead = start(following) if following is not None else None
                computed = iter(results())
                for pos, path, info in probed:
                    key = (1, plan.index, 1 + pos // batch_size, 0 if isinstance(info, Rejection) else 1, pos)
                    res = info if isinstance(info, Rejection) else next(computed)
                    if isinstance(res, Rejection):
                        rejected.add(path.stem)
                        reject(Rejection(res.file, res.reason, split=split), key)
                    else:
                        assert isinstance(info, AudioInfo)
                        while len(writes) >= batch_size:  # a bounded queue of clips waiting to be written
                            writes.popleft().result()
                        n_samples = res[1]
                        writes.append(io.submit(writer.write, path.stem, res[0], n_samples, info))
                        stored += 1
                        summary.resampled += info.sample_rate != params.sample_rate
                        audio_s += n_samples / params.sample_rate
                        summary.audio_seconds += n_samples / params.sample_rate
                        if world == 1 and stored % INDEX_EVERY == 0:
                            while writes:
                                writes.popleft().result()
                            writer.write_index()
                    bar.update(1)
                bar.set_postfix_str(f"{audio_s / max(1e-9, time.perf_counter() - t0):.0f}x real time")
            while writes:
                writes.popleft().result()
    finally:
        bar.close()
        if world == 1:
            writer.write_index()
    summary.stored[split] = stored
    summary.total[split] = len(writer.entries)
    return rejected
