"""The batch engine: every clip of a split scored by an ensemble of exported models over the 0.5 s window grid.

For each clip and each model: the model's own window length slides over the clip every ``hop_seconds``
(:mod:`engine.windows`; 113 windows for 60 s, 4 s, 0.5 s; windows reaching past the clip's end are padded
with the silence floor), each window is scored (sigmoid of the logits), and the clip's score of a class is its
maximum over the windows. The clip scores of the models (members x folds) are then averaged, each model with
the same weight. Window scores are kept too, averaged over the models sharing a window length.

``mode="exact"`` runs one forward per window; windows of many clips are batched together (``batch_size``
windows per forward). ``mode="fcn"`` runs each model's fully convolutional path (:mod:`engine.export`) once
over whole clips (``batch_size * window_frames / clip_frames`` clips per forward, i.e. about as many input
frames as an exact batch) and pools the feature map over each window's time positions.

Clip reads run ahead on background threads (``prefetch`` chunks), overlapping decompression with compute.
With ``checkpoint_dir`` each finished chunk of clips is written there atomically (``part-NNNNN.npz``); a run
killed half-way and started again with the same directory, models, split and mode skips those clips.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from store import BadInputError, FeatureStore, MelParams
from store.atomic import atomic_path, write_text_atomic
from store.device import resolve_device
from store.errors import InvalidInputError

from .export import LoadedModel, load_model
from .windows import MODES, window_starts

CHECKPOINT_VERSION = 1
CHUNK_CLIPS = 16  # clips read and scored together (and the unit a launch of many processes shares out)


class Clips(Protocol):
    """What the engine reads: a (n_mels, frames) float32 dB spectrogram per recording id."""

    def mel(self, recording_id: str) -> np.ndarray: ...


def score_columns(n_classes: int) -> list[str]:
    return [f"s{c}" for c in range(n_classes)]


def check_models(models: Sequence[LoadedModel], params: MelParams, where: str) -> None:
    """All models were trained on features with ``params`` and agree on the classes; raise naming both otherwise."""
    if not models:
        raise InvalidInputError("no models to run")
    want = params.to_dict()
    for m in models:
        got = MelParams.from_dict(m.meta["mel"]).to_dict()
        if got != want:
            diff = ", ".join(f"{k}: {got[k]} (model) vs {want[k]} ({where})" for k in want if got.get(k) != want[k])
            raise InvalidInputError(
                f"{m.path}: the model was trained on other log-mel features than {where} has ({diff})"
            )
    classes = {int(m.meta["n_classes"]) for m in models}
    if len(classes) != 1:
        raise InvalidInputError(f"the models disagree on the number of classes: {sorted(classes)}")


@dataclass(frozen=True)
class _Group:
    """Models sharing a window length (frames) and hop."""

    window_frames: int
    hop_seconds: float
    models: tuple[LoadedModel, ...]

    @property
    def window_seconds(self) -> float:
        return float(self.models[0].meta["crop_seconds"])


def _groups(models: Sequence[LoadedModel]) -> list[_Group]:
    by: dict[tuple[int, float], list[LoadedModel]] = {}
    for m in models:
        by.setdefault((m.window_frames, float(m.meta["hop_seconds"])), []).append(m)
    return [_Group(w, h, tuple(ms)) for (w, h), ms in sorted(by.items())]


@dataclass
class _ChunkResult:
    ids: list[str]
    clip: np.ndarray  # (n, C) mean over models of max over windows
    windows: list[tuple[np.ndarray, np.ndarray]]  # per group: offsets (n+1,), scores (rows, C) mean over its models

    def save(self, path: Path) -> None:
        arrays = {"ids": np.array(self.ids, dtype=object).astype(str), "clip": self.clip}
        for g, (off, sc) in enumerate(self.windows):
            arrays[f"w{g}_offsets"], arrays[f"w{g}_scores"] = off, sc
        with atomic_path(path, keep_suffix=True) as tmp:  # np.savez adds .npz to a name without it
            np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stubs take **kwds for allow_pickle

    @classmethod
    def load(cls, path: Path, n_groups: int) -> "_ChunkResult":
        try:
            with np.load(path) as z:
                return cls(
                    z["ids"].tolist(), z["clip"], [(z[f"w{g}_offsets"], z[f"w{g}_scores"]) for g in range(n_groups)]
                )
        except Exception as exc:
            raise InvalidInputError(
                f"{path}: unreadable partial result ({type(exc).__name__}: {exc}); "
                "delete it and run again to recompute its clips"
            ) from None


class _Engine:
    """Scores chunks of clips with every model (see the module docstring)."""

    def __init__(self, models: Sequence[LoadedModel], params: MelParams, mode: str, batch_size: int) -> None:
        self.groups = _groups(models)
        self.n_models = len(models)
        self.params = params
        self.mode = mode
        self.batch_size = batch_size
        self.n_classes = int(models[0].meta["n_classes"])
        self.windows_done = 0

    def starts(self, group: _Group, n_frames: int) -> np.ndarray:
        return window_starts(n_frames, self.params.frames_per_second, group.window_seconds, group.hop_seconds)

    def run(self, ids: list[str], mels: list[np.ndarray]) -> _ChunkResult:
        clip = np.zeros((len(ids), self.n_classes), dtype=np.float32)
        windows = []
        for group in self.groups:
            starts = [self.starts(group, m.shape[1]) for m in mels]
            padded = [_pad(m, int(s[-1]) + group.window_frames, self.params.floor_db) for m, s in zip(mels, starts)]
            run = self._exact if self.mode == "exact" else self._fcn
            per_model = run(group, padded, starts)  # per model: per clip (n_windows, C)
            for scores in per_model:
                clip += np.stack([s.max(axis=0) for s in scores])
            mean = [np.mean([pm[i] for pm in per_model], axis=0) for i in range(len(ids))]
            offsets = np.concatenate([[0], np.cumsum([len(s) for s in starts])]).astype(np.int64)
            windows.append((offsets, np.concatenate(mean).astype(np.float32)))
            self.windows_done += int(offsets[-1]) * len(group.models)
        return _ChunkResult(list(ids), clip / self.n_models, windows)

    def _exact(self, group: _Group, mels: list[np.ndarray], starts: list[np.ndarray]) -> list[list[np.ndarray]]:
        index = [(i, int(s)) for i, ss in enumerate(starts) for s in ss]
        length = group.window_frames
        out = [np.empty((len(index), self.n_classes), dtype=np.float32) for _ in group.models]
        buf = np.empty((min(self.batch_size, len(index)), mels[0].shape[0], length), dtype=np.float32)
        for lo in range(0, len(index), self.batch_size):
            part = index[lo : lo + self.batch_size]
            for j, (i, s) in enumerate(part):
                buf[j] = mels[i][:, s : s + length]
            x = torch.from_numpy(buf[: len(part)])
            for k, model in enumerate(group.models):
                out[k][lo : lo + len(part)] = torch.sigmoid(model(x).float()).cpu().numpy()
        bounds = np.cumsum([len(s) for s in starts])[:-1]
        return [np.split(o, bounds) for o in out]

    def _fcn(self, group: _Group, mels: list[np.ndarray], starts: list[np.ndarray]) -> list[list[np.ndarray]]:
        out: list[list[np.ndarray | None]] = [[None] * len(mels) for _ in group.models]
        by_len: dict[tuple[int, int], list[int]] = {}  # clips of one length (and so one window grid) share a batch
        for i, m in enumerate(mels):
            by_len.setdefault((m.shape[1], len(starts[i])), []).append(i)
        for (frames, _), members in by_len.items():
            per_batch = max(1, self.batch_size * group.window_frames // frames)
            st = torch.from_numpy(starts[members[0]].astype(np.float32))
            for lo in range(0, len(members), per_batch):
                part = members[lo : lo + per_batch]
                x = torch.from_numpy(np.stack([mels[i] for i in part]))
                for k, model in enumerate(group.models):
                    scores = torch.sigmoid(model.windows(x, st).float()).cpu().numpy()
                    for j, i in enumerate(part):
                        out[k][i] = scores[j]
        return out  # type: ignore[return-value]


def _pad(mel: np.ndarray, frames: int, fill: float) -> np.ndarray:
    if mel.shape[1] >= frames:
        return mel
    return np.concatenate([mel, np.full((mel.shape[0], frames - mel.shape[1]), fill, dtype=mel.dtype)], axis=1)


# -- resumable runs ---------------------------------------------------------------------------------------------


def _fingerprint(models: Sequence[LoadedModel], mode: str, source: str) -> dict:
    files = []
    for m in models:
        st = m.path.stat()
        files.append({"file": m.path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {
        "version": CHECKPOINT_VERSION,
        "mode": mode,
        "source": source,
        "models": sorted(files, key=lambda f: f["file"]),
    }


def _open_checkpoint(directory: Path, fingerprint: dict, restart_other: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".part-*.tmp*"):  # what a killed run was writing
        stale.unlink(missing_ok=True)
    manifest = directory / "manifest.json"
    known = None
    if manifest.is_file():
        try:
            known = json.loads(manifest.read_text())
        except ValueError:
            known = {}
    if known == fingerprint:
        return
    if known is not None or _parts(directory):
        if not restart_other:
            diff = sorted(k for k in fingerprint if (known or {}).get(k) != fingerprint[k])
            raise InvalidInputError(
                f"{directory}: holds partial results of another inference run (differs in: "
                f"{', '.join(diff)}); delete it or choose another checkpoint directory"
            )
        for part in _parts(directory):
            part.unlink()
    write_text_atomic(manifest, json.dumps(fingerprint, indent=1))


def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.npz"))


def _next_part(directory: Path) -> int:
    numbers = [int(p.stem.split("-")[1]) for p in _parts(directory) if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


# -- the entry points ------------------------------------------------------------------------------------------


def _read_ahead(
    read: Callable[[str], np.ndarray | BadInputError], chunks: list[list[str]], prefetch: int, workers: int
) -> Iterator[tuple[list[str], list[np.ndarray | BadInputError]]]:
    """Yield (ids, mels) chunk by chunk while the next ``prefetch`` chunks are read on background threads."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rfcx-read") as pool:
        pending: deque[tuple[list[str], list[Future]]] = deque()
        try:
            for chunk in chunks:
                pending.append((chunk, [pool.submit(read, rid) for rid in chunk]))
                if len(pending) > prefetch:
                    ids, futures = pending.popleft()
                    yield ids, [f.result() for f in futures]
            while pending:
                ids, futures = pending.popleft()
                yield ids, [f.result() for f in futures]
        finally:
            for _, futures in pending:
                for f in futures:
                    f.cancel()


