"""Reading and checking the competition's CSV tables (TP/FP boxes, sample submission), row by row."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from .errors import InvalidInputError, NotFoundError, Rejection
from .rejections import MISSING_AUDIO, REJECTED_AUDIO

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
    ``f_min >= f_max``, a negative time or frequency, or a frequency above ``max_hz``; when it opens a quote
    that runs on over later lines (the row is named by the line the quote opens on, and the lines after it are
    read again on their own, so that no row is lost to it); or when it repeats an earlier row exactly (the
    first is kept, the copy is named with both lines). A file that is missing or has the wrong header raises
    :class:`FileNotFoundError` / :class:`ValueError`.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: label table not found")
    good: list[tuple] = []
    lines: list[int] = []
    rejected: list[Rejection] = []
    seen: dict[tuple, int] = {}
    for line, fields_, reason in table_records(path, BOX_COLUMNS):
        parsed: tuple = ()
        if reason is None:
            reason, parsed = _check_box_row(cast(list[str], fields_), n_species, max_hz)  # no reason: has fields
        if reason is None and parsed in seen:
            reason = f"duplicate of line {seen[parsed]} (the same box twice: kept once, from line {seen[parsed]})"
        if reason:
            rejected.append(Rejection(str(path), reason, row=line))
        else:
            seen[parsed] = line
            good.append(parsed)
            lines.append(line)
    rows = pd.DataFrame(good, columns=list(BOX_COLUMNS)) if good else empty_boxes()
    rows = rows.astype({c: _dtype(c) for c in BOX_COLUMNS})
    return CheckedTable(rows=rows, rejected=rejected, line_numbers=np.asarray(lines, dtype=np.int64))


def table_records(
    path: Path, columns: tuple[str, ...], shown: str | None = None
) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """:func:`csv_records` of a table after its header, blank lines left out. The header is checked at once: one
    other than ``columns`` raises :class:`InvalidInputError` (``shown`` is how the message writes them)."""
    records = csv_records(path)
    first = next(records, None)
    header = first[1] if first is not None else None
    if header is None or tuple(h.strip() for h in header) != columns:
        raise InvalidInputError(f"{path}: header must be {shown or ','.join(columns)}, got {','.join(header or [])!r}")
    return (r for r in records if r[1] is None or any(f.strip() for f in r[1]))


def csv_records(path: Path) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """The records of a CSV file whose fields never hold a line break (the competition's tables), each as
    ``(line, fields, None)`` with ``line`` the 1-based line it starts on (``fields`` is ``[]`` for an empty
    line), or ``(line, None, reason)`` for a line whose quote is not closed on it: the csv module would take
    every line up to the next quote (or the end of the file) into that one field. The line is reported, and
    parsing starts again on the line after it, so that the rows it would have swallowed are read on their own.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a byte-order mark (Excel writes one) is read
        text = list(fh)  # lines split as csv counts them (\n, \r\n or \r), line ends kept
    start = 0  # index of the line parsing (re)starts on
    while start < len(text):
        reader = csv.reader(itertools.islice(text, start, None))
        done = 0  # lines consumed by this reader
        for fields_ in reader:
            line, end = start + done + 1, start + reader.line_num
            done = reader.line_num
            if end > line or any("\n" in f or "\r" in f for f in fields_):
                runs_to = f"line {end}" + (", the end of the file" if end == len(text) else "")
                yield (
                    line,
                    None,
                    (
                        f"unclosed quote: a quoted field opens on this line and runs on to {runs_to} "
                        f"(the row is skipped; the lines after it are read on their own)"
                    ),
                )
                start = line  # the next line, 0-based
                break
            yield line, fields_, None
        else:
            return


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
        cause = None
        if rid in rejected_audio:
            reason, cause = f"recording {rid} was rejected (see its audio file)", REJECTED_AUDIO
        elif rid not in durations:
            reason, cause = f"recording {rid} has no audio file in train/", MISSING_AUDIO
        elif t_max > durations[rid] + tolerance_s:
            reason = f"box outside its clip: t_max {t_max} s > clip length {durations[rid]:.3f} s"
        else:
            continue
        keep[i] = False
        rejected.append(Rejection(str(path), reason, row=line, cause=cause))
    return CheckedTable(
        rows=table.rows[keep].reset_index(drop=True), rejected=rejected, line_numbers=table.line_numbers[keep]
    )


def read_submission_ids(path: Path) -> list[str]:
    """The recording ids of a ``sample_submission.csv``, in its order."""
    path = Path(path)
    frame = pd.read_csv(path, dtype={"recording_id": str})
    if "recording_id" not in frame.columns:
        raise InvalidInputError(f"{path}: no recording_id column")
    return frame["recording_id"].astype(str).tolist()
