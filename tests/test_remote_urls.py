"""Stores and run directories at fsspec URLs (``memory://``, ``file://``): the same results as local paths,
resumable, and a clear error where a protocol's backend is not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from rfcx.cli import app
from store import FeatureStore, build_store
from store.location import Location, MissingBackendError, is_url
from tests.conftest import make_dataset

runner = CliRunner()


def _memory_url(name: str) -> str:
    return f"memory://rfcx-test-{uuid.uuid4().hex[:8]}/{name}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("remote") / "data", n_train=4, n_test=2, seconds=3.0)


@pytest.fixture(scope="module")
def local_store(data) -> Path:
    store = data.parent / "local.zarr"
    build_store(data, store, backend="torch", device="cpu", progress=False)
    return store


def _same_store(a: FeatureStore, b: FeatureStore) -> None:
    assert a.splits == b.splits and a.params == b.params
    for split in a.splits:
        assert a.ids(split) == b.ids(split)
        assert a.index(split).equals(b.index(split))
        for rid in a.ids(split):
            np.testing.assert_array_equal(a.mel(rid), b.mel(rid))
    for kind in ("tp", "fp"):
        assert a.boxes(kind).equals(b.boxes(kind))
    assert a.submission_ids() == b.submission_ids()
    reqs = [("t0", -20, 100), ("t1", 200, 100), ("u1", 0, 100)]
    np.testing.assert_array_equal(a.crops(reqs), b.crops(reqs))


# -- locations ---------------------------------------------------------------------------------------------------

def test_location_parsing(tmp_path) -> None:
    assert not is_url("demo/features.zarr") and not is_url(tmp_path) and is_url("s3://b/k") and is_url("memory://x")
    local = Location.parse(tmp_path / "s.zarr")
    assert local.is_local and local.protocol is None and local.zarr_store() == str(tmp_path / "s.zarr")
    url = Location.parse(f"file://{tmp_path}/s.zarr")
    assert url.is_local and url.local_path == tmp_path / "s.zarr" and url.display == str(tmp_path / "s.zarr")
    mem = Location.parse("memory://bucket/s.zarr")
    assert not mem.is_local and mem.display == "memory://bucket/s.zarr"


@pytest.mark.parametrize("url, package", [("s3://bucket/features.zarr", "s3fs"), ("gs://bucket/runs", "gcsfs")])
def test_missing_backend_names_the_package(url, package, data) -> None:
    pytest.importorskip("fsspec")
    try:
        __import__(package)
        pytest.skip(f"{package} is installed here")
    except ImportError:
        pass
    protocol = url.split("://")[0]
    message = f"{protocol}:// needs the {package} package: pip install {package}"
    with pytest.raises(MissingBackendError, match=message.replace(".", r"\.")):
        FeatureStore.open(url)
    with pytest.raises(MissingBackendError, match=message.replace(".", r"\.")):
        build_store(data, url, backend="torch", device="cpu", progress=False)
    result = runner.invoke(app, ["info", "--store", url])
    assert result.exit_code == 1 and message in result.output


def test_unknown_protocol_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown URL protocol 'nosuchfs'"):
        FeatureStore.open("nosuchfs://x/s.zarr")


def test_missing_remote_store_is_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="feature store not found"):
        FeatureStore.open(_memory_url("none.zarr"))


# -- the store ---------------------------------------------------------------------------------------------------

def test_build_store_to_memory_and_file_urls_equals_a_local_build(data, local_store, tmp_path) -> None:
    local = FeatureStore.open(local_store)
    for url in (_memory_url("s.zarr"), f"file://{tmp_path}/s.zarr"):
        summary = build_store(data, url, backend="torch", device="cpu", progress=False)
        assert summary.stored == {"train": 4, "test": 2}
        remote = FeatureStore.open(url)
        assert remote.path == url
        _same_store(local, remote)
        again = build_store(data, url, backend="torch", device="cpu", progress=False)
        assert again.stored == {"train": 0, "test": 0} and again.skipped == {"train": 4, "test": 2}
    assert (tmp_path / "s.zarr" / "zarr.json").is_file()  # file:// is the plain local folder


def test_open_local_store_by_file_url(local_store) -> None:
    _same_store(FeatureStore.open(local_store), FeatureStore.open(f"file://{local_store}"))


def test_remote_build_resumes_after_interruption(data, local_store, monkeypatch) -> None:
    """A build killed while a clip's chunks are written (before its ``complete`` flag) resumes on a memory:// store:
    a reader never takes the half-written clip for whole and the next run stores exactly what was missing."""
    url = _memory_url("resume.zarr")
    real_update, calls = zarr.Array.update_attributes, {"n": 0}

    def die_on_third(self, new_attributes):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the third clip's data is written, its `complete` flag is not
        return real_update(self, new_attributes)

    monkeypatch.setattr(zarr.Array, "update_attributes", die_on_third)
    with pytest.raises(KeyboardInterrupt):
        build_store(data, url, backend="torch", device="cpu", progress=False, batch_size=1)
    monkeypatch.setattr(zarr.Array, "update_attributes", real_update)

    root = zarr.open_group(Location.parse(url).zarr_store(read_only=True), mode="r")
    flags = {name: arr.attrs.get("complete") for name, arr in root["train/mel"].arrays()}
    assert sorted(flags.values()) == [False, True, True]
    partial = FeatureStore.open(url)
    assert partial.ids("train") == sorted(k for k, v in flags.items() if v)

    summary = build_store(data, url, backend="torch", device="cpu", progress=False)
    assert summary.skipped["train"] == 2 and summary.stored == {"train": 2, "test": 2}
    _same_store(FeatureStore.open(local_store), FeatureStore.open(url))


def test_cli_build_store_and_info_with_a_file_url_across_processes(data, local_store, tmp_path) -> None:
    url = f"file://{tmp_path}/cli.zarr"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "rfcx", "build-store", "--data", str(data), "--store", url,
                           "--backend", "torch"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "stored 6 new clips" in done.stdout
    _same_store(FeatureStore.open(local_store), FeatureStore.open(url))
    result = runner.invoke(app, ["info", "--store", url])
    assert result.exit_code == 0 and "4 clips" in result.output
