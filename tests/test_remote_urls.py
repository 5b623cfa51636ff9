"""Stores and run directories at fsspec URLs (``memory://``, ``file://``): the same results as local paths,
resumable, and a clear error where a protocol's backend is not installed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.runs.directory import open_run
from rfcx.runs.mirror import CACHE_ENV, RunMirror
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
    done = subprocess.run(
        [sys.executable, "-m", "rfcx", "build-store", "--data", str(data), "--store", url, "--backend", "torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "stored 6 new clips" in done.stdout
    _same_store(FeatureStore.open(local_store), FeatureStore.open(url))
    result = runner.invoke(app, ["info", "--store", url])
    assert result.exit_code == 0 and "4 clips" in result.output


def test_a_memory_url_is_said_to_vanish_with_the_command(data) -> None:
    url = _memory_url("said.zarr")
    result = runner.invoke(app, ["info", "--store", url])
    assert f"note: {url} lives in this process's memory only" in result.output
    assert result.output.index("note:") < result.output.index("error:")  # said first, before the command's own words
    assert "note:" not in runner.invoke(app, ["info", "--store", str(data)]).output


# -- run directories ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> str:
    """A small synthetic set (8 train clips with TP boxes, 3 test clips of 10 s) in a memory:// store."""
    from rfcx.synth.dataset import synthesize

    root = tmp_path_factory.mktemp("remote-runs")
    synthesize(root / "data", n_train=8, n_test=3, seconds=10.0, seed=1, tp_fraction=1.0, progress=False)
    url = _memory_url("synth.zarr")
    build_store(root / "data", url, backend="torch", device="cpu", progress=False)
    return url


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Callable[[str], Path]:
    """``cache(name)`` points the run cache at a fresh folder (as on another machine) and returns it."""

    def use(name: str) -> Path:
        folder = tmp_path / f"cache-{name}"
        monkeypatch.setenv(CACHE_ENV, str(folder))
        return folder

    use("first")
    return use


def _remote_files(url: str) -> dict[str, bytes]:
    fs, root = Location.parse(url).filesystem()
    return {p[len(root.rstrip("/")) + 1 :]: fs.cat_file(p) for p in fs.find(root)}


def _cfg(**changes):
    from rfcx.train.config import get_config

    return get_config("tiny").replace(**changes)


def test_file_url_runs_are_the_local_folder(tmp_path) -> None:
    run = open_run(f"file://{tmp_path}/runs")
    assert run.mirror is None and run.root == tmp_path / "runs"
    assert open_run(tmp_path / "runs") == run


def test_mirror_push_and_pull(cache) -> None:
    url = _memory_url("mirror")
    first = RunMirror(url)
    (first.cache / "round0").mkdir(parents=True)
    (first.cache / "round0" / "complete.json").write_text("{}")
    (first.cache / "round0" / "metrics.json").write_text('{"a": 1}')
    (first.cache / "round0" / ".metrics.json.tmp").write_text("half")
    (first.cache / "best_round.json").write_text('{"round": 0}')
    # the markers last (best_round.json, which names a complete round, after complete.json), temp files never
    assert first.push() == ["round0/metrics.json", "round0/complete.json", "best_round.json"]
    assert first.push() == []  # nothing changed since

    cache("second")  # another machine
    second = RunMirror(url)
    assert second.cache != first.cache
    assert sorted(second.pull()) == ["best_round.json", "round0/complete.json", "round0/metrics.json"]
    assert second.pull() == []  # up to date
    (second.cache / "round0" / "metrics.json").write_text('{"a": 2}')  # changed here, not pushed yet
    assert second.pull() == []  # a pull keeps local work
    (first.cache / "round0" / "complete.json").write_text('{"b": 1}')
    first.push()
    assert second.pull() == ["round0/complete.json"]  # a new remote version replaces the cached one
    assert second.push() == ["round0/metrics.json"]
    assert _remote_files(url)["round0/metrics.json"] == b'{"a": 2}'
    fs, root = Location.parse(url).filesystem()
    fs.rm(f"{root}/round0/complete.json")
    second.pull()
    assert not (second.cache / "round0" / "complete.json").exists()  # deleted at the URL: gone here too


