"""The test clips' clip-level truth (``test_labels.csv``): checked row by row, stored, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from store import BadInputError, FeatureStore, build_store

HEADER = "recording_id," + ",".join(f"s{k}" for k in range(24)) + "\n"


def _row(rid: str, species: tuple[int, ...] = (), n: int = 24) -> str:
    return rid + "," + ",".join("1" if k in species else "0" for k in range(n)) + "\n"


def _build(data: Path, store: Path, **kw):
    return build_store(data, store, backend="torch", device="cpu", progress=False, **kw)


def test_absent_truth_is_none(dataset, tmp_path) -> None:
    summary = _build(dataset, tmp_path / "s.zarr")
    assert not summary.rejected
    fs = FeatureStore.open(tmp_path / "s.zarr")
    assert fs.truth() is None and fs.truth("train") is None
    assert "tables/test_labels" not in zarr.open_group(tmp_path / "s.zarr", mode="r")


def test_truth_stored_and_read_back(dataset, tmp_path) -> None:
    (dataset / "test_labels.csv").write_text(HEADER + _row("u1", (0, 23)) + _row("u0", (5,)))
    summary = _build(dataset, tmp_path / "s.zarr")
    assert not summary.rejected

    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert root["tables/test_labels/recording_id"][:].tolist() == ["u1", "u0"]
    labels = root["tables/test_labels/labels"]
    assert labels.dtype == np.uint8 and labels.shape == (2, 24)
    assert labels[:].sum() == 3 and labels[0, 23] == 1 and labels[1, 5] == 1

    truth = FeatureStore.open(tmp_path / "s.zarr").truth("test")
    assert list(truth.columns) == [f"s{k}" for k in range(24)]
    assert truth.index.name == "recording_id" and truth.index.tolist() == ["u1", "u0"]
    assert truth.loc["u1"].to_numpy().nonzero()[0].tolist() == [0, 23]
    assert truth.loc["u0", "s5"] == 1 and truth.to_numpy().sum() == 3
    with pytest.raises(ValueError, match="split must be one of"):
        FeatureStore.open(tmp_path / "s.zarr").truth("valid")


def test_bad_rows_rejected_with_file_and_line(dataset, tmp_path) -> None:
    good = (dataset / "test" / "u0.flac").read_bytes()
    (dataset / "test" / "trunc.flac").write_bytes(good[: len(good) // 2])
    (dataset / "test_labels.csv").write_text(
        HEADER
        + _row("u0", (1,))  # line 2: good
        + _row("u1", n=23)  # line 3: too few fields
        + "u1,"
        + ",".join(["0"] * 23 + ["2"])
        + "\n"  # line 4: not 0/1
        + "u1,"
        + ",".join(["x"] + ["0"] * 23)
        + "\n"  # line 5: not a number
        + _row("", (1,))  # line 6: empty id
        + _row("t0", (2,))  # line 7: a train clip, not a test clip
        + _row("nope")  # line 8: no such clip
        + _row("trunc")  # line 9: its audio is rejected
        + _row("u0", (4,))  # line 10: duplicate
        + _row("u1", (7,))  # line 11: good
    )
    summary = _build(dataset, tmp_path / "s.zarr")
    reasons = {(Path(r.file).name, r.row): r.reason for r in summary.rejected}
    assert "expected 25 fields, got 24" in reasons[("test_labels.csv", 3)]
    assert "s23 must be 0 or 1, got '2'" in reasons[("test_labels.csv", 4)]
    assert "s0 must be 0 or 1, got 'x'" in reasons[("test_labels.csv", 5)]
    assert "empty recording_id" in reasons[("test_labels.csv", 6)]
    assert "t0 has no audio file in test/" in reasons[("test_labels.csv", 7)]
    assert "nope has no audio file in test/" in reasons[("test_labels.csv", 8)]
    assert "was rejected" in reasons[("test_labels.csv", 9)]
    assert "duplicate recording id u0 (also line 2)" in reasons[("test_labels.csv", 10)]
    assert sum(Path(r.file).name == "test_labels.csv" for r in summary.rejected) == 8

    fs = FeatureStore.open(tmp_path / "s.zarr")
    truth = fs.truth()
    assert truth.index.tolist() == ["u0", "u1"]
    assert truth.loc["u0"].to_numpy().nonzero()[0].tolist() == [1]
    assert truth.loc["u1"].to_numpy().nonzero()[0].tolist() == [7]
    recorded = fs.rejected()
    assert ((recorded.file.str.endswith("test_labels.csv")) & (recorded.row == 4)).any()


def test_strict_stops_at_first_bad_row(dataset, tmp_path) -> None:
    (dataset / "test_labels.csv").write_text(HEADER + _row("u0") + _row("u1", n=3))
    with pytest.raises(BadInputError, match=r"test_labels\.csv:3: expected 25 fields"):
        _build(dataset, tmp_path / "s.zarr", strict=True)
    (dataset / "test_labels.csv").write_text(HEADER + _row("u0") + _row("gone"))
    with pytest.raises(BadInputError, match=r"test_labels\.csv:3: recording gone has no audio file"):
        _build(dataset, tmp_path / "t.zarr", strict=True)


def test_bad_header_raises(dataset, tmp_path) -> None:
    (dataset / "test_labels.csv").write_text("recording_id,s0,s1\n" + "u0,0,1\n")
    with pytest.raises(ValueError, match=r"test_labels\.csv: header must be recording_id,s0\.\.s23"):
        _build(dataset, tmp_path / "s.zarr")


def test_all_rows_rejected_gives_empty_truth(dataset, tmp_path) -> None:
    (dataset / "test_labels.csv").write_text(HEADER + _row("nope"))
    _build(dataset, tmp_path / "s.zarr")
    truth = FeatureStore.open(tmp_path / "s.zarr").truth()
    assert truth is not None and truth.shape == (0, 24)


def test_rebuild_replaces_truth(dataset, tmp_path) -> None:
    (dataset / "test_labels.csv").write_text(HEADER + _row("u0", (1,)))
    _build(dataset, tmp_path / "s.zarr")
    (dataset / "test_labels.csv").write_text(HEADER + _row("u0", (2,)) + _row("u1", (3,)))
    again = _build(dataset, tmp_path / "s.zarr")
    assert again.stored == {"train": 0, "test": 0} and not again.rejected
    truth = FeatureStore.open(tmp_path / "s.zarr").truth()
    assert truth.index.tolist() == ["u0", "u1"] and truth.loc["u0", "s2"] == 1 and truth.loc["u0", "s1"] == 0


def test_synthetic_test_labels_round_trip(tmp_path) -> None:
    from rfcx.synth.dataset import synthesize

    data = synthesize(tmp_path / "data", n_train=2, n_test=4, seconds=1.0, seed=3, progress=False).out_dir
    summary = _build(data, tmp_path / "s.zarr")
    assert not summary.rejected
    truth = FeatureStore.open(tmp_path / "s.zarr").truth()
    expected = pd.read_csv(data / "test_labels.csv", dtype={"recording_id": str}).set_index("recording_id")
    assert truth.index.tolist() == expected.index.tolist() and list(truth.columns) == list(expected.columns)
    np.testing.assert_array_equal(truth.to_numpy(), expected.to_numpy())
