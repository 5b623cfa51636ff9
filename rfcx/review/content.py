"""What a review page shows, gathered from a run directory and its feature store: the rounds beside the
yardsticks, each round's per-class average precision, the events to listen to and the train clips whose boxes
made each round's pseudo labels. No drawing and no HTML here (:mod:`rfcx.review.figures`, :mod:`rfcx.review.page`).

The scores are the ones training kept (``round{k}/members/*/predictions.npz``): each member's out-of-fold windows
of the train clips and its windows of the test clips, on the pseudo-label grid (windows as long as the shortest
training crop, every ``pseudo_hop_seconds``). The round's ensemble averages its members, as training does for
``metrics.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rfcx.errors import InvalidInputError
from rfcx.runs.directory import RunDir
from rfcx.scoring.metrics import per_class_average_precision
from rfcx.train.config import TrainConfig
from store.tables import N_SPECIES as N_CLASSES


@dataclass
class RoundScores:
    """A round's ensemble: mean window scores of its members (``{recording_id: (n_windows, 24)}``) out of fold
    (train clips) and on the test clips, and the test clip scores (mean over members of the best window)."""

    round: int
    oof: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    test_clips: dict[str, np.ndarray]
    members: int


@dataclass
class Grid:
    """The pseudo-label window grid: windows of ``window_s`` every ``hop_s`` from a clip's start."""

    window_s: float
    hop_s: float

    def starts(self, n: int) -> np.ndarray:
        return np.arange(n) * self.hop_s

    def centres(self, n: int) -> np.ndarray:
        return self.starts(n) + self.window_s / 2


def complete_rounds(run: RunDir) -> list[int]:
    return [k for k in run.rounds() if run.is_complete(k)]


def select_rounds(run: RunDir, round_: int | str | None) -> list[int]:
    """The rounds the page details: every complete one (``all``/None) or round ``K``; clear errors otherwise."""
    done = complete_rounds(run)
    if not done:
        present = ", ".join(map(str, run.rounds())) or "none"
        raise InvalidInputError(
            f"{run.root}: no complete round to review (rounds present: {present}; a round is complete "
            f"once {run.complete_marker(0).name} is written)"
        )
    if round_ in (None, "all"):
        return done
    if not isinstance(round_, int) or round_ not in done:
        raise InvalidInputError(f"{run.root}: round {round_} is not complete (complete: {', '.join(map(str, done))})")
    return [round_]


def run_grid(run: RunDir) -> Grid:
    """The run's pseudo-label grid, from its config.json."""
    cfg = TrainConfig.from_dict(json.loads(run.config_file.read_text()))
    return Grid(min(s.crop_seconds for s in cfg.backbones), cfg.pseudo_hop_seconds)


def round_scores(run: RunDir, k: int) -> RoundScores:
    """Round ``k``'s ensemble scores from its members' ``predictions.npz`` (none: empty tables)."""
    from rfcx.runs.predictions import load_predictions

    oof_sum: dict[str, np.ndarray] = {}
    oof_n: dict[str, int] = {}
    test_sum: dict[str, np.ndarray] = {}
    test_best: dict[str, list[np.ndarray]] = {}
    files = sorted((run.round_dir(k) / "members").glob("*/predictions.npz"))
    for path in files:
        oof, test = load_predictions(path)
        for rid, s in oof.items():
            oof_sum[rid] = oof_sum.get(rid, 0) + s
            oof_n[rid] = oof_n.get(rid, 0) + 1
        for rid, s in test.items():
            test_sum[rid] = test_sum.get(rid, 0) + s
            test_best.setdefault(rid, []).append(s.max(axis=0))
    return RoundScores(
        round=k,
        oof={rid: oof_sum[rid] / oof_n[rid] for rid in oof_sum},
        test={rid: test_sum[rid] / len(test_best[rid]) for rid in test_sum},
        test_clips={rid: np.mean(v, axis=0) for rid, v in test_best.items()},
        members=len(files),
    )


def box_windows(boxes: pd.DataFrame, scores: dict[str, np.ndarray], grid: Grid) -> pd.DataFrame:
    """Per box of a scored clip: ``species_id``, ``is_tp`` and ``score``, its species' score in the window
    nearest the box's centre (what training's held-out signals read)."""
    rows = []
    for rid, g in boxes.groupby("recording_id"):
        windows = scores.get(rid)
        if windows is None or not len(windows):
            continue
        centres = grid.centres(len(windows))
        for box in g.itertuples():
            w = int(np.argmin(np.abs(centres - (box.t_min + box.t_max) / 2)))
            rows.append((int(box.species_id), bool(box.is_tp), float(windows[w, int(box.species_id)])))
    return pd.DataFrame(rows, columns=["species_id", "is_tp", "score"])


