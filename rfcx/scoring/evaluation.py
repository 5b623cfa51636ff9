"""``rfcx evaluate``: LWLRAP of a submission against clip-level truth (``test_labels.csv``), with a per-class table."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.outputs import read_scores
from rfcx.errors import InvalidInputError, NotFoundError
from rfcx.scoring.metrics import lwlrap, per_class_lwlrap
from rfcx.scoring.yardsticks import prior_lwlrap, random_lwlrap, tp_prior


@dataclass(frozen=True)
class Evaluation:
    lwlrap: float
    per_class: pd.DataFrame  # species_id, lwlrap, weight, positives
    n_clips: int
    n_extra_predictions: int  # predicted clips without truth (ignored)
    yardsticks: dict | None = None  # random and (with the train TP table) prior-only LWLRAP on the same clips


def evaluate(
    pred: str | os.PathLike, truth: str | os.PathLike, train_tp: str | os.PathLike | None = None
) -> Evaluation:
    """LWLRAP of the predictions on the clips of ``truth`` (every truth clip must be predicted), beside random
    scores and, given the training ``train_tp.csv``, prior-only scores (rfcx.scoring.yardsticks)."""
    p, t = read_scores(pred, "prediction"), read_scores(truth, "truth")
    if p.shape[1] != t.shape[1]:
        raise InvalidInputError(f"{pred} has {p.shape[1] - 1} classes, {truth} has {t.shape[1] - 1}")
    p, t = p.set_index("recording_id"), t.set_index("recording_id")
    missing = t.index.difference(p.index)
    if len(missing):
        raise InvalidInputError(
            f"{pred}: no prediction for {len(missing)} clip(s) of {truth} (e.g. {', '.join(missing[:3])})"
        )
    scores = p.loc[t.index].to_numpy(np.float64)
    labels = t.to_numpy()
    per_class, weight = per_class_lwlrap(labels, scores)
    table = pd.DataFrame(
        {
            "species_id": np.arange(len(per_class)),
            "lwlrap": per_class,
            "weight": weight,
            "positives": (labels > 0).sum(axis=0),
        }
    )
    sticks = {"random": random_lwlrap(labels), "prior_only": None}
    if train_tp is not None:
        sticks["prior_only"] = prior_lwlrap(labels, _tp_ranking(Path(train_tp), labels.shape[1]))
    return Evaluation(lwlrap(labels, scores), table, len(t), len(p.index.difference(t.index)), sticks)


def _tp_ranking(path: Path, n_classes: int) -> np.ndarray:
    """Recordings with a TP box, per species, from a ``train_tp.csv`` (the prior-only ranking)."""
    if not path.is_file():
        raise NotFoundError(f"{path}: train TP table not found")
    try:
        tp = pd.read_csv(path, usecols=["recording_id", "species_id"], dtype={"recording_id": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise InvalidInputError(
            f"{path}: not a TP table with recording_id and species_id ({str(exc).splitlines()[0]})"
        ) from None
    ids = tp.recording_id.unique()
    return tp_prior(tp[tp.species_id.between(0, n_classes - 1)], ids, n_classes)
