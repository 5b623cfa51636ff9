"""Sliding-window predictions of a model over whole clips, and the pseudo labels made from them.

Every window of the round's grid (``window_seconds`` long, every ``hop_seconds``: 113 windows for a 60 s
clip, 4 s windows and a 0.5 s hop) is scored; a model trained on longer crops scores the windows of its own
length that the inference engine scores (:func:`engine.windows.window_starts`: every ``hop_seconds`` from the
clip's start, inside the clip), each grid window taking the one whose centre is nearest its own (near the clip's
edges the crop is shifted inwards, as training crops are, instead of padded). So the predictions of all the
round's models line up and can be averaged, and a member's clip scores (max over windows) are the engine's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import zarr

from engine.windows import frame_windows, window_starts
from rfcx.errors import InvalidInputError, NotFoundError
from rfcx.runs.predictions import stack
from rfcx.train.calibration import class_rates, rescale_by_rate
from rfcx.train.config import SCORE_MODES
from rfcx.train.sampling import PseudoLabels
from store import FeatureStore, layout
from store.atomic import replace_dir, temp_dir
from store.tables import N_SPECIES as N_CLASSES

if TYPE_CHECKING:
    from engine.export import Deployable


def member_windows(
    frames: int, fps: float, grid_window_s: float, hop_s: float, crop_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, index)``: the start frames of the windows of ``crop_s`` that the engine scores over a clip of
    ``frames`` (:func:`engine.windows.window_starts`), and for each window of the grid (``grid_window_s`` every
    ``hop_s``) the one of them whose centre is nearest the grid window's centre (the earlier one on a tie).

    For a crop as long as the grid's windows ``index`` is ``0..n-1``; for a longer one (8 s on a 4 s grid) the
    windows near the clip's edges share the first or last crop, which lies inside the clip as every training crop
    does (a clip shorter than the crop is one window padded at its end, as in the engine)."""
    starts = window_starts(frames, fps, crop_s, hop_s)
    n_grid = len(window_starts(frames, fps, grid_window_s, hop_s))
    grid_centres = np.arange(n_grid) * hop_s + grid_window_s / 2
    centres = np.arange(len(starts)) * hop_s + crop_s / 2
    index = np.argmin(np.abs(grid_centres[:, None] - centres[None, :]) + 1e-9 * np.arange(len(starts)), axis=1)
    return starts, index


def clip_windows(
    mel: np.ndarray, fps: float, grid_window_s: float, hop_s: float, crop_s: float, fill: float
) -> np.ndarray:
    """(n_windows, n_mels, crop_frames): the crop of ``crop_s`` scored for each window of the grid
    (:func:`member_windows`; padded with ``fill`` only where the clip is shorter than a crop)."""
    starts, index = member_windows(mel.shape[1], fps, grid_window_s, hop_s, crop_s)
    return frame_windows(mel.astype(np.float32, copy=False), starts[index], int(round(crop_s * fps)), fill)


@torch.inference_mode()
def predict_windows(
    model: torch.nn.Module,
    fs: FeatureStore,
    ids: list[str],
    grid_window_s: float,
    hop_s: float,
    crop_s: float,
    device: torch.device,
    batch_size: int = 64,
    mode: str = "exact",
) -> dict[str, np.ndarray]:
    """``{recording_id: (n_windows, 24) sigmoid scores}`` of ``model`` over each clip's window grid.

    ``mode``: ``exact`` runs one forward per window; ``fcn`` runs the backbone once over each whole clip and pools
    each window from its feature map (the engine's ``--mode fcn``, :class:`engine.export.Deployable`): the same
    windows, about ``crop / hop`` times less compute, scores within the README's measured tolerance of exact. A
    backbone without a fully convolutional path is scored exactly."""
    if mode not in SCORE_MODES:
        raise InvalidInputError(f"score mode {mode!r} is not one of {list(SCORE_MODES)}")
    model.eval()
    if mode == "fcn":
        from engine.export import Deployable

        window_frames = int(round(crop_s * fs.params.frames_per_second))
        deployable = Deployable(model, fs.params.n_mels, window_frames).to(device).eval()
        if deployable.fcn is not None:
            return _predict_fcn(deployable, fs, ids, grid_window_s, hop_s, crop_s, device, batch_size)
    fps, fill = fs.params.frames_per_second, fs.params.floor_db
    out: dict[str, np.ndarray] = {}
    pending: list[tuple[str, int]] = []
    chunks: list[np.ndarray] = []
    results: list[np.ndarray] = []

    def flush() -> None:
        if not chunks:
            return
        x = torch.from_numpy(np.concatenate(chunks)).to(device)
        scores = torch.cat([torch.sigmoid(model(x[i : i + batch_size]).float()) for i in range(0, len(x), batch_size)])
        results.append(scores.cpu().numpy())
        flat = np.concatenate(results)
        pos = 0
        for rid, n in pending:
            out[rid] = flat[pos : pos + n]
            pos += n
        pending.clear()
        chunks.clear()
        results.clear()

    crop_len = int(round(crop_s * fps))
    index: dict[str, np.ndarray] = {}
    for rid in ids:  # each of the member's own windows is scored once, then spread over the grid
        mel = fs.mel(rid)
        starts, index[rid] = member_windows(mel.shape[1], fps, grid_window_s, hop_s, crop_s)
        windows = frame_windows(mel.astype(np.float32, copy=False), starts, crop_len, fill)
        pending.append((rid, len(windows)))
        chunks.append(windows)
        if sum(len(c) for c in chunks) >= 4 * batch_size:
            flush()
    flush()
    return {rid: out[rid][index[rid]] for rid in ids}


