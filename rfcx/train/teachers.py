"""How a round >= 1 combines its two teachers' window labels: the previous round's network and the templates
(rfcx.train.templates), per species (``pseudo_templates_combine``).

"max" takes the larger label of a window. It keeps every call either teacher finds, and adds the network's
background: on the held-back shape of issue 10, 82 % of the label mass of "max" lies on windows that hold no call
of the species, most of it from the network where it is the weaker teacher. Against the calls' truth, the template
teacher ranks the windows far better than the bootstrap network for most species (window AP e.g. 0.88 vs 0.36,
0.98 vs 0.20, 0.93 vs 0.03), the network better for a few (long or frequency-modulated calls: 0.94 vs 0.49).

The truth is not known when training, but each teacher can be scored on the TP boxes it did not learn from: the
network by its out-of-fold window scores, the templates by the matches of other clips' templates (leave one clip
out). :func:`tp_auc` is the AUC of the scores at the TP boxes against the scores of all windows (positive vs
unlabelled: most windows hold no call of a species, so it ranks a teacher like the AUC against the truth would).
"select" keeps "max" for a species where the network's AUC is within ``SELECT_MARGIN`` of the templates' (or
better), and takes the template label alone where the templates are clearly the better teacher; a species the
templates do not calibrate keeps the network's label.

Measured on the held-back shape (same round 0 and templates): the templates' TP AUC is 0.91-1.00 for every
calibrated species, round 0's 0.17-0.99, so "select" gave 21 of 23 species the template label alone; round 1's
test LWLRAP 0.798 against 0.806 with "max", no move (per class, the most frequent species, 13, fell from 0.97 in
round 0 to 0.84, while 2, 4, 11, 16 and 21 rose; the test set's 80 clips hold 109 species calls in all).
Kept as an option beside "mean"; the TP AUCs are recorded (round k's ``metrics.json`` ``oof_tp_auc``,
``templates.json`` ``tp_auc``) whatever the combine.

"geometric" lets a template match raise a window's label only as far as the network believes in the species there:
``max(network, sqrt(network * template))``. Where calls vary (song types, pitch, tempo; ``rfcx synth --calls
variable``), templates match many windows of clips where the species does not call, and "max" turns each into a
confident clip-level label. On a variable-call set (300 train clips, dev seed 101; 96-epoch round 0 as the network
teacher, its train clips against the calls' truth): window AUC / clip LWLRAP of the network alone 0.851 / 0.827,
the templates alone 0.805 / 0.399, "max" 0.903 / 0.450, "mean" 0.907 / 0.814, "geometric" 0.896 / 0.850.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from rfcx.errors import InvalidInputError

COMBINES = ("max", "mean", "select", "geometric")
SELECT_MARGIN = 0.02  # "select": the network's TP AUC may lag the templates' this much and still add its labels


def tp_auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """AUC of ``scores[positives]`` against every score of ``scores`` (1-D; ties count half); None without a
    positive."""
    scores = np.asarray(scores, dtype=np.float64)
    pos = scores[np.asarray(positives, dtype=np.int64)]
    return auc(pos, scores)


def auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """The probability that a score of ``pos`` ranks above one of ``neg`` (ties count half), by ranks; None where
    either is empty."""
    pos, neg = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    if not len(pos) or not len(neg):
        return None
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def template_only(
    species: Sequence[int],
    network_auc: Mapping[int, float | None],
    template_auc: Mapping[int, float | None],
    margin: float = SELECT_MARGIN,
) -> list[int]:
    """The calibrated ``species`` whose template teacher scores its TP boxes clearly better than the network
    (template AUC - network AUC > ``margin``); a species without either figure is not among them."""
    out = []
    for s in species:
        net, tem = network_auc.get(int(s)), template_auc.get(int(s))
        if net is not None and tem is not None and tem - net > margin:
            out.append(int(s))
    return out


def combine(
    network: np.ndarray,
    template: np.ndarray,
    how: str,
    species: Sequence[int],
    network_auc: Mapping[int, float | None] | None = None,
    template_auc: Mapping[int, float | None] | None = None,
) -> np.ndarray:
    """Window labels (windows x 24) from the network teacher's and the template teacher's: "max" the larger of the
    two; "mean" their mean for the template teacher's calibrated ``species``, the network's label for the others
    (which the templates give 0 everywhere); "select" the larger of the two, except the template label alone for the
    species :func:`template_only` picks from the teachers' TP AUCs; "geometric" the larger of the network's label
    and the geometric mean of the two (a template match counts as far as the network believes in the species)."""
    if how == "max":
        return np.maximum(network, template)
    if how == "geometric":
        return np.maximum(network, np.sqrt(np.clip(network, 0, None) * np.clip(template, 0, None))).astype(np.float32)
    species = [int(s) for s in species]
    if how == "mean":
        out = np.array(network, dtype=np.float32, copy=True)
        out[:, species] = (network[:, species] + template[:, species]) / 2
        return out
    if how != "select":
        raise InvalidInputError(f"unknown template combine {how!r}: one of {COMBINES}")
    out = np.maximum(network, template).astype(np.float32, copy=False)
    only = template_only(species, network_auc or {}, template_auc or {})
    out[:, only] = template[:, only]
    return out