def per_class_table(scores: RoundScores, boxes: pd.DataFrame, truth: pd.DataFrame | None, grid: Grid) -> pd.DataFrame:
    """Per species (0..23): ``test_ap`` (average precision of the ensemble's test clip scores against the test
    labels, ``test_positives`` clips; NaN without labels or positives) and ``oof_ap`` (average precision of the
    out-of-fold scores of its TP boxes against its FP boxes, ``oof_tp``/``oof_fp`` boxes; NaN without both)."""
    table = pd.DataFrame(
        {
            "species_id": np.arange(N_CLASSES),
            "test_ap": np.nan,
            "test_positives": 0,
            "oof_ap": np.nan,
            "oof_tp": 0,
            "oof_fp": 0,
        }
    )
    if truth is not None:
        ids = [rid for rid in truth.index if rid in scores.test_clips]
        if ids:
            labels = truth.loc[ids].to_numpy()[:, :N_CLASSES]
            table["test_ap"] = per_class_average_precision(labels, np.stack([scores.test_clips[r] for r in ids]))
            table["test_positives"] = (labels > 0).sum(axis=0)
    scored = box_windows(boxes, scores.oof, grid)
    for sid, g in scored.groupby("species_id"):
        if not 0 <= sid < N_CLASSES:
            continue
        n_tp, n_fp = int(g.is_tp.sum()), int((~g.is_tp).sum())
        table.loc[sid, ["oof_tp", "oof_fp"]] = n_tp, n_fp
        if n_tp and n_fp:
            table.loc[sid, "oof_ap"] = per_class_average_precision(
                g.is_tp.to_numpy()[:, None], g.score.to_numpy()[:, None]
            )[0]
    return table


def window_table(scores: dict[str, np.ndarray], grid: Grid) -> pd.DataFrame:
    """The window scores ``{recording_id: (n, 24)}`` as :func:`engine.events.merge_events` takes them."""
    parts = []
    for rid in sorted(scores):
        s = scores[rid]
        start = grid.starts(len(s))
        frame = pd.DataFrame(s, columns=[f"s{c}" for c in range(s.shape[1])])
        frame.insert(0, "end_s", start + grid.window_s)
        frame.insert(0, "start_s", start)
        frame.insert(0, "recording_id", rid)
        parts.append(frame)
    if not parts:
        return pd.DataFrame(columns=["recording_id", "start_s", "end_s", *[f"s{c}" for c in range(N_CLASSES)]])
    return pd.concat(parts, ignore_index=True)


def merge_window_rows(events: pd.DataFrame, bands: pd.DataFrame) -> pd.DataFrame:
    """A detections table of single windows (``--detections-level windows``) as events: the overlapping or
    touching windows of a species merged (:func:`engine.events.merge_events`, the species' ``bands``), so that one
    call is one event on the page, as ``--detections-level events`` would have written it."""
    from engine.events import merge_events

    if events.empty:
        return events
    wide = events.pivot_table(
        index=["recording_id", "start_s", "end_s"],
        columns="species_id",
        values="peak_score",
        aggfunc="max",
        fill_value=0.0,
    )
    wide.columns = [f"s{int(c)}" for c in wide.columns]
    return merge_events(wide.reset_index(), 0.0, bands)


def top_events(events: pd.DataFrame, n: int) -> dict[int, pd.DataFrame]:
    """Per species, its ``n`` events of highest peak score (ties: earlier recording, then time)."""
    if events.empty:
        return {}
    ordered = events.sort_values(
        ["peak_score", "recording_id", "start_s"], ascending=[False, True, True], kind="stable"
    )
    return {int(sid): g.head(n).reset_index(drop=True) for sid, g in ordered.groupby("species_id")}


def train_examples(boxes: pd.DataFrame, species: int, n: int) -> list[tuple[str, str]]:
    """Up to ``n`` train clips holding boxes of ``species``, as ``(recording_id, "TP"|"FP")``: clips with a TP box
    and clips with only an FP box of it taken in turn (so both kinds show where both exist), by id."""
    mine = boxes[boxes.species_id == species]
    tp = sorted(mine[mine.is_tp].recording_id.unique())
    fp = sorted(set(mine[~mine.is_tp].recording_id) - set(tp))
    picked: list[tuple[str, str]] = []
    for i in range(max(len(tp), len(fp))):
        for ids, kind in ((tp, "TP"), (fp, "FP")):
            if i < len(ids) and len(picked) < n:
                picked.append((ids[i], kind))
    return picked
