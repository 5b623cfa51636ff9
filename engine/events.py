"""Detection events: per recording and species, the windows scoring above the species' threshold merged into one
event where they overlap or touch, with the species' frequency band from the training boxes.

A call of 2 s scored every 0.5 s by 2-4 s windows lights up 4-8 overlapping windows; a reviewer wants one
selection for it. An event spans from its first window's start to its last window's end, and keeps the peak
(``peak_score``) and mean (``mean_score``) of its windows' scores and their number (``n_windows``). Windows of
every window length the ensemble has (one row per length and window in ``window_scores``) merge alike.

The band (``low_hz``, ``high_hz``) is the species' band in the training labels, not measured on the detection:
the 5th percentile of its TP boxes' ``f_min`` and the 95th percentile of their ``f_max`` (a robust min/max: one
box drawn far too wide does not widen every event). A species without a TP box gets the full band, 0 Hz to the
Nyquist frequency.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from store.errors import InvalidInputError

EVENT_COLUMNS = [
    "recording_id",
    "species_id",
    "start_s",
    "end_s",
    "low_hz",
    "high_hz",
    "peak_score",
    "mean_score",
    "n_windows",
]
BAND_QUANTILES = (0.05, 0.95)  # of the TP boxes' f_min and f_max
TOUCH_S = 1e-6  # windows this close count as touching (start times are float seconds)


def score_columns_of(frame: pd.DataFrame) -> list[str]:
    """The ``s0..sN`` columns of a window or clip score table, in class order."""
    cols = [c for c in frame.columns if c.startswith("s") and c[1:].isdigit()]
    return sorted(cols, key=lambda c: int(c[1:]))


def species_bands(
    boxes: pd.DataFrame | None, n_classes: int, nyquist_hz: float, quantiles: tuple[float, float] = BAND_QUANTILES
) -> pd.DataFrame:
    """Per species (index ``species_id`` 0..n_classes-1): ``low_hz``, ``high_hz`` from its TP boxes (``f_min``,
    ``f_max``: the ``quantiles`` of each); ``0, nyquist_hz`` for a species without a box (or no ``boxes``)."""
    low = np.zeros(n_classes, dtype=np.float64)
    high = np.full(n_classes, float(nyquist_hz))
    if boxes is not None and len(boxes):
        for sid, g in boxes.groupby("species_id"):
            if 0 <= int(sid) < n_classes:
                low[int(sid)] = float(np.quantile(g["f_min"].to_numpy(np.float64), quantiles[0]))
                high[int(sid)] = float(np.quantile(g["f_max"].to_numpy(np.float64), quantiles[1]))
    return pd.DataFrame({"low_hz": low, "high_hz": high}, index=pd.RangeIndex(n_classes, name="species_id"))


def threshold_vector(n_classes: int, threshold: float, per_species: Mapping[int, float] | None = None) -> np.ndarray:
    """Each class's threshold: ``per_species`` where it names the class, else the global ``threshold``."""
    out = np.full(n_classes, float(threshold))
    for sid, t in (per_species or {}).items():
        if not 0 <= int(sid) < n_classes:
            raise InvalidInputError(f"species {sid} has a threshold, but the models have classes 0..{n_classes - 1}")
        out[int(sid)] = float(t)
    return out


def merge_events(
    window_scores: pd.DataFrame, thresholds: float | np.ndarray, bands: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The events (:data:`EVENT_COLUMNS`, sorted by recording, start, species) of the windows whose score of a
    species is above (``>``) its threshold (``thresholds``: one number, or one per class).

    ``window_scores`` has ``recording_id, start_s, end_s, s0..`` (as :func:`engine.batch.infer_clips` returns);
    ``bands`` is :func:`species_bands`'s table (without it low/high are NaN)."""
    cols = score_columns_of(window_scores)
    if window_scores.empty or not cols:
        return _empty()
    scores = window_scores[cols].to_numpy()
    limit = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(cols),))
    rows, classes = np.nonzero(scores > limit[None, :])
    if not len(rows):
        return _empty()
    hits = pd.DataFrame(
        {
            "recording_id": window_scores["recording_id"].to_numpy()[rows],
            "species_id": np.array([int(cols[c][1:]) for c in classes], dtype=np.int64),
            "start_s": window_scores["start_s"].to_numpy(np.float64)[rows],
            "end_s": window_scores["end_s"].to_numpy(np.float64)[rows],
            "score": scores[rows, classes].astype(np.float64),
        }
    ).sort_values(["recording_id", "species_id", "start_s", "end_s"], kind="stable")
    out = []
    for (rid, sid), g in hits.groupby(["recording_id", "species_id"], sort=False):
        starts, ends, sc = g["start_s"].to_numpy(), g["end_s"].to_numpy(), g["score"].to_numpy()
        reach = np.maximum.accumulate(ends)  # the furthest end of the windows so far
        new = np.ones(len(starts), dtype=bool)
        new[1:] = starts[1:] > reach[:-1] + TOUCH_S  # a gap before this window: a new event
        event = np.cumsum(new) - 1
        for e in range(int(event[-1]) + 1):
            m = event == e
            out.append(
                (
                    rid,
                    int(sid),
                    float(starts[m][0]),
                    float(ends[m].max()),
                    float(sc[m].max()),
                    float(sc[m].mean()),
                    int(m.sum()),
                )
            )
    frame = pd.DataFrame(
        out, columns=["recording_id", "species_id", "start_s", "end_s", "peak_score", "mean_score", "n_windows"]
    )
    if bands is not None:
        frame["low_hz"] = bands["low_hz"].reindex(frame["species_id"]).to_numpy()
        frame["high_hz"] = bands["high_hz"].reindex(frame["species_id"]).to_numpy()
    else:
        frame["low_hz"] = frame["high_hz"] = np.nan
    frame = frame.sort_values(["recording_id", "start_s", "species_id"], kind="stable").reset_index(drop=True)
    return frame[EVENT_COLUMNS]


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(
                dtype="object" if c == "recording_id" else "int64" if c in ("species_id", "n_windows") else "float64"
            )
            for c in EVENT_COLUMNS
        }
    )
