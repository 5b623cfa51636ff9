"""What the engine writes: the submission (clip scores) and the detections (events or windows, in the formats of
:mod:`engine.detection_formats`), atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from store.errors import InvalidInputError, NotFoundError

from .detection_formats import (
    FORMATS,
    WINDOW_COLUMNS,
    default_format,
    is_folder_target,
    write_audacity,
    write_frame,
    write_raven,
)
from .events import EVENT_COLUMNS, merge_events, score_columns_of, threshold_vector

DETECTION_COLUMNS = WINDOW_COLUMNS  # the windows level's table


def read_scores(path: str | os.PathLike, what: str) -> pd.DataFrame:
    """A ``recording_id,s0..sN`` CSV, checked: clear errors for a missing file, missing columns or bad values."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: {what} file not found")
    try:
        frame = pd.read_csv(path, dtype={"recording_id": str})
    except Exception as exc:
        raise InvalidInputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    cols = [c for c in frame.columns if c != "recording_id"]
    if "recording_id" not in frame.columns or not cols or cols != [f"s{i}" for i in range(len(cols))]:
        raise InvalidInputError(
            f"{path}: expected columns recording_id,s0..sN, got {','.join(map(str, frame.columns))}"
        )
    if frame["recording_id"].duplicated().any():
        dup = frame.loc[frame["recording_id"].duplicated(), "recording_id"].iloc[0]
        raise InvalidInputError(f"{path}: recording {dup!r} appears more than once")
    values = frame[cols].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        row = int(values.isna().any(axis=1).to_numpy().argmax())
        raise InvalidInputError(f"{path}:{row + 2}: a score is missing or not a number")
    frame[cols] = values
    return frame


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before any inference) where ``path`` cannot be written; creates its folder."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    return path


def _write_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """CSV, or parquet for a ``.parquet`` path, atomically."""
    return write_frame(frame, path, "parquet" if Path(path).suffix == ".parquet" else "csv")


def submission_frame(clip_scores: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """``recording_id, s0..`` rows in ``order`` (the sample submission's) or sorted by id.

    Every id of ``order`` must have scores; ids not in ``order`` are dropped.
    """
    frame = clip_scores.set_index("recording_id")
    if order is None:
        order = sorted(frame.index)
    missing = [rid for rid in order if rid not in frame.index]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} recording(s) of the sample submission have no scores "
            f"(e.g. {', '.join(missing[:3])}): not in the store's split, or rejected at build time"
        )
    out = frame.loc[list(order)].reset_index()
    return out


def write_submission(clip_scores: pd.DataFrame, path: str | os.PathLike, order: Sequence[str] | None = None) -> Path:
    """Write ``submission.csv`` (``recording_id,s0..s23``) atomically (temp file + rename)."""
    return _write_atomic(submission_frame(clip_scores, order), Path(path))


def detections(window_scores: pd.DataFrame, threshold: float | np.ndarray) -> pd.DataFrame:
    """Long table of the windows scoring above ``threshold`` (one number, or one per class): recording_id,
    start_s, end_s, species_id, score.

    ``start_s``/``end_s`` are the window's first frame and its end in seconds (a 0.5 s hop starts windows on
    whole frames: 0, 0.50133, 1.0, ...); ``score`` is the mean over the models of that window length.
    """
    cols = score_columns_of(window_scores)
    if window_scores.empty:
        return pd.DataFrame(columns=DETECTION_COLUMNS)
    scores = window_scores[cols].to_numpy()
    limit = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(cols),))
    rows, classes = np.nonzero(scores > limit[None, :])
    out = pd.DataFrame(
        {
            "recording_id": window_scores["recording_id"].to_numpy()[rows],
            "start_s": window_scores["start_s"].to_numpy()[rows],
            "end_s": window_scores["end_s"].to_numpy()[rows],
            "species_id": np.array([int(cols[c][1:]) for c in classes], dtype=np.int64),
            "score": scores[rows, classes].astype(np.float32),
        }
    )
    return out.sort_values(["recording_id", "start_s", "species_id"], kind="stable").reset_index(drop=True)


