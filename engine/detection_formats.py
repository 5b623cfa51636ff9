"""Detection tables in the formats reviewers open: CSV, parquet, Raven Pro selection tables, Audacity label tracks.

Each writer takes an event table (:data:`engine.events.EVENT_COLUMNS`; per-window detections are events of one
window) and each has a reader, so that a table written and read back can be compared (the tests do).

**Raven Pro selection table** (Raven Pro 1.4 User's Manual, "Selection tables"; the columns BirdNET-Analyzer and
OpenSoundscape write): tab-separated text, one header line, one selection per line: ``Selection`` (1, 2, ...),
``View`` (``Spectrogram 1``), ``Channel`` (1), ``Begin Time (s)``, ``End Time (s)``, ``Low Freq (Hz)``, ``High Freq
(Hz)``, then annotation columns ``Species`` (the species id), ``Score`` (the event's peak score), ``Mean Score``,
``Windows``. Written either as a folder with one table per recording (``RID.Table.1.selections.txt``, the name
Raven gives a table it saves for sound file ``RID``; recordings without a detection get a table with the header
only, so that every scored recording has one), which Raven opens over that recording; or as one combined table with
a ``Begin File`` column (the recording's file name) after ``High Freq (Hz)``. In the combined table the times are
within each recording (as in the per-recording tables), not Raven's running time over a file sequence: filter
it by ``Begin File``, or use the folder, to open a recording's selections in Raven.

**Audacity label track** (Audacity manual, "Importing and Exporting Labels", the extended format with frequency
ranges): tab-separated ``start end label`` per label (seconds, 6 decimals), each followed by the frequency line
``\\ low high`` (a backslash, then the low and high frequency in Hz), as Audacity writes a label made with a spectral
selection. The label is ``species {id} {peak score:.3f}``. A label track belongs to one recording: a folder gets one
``RID.txt`` per scored recording; a file is written only for a single recording.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from store.atomic import atomic_path, write_text_atomic
from store.errors import InvalidInputError, NotFoundError

from .events import EVENT_COLUMNS


class DetectionFormat(StrEnum):
    """The formats detections are written in (and read back from)."""

    CSV = "csv"
    PARQUET = "parquet"
    RAVEN = "raven"
    AUDACITY = "audacity"


FORMATS = tuple(m.value for m in DetectionFormat)  # the names, as plain strings
WINDOW_COLUMNS = ["recording_id", "start_s", "end_s", "species_id", "score"]  # ``--detections-level windows``
RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)"]
RAVEN_EXTRA = ["Species", "Score", "Mean Score", "Windows"]
RAVEN_VIEW = "Spectrogram 1"
RAVEN_SUFFIX = ".Table.1.selections.txt"
AUDACITY_SUFFIX = ".txt"


def is_folder_target(path: str | os.PathLike, fmt: str) -> bool:
    """Whether ``fmt`` is written as a folder of per-recording files at ``path``: for raven and audacity, a path
    that is a folder already, or has no suffix (``detections/``, ``review``); csv and parquet are one file."""
    path = Path(path)
    return fmt in ("raven", "audacity") and (path.is_dir() or path.suffix == "" or str(path).endswith(os.sep))


def default_format(path: str | os.PathLike) -> str:
    """The format a path asks for when none is given: parquet for ``.parquet``, else csv."""
    return "parquet" if Path(path).suffix == ".parquet" else "csv"


def write_frame(frame: pd.DataFrame, path: str | os.PathLike, fmt: str) -> Path:
    """CSV or parquet, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    return path


def read_frame(path: str | os.PathLike, fmt: str) -> pd.DataFrame:
    return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)


# -- Raven ---------------------------------------------------------------------------------------------------------


