"""Post-processing of clip scores: rescaling each class by its prior.

LWLRAP ranks the classes *within* a clip, so a class's scores can be rescaled without changing how the clips
rank on that class (per-class AUC is unchanged), while the order of classes inside each clip moves toward the
likelier ones. With ``s`` a sigmoid score of class ``c``, ``prior[c]`` the class's frequency (fraction of
clips where it occurs) and ``mean(prior)`` its mean over the classes, ``prior`` rescaling is::

    logit(s') = logit(s) + strength * log(prior[c] / mean(prior))

i.e. the odds ``s / (1 - s)`` are multiplied by ``(prior[c] / mean(prior)) ** strength`` (a Bayes update from
the class-balanced sampling the models are trained with to the observed class frequencies; ``strength`` 0 is
the identity). Scores are clipped to ``[1e-7, 1 - 1e-7]`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import pandas as pd

from store.errors import InvalidInputError


class Postprocess(StrEnum):
    """What is done to the clip scores: nothing, or a rescaling by the class prior."""

    NONE = "none"
    PRIOR = "prior"


POSTPROCESS = tuple(m.value for m in Postprocess)  # the names, as plain strings
_EPS = 1e-7


def prior_from_labels(labels: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Class frequency from (N, C) clip labels (0/1, or soft pseudo labels in [0, 1]), Laplace-smoothed:
    ``(sum_i labels[i, c] + smoothing) / (N + 2 * smoothing)``."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2:
        raise InvalidInputError(f"labels must be (clips, classes), got shape {labels.shape}")
    return (labels.sum(axis=0) + smoothing) / (labels.shape[0] + 2 * smoothing)


def prior_from_boxes(
    recording_ids: Sequence[str],
    species_ids: Sequence[int],
    n_classes: int,
    n_recordings: int | None = None,
    smoothing: float = 1.0,
) -> np.ndarray:
    """Class frequency from TP boxes: the share of (labelled) recordings with a TP box of each class."""
    frame = pd.DataFrame({"recording_id": list(recording_ids), "species_id": np.asarray(species_ids, dtype=int)})
    if ((frame.species_id < 0) | (frame.species_id >= n_classes)).any():
        raise InvalidInputError(f"species ids must lie in [0, {n_classes})")
    n = n_recordings if n_recordings is not None else frame.recording_id.nunique()
    labels = np.zeros((max(n, 1), n_classes))
    for i, (_, g) in enumerate(frame.groupby("recording_id")):
        labels[i, g.species_id.unique()] = 1.0
    return prior_from_labels(labels[:n] if n else labels[:0], smoothing)


def apply_prior(scores: np.ndarray, prior: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Rescale (N, C) sigmoid scores by the class prior (the formula in the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    prior = np.asarray(prior, dtype=np.float64)
    if prior.shape != (scores.shape[1],):
        raise InvalidInputError(f"prior must have one value per class ({scores.shape[1]}), got shape {prior.shape}")
    if (prior <= 0).any() or not np.isfinite(prior).all():
        raise InvalidInputError("prior values must be positive and finite (smooth them)")
    s = np.clip(scores, _EPS, 1 - _EPS)
    logit = np.log(s) - np.log1p(-s) + strength * np.log(prior / prior.mean())
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def postprocess(
    clip_scores: pd.DataFrame, method: str, prior: np.ndarray | None = None, strength: float = 1.0
) -> pd.DataFrame:
    """``clip_scores`` (recording_id, s0..) post-processed by ``method`` (``none`` or ``prior``)."""
    if method not in POSTPROCESS:
        raise InvalidInputError(f"postprocess must be one of {POSTPROCESS}, got {method!r}")
    if method == "none":
        return clip_scores
    if prior is None:
        raise InvalidInputError("postprocess 'prior' needs the class prior")
    cols = [c for c in clip_scores.columns if c != "recording_id"]
    out = clip_scores.copy()
    out[cols] = apply_prior(clip_scores[cols].to_numpy(), prior, strength)
    return out
