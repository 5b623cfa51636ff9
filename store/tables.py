"""Reading and checking the competition's CSV tables (TP/FP boxes, sample submission), row by row."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import Rejection

BOX_COLUMNS = ("recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max")
N_SPECIES = 24


@dataclass
class CheckedTable:
    """The rows of a CSV that passed their checks, plus a rejection for each row that did not."""

    rows: pd.DataFrame
    rejected: list[Rejection] = field(default_factory=list)
    line_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def empty_boxes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in BOX_COLUMNS})


def _dtype(column: str) -> str:
    return {"recording_id": "str", "species_id": "int64", "songtype_id": "int64"}.get(column, "float64")


def read_boxes(path: Path, n_species: int = N_SPECIES, max_hz: float | None = None) -> CheckedTable:
    """Read a ``train_tp.csv``/``train_fp.csv`` style file, checking every row.

    A row is rejected (with its line number and the reason) when it has the wrong number of fields, a
    value that does not parse, a species id outside ``0..n_species-1``, ``t_min >= t_max``,
    ``f_min >= f_max``, a negative time or frequency, or a frequency above ``max_hz``. A file that is
    missing or has the wrong header raises :class:`FileNotFoundError` / :class:`ValueError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label table not found")
    good: list[tuple] = []
    lines: list[int] = []
    rejected: list[Rejection] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != BOX_COLUMNS:
            raise ValueError(f"{path}: header must be {','.join(BOX_COLUMNS)}, got {','.join(header or [])!r}")
        for fields_ in reader:
            line = reader.line_num
            if not fields_ or all(not f.strip() for f in fields_):
                continue
            reason, parsed = _check_box_row(fields_, n_species, max_hz)
            if reason:
                rejected.append(Rejection(str(path), reason, row=line))
            else:
                good.append(parsed)
                lines.append(line)
    rows = pd.DataFrame(good, columns=list(BOX_COLUMNS)) if good else empty_boxes()
    rows = rows.astype({c: _dtype(c) for c in BOX_COLUMNS})
    return CheckedTable(rows=rows, rejected=rejected, line_numbers=np.asarray(lines, dtype=np.int64))


def _check_box_row(fields_: list[str], n_species: int, max_hz: float | None) -> tuple[str | None, tuple]:
    if len(fields_) != len(BOX_COLUMNS):
        return f"expected {len(BOX_COLUMNS)} fields, got {len(fields_)}", ()
    rid = fields_[0].strip()
    if not rid:
        return "empty recording_id", ()
    try:
        species, songtype = int(fields_[1]), int(fields_[2])
    except ValueError:
        return f"species_id/songtype_id must be integers, got {fields_[1]!r}/{fields_[2]!r}", ()
    try:
        t_min, f_min, t_max, f_max = (float(fields_[i]) for i in (3, 4, 5, 6))
    except ValueError:
        return f"t_min/f_min/t_max/f_max must be numbers, got {fields_[3:]!r}", ()
    if not all(math.isfinite(v) for v in (t_min, f_min, t_max, f_max)):
        return "non-finite time or frequency", ()
    if not 0 <= species < n_species:
        return f"unknown species_id {species} (known: 0..{n_species - 1})", ()
    if t_min < 0 or f_min < 0:
        return f"negative time or frequency (t_min={t_min}, f_min={f_min})", ()
    if t_min >= t_max:
        return f"t_min {t_min} >= t_max {t_max}", ()
    if f_min >= f_max:
        return f"f_min {f_min} >= f_max {f_max}", ()
    if max_hz is not None and f_max > max_hz:
        return f"f_max {f_max} Hz above the Nyquist frequency {max_hz} Hz", ()
    return None, (rid, species, songtype, t_min, f_min, t_max, f_max)


def check_boxes_against_clips(
    table: CheckedTable, path: Path, durations: dict[str, float], rejected_audio: set[str], tolerance_s: float = 0.05
) -> CheckedTable:
    """Drop the rows whose recording is not stored, or whose box ends after its clip does.

    The returned table's ``rejected`` holds only these new rejections.
    """
    keep = np.ones(len(table.rows), dtype=bool)
    rejected: list[Rejection] = []
    for i, (rid, t_max) in enumerate(zip(table.rows["recording_id"], table.rows["t_max"])):
        line = int(table.line_numbers[i]) if len(table.line_numbers) else None
        if rid in rejected_audio:
            reason = f"recording {rid} was rejected (see its audio file)"
        elif rid not in durations:
            reason = f"recording {rid} has no audio file in train/"
        elif t_max > durations[rid] + tolerance_s:
            reason = f"box outside its clip: t_max {t_max} s > clip length {durations[rid]:.3f} s"
        else:
            continue
        keep[i] = False
        rejected.append(Rejection(str(path), reason, row=line))
    return CheckedTable(
        rows=table.rows[keep].reset_index(drop=True), rejected=rejected, line_numbers=table.line_numbers[keep]
    )


def read_submission_ids(path: Path) -> list[str]:
    """The recording ids of a ``sample_submission.csv``, in its order."""
    path = Path(path)
    frame = pd.read_csv(path, dtype={"recording_id": str})
    if "recording_id" not in frame.columns:
        raise ValueError(f"{path}: no recording_id column")
    return frame["recording_id"].astype(str).tolist()
