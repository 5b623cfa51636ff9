"""store.atomic: a file is replaced whole or not at all, and no temp file is left behind."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import numpy as np
import pytest

from store.atomic import atomic_path, temp_path, write_bytes_atomic, write_json_atomic, write_text_atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_success_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and ".tmp" in tmp.name
        assert str(os.getpid()) in tmp.name
        tmp.write_text("new")
        assert target.read_text() == "old"  # not yet replaced
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("half-way")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_failure_before_writing_and_no_old_file(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"
    with pytest.raises(ValueError):
        with atomic_path(target):
            raise ValueError("nothing written")
    assert list(tmp_path.iterdir()) == []


def test_keep_suffix(tmp_path: Path) -> None:
    target = tmp_path / "part-00003.npz"
    tmp = temp_path(target, keep_suffix=True)
    assert tmp.name == f".part-00003.tmp{os.getpid()}.npz"
    assert fnmatch.fnmatch(tmp.name, ".part-*.tmp*")  # engine.batch's glob of a killed run's files
    with atomic_path(target, keep_suffix=True) as tmp:
        np.savez(tmp, a=np.arange(3))  # with the suffix kept, np.savez writes exactly this name
    with np.load(target) as z:
        assert z["a"].tolist() == [0, 1, 2]
    assert _leftovers(tmp_path) == []
    assert temp_path(target).name == f".part-00003.npz.tmp{os.getpid()}"


def test_write_helpers(tmp_path: Path) -> None:
    assert write_text_atomic(tmp_path / "sub" / "a.txt", "é\nb\n").read_bytes() == "é\nb\n".encode()
    assert write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    data = {"b": 1, "a": [np.float32(0.5), 2], "c": {"z": None}}
    path = write_json_atomic(tmp_path / "deep" / "x.json", data)
    # the bytes run JSON had before store.atomic: indent 2, keys in order, numpy scalars as floats, no newline
    assert path.read_text() == json.dumps(data, indent=2, default=float)
    assert not path.read_text().endswith("\n")
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "deep") == []


def test_json_bytes_as_run_directories_have_them(tmp_path: Path) -> None:
    """The bytes every run's JSON files were written with before this helper: indent 2, keys in their order,
    numpy scalars as floats, no trailing newline."""
    data = {"z": 1, "a": {"k": [1.5, np.float64(2.25)]}, "u": "ü"}
    write_json_atomic(tmp_path / "s.json", data)
    assert (tmp_path / "s.json").read_bytes() == json.dumps(data, indent=2, default=float).encode()
