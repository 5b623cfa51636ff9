"""Per-species detection thresholds chosen on a run's out-of-fold predictions (``rfcx infer --target-precision``).

The labelled windows: each TP and FP box of the store's train clips, scored by the out-of-fold window nearest
the box's centre (as the round's ``oof_box_auc`` reads them, :func:`rfcx.train.round_metrics.box_metrics`): the
mean over the round's members of their window scores (``RUNS/round{k}/members/*/predictions.npz``, every train
clip held out by one fold of each member), of the box's species. TP boxes are positives, FP boxes negatives;
:func:`engine.thresholds.thresholds_for_precision` picks each species' lowest threshold that reaches the target
precision on them (see there for what that precision means and when a species keeps the global threshold).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from engine.thresholds import MIN_POSITIVES, thresholds_for_precision
from rfcx.errors import NotFoundError
from rfcx.runs.directory import RunDir
from rfcx.runs.predictions import load_predictions
from rfcx.train.config import TrainConfig


def oof_window_scores(run: RunDir, k: int | Sequence[int]) -> tuple[dict[str, np.ndarray], float, float]:
    """``({train recording id: (windows, classes) mean OOF scores}, window_s, hop_s)`` of round ``k`` (or of
    several rounds together: the mean over all their members, as ``rfcx infer --round all`` scores)."""
    files = []
    for r in [k] if isinstance(k, int) else list(k):
        found = sorted((run.round_dir(r) / "members").glob("*/predictions.npz"))
        if not found:
            raise NotFoundError(
                f"{run.describe(run.round_dir(r) / 'members')}: no predictions.npz of round {r} "
                "(the out-of-fold scores --target-precision chooses thresholds on)"
            )
        files += found
    cfg = TrainConfig.from_dict(json.loads(run.config_file.read_text()))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for f in files:
        oof, _ = load_predictions(f)
        for rid, scores in oof.items():
            if rid in sums and sums[rid].shape == scores.shape:
                sums[rid] = sums[rid] + scores
                counts[rid] += 1
            elif rid not in sums:
                sums[rid], counts[rid] = scores.astype(np.float64), 1
    window_s = min(s.crop_seconds for s in cfg.backbones)
    return {rid: sums[rid] / counts[rid] for rid in sums}, window_s, cfg.pseudo_hop_seconds


def labelled_scores(oof: dict[str, np.ndarray], boxes: pd.DataFrame, window_s: float, hop_s: float) -> pd.DataFrame:
    """``species_id, score, is_tp``: per box (``is_tp`` column) of a clip in ``oof``, the score of its species in
    the window whose centre is nearest the box's centre."""
    rows = []
    for box in boxes[boxes["recording_id"].isin(oof)].itertuples(index=False):
        windows = oof[box.recording_id]
        centres = np.arange(len(windows)) * hop_s + window_s / 2
        w = int(np.argmin(np.abs(centres - (box.t_min + box.t_max) / 2)))
        rows.append((int(box.species_id), float(windows[w, int(box.species_id)]), bool(box.is_tp)))
    return pd.DataFrame(rows, columns=["species_id", "score", "is_tp"]).astype(
        {"species_id": np.int64, "score": np.float64, "is_tp": bool}
    )


def oof_thresholds(
    run: RunDir,
    k: int | Sequence[int],
    tp: pd.DataFrame,
    fp: pd.DataFrame,
    target: float,
    min_positives: int = MIN_POSITIVES,
) -> tuple[dict[int, float], pd.DataFrame]:
    """``({species_id: threshold}, labelled)`` for the species of round ``k``'s OOF scores that reach ``target``
    precision on the labelled windows of the ``tp``/``fp`` boxes."""
    oof, window_s, hop_s = oof_window_scores(run, k)
    boxes = pd.concat([tp.assign(is_tp=True), fp.assign(is_tp=False)], ignore_index=True)
    labelled = labelled_scores(oof, boxes, window_s, hop_s)
    return thresholds_for_precision(labelled, target, min_positives), labelled