def infer_clips(
    models: Sequence[LoadedModel],
    clips: Clips,
    ids: Sequence[str],
    params: MelParams,
    mode: str = "exact",
    batch_size: int = 64,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    chunk_clips: int = CHUNK_CLIPS,
    prefetch: int = 2,
    read_workers: int = 2,
    source: str = "",
    restart_other: bool = False,
    on_bad: Callable[[str, BadInputError], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``ids`` of ``clips`` (see :func:`infer_split`, which this runs for a store's split).

    ``source`` names the clips in messages and in the checkpoint's fingerprint. A ``checkpoint_dir`` holding
    partial results of another run (other models, mode or source) is an error, or with ``restart_other``
    is emptied and started afresh. A clip whose read raises :class:`store.BadInputError` (an audio file that
    does not decode) stops the run, or with ``on_bad`` is reported to it (``on_bad(recording_id, error)``) and
    left out of the results (``attrs["skipped_clips"]`` lists them).
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1 or chunk_clips < 1:
        raise InvalidInputError("batch_size and chunk_clips must be >= 1")
    models = list(models)
    check_models(models, params, source or "the input")
    if mode == "fcn":
        missing = [m.path.name for m in models if not m.has_windows]
        if missing:
            raise InvalidInputError(
                f"mode 'fcn' needs the fully convolutional entry point, which {', '.join(missing)} "
                "lack (backbone without an average-pooled head); use mode 'exact'"
            )
    engine = _Engine(models, params, mode, batch_size)
    ids = list(ids)
    done: list[_ChunkResult] = []
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if directory is not None:
        _open_checkpoint(directory, _fingerprint(models, mode, source), restart_other)
        done = [_ChunkResult.load(p, len(engine.groups)) for p in _parts(directory)]
    wanted = set(ids)
    finished = {rid for r in done for rid in r.ids if rid in wanted}
    todo = [rid for rid in ids if rid not in finished]
    next_part = _next_part(directory) if directory is not None else 0
    chunks = [todo[i : i + chunk_clips] for i in range(0, len(todo), chunk_clips)]
    skipped: list[str] = []

    def read(recording_id: str) -> np.ndarray | BadInputError:
        try:
            return clips.mel(recording_id)
        except BadInputError as exc:
            if on_bad is None:
                raise
            return exc

    started = time.perf_counter()
    bar = tqdm(
        total=len(ids),
        initial=len(ids) - len(todo),
        desc=f"infer ({mode})",
        unit="clip",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for chunk_ids, mels in _read_ahead(read, chunks, prefetch, read_workers):
            good = [(rid, m) for rid, m in zip(chunk_ids, mels) if not isinstance(m, BadInputError)]
            for rid, m in zip(chunk_ids, mels):
                if isinstance(m, BadInputError):
                    skipped.append(rid)
                    assert on_bad is not None  # read() returns the error only when there is on_bad
                    on_bad(rid, m)
            if good:
                result = engine.run([rid for rid, _ in good], [m for _, m in good])
                if directory is not None:
                    result.save(directory / f"part-{next_part:05d}.npz")
                    next_part += 1
                done.append(result)
            bar.update(len(chunk_ids))
            elapsed = time.perf_counter() - started
            bar.set_postfix(windows_s=f"{engine.windows_done / elapsed:.0f}")
    finally:
        bar.close()
    left_out = set(skipped)
    clip_scores, window_scores = _assemble(done, [rid for rid in ids if rid not in left_out], engine)
    clip_scores.attrs.update(
        {
            "resumed_clips": len(ids) - len(todo),
            "computed_clips": len(todo) - len(skipped),
            "seconds": time.perf_counter() - started,
            "windows_scored": engine.windows_done,
            "skipped_clips": skipped,
        }
    )
    return clip_scores, window_scores


def infer_split(
    models: Sequence[LoadedModel | str | os.PathLike],
    store: FeatureStore | str | os.PathLike,
    split: str = "test",
    mode: str = "exact",
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    chunk_clips: int = CHUNK_CLIPS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every clip of ``split`` with the ensemble ``models`` (loaded models or paths, loaded onto ``device``).

    Returns ``(clip_scores, window_scores)``: ``clip_scores`` has columns ``recording_id, s0..s{C-1}`` in the
    order of ``store.ids(split)`` (the mean over models of each model's max over windows); ``window_scores``
    has ``recording_id, window_s, start_s, end_s, s0..`` per window, averaged over the models of a window
    length. ``clip_scores.attrs`` says how many clips were resumed from ``checkpoint_dir`` and computed.
    """
    fs = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    ids = fs.ids(split)  # KeyError naming the store and its splits when absent
    dev = resolve_device(device)
    loaded = [m if isinstance(m, LoadedModel) else load_model(m, dev) for m in models]
    return infer_clips(
        loaded,
        fs,
        ids,
        fs.params,
        mode=mode,
        batch_size=batch_size,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        chunk_clips=chunk_clips,
        source=f"store {fs.location.display} ({split})",
    )


# -- many processes -----------------------------------------------------------------------------------------------


def shard_ids(ids: Sequence[str], rank: int, world: int, chunk_clips: int = CHUNK_CLIPS) -> list[str]:
    """Process ``rank``'s share of ``ids`` among ``world``: every ``world``-th block of ``chunk_clips`` clips.

    Whole chunks, so that each chunk holds the clips it holds in a one-process run: the same batches, and so
    bit for bit the same scores."""
    if world < 1 or not 0 <= rank < world or chunk_clips < 1:
        raise InvalidInputError(
            f"need 0 <= rank < world and chunk_clips >= 1, got rank {rank}, world {world}, chunk_clips {chunk_clips}"
        )
    return [rid for i, rid in enumerate(ids) if (i // chunk_clips) % world == rank]


def merge_shards(
    parts: Sequence[tuple[pd.DataFrame, pd.DataFrame | None]], ids: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The ``(clip_scores, window_scores)`` of :func:`infer_clips` over shards of ``ids`` (see :func:`shard_ids`)
    put together as one run over ``ids`` returns them (same rows, order and dtypes; ``window_scores`` ``None``
    where a part left it out). ``clip_scores.attrs`` adds up the parts' clip and window counts; ``seconds`` is
    the slowest part's."""
    ids = list(ids)
    position = {rid: i for i, rid in enumerate(ids)}
    clips = [c for c, _ in parts if len(c)] or [parts[0][0]]
    clip_scores = pd.concat(clips, ignore_index=True)
    if sorted(clip_scores["recording_id"]) != sorted(ids):
        raise InvalidInputError(f"the parts hold {len(clip_scores)} clips, not the {len(ids)} clips asked for")
    clip_scores = clip_scores.iloc[np.argsort(clip_scores["recording_id"].map(position).to_numpy(), kind="stable")]
    clip_scores = clip_scores.reset_index(drop=True)
    clip_scores.attrs = {
        key: sum(c.attrs.get(key, 0) for c, _ in parts) for key in ("resumed_clips", "computed_clips", "windows_scored")
    }
    clip_scores.attrs["seconds"] = max((c.attrs.get("seconds", 0.0) for c, _ in parts), default=0.0)
    if any(w is None for _, w in parts):
        return clip_scores, None
    complete = cast(Sequence[tuple[pd.DataFrame, pd.DataFrame]], parts)  # every part has its windows (above)
    windows = [w for _, w in complete if len(w)] or [complete[0][1]]
    window_scores = pd.concat(windows, ignore_index=True)
    # by window length (the groups' order), then clip; rows of one clip keep their order (start times)
    order = np.lexsort(
        (
            np.arange(len(window_scores)),
            window_scores["recording_id"].map(position).to_numpy(),
            window_scores["window_s"].to_numpy(),
        )
    )
    return clip_scores, window_scores.iloc[order].reset_index(drop=True)


def _assemble(results: list[_ChunkResult], ids: list[str], engine: _Engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = score_columns(engine.n_classes)
    fps = engine.params.frames_per_second
    row_of: dict[str, tuple[int, int]] = {}
    for r_i, r in enumerate(results):
        for j, rid in enumerate(r.ids):
            row_of[rid] = (r_i, j)
    clip = np.stack([results[row_of[rid][0]].clip[row_of[rid][1]] for rid in ids]) if ids else np.zeros((0, len(cols)))
    clip_scores = pd.DataFrame(clip.astype(np.float32), columns=cols)
    clip_scores.insert(0, "recording_id", ids)
    frames = []
    for g, group in enumerate(engine.groups):
        rid_col, start_col, blocks = [], [], []
        for rid in ids:
            r_i, j = row_of[rid]
            off, sc = results[r_i].windows[g]
            block = sc[off[j] : off[j + 1]]
            blocks.append(block)
            rid_col += [rid] * len(block)
            start_col.append(np.round(np.arange(len(block)) * group.hop_seconds * fps) / fps)
        if not blocks:
            continue
        start = np.concatenate(start_col)
        frame = pd.DataFrame(np.concatenate(blocks), columns=cols)
        frame.insert(0, "recording_id", rid_col)
        frame.insert(1, "window_s", group.window_seconds)
        frame.insert(2, "start_s", start)
        frame.insert(3, "end_s", start + group.window_frames / fps)
        frames.append(frame)
    window_scores = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["recording_id", "window_s", "start_s", "end_s", *cols])
    )
    return clip_scores, window_scores


__all__ = [
    "CHUNK_CLIPS",
    "Clips",
    "MODES",
    "check_models",
    "infer_clips",
    "infer_split",
    "merge_shards",
    "score_columns",
    "shard_ids",
]