def raven_table(events: pd.DataFrame, files: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The selection table of ``events``; with ``files`` (recording id -> file name) a combined table with
    ``Begin File``."""
    n = len(events)
    table = pd.DataFrame(
        {
            "Selection": np.arange(1, n + 1),
            "View": [RAVEN_VIEW] * n,
            "Channel": np.ones(n, dtype=np.int64),
            "Begin Time (s)": events["start_s"].to_numpy(np.float64),
            "End Time (s)": events["end_s"].to_numpy(np.float64),
            "Low Freq (Hz)": events["low_hz"].to_numpy(np.float64),
            "High Freq (Hz)": events["high_hz"].to_numpy(np.float64),
        }
    )
    if files is not None:
        table["Begin File"] = [files.get(rid, rid) for rid in events["recording_id"]]
    table["Species"] = events["species_id"].to_numpy(np.int64)
    table["Score"] = events["peak_score"].to_numpy(np.float64)
    table["Mean Score"] = events["mean_score"].to_numpy(np.float64)
    table["Windows"] = events["n_windows"].to_numpy(np.int64)
    return table


def _raven_text(table: pd.DataFrame) -> str:
    return table.to_csv(sep="\t", index=False, float_format="%.6f", lineterminator="\n")


def write_raven(
    events: pd.DataFrame, path: str | os.PathLike, recordings: Sequence[str], files: Mapping[str, str] | None = None
) -> list[Path]:
    """Raven selection tables of ``events``: a folder of one table per recording of ``recordings`` where
    :func:`is_folder_target`, else one combined table with ``Begin File`` (``files``: recording id -> file name,
    default the id). Returns the files written."""
    path = Path(path)
    if is_folder_target(path, "raven"):
        written = []
        for rid in recordings:
            mine = events[events["recording_id"] == rid]
            written.append(path / f"{rid}{RAVEN_SUFFIX}")
            write_text_atomic(written[-1], _raven_text(raven_table(mine)))
        return written
    write_text_atomic(path, _raven_text(raven_table(events, dict(files or {}))))
    return [path]


# Where a selection table keeps what an event needs, first found first: rfcx's own columns, then those of other
# tools (BirdNET-Analyzer's Raven tables: "Common Name" / "Species Code" and "Confidence", "Begin Path")
RAVEN_SPECIES = ("Species", "Species Code", "Common Name")
RAVEN_SCORE = ("Score", "Confidence")
RAVEN_FILE = ("Begin File", "Begin Path")
RAVEN_TIMES = ("Begin Time (s)", "End Time (s)")
TABLE_SUFFIXES = (RAVEN_SUFFIX, ".BirdNET.selection.table.txt", ".selections.txt", ".txt")


def species_id(value: object, where: str, n_classes: int = 24) -> int:
    """A species id written as ``3``, ``s3``, ``S3`` or ``species 3`` (a reviewer's edit); else an
    :class:`InvalidInputError` naming ``where`` (file, line, column) and the value."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:s|species\s*)?(\d+)(?:\.0+)?", text, flags=re.IGNORECASE)
    if match is None or not 0 <= int(match.group(1)) < n_classes:
        raise InvalidInputError(
            f"{where}: {text!r} is not a species id of these models (0..{n_classes - 1}, s0..s{n_classes - 1} or "
            f"species N)"
        )
    return int(match.group(1))


def _number(value: object, where: str) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise InvalidInputError(f"{where}: {str(value).strip()!r} is not a number") from None


def _first(table: pd.DataFrame, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in table.columns), None)