def _predict_fcn(
    deployable: Deployable,
    fs: FeatureStore,
    ids: list[str],
    grid_window_s: float,
    hop_s: float,
    crop_s: float,
    device: torch.device,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """:func:`predict_windows` in ``fcn`` mode: consecutive clips of one length share a batch of about
    ``batch_size`` crops' worth of frames (a clip shorter than a crop is padded to one crop, as in the engine)."""
    fps, fill = fs.params.frames_per_second, fs.params.floor_db
    crop_len = int(round(crop_s * fps))
    out: dict[str, np.ndarray] = {}
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        frames = pending[0][1].shape[1]
        starts, index = member_windows(frames, fps, grid_window_s, hop_s, crop_s)
        length = max(frames, int(starts[-1]) + crop_len)
        x = np.full((len(pending), pending[0][1].shape[0], length), fill, dtype=np.float32)
        for j, (_, mel) in enumerate(pending):
            x[j, :, :frames] = mel
        st = torch.from_numpy(starts.astype(np.float32)).to(device)
        scores = torch.sigmoid(deployable.windows(torch.from_numpy(x).to(device), st).float()).cpu().numpy()
        for j, (rid, _) in enumerate(pending):
            out[rid] = scores[j][index]
        pending.clear()

    for rid in ids:
        mel = fs.mel(rid).astype(np.float32, copy=False)
        if pending and (
            mel.shape[1] != pending[0][1].shape[1]
            or (len(pending) + 1) * max(mel.shape[1], crop_len) > batch_size * crop_len
        ):
            flush()
        pending.append((rid, mel))
    flush()
    return {rid: out[rid] for rid in ids}


def write_pseudo_labels(path: Path, scores: dict[str, np.ndarray], window_seconds: float, hop_seconds: float) -> None:
    """A Zarr group ``ids``, ``offsets``, ``scores`` (total windows x 24), written beside and renamed into place."""
    ids, offsets, flat = stack(scores)
    tmp = temp_dir(path)
    group = zarr.open_group(str(tmp), mode="w")
    group.attrs.update({"window_seconds": window_seconds, "hop_seconds": hop_seconds, "n_classes": N_CLASSES})
    group.create_array("ids", shape=(len(ids),), dtype=str, chunks=(max(1, len(ids)),))[:] = np.array(ids, dtype=object)
    group.create_array("offsets", data=offsets, chunks=(len(offsets),))
    group.create_array("scores", data=flat, chunks=(min(max(1, len(flat)), 65536), N_CLASSES))
    replace_dir(tmp, path)


def tp_windows(labels: PseudoLabels, boxes: pd.DataFrame) -> list[np.ndarray]:
    """Per class, the rows of ``labels.scores`` of the windows nearest the centres of its TP boxes."""
    out: list[list[int]] = [[] for _ in range(labels.scores.shape[1])]
    tp = boxes[boxes.is_tp] if "is_tp" in boxes else boxes
    for box in tp.itertuples():
        if box.recording_id not in labels:
            continue
        i = labels.row(box.recording_id)
        n = int(labels.offsets[i + 1] - labels.offsets[i])
        centres = np.arange(n) * labels.hop_seconds + labels.window_seconds / 2
        out[int(box.species_id)].append(
            int(labels.offsets[i]) + int(np.argmin(np.abs(centres - (box.t_min + box.t_max) / 2)))
        )
    return [np.array(sorted(set(v)), dtype=np.int64) for v in out]


def tp_clip_labels(labels: PseudoLabels, boxes: pd.DataFrame) -> np.ndarray:
    """The soft labels of ``pseudo_rescale = "tp_clips"``: the out-of-fold scores as they are, except in a clip holding
    a TP box of a species. A species present in a clip calls there more than once while about one call is boxed, so
    there its windows are read against the clip itself: the clip's median score for the species (its background)
    maps to 0, the score of the window at its TP box (the best of them, where several) to 1, linear in between and
    clipped; the TP boxes' own windows are 1. The boxed species' other calls become positives (measured on the
    benchmark set: the round-0 scores rank a species' windows far better inside the clips where it is known to
    call than over all clips), and its background in those clips a negative."""
    scores = labels.scores.copy()
    tp = boxes[boxes.is_tp] if "is_tp" in boxes else boxes
    for (rid, species), g in tp.groupby(["recording_id", "species_id"]):
        if rid not in labels:
            continue
        i = labels.row(rid)
        lo, hi = int(labels.offsets[i]), int(labels.offsets[i + 1])
        clip = labels.scores[lo:hi, int(species)]
        centres = np.arange(hi - lo) * labels.hop_seconds + labels.window_seconds / 2
        at_box = np.unique(np.argmin(np.abs(centres[None, :] - ((g.t_min + g.t_max) / 2).to_numpy()[:, None]), axis=1))
        base, ref = float(np.median(clip)), float(clip[at_box].max())
        out = np.clip((clip - base) / max(ref - base, 1e-6), 0.0, 1.0) if ref > base else np.zeros_like(clip)
        out[at_box] = 1.0
        scores[lo:hi, int(species)] = out
    return scores


def rescale(
    labels: PseudoLabels, mode: str, quantiles: tuple[float, float] = (0.9, 0.99), boxes: pd.DataFrame | None = None
) -> PseudoLabels:
    """The soft labels a round trains on, from the previous round's out-of-fold scores.

    ``none``: the scores themselves (the seed's recipe). ``quantile``: per class, scores at or below the
    class's ``quantiles[0]`` quantile over all windows become 0, those at or above ``quantiles[1]`` become 1,
    linear in between. A class is absent from most windows, but a bootstrap model trained on boxes only
    never sees an empty window as a negative and scores background at its box base rate (measured on the
    synthetic demo: 0.27 mean against a true window rate of 0.07); rescaling keeps each class's ranking of
    the windows and pins that background to 0, so the next round does not learn to fire on it.
    """
    if mode == "none":
        return labels
    if mode == "tp_clips":  # the raw scores, and in a clip holding a TP box of a species its other calls
        if boxes is None:
            raise InvalidInputError("pseudo_rescale = 'tp_clips' needs the TP boxes")
        return PseudoLabels(
            labels.ids, labels.offsets, tp_clip_labels(labels, boxes), labels.window_seconds, labels.hop_seconds
        )
    if mode == "prior":  # each class at its own positive rate, estimated from its TP windows (rfcx.train.calibration)
        if boxes is None:
            raise InvalidInputError("pseudo_rescale = 'prior' needs the TP boxes")
        rates, _ = class_rates(labels.scores, tp_windows(labels, boxes))
        out = rescale_by_rate(labels.scores, rates)
        return PseudoLabels(labels.ids, labels.offsets, out, labels.window_seconds, labels.hop_seconds)
    if mode != "quantile":
        raise InvalidInputError(f"unknown pseudo-label rescaling {mode!r} (none, quantile, prior, tp_clips)")
    lo_q, hi_q = quantiles
    scores = labels.scores.astype(np.float64)
    lo, hi = np.quantile(scores, [lo_q, hi_q], axis=0) if len(scores) else (0.0, 1.0)
    out = np.clip((scores - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return PseudoLabels(labels.ids, labels.offsets, out, labels.window_seconds, labels.hop_seconds)


def read_pseudo_labels(path: Path) -> PseudoLabels:
    if not Path(path).is_dir():
        raise NotFoundError(f"{path}: pseudo labels not found (is the previous round complete?)")
    group = zarr.open_group(str(path), mode="r")
    attrs: Mapping[str, Any] = group.attrs  # JSON values (write_pseudo_labels' floats)
    return PseudoLabels(
        ids=layout.read_column(group, "ids").tolist(),
        offsets=layout.read_column(group, "offsets"),
        scores=layout.read_column(group, "scores"),
        window_seconds=float(attrs["window_seconds"]),
        hop_seconds=float(attrs["hop_seconds"]),
    )
