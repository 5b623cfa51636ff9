"""What an LWLRAP is worth: the yardsticks every quality report stands beside.

- **random**: the mean LWLRAP of uniform random scores (a few dozen draws, fixed seed);
- **prior-only**: every clip ranks the species by their share of training recordings with a TP box (the same
  scores for every clip; ties broken at random, averaged over the draws);
- **oracle**: the same config trained on every call's truth (``rfcx train --oracle``, synthetic data), read from
  ``RUNS/oracle/round0/metrics.json``;
- **equal compute**: the bootstrap (round 0) trained for as many steps as pseudo-label round k, the config otherwise
  the same: the run's own round 0 where it trains that long, else ``rfcx train --equal-compute``'s
  ``RUNS/equal-compute``; round k's **pseudo-label gain** is its LWLRAP minus this one's: what the pseudo labels
  gave beyond the extra training;
- **gap closed** by round k: ``(round k - round 0) / (oracle - round 0)``, the share of the bootstrap -> oracle
  gap that pseudo labelling closed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rfcx.scoring.metrics import lwlrap
from store.tables import N_SPECIES

DRAWS = 50


def tp_prior(tp: pd.DataFrame, train_ids: Iterable[str], n_classes: int = N_SPECIES) -> np.ndarray:
    """Per species, the share of the training recordings that hold one of its TP boxes."""
    ids = set(train_ids)
    if not ids:
        return np.zeros(n_classes)
    pairs = tp[tp.recording_id.isin(ids)][["recording_id", "species_id"]].drop_duplicates()
    counts = np.bincount(pairs.species_id.to_numpy(dtype=np.int64), minlength=n_classes)[:n_classes]
    return counts / len(ids)


def random_lwlrap(truth: np.ndarray, draws: int = DRAWS, seed: int = 0) -> float:
    """Mean LWLRAP of uniform random scores."""
    truth = np.asarray(truth)
    rng = np.random.default_rng(seed)
    return float(np.mean([lwlrap(truth, rng.random(truth.shape)) for _ in range(draws)]))


def prior_lwlrap(truth: np.ndarray, prior: np.ndarray, draws: int = DRAWS, seed: int = 0) -> float:
    """Mean LWLRAP of ranking the species of every clip by ``prior`` (ties broken at random)."""
    truth = np.asarray(truth)
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.asarray(prior, dtype=np.float64), truth.shape)
    return float(np.mean([lwlrap(truth, base + 1e-9 * rng.random(truth.shape)) for _ in range(draws)]))


def gap_closed(score: float | None, bootstrap: float | None, oracle: float | None) -> float | None:
    """The share of the bootstrap -> oracle gap closed by ``score`` (None where a term is missing or the gap
    is not positive)."""
    if score is None or bootstrap is None or oracle is None or not oracle > bootstrap:
        return None
    return float((score - bootstrap) / (oracle - bootstrap))


def oracle_metrics(runs_root: Path) -> dict | None:
    """The oracle run's round-0 metrics (``RUNS/oracle/round0/metrics.json``), if it was trained."""
    path = Path(runs_root) / "oracle" / "round0" / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


EQUAL_COMPUTE = "equal-compute"  # RUNS/equal-compute: round 0 trained as long as the pseudo-label rounds


def equal_compute_metrics(runs_root: Path, steps: int | None) -> dict | None:
    """The round-0 metrics of a bootstrap that trained ``steps`` steps per member (a round's ``steps`` in its
    metrics.json): the run's own round 0 where it trained that long, else ``RUNS/equal-compute``'s round 0
    (``rfcx train --equal-compute``) where it did; with ``"source"`` naming which. None where neither did (or the
    rounds were trained before ``steps`` were recorded)."""
    if steps is None:
        return None
    root = Path(runs_root)
    for folder, source in ((root / "round0", "round 0"), (root / EQUAL_COMPUTE / "round0", EQUAL_COMPUTE)):
        path = folder / "metrics.json"
        if path.is_file() and (folder / "complete.json").is_file():
            metrics = json.loads(path.read_text())
            if metrics.get("steps") == steps:
                return {**metrics, "source": source}
    return None


def yardsticks(
    truth: np.ndarray, prior: np.ndarray, oracle: float | None = None, equal_compute: float | None = None
) -> dict:
    """``{"random", "prior_only", "oracle", "equal_compute"}`` LWLRAP for a truth matrix (clips x species)."""
    return {
        "random": random_lwlrap(truth),
        "prior_only": prior_lwlrap(truth, prior),
        "oracle": oracle,
        "equal_compute": equal_compute,
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def round_table(runs_root: Path) -> list[dict]:
    """One row per complete round of a run (``round``, ``test_lwlrap``, ``best``), plus the yardsticks, the gap
    closed (of the round, and of rounds 0..k together) and, from round 1 on, the equal-compute bootstrap and the
    pseudo-label gain over it (of the round, and of rounds 0..k together), read from the rounds' metrics.json and
    the oracle and equal-compute runs as they are now (one trained after the rounds counts): what ``rfcx report``
    prints."""
    root = Path(runs_root)
    rows = []
    for path in sorted(root.glob("round*/metrics.json"), key=lambda p: int(p.parent.name[5:])):
        if not (path.parent / "complete.json").is_file():
            continue
        m = json.loads(path.read_text())
        rows.append(
            {
                "round": m["round"],
                "test_lwlrap": m.get("test_lwlrap"),
                "oof_lwlrap": m.get("oof_lwlrap"),
                "oof_clip_lwlrap": m.get("oof_clip_lwlrap"),
                "test_lwlrap_prior": m.get("test_lwlrap_prior"),
                "test_lwlrap_rounds": m.get("test_lwlrap_rounds"),
                "steps": m.get("steps"),
                "yardsticks": m.get("yardsticks") or {},
            }
        )
    oracle = oracle_metrics(root)
    oracle_score = oracle.get("test_lwlrap") if oracle else None
    bootstrap = rows[0]["test_lwlrap"] if rows and rows[0]["round"] == 0 else None
    for row in rows:
        equal = equal_compute_metrics(root, row["steps"]) if row["round"] else None
        row["equal_compute"] = None if equal is None else equal.get("test_lwlrap")
        row["equal_compute_source"] = None if equal is None else equal["source"]
        row["yardsticks"] = {**row["yardsticks"], "oracle": oracle_score, "equal_compute": row["equal_compute"]}
        row["gap_closed"] = gap_closed(row["test_lwlrap"], bootstrap, oracle_score) if row["round"] else None
        row["gap_closed_rounds"] = (
            gap_closed(row["test_lwlrap_rounds"], bootstrap, oracle_score) if row["round"] else None
        )
        row["pseudo_gain"] = _minus(row["test_lwlrap"], row["equal_compute"])
        row["pseudo_gain_rounds"] = _minus(row["test_lwlrap_rounds"], row["equal_compute"])
    return rows


__all__ = [
    "EQUAL_COMPUTE",
    "equal_compute_metrics",
    "gap_closed",
    "oracle_metrics",
    "prior_lwlrap",
    "random_lwlrap",
    "round_table",
    "tp_prior",
    "yardsticks",
]
