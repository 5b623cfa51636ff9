"""A build killed half-way leaves only whole clips behind, and the next run finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from store import FeatureStore, build_store
from tests.conftest import make_dataset


def _complete_clips(path: Path) -> int:
    mel = path / "train" / "mel"
    if not mel.is_dir():
        return 0
    n = 0
    for d in mel.iterdir():
        meta = d / "zarr.json"
        if meta.is_file() and '"complete": true' in meta.read_text():
            n += 1
    return n


def test_resume_after_kill(tmp_path) -> None:
    data = make_dataset(tmp_path / "data", n_train=24, n_test=0, seconds=20.0)
    store = tmp_path / "s.zarr"
    cmd = [
        sys.executable,
        "-m",
        "rfcx",
        "build-store",
        "--data",
        str(data),
        "--store",
        str(store),
        "--backend",
        "torch",
        "--batch-size",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while _complete_clips(store) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _complete_clips(store)
    assert 3 <= done_before < 24, "the build should have been killed half-way"

    # whatever the kill left, a reader sees only whole clips
    root = zarr.open_group(store, mode="r")
    if "ids" in root["train"]:
        for rid in root["train/ids"][:].tolist():
            assert root[f"train/mel/{rid}"].attrs["complete"] is True
    # and every command says the store is incomplete and how to finish it, in one line
    from typer.testing import CliRunner

    from rfcx.cli import app

    runner = CliRunner()
    for args in (["info", "--store", str(store)], ["train", "--store", str(store), "--runs", str(tmp_path / "r")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert "the store is incomplete: a build-store was stopped before its end (" in res.output
        assert f"run the same `rfcx build-store --data DIR --store {store}` again to finish it" in res.output
    assert "boxes: None" not in runner.invoke(app, ["info", "--store", str(store)]).output
    assert not FeatureStore.open(store).complete

    summary = build_store(data, store, backend="torch", device="cpu", progress=False)
    assert summary.skipped["train"] == done_before
    assert summary.stored["train"] == 24 - done_before
    fs = FeatureStore.open(store)
    assert fs.complete
    assert fs.ids("train") == sorted(f"t{i}" for i in range(24))
    for rid in fs.ids("train"):
        mel = fs.mel(rid)
        assert mel.shape == (256, 1876) and np.isfinite(mel).all() and mel.max() > -60
