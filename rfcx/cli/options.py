"""Options more than one command takes, declared once (``Annotated`` aliases), their defaults, and the checks of
choices and ranges."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from rfcx.errors import UsageError

DEFAULT_STORE = "demo/features.zarr"  # where `make demo` puts them
DEFAULT_RUNS = "demo/runs"
DEVICES = "auto, cpu, gpu (= cuda), cuda or cuda:N"

Store = Annotated[str, typer.Option("--store", help="Feature store (a .zarr folder or an fsspec URL).")]
Runs = Annotated[
    str,
    typer.Option(
        "--runs", help="Run directory of `rfcx train` (a folder or an fsspec URL, mirrored in a local cache)."
    ),
]
LocalRuns = Annotated[Path, typer.Option("--runs", help="Run directory (local).")]
Device = Annotated[str, typer.Option("--device", help=f"{DEVICES}.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine).",
        show_default=False,
    ),
]
DetectionsFormat = Annotated[
    str | None,
    typer.Option(
        "--detections-format",
        help="csv, parquet, raven (Raven Pro selection tables) or audacity (label tracks); "
        "default: guessed from the path (parquet for a .parquet path, else csv).",
        show_default=False,
    ),
]


def local_output(path: Path | None, flag: str) -> Path | None:
    """``path`` when it is a local path; a :class:`UsageError` for a URL (``s3://...``: a ``Path`` keeps it as
    ``s3:/...``, which would be written as a local folder named ``s3:``)."""
    if path is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", str(path)):
        url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*):/+", r"\1://", str(path))
        raise UsageError(
            f"{flag} {url}: outputs are written to a local path (with the parts a re-run resumes from beside them); "
            f"write them locally, then copy them there"
        )
    return path


def choice(value: str, choices: Iterable[str], flag: str) -> str:
    """``value`` when it is one of ``choices`` (a StrEnum or the names the library takes), else a :class:`UsageError`
    naming them."""
    allowed = tuple(choices)
    if value not in allowed:
        raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def at_least(value: int, low: int, flag: str) -> int:
    """``value`` when it is ``>= low``, else a :class:`UsageError`."""
    if value < low:
        raise UsageError(f"{flag} must be >= {low}, got {value}")
    return value


def round_number(value: str, flag: str = "--round", also: tuple[str, ...] = ()) -> int | str:
    """``--round``: a round number (0, 1, ...) or one of the words ``also``; a :class:`UsageError` otherwise."""
    if value in also:
        return value
    try:
        k = int(value)
    except ValueError:
        k = -1
    if k < 0:
        words = "".join(f", '{w}'" for w in also[:-1]) + (f" or '{also[-1]}'" if also else "")
        raise UsageError(f"{flag} {value!r}: give a round number (0, 1, ...){words}")
    return k