def _recording_of_table(path: Path) -> str:
    name = path.name
    for suffix in TABLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _raven_events(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The events of one selection table as read (text): times and species required, the rest optional (band:
    NaN, score: NaN, mean score: the score, windows: 0); a value that does not read is named with its line and
    column."""
    missing = [c for c in RAVEN_TIMES if c not in table.columns]
    species_col, score_col, file_col = (
        _first(table, RAVEN_SPECIES),
        _first(table, RAVEN_SCORE),
        _first(table, RAVEN_FILE),
    )
    if missing or species_col is None:
        need = missing + ([] if species_col else [" or ".join(RAVEN_SPECIES)])
        raise InvalidInputError(f"{path}: not a selection table of detections: no column {', '.join(need)}")
    rows = []
    own = _recording_of_table(path)
    for i, row in enumerate(table.itertuples(index=False), start=2):
        values = dict(zip(table.columns, row))

        def cell(column: str | None, default: float = np.nan) -> float:
            if column is None or column not in values or str(values[column]).strip() in ("", "nan"):
                return default
            return _number(values[column], f"{path}: line {i}, column {column}")

        score = cell(score_col)
        name = str(values[file_col]).strip() if file_col else ""
        rows.append(
            {
                "recording_id": Path(name.replace("\\", "/")).stem if name else own,
                "species_id": species_id(values[species_col], f"{path}: line {i}, column {species_col}"),
                "start_s": cell(RAVEN_TIMES[0]),
                "end_s": cell(RAVEN_TIMES[1]),
                "low_hz": cell("Low Freq (Hz)"),
                "high_hz": cell("High Freq (Hz)"),
                "peak_score": score,
                "mean_score": cell("Mean Score", score),
                "n_windows": int(cell("Windows", 0)),
            }
        )
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def read_raven(path: str | os.PathLike) -> pd.DataFrame:
    """Events back from a selection table or a folder of them: rfcx's own (``Begin File`` gives the recording id,
    its suffix dropped; in a folder, the file name) and those other tools write or a reviewer trimmed: the
    species from ``Species``, ``Species Code`` or ``Common Name`` (an id: 3, s3, species 3), the score from
    ``Score`` or ``Confidence``, the recording from ``Begin File`` or ``Begin Path`` (else the table's file
    name); ``Mean Score``, ``Windows`` and the band are optional. What does not read is named with its file,
    line and column."""
    path = Path(path)
    files = sorted(path.glob(f"*{RAVEN_SUFFIX}")) or sorted(path.glob("*.txt")) if path.is_dir() else [path]
    parts = []
    for f in files:
        try:
            table = pd.read_csv(f, sep="\t", dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise InvalidInputError(f"{f}: not a tab-separated selection table ({exc})") from None
        parts.append(_raven_events(table, f))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)


# -- Audacity ------------------------------------------------------------------------------------------------------


def audacity_text(events: pd.DataFrame) -> str:
    """One recording's label track, each label followed by its frequency line."""
    lines = []
    for e in events.itertuples(index=False):
        lines.append(f"{e.start_s:.6f}\t{e.end_s:.6f}\tspecies {int(e.species_id)} {e.peak_score:.3f}\n")
        lines.append(f"\\\t{e.low_hz:.6f}\t{e.high_hz:.6f}\n")
    return "".join(lines)


def write_audacity(events: pd.DataFrame, path: str | os.PathLike, recordings: Sequence[str]) -> list[Path]:
    """Audacity label tracks: a folder of ``RID.txt`` per recording of ``recordings`` where
    :func:`is_folder_target`, else one file (only for a single recording: a label track has no file column)."""
    path = Path(path)
    if is_folder_target(path, "audacity"):
        written = []
        for rid in recordings:
            written.append(path / f"{rid}{AUDACITY_SUFFIX}")
            write_text_atomic(written[-1], audacity_text(events[events["recording_id"] == rid]))
        return written
    if len(set(recordings)) > 1:
        raise InvalidInputError(
            f"{path}: an Audacity label track holds one recording's labels, and {len(set(recordings))} "
            "were scored; give a folder (a path without a suffix) for one label file per recording"
        )
    write_text_atomic(path, audacity_text(events))
    return [path]


