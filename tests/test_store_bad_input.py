"""Bad input: each is reported with its file (and row) and reason, skipped and recorded; --strict stops."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from store import BadInputError, FeatureStore, build_store
from store.dali_pipeline import dali_available
from tests.conftest import write_clip

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])


def _spoil(dataset):
    """Add one of each kind of bad input to a good tiny data set."""
    good = (dataset / "train" / "t0.flac").read_bytes()
    (dataset / "train" / "trunc.flac").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[200:4000] = bytes(3800)
    (dataset / "train" / "corrupt.flac").write_bytes(bytes(corrupt))
    (dataset / "test" / "empty.flac").write_bytes(b"")
    (dataset / "test" / "notes.flac").write_text("these are not audio\n" * 50)
    write_clip(dataset / "test" / "cd.flac", 2.0, 1000.0, sr=44_100)  # another sample rate: resampled
    write_clip(dataset / "test" / "stereo.flac", 2.0, 1000.0, channels=2)  # downmixed
    with open(dataset / "train_tp.csv", "a") as fh:
        fh.write("t1,3,1,0.2,500\n")  # line 6: too few fields
        fh.write("t1,99,1,0.2,500,0.8,900\n")  # line 7: unknown species
        fh.write("t1,3,1,abc,500,0.8,900\n")  # line 8: not a number
        fh.write("t1,3,1,2.5,500,9.0,900\n")  # line 9: box ends after the 3 s clip
        fh.write("missing,3,1,0.2,500,0.8,900\n")  # line 10: no such recording
        fh.write("trunc,3,1,0.2,500,0.8,900\n")  # line 11: its audio is rejected
        fh.write("t1,3,1,0.9,500,0.8,900\n")  # line 12: t_min >= t_max
    return dataset


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_reported_and_skipped(dataset, tmp_path, backend) -> None:
    _spoil(dataset)
    summary = build_store(dataset, tmp_path / "s.zarr", backend=backend, device="cpu", progress=False)
    reasons = {(r.file.rsplit("/", 1)[-1], r.row): r.reason for r in summary.rejected}
    assert "truncated" in reasons[("trunc.flac", None)] or "lost sync" in reasons[("trunc.flac", None)]
    assert ("corrupt.flac", None) in reasons
    assert "empty file" in reasons[("empty.flac", None)]
    assert "not a readable audio file" in reasons[("notes.flac", None)]
    assert "expected 7 fields" in reasons[("train_tp.csv", 6)]
    assert "unknown species_id 99" in reasons[("train_tp.csv", 7)]
    assert "must be numbers" in reasons[("train_tp.csv", 8)]
    assert "box outside its clip" in reasons[("train_tp.csv", 9)]
    assert "no audio file" in reasons[("train_tp.csv", 10)]
    assert "was rejected" in reasons[("train_tp.csv", 11)]
    assert "t_min 0.9 >= t_max 0.8" in reasons[("train_tp.csv", 12)]
    assert len(summary.rejected) == 11
    assert summary.resampled == 1

    fs = FeatureStore.open(tmp_path / "s.zarr")  # the rest is stored
    assert fs.ids("train") == ["t0", "t1", "t2", "t3"]
    assert fs.ids("test") == ["cd", "stereo", "u0", "u1"]
    assert fs.index("test").at["cd", "source_sample_rate"] == 44_100
    assert fs.n_frames("cd") == 1 + 2 * 48_000 // 512  # resampled to 48 kHz
    assert fs.mel("stereo").shape == (256, 188) and np.isfinite(fs.mel("stereo")).all()
    assert len(fs.boxes("tp")) == 4
    rejected = fs.rejected()
    assert len(rejected) == 11 and set(rejected.columns) == {"split", "file", "row", "reason"}
    assert set(rejected.split) == {"train", "test", ""}


def test_strict_stops_at_first_bad_input_keeping_what_is_stored(dataset, tmp_path) -> None:
    path = tmp_path / "s.zarr"
    build_store(dataset, path, backend="torch", device="cpu", progress=False)
    (dataset / "test" / "zz_bad.flac").write_bytes(b"garbage" * 10)
    with pytest.raises(BadInputError, match="zz_bad.flac: not a readable audio file"):
        build_store(dataset, path, backend="torch", device="cpu", strict=True, progress=False)
    assert FeatureStore.open(path).ids("test") == ["u0", "u1"]
    with open(dataset / "train_fp.csv", "a") as fh:
        fh.write("t0,24,1,0.1,100,0.2,200\n")
    with pytest.raises(BadInputError, match=r"train_fp.csv:6: unknown species_id 24"):
        build_store(dataset, path, backend="torch", device="cpu", strict=True, progress=False)


def test_missing_inputs(tmp_path, dataset) -> None:
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        build_store(tmp_path / "nowhere", tmp_path / "s.zarr", backend="torch", progress=False)
    (tmp_path / "emptydata").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a train/ nor a test/"):
        build_store(tmp_path / "emptydata", tmp_path / "s.zarr", backend="torch", progress=False)
    (dataset / "train_tp.csv").write_text("rid,species\nx,1\n")
    with pytest.raises(ValueError, match="train_tp.csv: header must be"):
        build_store(dataset, tmp_path / "s.zarr", backend="torch", progress=False)


def test_cli_build_store(dataset, tmp_path) -> None:
    runner = CliRunner()
    store = str(tmp_path / "s.zarr")
    res = runner.invoke(app, ["build-store", "--data", str(dataset), "--store", store, "--backend", "torch"])
    assert res.exit_code == 0, res.output
    assert "stored 6 new clips" in res.output and "train      4 clips" in res.output
    (dataset / "test" / "bad.flac").write_bytes(b"")
    res = runner.invoke(app, ["build-store", "--data", str(dataset), "--store", store, "--backend", "torch"])
    assert res.exit_code == 0 and "bad.flac: empty file" in res.output and "skipped 6 already stored" in res.output
    res = runner.invoke(
        app, ["build-store", "--data", str(dataset), "--store", store, "--backend", "torch", "--strict"]
    )
    assert res.exit_code == 2 and "bad.flac: empty file" in res.output
    res = runner.invoke(app, ["build-store", "--data", str(tmp_path / "nope"), "--store", store])
    assert res.exit_code == 1 and "data folder not found" in res.output
    res = runner.invoke(app, ["info", "--store", store])
    assert res.exit_code == 0 and "rejected inputs: 1" in res.output
