"""Per-species detection thresholds: read from a file, or chosen for a target precision on labelled scores.

A file is a CSV ``species_id,threshold`` (species it leaves out keep the global ``--threshold``).

Chosen for a target precision (:func:`thresholds_for_precision`): the labelled scores are those of the windows
that hold a TP box of the species (positives) or an FP box of it (negatives): in ``rfcx infer`` the out-of-fold
window scores of the run's round (:mod:`rfcx.train.thresholds`). Per species, the lowest threshold at which the
share of positives among the labelled windows above it reaches the target: the most recall that precision
allows. It is a precision among *labelled* windows (FP boxes are a template matcher's hard negatives; unlabelled
windows do not count), a guide rather than the precision over every window of a new recording. A species with
fewer than ``min_positives`` TP windows, or that never reaches the target, keeps the global threshold.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from store.atomic import atomic_path
from store.errors import InvalidInputError, NotFoundError

MIN_POSITIVES = 3


def read_thresholds(path: str | os.PathLike, n_classes: int) -> dict[int, float]:
    """``{species_id: threshold}`` from a CSV with columns ``species_id,threshold``; clear errors otherwise."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)  # text as written, for the messages
    except FileNotFoundError:
        raise NotFoundError(f"{path}: thresholds file not found") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"{path}: not a readable CSV ({exc})") from None
    if not {"species_id", "threshold"} <= set(frame.columns):
        raise InvalidInputError(
            f"{path}: expected columns species_id,threshold, got {','.join(map(str, frame.columns))}"
        )
    sid = pd.to_numeric(frame["species_id"], errors="coerce")
    thr = pd.to_numeric(frame["threshold"], errors="coerce")
    bad = frame[
        sid.isna() | thr.isna() | (sid != sid.round()) | (sid < 0) | (sid >= n_classes) | ~thr.between(0.0, 1.0)
    ]
    if len(bad):
        row = bad.iloc[0]
        species, threshold = (row[c].strip() or "(empty)" for c in ("species_id", "threshold"))
        raise InvalidInputError(
            f"{path}: line {bad.index[0] + 2}: species_id must be 0..{n_classes - 1} and threshold in "
            f"0..1, got species_id {species}, threshold {threshold}"
        )
    if sid.duplicated().any():
        raise InvalidInputError(f"{path}: species {int(sid[sid.duplicated()].iloc[0])} is listed twice")
    return {int(s): float(t) for s, t in zip(sid, thr)}


def write_thresholds(thresholds: dict[int, float], path: str | os.PathLike) -> Path:
    """The CSV :func:`read_thresholds` reads (sorted by species)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(sorted(thresholds.items()), columns=["species_id", "threshold"])
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return path


def threshold_for_precision(
    scores: np.ndarray, positive: np.ndarray, target: float, min_positives: int = MIN_POSITIVES
) -> float | None:
    """The lowest threshold ``t`` (detections are scores ``> t``) at which the labelled scores above it are
    positives in a share ``>= target``; ``None`` where there are fewer than ``min_positives`` positives or no
    threshold reaches the target. ``t`` lies halfway between the lowest score kept and the next lower one."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if positive.sum() < max(1, min_positives):
        return None
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    distinct = np.r_[s[1:] != s[:-1], True]  # last of each run of equal scores: a threshold below it keeps them all
    hits = np.cumsum(p)
    precision = hits / np.arange(1, len(s) + 1)
    ok = np.nonzero(distinct & (precision >= target))[0]
    if not len(ok):
        return None
    i = int(ok[np.argmax(hits[ok])])  # the most positives kept at that precision (the first such cut: fewest negatives)
    below = s[i + 1] if i + 1 < len(s) else max(0.0, s[i] - 1e-3)
    return float((s[i] + below) / 2)


def thresholds_for_precision(
    labelled: pd.DataFrame, target: float, min_positives: int = MIN_POSITIVES
) -> dict[int, float]:
    """``{species_id: threshold}`` for the species of ``labelled`` (columns ``species_id, score, is_tp``: one
    row per labelled window of a species) that reach ``target`` (see :func:`threshold_for_precision`)."""
    if not 0.0 < target <= 1.0:
        raise InvalidInputError(f"the target precision must be in (0, 1], got {target}")
    out = {}
    for sid, g in labelled.groupby("species_id"):
        t = threshold_for_precision(g["score"].to_numpy(), g["is_tp"].to_numpy(bool), target, min_positives)
        if t is not None:
            out[int(sid)] = t
    return out
