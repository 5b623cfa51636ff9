"""Files written atomically: to a temp name in the same folder, then renamed onto the target (``os.replace``), so
that a reader sees the old file or the new one, never half of one.

The temp name is ``.NAME.tmpPID`` (``.STEM.tmpPID.SUFFIX`` with ``keep_suffix``, for writers that add or want the
suffix: ``np.savez``, ``.pt2`` archives): it starts with a dot (a run mirror skips dotfiles) and contains ``.tmp``
(``engine.batch`` removes a killed run's ``.part-*.tmp*``). Nothing of it is left behind, on success or failure.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "replace_dir",
    "temp_dir",
    "temp_path",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


def temp_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Path:
    """The temp name :func:`atomic_path` writes ``path`` under (same folder, this process's)."""
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write; on leaving normally it replaces ``path``, on an exception it is
    removed (``path`` stays as it was). The folder must exist."""
    tmp = temp_path(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (its folder is created when missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, as UTF-8 with ``\\n`` line ends (its folder is created when missing)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON atomically: ``indent=2``, keys in their order, numpy-style scalars as floats
    (``default=float``), no trailing newline: the bytes a run directory's JSON files have always held."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=float))


def temp_dir(path: str | os.PathLike) -> Path:
    """An empty temp folder beside the folder ``path`` (same name scheme as :func:`temp_path`), to fill and then
    move into place with :func:`replace_dir`."""
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Folder ``tmp`` becomes ``path``; a folder there before is moved aside first and removed after, so ``path``
    is at every moment either the old folder or the new one."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path
