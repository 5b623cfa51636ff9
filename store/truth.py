"""The truth files a build checks and stores: ``test_labels.csv`` (clip-level 0/1 truth of the test clips) and
``calls_truth.csv`` (every call of every clip), as ``rfcx synth`` writes them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from .errors import InvalidInputError, Rejection
from .rejections import MISSING_AUDIO, REJECTED_AUDIO
from .tables import N_SPECIES, CheckedTable, table_records

TRUTH_FILE = "test_labels.csv"  # clip-level truth of the test clips: recording_id,s0..s23 (0/1)
CALLS_FILE = "calls_truth.csv"  # every call of every clip (synthetic data): split,recording_id,species_id,t_min,...
CALLS_COLUMNS = ("split", "recording_id", "species_id", "t_min", "f_min", "t_max", "f_max")


def read_truth(path: Path, n_species: int = N_SPECIES) -> CheckedTable:
    """Read a ``test_labels.csv`` (``recording_id,s0..s{n_species-1}``), checking every row.

    A row is rejected (with its line number and the reason) when it has the wrong number of fields, an empty
    recording id, a value other than 0 or 1, or repeats an earlier row's recording id. A wrong header raises
    :class:`ValueError`. ``rows`` has ``recording_id`` (str) and ``s0..`` (uint8) columns, in the file's order.
    """
    path = Path(path)
    columns = ("recording_id",) + tuple(f"s{k}" for k in range(n_species))
    ids: list[str] = []
    labels: list[list[int]] = []
    lines: list[int] = []
    rejected: list[Rejection] = []
    seen: dict[str, int] = {}
    for line, fields_, reason in table_records(path, columns, shown=f"recording_id,s0..s{n_species - 1}"):
        values: list[int] = []
        if reason is None:
            reason, values = _check_truth_row(cast(list[str], fields_), columns)  # no reason: has fields
        rid = fields_[0].strip() if fields_ else ""
        if reason is None and rid in seen:
            reason = f"duplicate recording id {rid} (also line {seen[rid]})"
        if reason:
            rejected.append(Rejection(str(path), reason, row=line))
            continue
        seen[rid] = line
        ids.append(rid)
        labels.append(values)
        lines.append(line)
    matrix = np.asarray(labels, dtype=np.uint8).reshape(len(labels), n_species)
    rows = pd.DataFrame(matrix, columns=list(columns[1:]))
    rows.insert(0, "recording_id", pd.Series(ids, dtype=object))
    return CheckedTable(rows=rows, rejected=rejected, line_numbers=np.asarray(lines, dtype=np.int64))


def read_calls(path: Path, stored: Mapping[str, set[str]], n_species: int = N_SPECIES) -> pd.DataFrame:
    """The rows of a ``calls_truth.csv`` whose clip is stored in its split (columns ``CALLS_COLUMNS``). A file
    without those columns, or with a species id outside ``0..n_species-1`` or a call with ``t_min >= t_max``,
    raises ValueError naming the file (and line): it is made by ``rfcx synth``, not by hand."""
    try:
        frame = pd.read_csv(path, dtype={"recording_id": str, "split": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in CALLS_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(CALLS_COLUMNS)})")
    frame = frame[list(CALLS_COLUMNS)]
    bad = ~frame.species_id.between(0, n_species - 1) | ~(frame.t_min < frame.t_max) | frame.isna().any(axis=1)
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise InvalidInputError(
            f"{path}:{line}: a species id outside 0..{n_species - 1}, t_min >= t_max or an empty field"
        )
    keep = np.array([rid in stored.get(split, ()) for split, rid in zip(frame.split, frame.recording_id)], dtype=bool)
    return frame[keep].astype({"species_id": "int64"}).reset_index(drop=True)


def _check_truth_row(fields_: list[str], columns: tuple[str, ...]) -> tuple[str | None, list[int]]:
    if len(fields_) != len(columns):
        return f"expected {len(columns)} fields, got {len(fields_)}", []
    if not fields_[0].strip():
        return "empty recording_id", []
    values = []
    for name, text in zip(columns[1:], fields_[1:]):
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        if v not in (0.0, 1.0):
            return f"{name} must be 0 or 1, got {text.strip()!r}", []
        values.append(int(v))
    return None, values


def check_truth_against_clips(
    table: CheckedTable, path: Path, test_ids: set[str], rejected_audio: set[str]
) -> CheckedTable:
    """Drop the truth rows whose recording is not a stored test clip; ``rejected`` holds only these."""
    keep = np.ones(len(table.rows), dtype=bool)
    rejected: list[Rejection] = []
    for i, rid in enumerate(table.rows["recording_id"]):
        if rid in rejected_audio:
            reason, cause = f"recording {rid} was rejected (see its audio file)", REJECTED_AUDIO
        elif rid not in test_ids:
            reason, cause = f"recording {rid} has no audio file in test/", MISSING_AUDIO
        else:
            continue
        keep[i] = False
        rejected.append(Rejection(str(path), reason, row=int(table.line_numbers[i]), cause=cause))
    return CheckedTable(
        rows=table.rows[keep].reset_index(drop=True), rejected=rejected, line_numbers=table.line_numbers[keep]
    )
