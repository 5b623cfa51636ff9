"""What the file system refuses (issue 31, item 4): a full disk during build-store and a read-only file system are
one `error:` line naming the path and what to do, and a build stopped by a full disk goes on, once there is room,
to the store an uninterrupted build makes. The file systems are real: a small tmpfs and a read-only bind mount,
where the test may mount them (root with mount(8)); skipped elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.cli.core import storage_message
from store import FeatureStore, build_store
from tests.conftest import make_dataset


def _mount(*args: str) -> bool:
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounted(tmp_path):
    """mount(options, source, target) -> whether it worked; everything mounted is unmounted at the end."""
    made: list[Path] = []

    def mount(options: list[str], source: str, target: Path) -> bool:
        target.mkdir(parents=True, exist_ok=True)
        ok = _mount(*options, source, str(target))
        if ok:
            made.append(target)
        return ok

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


def test_a_full_disk_is_one_line_and_the_build_goes_on_once_there_is_room(tmp_path, mounted) -> None:
    data = make_dataset(tmp_path / "data", n_train=12, n_test=2, seconds=3.0)
    disk = tmp_path / "disk"
    if not mounted(["-t", "tmpfs", "-o", "size=700k"], f"rfcx-{uuid.uuid4().hex[:8]}", disk):
        pytest.skip("cannot mount a tmpfs here (needs root and mount(8))")
    store = disk / "s.zarr"
    code, text = _run("build-store", "--data", data, "--store", store, "--backend", "torch")
    assert code == 1 and "Traceback" not in text, text
    assert f"error: {store}: no space left on the device (errno 28); free some space" in text
    assert "run the same command again: it goes on where it stopped" in text
    assert subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], capture_output=True).returncode == 0
    code, text = _run("build-store", "--data", data, "--store", store, "--backend", "torch")
    assert code == 0 and "skipped" in text, text
    build_store(data, tmp_path / "whole.zarr", backend="torch", device="cpu", progress=False)
    got, want = FeatureStore.open(store), FeatureStore.open(tmp_path / "whole.zarr")
    assert got.ids("train") == want.ids("train") and got.ids("test") == want.ids("test")
    for rid in got.ids("train") + got.ids("test"):
        np.testing.assert_array_equal(got.mel(rid), want.mel(rid))


def test_a_read_only_file_system_is_one_line(tmp_path, mounted) -> None:
    data = make_dataset(tmp_path / "data", n_train=2, n_test=1, seconds=3.0)
    build_store(data, tmp_path / "src" / "s.zarr", backend="torch", device="cpu", progress=False)
    view = tmp_path / "ro"
    if not (mounted(["--bind"], str(tmp_path / "src"), view) and _mount("-o", "remount,ro,bind", str(view))):
        pytest.skip("cannot mount a read-only bind mount here (needs root and mount(8))")
    code, text = _run("build-store", "--data", data, "--store", view / "s.zarr")  # nothing new to store, still refused
    assert code == 1 and "Traceback" not in text and "the file system is read-only (errno 30)" in text, text
    code, text = _run("info", "--store", view / "s.zarr")  # a reader reads
    assert code == 0 and "train      2 clips" in text


def test_storage_messages() -> None:
    full = storage_message(OSError(28, "No space left on device"), "out/s.zarr")
    assert full is not None and full.startswith("out/s.zarr: no space left on the device (errno 28)")
    named = storage_message(PermissionError(13, "Permission denied", "/data/runs/config.json"), "runs")
    assert named is not None and named.startswith("/data/runs/config.json: permission denied (errno 13)")
    assert storage_message(OSError(5, "Input/output error")) is None  # others keep their traceback