def read_audacity(path: str | os.PathLike, recording_id: str | None = None) -> pd.DataFrame:
    """Events back from a label track (``recording_id``: default the file name's stem) or a folder of them;
    ``mean_score`` and ``n_windows``, which a label does not hold, come back as NaN and 0."""
    path = Path(path)
    if path.is_dir():
        parts = [read_audacity(f) for f in sorted(path.glob(f"*{AUDACITY_SUFFIX}"))]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)
    rid = recording_id if recording_id is not None else path.stem
    rows: list[dict] = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if fields[0] == "\\":
            if not rows or len(fields) != 3:
                raise InvalidInputError(f"{path}: line {n}: a frequency line must follow a label and hold low and high")
            rows[-1]["low_hz"] = _number(fields[1], f"{path}: line {n}, low frequency")
            rows[-1]["high_hz"] = _number(fields[2], f"{path}: line {n}, high frequency")
            continue
        if len(fields) < 3:
            raise InvalidInputError(f"{path}: line {n}: expected start, end and label separated by tabs")
        species, score = _audacity_label("\t".join(fields[2:]), f"{path}: line {n}, label")
        rows.append(
            {
                "recording_id": rid,
                "species_id": species,
                "start_s": _number(fields[0], f"{path}: line {n}, start"),
                "end_s": _number(fields[1], f"{path}: line {n}, end"),
                "low_hz": np.nan,
                "high_hz": np.nan,
                "peak_score": score,
                "mean_score": np.nan,
                "n_windows": 0,
            }
        )
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def _audacity_label(label: str, where: str) -> tuple[int, float]:
    """The species and score of a label: ``species 3 0.912`` as written, with any words a reviewer added before or
    after; the species as ``species N`` or ``sN``, the score the first number after it (NaN where none)."""
    match = re.search(r"\b(?:species\s*|s)(\d+)\b(?:\s+(\d*\.\d+|\d+))?", label, flags=re.IGNORECASE)
    if match is None:
        raise InvalidInputError(f"{where}: {label.strip()!r} names no species (species N, or sN)")
    return species_id(match.group(1), where), float(match.group(2)) if match.group(2) else float("nan")


# -- any of them -----------------------------------------------------------------------------------------------


def guess_format(path: str | os.PathLike) -> str:
    """The format of a detections file or folder that exists: a folder of Raven tables (or of Audacity label
    tracks), a Raven table (its header starts ``Selection``), a ``.txt`` label track, parquet, else csv."""
    path = Path(path)
    if path.is_dir():
        return "raven" if any(path.glob(f"*{RAVEN_SUFFIX}")) else "audacity"
    if path.suffix == ".parquet":
        return "parquet"
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if first.startswith("Selection\t"):
        return "raven"
    return "audacity" if path.suffix == AUDACITY_SUFFIX else "csv"


def read_detections(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Events (:data:`EVENT_COLUMNS`) back from any detections ``rfcx infer --detections`` writes: csv or parquet
    of either level (a window is an event of one window: its score is the peak and the mean, its band unknown,
    NaN), a Raven table or folder of them, an Audacity label track or folder of them. ``fmt``: default
    :func:`guess_format`."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: detections not found")
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InvalidInputError(f"detections format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "raven":
        return read_raven(path)
    if fmt == "audacity":
        return read_audacity(path)
    frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path, dtype={"recording_id": str})
    if set(EVENT_COLUMNS) <= set(frame.columns):
        return frame[EVENT_COLUMNS].reset_index(drop=True)
    if set(WINDOW_COLUMNS) <= set(frame.columns):
        score = frame["score"].astype(np.float64)
        return pd.DataFrame(
            {
                "recording_id": frame["recording_id"].astype(str),
                "species_id": frame["species_id"].astype(np.int64),
                "start_s": frame["start_s"].astype(np.float64),
                "end_s": frame["end_s"].astype(np.float64),
                "low_hz": np.nan,
                "high_hz": np.nan,
                "peak_score": score,
                "mean_score": score,
                "n_windows": 1,
            }
        )[EVENT_COLUMNS]
    raise InvalidInputError(
        f"{path}: not a detections table (expected the columns {','.join(EVENT_COLUMNS)} of events or "
        f"{','.join(WINDOW_COLUMNS)} of windows, got {','.join(map(str, frame.columns))})"
    )
