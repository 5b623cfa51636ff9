"""Rejected inputs in bulk: the causes many table rows share are reported grouped, the defects one by one.

Real competition tables dropped beside a subset of the audio name thousands of recordings that are not there;
one line per row drowns the few real defects. A :class:`~store.errors.Rejection` with a ``cause`` of
:data:`GROUPED` is counted by file and cause, with the first few examples (:func:`summarize`); one without a
``cause`` (a malformed row, a bad value, a box outside its clip, a damaged audio file) is a defect and keeps its
own line. Every rejection stays in the store's ``rejected`` record, and a build writes them all to a CSV beside a
local store (:func:`rejected_csv_path`: ``features.zarr`` -> ``features.zarr.rejected.csv``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from .atomic import atomic_path
from .errors import Rejection

MISSING_AUDIO = "missing audio"
REJECTED_AUDIO = "rejected audio"
GROUPED = {  # cause -> what the rows of a group do
    MISSING_AUDIO: "name a recording that has no audio file",
    REJECTED_AUDIO: "name a recording whose audio file was rejected (named on its own line)",
}
EXAMPLES = 3


def is_grouped(r: Rejection) -> bool:
    return r.cause in GROUPED


def defects(rejections: Iterable[Rejection]) -> list[Rejection]:
    """The rejections reported one by one."""
    return [r for r in rejections if not is_grouped(r)]


def summarize(rejections: Iterable[Rejection], examples: int = EXAMPLES) -> list[str]:
    """One line per (file, grouped cause): the count and the first ``examples`` rows, in the order found."""
    groups: dict[tuple[str, str], list[Rejection]] = {}
    for r in rejections:
        if is_grouped(r):
            groups.setdefault((r.file, cast(str, r.cause)), []).append(r)  # a grouped one has a cause
    lines = []
    for (file, cause), rows in groups.items():
        shown = "; ".join(f"line {r.row}: {r.reason}" if r.row is not None else r.reason for r in rows[:examples])
        more = f"; and {len(rows) - examples} more" if len(rows) > examples else ""
        lines.append(f"{file}: {len(rows)} row{'s' if len(rows) != 1 else ''} {GROUPED[cause]} (e.g. {shown}{more})")
    return lines


def rejected_csv_path(store_path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Path | None:
    """Where a build writes its rejections: ``NAME.rejected.csv`` beside a local store; None for a URL (the
    store's ``rejected`` record holds them: ``FeatureStore.rejected()``)."""
    from .location import Location

    loc = Location.parse(store_path, storage_options)
    if not loc.is_local:
        return None
    folder = Path(os.path.abspath(loc.local_path))
    return folder.parent / f"{folder.name}.rejected.csv"


def write_rejected_csv(rejections: Iterable[Rejection], path: Path) -> None:
    """``split,file,row,cause,reason``, one rejection a row, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["split", "file", "row", "cause", "reason"])
        for r in rejections:
            out.writerow([r.split or "", r.file, "" if r.row is None else r.row, r.cause or "defect", r.reason])


def update_rejected_csv(
    store_path: str | os.PathLike, storage_options: Mapping[str, Any] | None, rejections: list[Rejection]
) -> Path | None:
    """After a build: its rejections beside a local store (an earlier build's file goes when there are none);
    returns the file written, or None."""
    path = rejected_csv_path(store_path, storage_options)
    if path is None:
        return None
    if not rejections:
        path.unlink(missing_ok=True)
        return None
    write_rejected_csv(rejections, path)
    return path