def _window_events(windows: pd.DataFrame, bands: pd.DataFrame | None) -> pd.DataFrame:
    """Per-window detections as events of one window each (for the Raven and Audacity tables)."""
    frame = pd.DataFrame(
        {
            "recording_id": windows["recording_id"],
            "species_id": windows["species_id"],
            "start_s": windows["start_s"].astype(np.float64),
            "end_s": windows["end_s"].astype(np.float64),
            "peak_score": windows["score"].astype(np.float64),
            "mean_score": windows["score"].astype(np.float64),
            "n_windows": 1,
        }
    )
    if bands is not None:
        frame["low_hz"] = bands["low_hz"].reindex(frame["species_id"]).to_numpy()
        frame["high_hz"] = bands["high_hz"].reindex(frame["species_id"]).to_numpy()
    else:
        frame["low_hz"] = frame["high_hz"] = np.nan
    return frame[EVENT_COLUMNS]


class Level(StrEnum):
    """What a detections table holds: events (windows of a species merged) or the windows themselves."""

    EVENTS = "events"
    WINDOWS = "windows"


LEVELS = tuple(m.value for m in Level)  # the names, as plain strings


@dataclass(frozen=True)
class WrittenDetections:
    """What :func:`write_detections` wrote: ``rows`` events (or windows) in ``paths``."""

    level: str
    fmt: str
    rows: int
    paths: tuple[Path, ...]

    def describe(self, target: str | os.PathLike) -> str:
        unit = "event(s)" if self.level == "events" else "window(s)"
        where = f"{len(self.paths)} {self.fmt} file(s) in {target}" if len(self.paths) != 1 else str(self.paths[0])
        return f"{self.rows} {unit} in {where}"


def check_detections_target(path: str | os.PathLike, fmt: str | None, level: str, n_recordings: int) -> str:
    """Fail early (before any inference) where the detections cannot be written as asked; returns the format
    (``fmt``, or :func:`engine.detection_formats.default_format` of the path)."""
    fmt = fmt or default_format(path)
    if fmt not in FORMATS:
        raise InvalidInputError(f"--detections-format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if level not in LEVELS:
        raise InvalidInputError(f"--detections-level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InvalidInputError(f"{path}: writing parquet needs pyarrow, which is not installed; use csv") from None
    if is_folder_target(path, fmt):
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"{path}: is a file, and {fmt} writes a folder of per-recording tables here")
        check_writable(path / "probe")
    else:
        if fmt == "audacity" and n_recordings > 1:
            raise InvalidInputError(
                f"{path}: an Audacity label track holds one recording's labels, and {n_recordings} are "
                "to be scored; give a folder (a path without a suffix) for one label file per recording"
            )
        check_writable(path)
    return fmt


def write_detections(
    window_scores: pd.DataFrame,
    path: str | os.PathLike,
    threshold: float,
    *,
    level: str = "events",
    fmt: str | None = None,
    thresholds: Mapping[int, float] | None = None,
    bands: pd.DataFrame | None = None,
    files: Mapping[str, str] | None = None,
) -> WrittenDetections:
    """Write the detections of ``window_scores`` above ``threshold`` (``thresholds``: per species, overriding it).

    ``level`` ``events`` merges overlapping or touching windows of a species (:func:`engine.events.merge_events`,
    ``bands`` giving each species' low/high frequency); ``windows`` writes one row per window (the table
    :func:`detections` makes: ``recording_id, start_s, end_s, species_id, score``). ``fmt`` (default from the
    suffix: parquet for .parquet, else csv) is one of :data:`engine.detection_formats.FORMATS`; raven and
    audacity write a folder of per-recording files where ``path`` has no suffix (``files`` names each recording's
    audio file in a combined Raven table)."""
    path = Path(path)
    recordings = list(dict.fromkeys(window_scores["recording_id"]))
    fmt = check_detections_target(path, fmt, level, len(recordings))
    limits = threshold_vector(len(score_columns_of(window_scores)), threshold, thresholds)
    if level == "windows":
        table = detections(window_scores, limits)
        events = _window_events(table, bands) if fmt in ("raven", "audacity") else None
    else:
        table = events = merge_events(window_scores, limits, bands)
    if fmt == "raven":
        paths = write_raven(events, path, recordings, files)
    elif fmt == "audacity":
        paths = write_audacity(events, path, recordings)
    else:
        paths = [write_frame(table, path, fmt)]
    return WrittenDetections(level, fmt, len(table), tuple(paths))
