"""Real tables dropped beside a subset of the audio: build-store groups the rows naming absent recordings by file
and cause (count, first examples), keeps a line for each real defect, and lists every rejection in a CSV beside
the store (and in its ``rejected`` record)."""

from __future__ import annotations

import csv

from typer.testing import CliRunner

from rfcx.cli import app
from store import FeatureStore, build_store


def _drop_in_absent_recordings(dataset) -> None:
    with open(dataset / "train_tp.csv", "a") as fh:  # lines 2-5: the fixture's rows
        fh.writelines(f"absent{i},1,1,0.1,500,0.9,900\n" for i in range(30))  # lines 6-35
        fh.write("t1,99,1,0.2,500,0.8,900\n")  # line 36: a real defect
    with open(dataset / "train_fp.csv", "a") as fh:
        fh.writelines(f"absent{i},2,1,0.1,500,0.9,900\n" for i in range(2))  # lines 6-7


def test_absent_recordings_are_grouped_and_defects_keep_their_lines(dataset, tmp_path) -> None:
    _drop_in_absent_recordings(dataset)
    store = tmp_path / "features.zarr"
    res = CliRunner().invoke(
        app, ["build-store", "--data", str(dataset), "--store", str(store), "--backend", "torch", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert f"rejected {dataset / 'train_tp.csv'}:36: unknown species_id 99" in out
    assert (
        f"rejected {dataset / 'train_tp.csv'}: 30 rows name a recording that has no audio file (e.g. line 6: "
        f"recording absent0 has no audio file in train/; line 7: recording absent1 has no audio file in train/; "
        f"line 8: recording absent2 has no audio file in train/; and 27 more)"
    ) in out
    assert (
        f"rejected {dataset / 'train_fp.csv'}: 2 rows name a recording that has no audio file (e.g. line 6: "
        f"recording absent0 has no audio file in train/; line 7: recording absent1 has no audio file in train/)"
    ) in out
    lines = [ln.strip() for ln in out.splitlines() if "has no audio file" in ln]
    assert len(lines) == 2 and all(" rows name a recording" in ln for ln in lines)  # the groups, no line per row
    listed = tmp_path / "features.zarr.rejected.csv"
    assert f"every rejected input: {listed}" in out
    rows = list(csv.DictReader(listed.open()))
    assert len(rows) == 33 and rows[0].keys() == {"split", "file", "row", "cause", "reason"}
    assert sum(r["cause"] == "missing audio" for r in rows) == 32 and sum(r["cause"] == "defect" for r in rows) == 1
    fs = FeatureStore.open(store)
    assert len(fs.rejected()) == 33 and sum(r.cause == "missing audio" for r in fs.rejections()) == 32

    info = CliRunner().invoke(app, ["info", "--store", str(store)])
    assert info.exit_code == 0 and "30 rows name a recording that has no audio file" in info.output
    assert "train_tp.csv:36: unknown species_id 99" in info.output and f"every rejected input: {listed}" in info.output

    for name in ("train_tp.csv", "train_fp.csv"):  # tables fixed: the next build's list is empty, the file goes
        path = dataset / name
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))
    summary = build_store(dataset, store, backend="torch", device="cpu", progress=False)
    assert summary.rejected == [] and summary.rejected_file is None and not listed.exists()
