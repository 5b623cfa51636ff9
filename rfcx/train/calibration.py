"""Class rates estimated from a round's own out-of-fold scores, and the soft labels they calibrate.

The boxes do not tell how often a species calls: the competition labelled about as many TP boxes for every
species, and a synthetic or field set labels about one call per labelled recording. The scores do, once read
against the boxes: the labelled TP windows of a species are a sample of its true windows (positive-unlabelled
learning's "selected completely at random"), so for any threshold ``t``

    share of all windows scoring >= t  =  rate * TPR(t) + (1 - rate) * FPR(t)  >=  rate * TPR(t),

with ``TPR(t)`` read off the labelled windows. Each ``share(t) / TPR(t)`` bounds the rate from above (tightly
where few negatives score above ``t``); the estimate is the mean of the bounds at the lower quartile and the
median of the labelled windows' scores (:func:`positive_rate`): higher thresholds would be tighter, but a
handful of labelled windows reads their TPR too noisily. The same holds for clips (a clip's score is its best
window): the rate is then the class's prior, the share of clips where it calls (:func:`class_priors`).

``pseudo_rescale = "prior"`` maps each class's scores so that about its own rate of windows is labelled
positive (:func:`rescale_by_rate`), where the fixed ``quantile`` rescaling labels the same share for every
class: too few windows of a common species, far too many of a rare one.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_QUANTILES = (0.25, 0.5)  # of the labelled positives' scores
MIN_POSITIVES = 3  # a class with fewer labelled positives takes the median rate of the others
# The estimate bounds the rate from above, tightly only where few negatives outscore the labelled windows: for a
# weak bootstrap (window AUC ~0.6 on the benchmark set) most classes came out at 0.5 against true rates of
# 0.3-16 %. Rates are therefore capped at 5 % (the share the ``quantile`` rescaling labels): a class whose labelled
# windows stand out gets its lower rate, the others the cap.
RATE_BOUNDS = (1e-3, 0.05)


def positive_rate(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Estimated share of positives among ``scores`` (one class, all windows or clips), from the scores of a
    sample of known ``positives`` (None with fewer than ``MIN_POSITIVES``)."""
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, np.float64)
    if len(positives) < MIN_POSITIVES or not len(scores):
        return None
    bounds = []
    for t in np.quantile(positives, THRESHOLD_QUANTILES):
        tpr = float(np.mean(positives >= t))
        if tpr > 0:
            bounds.append(float(np.mean(scores >= t)) / tpr)
    return float(np.clip(np.mean(bounds), *RATE_BOUNDS)) if bounds else None


def class_rates(scores: np.ndarray, positive_index: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the estimated positive rate of ``scores`` (rows x classes) from the rows ``positive_index[c]``
    known positive; classes with too few known positives take the median of the others (or the largest rate
    bound where no class has enough). Returns ``(rates, estimated)``, ``estimated`` False where filled in."""
    n_classes = scores.shape[1]
    rates = np.full(n_classes, np.nan)
    for c in range(n_classes):
        idx = np.asarray(positive_index[c], dtype=np.int64)
        r = positive_rate(scores[:, c], scores[idx, c]) if len(idx) else None
        if r is not None:
            rates[c] = r
    estimated = np.isfinite(rates)
    fill = float(np.median(rates[estimated])) if estimated.any() else RATE_BOUNDS[1]
    return np.where(estimated, rates, fill), estimated


def rescale_by_rate(scores: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Soft labels: per class, 0 at or below the ``1 - 2 rate`` quantile of its scores, 1 at or above the
    ``1 - rate / 2`` quantile, linear in between (about ``rate`` of the windows end up labelled >= 0.5)."""
    scores = np.asarray(scores, np.float64)
    out = np.zeros(scores.shape, np.float32)
    if not len(scores):
        return out
    for c, r in enumerate(rates):
        lo, hi = np.quantile(scores[:, c], [max(0.0, 1.0 - 2.0 * r), 1.0 - r / 2.0])
        out[:, c] = np.clip((scores[:, c] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return out


def class_priors(clip_scores: np.ndarray, labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the estimated share of clips where it calls, from the clip scores (clips x classes) and the
    0/1 matrix of clips holding one of its TP boxes. See :func:`class_rates`."""
    index = [np.flatnonzero(labelled[:, c]) for c in range(labelled.shape[1])]
    return class_rates(np.asarray(clip_scores), index)


__all__ = ["class_priors", "class_rates", "positive_rate", "rescale_by_rate"]
