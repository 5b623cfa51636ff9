"""Stores and runs in object storage for real (issue 31, item 7): an S3 API served on the loopback (moto's server
mode, started and stopped here; s3fs as the client, configured by the environment as a user would:
AWS_ENDPOINT_URL and keys). The commands run as separate processes: build a store into s3://, kill the build and
resume it to the store a local build makes, train from it into an s3:// run, infer from both, read with another
process. Skipped where moto or s3fs is not installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import FeatureStore, build_store
from tests.conftest import make_dataset

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on the loopback with a bucket, and the environment that points clients at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("rfcx-test")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def _rfcx(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "rfcx", *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _complete(fs, prefix: str) -> int:
    """Complete clips of the train split, listed afresh (s3fs caches listings)."""
    fs.invalidate_cache()
    return sum('"complete": true' in fs.cat_file(meta).decode() for meta in fs.glob(f"{prefix}/train/mel/*/zarr.json"))


def test_store_run_and_inference_on_s3(s3, tmp_path) -> None:
    data = make_dataset(tmp_path / "data", n_train=10, n_test=2, seconds=20.0)
    url = "s3://rfcx-test/features.zarr"
    # a build killed half-way (kill -9), then resumed by another process
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "rfcx", "build-store", "--data", str(data), "--store", url, "--backend", "torch"]
    proc = subprocess.Popen(
        [*cmd, "--batch-size", "1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 180
    while _complete(s3, "rfcx-test/features.zarr") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _complete(s3, "rfcx-test/features.zarr")
    assert 2 <= done < 10, "the build should have been killed half-way"
    resumed = _rfcx("build-store", "--data", data, "--store", url, "--backend", "torch")
    assert f"skipped {done} already stored" in resumed.stdout, resumed.stdout
    build_store(data, tmp_path / "local.zarr", backend="torch", device="cpu", progress=False)
    remote, local = FeatureStore.open(url), FeatureStore.open(tmp_path / "local.zarr")
    assert remote.ids("train") == local.ids("train") and remote.ids("test") == local.ids("test")
    for rid in local.ids("train") + local.ids("test"):
        np.testing.assert_array_equal(remote.mel(rid), local.mel(rid))
    # another process reads it
    info = _rfcx("info", "--check", "--store", url)
    assert "train     10 clips" in info.stdout and "none damaged" in info.stdout, info.stdout
    # train from it into a run on S3, then infer from the store and the run
    runs = "s3://rfcx-test/runs"
    _rfcx("train", "--store", url, "--runs", runs, "--config", "tiny", "--set", "batches_per_epoch=1")
    assert s3.exists("rfcx-test/runs/round0/complete.json") and s3.exists("rfcx-test/runs/config.json")
    out = tmp_path / "submission.csv"
    _rfcx("infer", "--batch", "--store", url, "--runs", runs, "--out", out)
    sub = pd.read_csv(out, dtype={"recording_id": str})
    assert sorted(sub.recording_id) == ["u0", "u1"] and sub.shape[1] == 25
    refused = _rfcx("infer", "--batch", "--store", url, "--runs", runs, "--out", "s3://rfcx-test/sub.csv", check=False)
    assert refused.returncode != 0 and "outputs are written to a local path" in refused.stderr
    assert not (ROOT / "s3:").exists()
