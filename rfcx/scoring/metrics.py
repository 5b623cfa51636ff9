"""Label-weighted label-ranking average precision (LWLRAP), the competition metric.

For every clip (row) and every positive label ``j`` of that clip, the precision at
the rank of ``j`` is::

    prec(i, j) = #{k positive : s[i, k] >= s[i, j]} / #{k : s[i, k] >= s[i, j]}

(ties count against the label: every score ``>=`` its own score is ranked at or above
it, as in ``sklearn.metrics.label_ranking_average_precision_score``). LWLRAP is the
mean of ``prec`` over all positive (clip, label) pairs, so each positive label weighs
equally; clips without any positive label do not contribute. Equivalently it is
``sum_c per_class[c] * weight[c]`` where ``per_class[c]`` is the mean precision of the
positives of class ``c`` and ``weight[c]`` is the fraction of all positives that are
of class ``c``.

Masked evaluation (TP/FP-labelled windows): with ``mask`` given, only *known
positives* count as positives, i.e. pairs with ``truth > 0`` and ``mask > 0``.
Ranking is still over all classes of the row: unknown classes and known negatives
alike are competitors, exactly as unlabelled classes are negatives in the competition
test set. This equals ``lwlrap(truth * (mask > 0), scores)``. Rows without a known
positive (e.g. windows with only FP boxes) are ignored.
"""

from __future__ import annotations

import numpy as np

_CHUNK_ROWS = 4096


def _precisions(truth: np.ndarray, scores: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(positive, precision)`` arrays of shape (N, C); precision is 0 where not positive."""
    truth = np.asarray(truth)
    scores = np.asarray(scores, dtype=np.float64)
    if truth.shape != scores.shape or truth.ndim != 2:
        raise ValueError(f"truth and scores must be 2-D arrays of equal shape, got {truth.shape} and {scores.shape}")
    positive = truth > 0
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != truth.shape:
            raise ValueError(f"mask shape {mask.shape} differs from truth shape {truth.shape}")
        positive = positive & (mask > 0)
    precision = np.zeros(scores.shape, dtype=np.float64)
    for start in range(0, scores.shape[0], _CHUNK_ROWS):
        s = scores[start : start + _CHUNK_ROWS]
        p = positive[start : start + _CHUNK_ROWS]
        # at_or_above[i, j, k]: class k scores >= class j in row i.
        at_or_above = s[:, None, :] >= s[:, :, None]
        rank = at_or_above.sum(axis=2)
        hits = (at_or_above & p[:, None, :]).sum(axis=2)
        precision[start : start + _CHUNK_ROWS] = np.where(p, hits / rank, 0.0)
    return positive, precision


def per_class_lwlrap(
    truth: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class LWLRAP and class weights, both shape (C,).

    ``per_class[c]`` is the mean precision over positives of class ``c`` (0 for a class
    without positives); ``weight[c]`` is its share of all positives (all zeros if there
    are no positives). ``lwlrap == (per_class * weight).sum()``.
    """
    positive, precision = _precisions(truth, scores, mask)
    counts = positive.sum(axis=0).astype(np.float64)
    per_class = np.divide(precision.sum(axis=0), counts, out=np.zeros_like(counts), where=counts > 0)
    total = counts.sum()
    weight = counts / total if total > 0 else np.zeros_like(counts)
    return per_class, weight


def lwlrap(truth: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> float:
    """LWLRAP of ``scores`` (N, C) against ``truth`` (N, C, positive where > 0).

    Returns ``nan`` when there is no positive label at all. See the module docstring
    for tie handling and the meaning of ``mask``.
    """
    positive, precision = _precisions(truth, scores, mask)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    return float(precision.sum() / n_pos)


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of ranking ``scores`` (n,) against binary ``truth`` (n,): the mean, over the positives,
    of the precision at each positive's score, ties counted against it (every score ``>=`` its own ranks at or
    above it, as in LWLRAP above). ``nan`` without a positive."""
    truth = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    if truth.shape != scores.shape or truth.ndim != 1:
        raise ValueError(f"truth and scores must be 1-D arrays of equal shape, got {truth.shape} and {scores.shape}")
    if not truth.any():
        return float("nan")
    ordered = np.sort(scores)
    positives = np.sort(scores[truth])
    pos = scores[truth]
    at_or_above = len(ordered) - np.searchsorted(ordered, pos, side="left")
    hits = len(positives) - np.searchsorted(positives, pos, side="left")
    return float(np.mean(hits / at_or_above))


def per_class_average_precision(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """:func:`average_precision` of every column (class) of ``truth`` and ``scores`` (N, C); ``nan`` for a class
    without a positive."""
    truth, scores = np.asarray(truth), np.asarray(scores)
    if truth.shape != scores.shape or truth.ndim != 2:
        raise ValueError(f"truth and scores must be 2-D arrays of equal shape, got {truth.shape} and {scores.shape}")
    return np.array([average_precision(truth[:, c], scores[:, c]) for c in range(truth.shape[1])])
