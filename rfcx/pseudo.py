"""Sliding-window predictions of a model over whole clips, and the pseudo labels made from them.

Every window of the round's grid (``window_seconds`` long, every ``hop_seconds``: 113 windows for a 60 s
clip, 4 s windows and a 0.5 s hop) is scored; a model trained on longer crops scores its own crop length
centred on the same window centre, so the predictions of all the round's models line up and can be averaged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import zarr

from engine.windows import window_starts
from rfcx.calibration import class_rates, rescale_by_rate
from rfcx.sampling import PseudoLabels
from store import FeatureStore

N_CLASSES = 24


def clip_windows(mel: np.ndarray, fps: float, grid_window_s: float, hop_s: float, crop_s: float,
                 fill: float) -> np.ndarray:
    """(n_windows, n_mels, crop_frames) crops centred on the grid's window centres (padded with ``fill``)."""
    n_mels, frames = mel.shape
    grid_len = int(round(grid_window_s * fps))
    crop_len = int(round(crop_s * fps))
    starts = window_starts(frames, fps, grid_window_s, hop_s) + (grid_len - crop_len) // 2
    pad = crop_len + grid_len
    padded = np.full((n_mels, frames + 2 * pad), fill, dtype=np.float32)
    padded[:, pad:pad + frames] = mel
    idx = (starts + pad)[:, None] + np.arange(crop_len)[None, :]
    return np.ascontiguousarray(padded[:, idx].transpose(1, 0, 2))


@torch.inference_mode()
def predict_windows(model: torch.nn.Module, fs: FeatureStore, ids: list[str], grid_window_s: float, hop_s: float,
                    crop_s: float, device: torch.device, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``{recording_id: (n_windows, 24) sigmoid scores}`` of ``model`` over each clip's window grid."""
    model.eval()
    fps, fill = fs.params.frames_per_second, fs.params.floor_db
    out: dict[str, np.ndarray] = {}
    pending: list[tuple[str, int]] = []
    chunks: list[np.ndarray] = []
    results: list[np.ndarray] = []

    def flush() -> None:
        if not chunks:
            return
        x = torch.from_numpy(np.concatenate(chunks)).to(device)
        scores = torch.cat([torch.sigmoid(model(x[i:i + batch_size]).float()) for i in range(0, len(x), batch_size)])
        results.append(scores.cpu().numpy())
        flat = np.concatenate(results)
        pos = 0
        for rid, n in pending:
            out[rid] = flat[pos:pos + n]
            pos += n
        pending.clear(), chunks.clear(), results.clear()

    for rid in ids:
        windows = clip_windows(fs.mel(rid), fps, grid_window_s, hop_s, crop_s, fill)
        pending.append((rid, len(windows)))
        chunks.append(windows)
        if sum(len(c) for c in chunks) >= 4 * batch_size:
            flush()
    flush()
    return out


def stack(scores: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, offsets, concatenated windows) of a ``{rid: (n, 24)}`` dict, ids sorted."""
    ids = sorted(scores)
    lengths = [len(scores[r]) for r in ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate([scores[r] for r in ids]) if ids else np.zeros((0, N_CLASSES), np.float32)
    return ids, offsets, flat.astype(np.float32)


def unstack(ids: list[str], offsets: np.ndarray, flat: np.ndarray) -> dict[str, np.ndarray]:
    return {rid: flat[offsets[i]:offsets[i + 1]] for i, rid in enumerate(ids)}


def write_pseudo_labels(path: Path, scores: dict[str, np.ndarray], window_seconds: float, hop_seconds: float) -> None:
    """A Zarr group ``ids``, ``offsets``, ``scores`` (total windows x 24), written beside and renamed into place."""
    ids, offsets, flat = stack(scores)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w")
    group.attrs.update({"window_seconds": window_seconds, "hop_seconds": hop_seconds, "n_classes": N_CLASSES})
    group.create_array("ids", shape=(len(ids),), dtype=str, chunks=(max(1, len(ids)),))[:] = np.array(ids, dtype=object)
    group.create_array("offsets", data=offsets, chunks=(len(offsets),))
    group.create_array("scores", data=flat, chunks=(min(max(1, len(flat)), 65536), N_CLASSES))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


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
        out[int(box.species_id)].append(int(labels.offsets[i]) + int(np.argmin(np.abs(centres - (box.t_min + box.t_max) / 2))))
    return [np.array(sorted(set(v)), dtype=np.int64) for v in out]


def rescale(labels: PseudoLabels, mode: str, quantiles: tuple[float, float] = (0.9, 0.99),
            boxes: pd.DataFrame | None = None) -> PseudoLabels:
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
    if mode == "prior":  # each class at its own positive rate, estimated from its TP windows (rfcx.calibration)
        if boxes is None:
            raise ValueError("pseudo_rescale = 'prior' needs the TP boxes")
        rates, _ = class_rates(labels.scores, tp_windows(labels, boxes))
        out = rescale_by_rate(labels.scores, rates)
        return PseudoLabels(labels.ids, labels.offsets, out, labels.window_seconds, labels.hop_seconds)
    if mode != "quantile":
        raise ValueError(f"unknown pseudo-label rescaling {mode!r} (none, quantile, prior)")
    lo_q, hi_q = quantiles
    scores = labels.scores.astype(np.float64)
    lo, hi = np.quantile(scores, [lo_q, hi_q], axis=0) if len(scores) else (0.0, 1.0)
    out = np.clip((scores - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return PseudoLabels(labels.ids, labels.offsets, out, labels.window_seconds, labels.hop_seconds)


def read_pseudo_labels(path: Path) -> PseudoLabels:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: pseudo labels not found (is the previous round complete?)")
    group = zarr.open_group(str(path), mode="r")
    return PseudoLabels(ids=group["ids"][:].tolist(), offsets=group["offsets"][:], scores=group["scores"][:],
                        window_seconds=float(group.attrs["window_seconds"]),
                        hop_seconds=float(group.attrs["hop_seconds"]))
