"""What the engine writes: the submission (clip scores) and the per-window detections table, atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

DETECTION_COLUMNS = ["recording_id", "start_s", "end_s", "species_id", "score"]


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any inference) where ``path`` cannot be written; creates its folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    return path


def _write_atomic(frame: pd.DataFrame, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, float_format="%.6g")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def submission_frame(clip_scores: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """``recording_id, s0..`` rows in ``order`` (the sample submission's) or sorted by id.

    Every id of ``order`` must have scores; ids not in ``order`` are dropped.
    """
    frame = clip_scores.set_index("recording_id")
    if order is None:
        order = sorted(frame.index)
    missing = [rid for rid in order if rid not in frame.index]
    if missing:
        raise ValueError(f"{len(missing)} recording(s) of the sample submission have no scores "
                         f"(e.g. {', '.join(missing[:3])}): not in the store's split, or rejected at build time")
    out = frame.loc[list(order)].reset_index()
    return out


def write_submission(clip_scores: pd.DataFrame, path: str | os.PathLike, order: Sequence[str] | None = None) -> Path:
    """Write ``submission.csv`` (``recording_id,s0..s23``) atomically (temp file + rename)."""
    return _write_atomic(submission_frame(clip_scores, order), Path(path))


def detections(window_scores: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Long table of the windows scoring above ``threshold``: recording_id, start_s, end_s, species_id, score.

    ``start_s``/``end_s`` are the window's first frame and its end in seconds (a 0.5 s hop starts windows on
    whole frames: 0, 0.50133, 1.0, ...); ``score`` is the mean over the models of that window length.
    """
    cols = [c for c in window_scores.columns if c.startswith("s") and c[1:].isdigit()]
    if window_scores.empty:
        return pd.DataFrame(columns=DETECTION_COLUMNS)
    scores = window_scores[cols].to_numpy()
    rows, classes = np.nonzero(scores > threshold)
    out = pd.DataFrame({
        "recording_id": window_scores["recording_id"].to_numpy()[rows],
        "start_s": window_scores["start_s"].to_numpy()[rows],
        "end_s": window_scores["end_s"].to_numpy()[rows],
        "species_id": np.array([int(cols[c][1:]) for c in classes], dtype=np.int64),
        "score": scores[rows, classes].astype(np.float32),
    })
    return out.sort_values(["recording_id", "start_s", "species_id"], kind="stable").reset_index(drop=True)


def write_detections(window_scores: pd.DataFrame, path: str | os.PathLike, threshold: float) -> Path:
    """Write the detections table (CSV; parquet where the path ends in .parquet and pyarrow exists)."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(f"{path}: writing parquet needs pyarrow, which is not installed; use a .csv path") from None
    return _write_atomic(detections(window_scores, threshold), path)