def test_train_then_infer_with_runs_at_a_memory_url(synth_store, cache, tmp_path) -> None:
    """``rfcx train --runs memory://...`` then ``rfcx infer --batch --runs memory://...`` in one process, the
    inference from a fresh cache; the submission equals that of the same training in a local folder."""
    from rfcx.train.rounds import train_rounds

    url = _memory_url("runs")
    result = runner.invoke(app, ["train", "--round", "0", "--store", synth_store, "--runs", url, "--config", "tiny"])
    assert result.exit_code == 0, result.output
    remote = _remote_files(url)
    assert {
        "config.json",
        "folds.json",
        "lwlrap.png",
        "round0/complete.json",
        "round0/metrics.json",
        "best_round.json",
        "round0/loss.png",
        "round0/pseudo.zarr/zarr.json",
        "round0/models/test_efficientnet-2s_fold1.ts",
        "round0/models/test_efficientnet-2s_fold1.pt2",
        "round0/members/test_efficientnet-2s_fold0/checkpoint.pt",
    } <= set(remote)
    local = tmp_path / "local-runs"
    train_rounds(
        synth_store, local, _cfg(), until_round=0, progress=False, echo=lambda *_: None, export_formats=("torchscript",)
    )
    assert (
        json.loads(remote["round0/metrics.json"])["oof_lwlrap"]
        == json.loads((local / "round0" / "metrics.json").read_text())["oof_lwlrap"]
    )

    fresh = cache("infer")
    outs = {}
    for name, runs in (("url", url), ("local", str(local))):
        outs[name] = tmp_path / f"{name}.csv"
        result = runner.invoke(
            app,
            [
                "infer",
                "--batch",
                "--store",
                synth_store,
                "--runs",
                runs,
                "--out",
                str(outs[name]),
                "--no-progress",
                "--threads",
                "1",
                "--round",
                "best",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "round 0: the run's best round (held-out oof_clip_lwlrap" in result.output  # best_round.json pulled
    assert outs["url"].read_text() == outs["local"].read_text()
    cached = {p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file()}
    assert not any("/members/" in p or p.endswith(".pt2") for p in cached)  # inference fetched only what it uses
    assert any(p.endswith("round0/models/test_efficientnet-2s_fold0.ts") for p in cached)

    # the benchmarks read runs at URLs too
    from benchmarks.engine_throughput import real_section
    from benchmarks.quality import read_rounds

    assert [r["round"] for r in read_rounds(url)] == [0]
    _, real = real_section(url, synth_store, clips=2, repeats=1)
    assert real["round"] == 0 and real["models"] == 2 and real["clips"] == 2

    # from yet another machine: the finished round 0 is skipped (its checkpoints and models stay remote) and
    # round 1 trains on round 0's pseudo labels, fetched from the URL
    again = cache("again")
    echoed = []
    train_rounds(synth_store, url, _cfg(), until_round=1, progress=False, echo=echoed.append, export_formats=())
    assert "complete, skipped" in echoed[0] and echoed[1].startswith("round 1: ")
    assert not list(again.rglob("round0/members/*/checkpoint.pt"))
    assert list(again.rglob("round0/pseudo.zarr/zarr.json"))
    local_again = train_rounds(
        synth_store, local, _cfg(), until_round=1, progress=False, echo=lambda *_: None, export_formats=()
    )
    assert json.loads(_remote_files(url)["round1/metrics.json"])["test_lwlrap"] == local_again[1]["test_lwlrap"]


def test_export_with_runs_at_a_memory_url(synth_store, cache) -> None:
    from rfcx.train.rounds import train_rounds

    url = _memory_url("export")
    train_rounds(synth_store, url, _cfg(), until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    cache("export")
    result = runner.invoke(app, ["export", "--round", "0", "--runs", url, "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert f"wrote {url}/round0/models/test_efficientnet-2s_fold0.ts" in result.output
    assert "round0/models/test_efficientnet-2s_fold1.ts" in _remote_files(url)


def test_interrupted_training_resumes_from_what_reached_the_url(synth_store, cache, tmp_path, monkeypatch) -> None:
    import rfcx.train.member as train_mod
    from rfcx.train.rounds import train_rounds

    cfg = _cfg(epochs=3)
    full = tmp_path / "full"
    train_rounds(synth_store, full, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())

    real_save, calls = train_mod._save, {"n": 0}

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch of fold 0 is saved in the cache, but never uploaded
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save", save_then_die)
    url = _memory_url("cut")
    with pytest.raises(KeyboardInterrupt):
        train_rounds(synth_store, url, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    monkeypatch.setattr(train_mod, "_save", real_save)
    member = "round0/members/test_efficientnet-2s_fold0/checkpoint.pt"
    assert torch.load(io.BytesIO(_remote_files(url)[member]), weights_only=False)["epoch"] == 1

    cache("resume")  # another machine: only what reached the URL
    train_rounds(synth_store, url, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    for fold in (0, 1):
        name = f"round0/members/test_efficientnet-2s_fold{fold}/checkpoint.pt"
        resumed = torch.load(io.BytesIO(_remote_files(url)[name]), weights_only=False)
        reference = torch.load(full / name, weights_only=False)
        assert resumed["epoch"] == 3 and resumed["complete"]
        for key, value in reference["state_dict"].items():
            torch.testing.assert_close(resumed["state_dict"][key], value)
    assert "round0/complete.json" in _remote_files(url)


def test_infer_with_file_urls_across_processes(synth_store, tmp_path) -> None:
    """A run and a store at file:// URLs, used by another process."""
    from rfcx.train.rounds import train_rounds

    fs = FeatureStore.open(synth_store)
    store = tmp_path / "copy.zarr"
    src, root = Location.parse(synth_store).filesystem()
    src.get(root.rstrip("/") + "/", str(store) + "/", recursive=True)
    assert FeatureStore.open(store).ids("test") == fs.ids("test")
    runs = tmp_path / "runs"
    train_rounds(
        f"file://{store}",
        f"file://{runs}",
        _cfg(),
        until_round=0,
        progress=False,
        echo=lambda *_: None,
        export_formats=("torchscript",),
    )
    assert (runs / "round0" / "complete.json").is_file()
    out = tmp_path / "sub.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rfcx",
            "infer",
            "--batch",
            "--store",
            f"file://{store}",
            "--runs",
            f"file://{runs}",
            "--out",
            str(out),
            "--no-progress",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines()[0].startswith("recording_id,s0,")
    assert len(out.read_text().splitlines()) == 1 + len(fs.ids("test"))


def test_missing_backend_for_runs(local_store) -> None:
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    with pytest.raises(MissingBackendError, match=r"gs:// needs the gcsfs package: pip install gcsfs"):
        open_run("gs://bucket/runs")
    result = runner.invoke(app, ["infer", "--batch", "--store", str(local_store), "--runs", "gs://bucket/runs"])
    assert result.exit_code == 1 and "gs:// needs the gcsfs package: pip install gcsfs" in result.output
    result = runner.invoke(
        app, ["train", "--store", str(local_store), "--runs", "gs://bucket/runs", "--config", "tiny"]
    )
    assert result.exit_code == 1 and "gs:// needs the gcsfs package: pip install gcsfs" in result.output
