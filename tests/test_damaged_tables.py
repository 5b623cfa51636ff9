"""Damaged label tables: an unclosed quote is named on its own line and loses no later row, a TP table without
rows is said out loud and `rfcx train` refuses it, duplicated rows are named and kept once."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.train.config import get_config
from rfcx.train.rounds import train_rounds
from store import BadInputError, FeatureStore, build_store
from store.tables import read_boxes
from tests.conftest import BOX_HEADER


def _rows(n: int) -> list[str]:
    """n distinct good rows on the 3 s clips t0..t3 of the ``dataset`` fixture."""
    return [f"t{i % 4},{i % 24},1,0.{i % 9 + 1},{500 + i},1.{i % 9 + 1},{900 + i}\n" for i in range(n)]


def test_unclosed_quote_is_named_where_it_opens_and_the_rows_after_it_are_kept(tmp_path) -> None:
    path = tmp_path / "train_tp.csv"
    lines = [BOX_HEADER] + _rows(5) + ['t1,3,1,"0.2,500,0.8,900\n'] + _rows(20)[5:20]  # quote opens on line 7
    path.write_text("".join(lines))
    table = read_boxes(path)
    assert [(r.row, r.reason.split(":")[0]) for r in table.rejected] == [(7, "unclosed quote")]
    assert "runs on to line 22" in table.rejected[0].reason
    assert len(table.rows) == 20 and table.line_numbers.tolist() == [2, 3, 4, 5, 6] + list(range(8, 23))


def test_unclosed_quote_on_the_last_line_and_crlf_line_ends(tmp_path) -> None:
    path = tmp_path / "train_fp.csv"
    path.write_bytes((BOX_HEADER + "".join(_rows(3)) + 't0,1,1,"0.1,10,0.2,20\n').replace("\n", "\r\n").encode())
    table = read_boxes(path)
    assert [r.row for r in table.rejected] == [5] and "the end of the file" in table.rejected[0].reason
    assert table.line_numbers.tolist() == [2, 3, 4]
    path.write_text(BOX_HEADER + '"t0",1,1,0.1,10,0.2,20\n')  # a quote closed on its own line is fine
    assert len(read_boxes(path).rows) == 1 and not read_boxes(path).rejected


def test_a_byte_order_mark_is_read_past(dataset, tmp_path) -> None:
    """Excel's "CSV UTF-8" starts the file with a byte-order mark: the header is still the header."""
    for name in ("train_tp.csv", "train_fp.csv"):
        path = dataset / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        assert len(read_boxes(path).rows) == 4 and not read_boxes(path).rejected
    build_store(dataset, tmp_path / "s.zarr", backend="torch", device="cpu", progress=False, strict=True)
    fs = FeatureStore.open(tmp_path / "s.zarr")
    assert (len(fs.boxes("tp")), len(fs.boxes("fp"))) == (4, 4)


def test_duplicated_rows_are_named_and_kept_once(tmp_path) -> None:
    path = tmp_path / "train_tp.csv"
    rows = _rows(4)
    path.write_text(BOX_HEADER + "".join(rows) + rows[1] + rows[1].replace(",1,", ", 1 ,", 1))  # lines 6 and 7
    table = read_boxes(path)
    assert [(r.row, r.reason) for r in table.rejected] == [
        (6, "duplicate of line 3 (the same box twice: kept once, from line 3)"),
        (7, "duplicate of line 3 (the same box twice: kept once, from line 3)"),
    ]
    assert len(table.rows) == 4


def test_build_store_reports_quote_and_duplicates_with_their_lines(dataset, tmp_path) -> None:
    with open(dataset / "train_tp.csv", "a") as fh:  # lines 2-5 are the fixture's rows
        fh.write("t0,0,1,0.5,900,1.5,1100\n")  # line 6: a copy of line 2
        fh.write('t1,3,1,"0.2,500,0.8,900\n')  # line 7: the quote never closes
        fh.writelines(_rows(20)[5:20])  # lines 8-22
    summary = build_store(dataset, tmp_path / "s.zarr", backend="torch", device="cpu", progress=False)
    found = {(r.file.rsplit("/", 1)[-1], r.row): r.reason for r in summary.rejected}
    assert found[("train_tp.csv", 6)].startswith("duplicate of line 2")
    assert found[("train_tp.csv", 7)].startswith("unclosed quote")
    assert len(found) == 2
    assert len(FeatureStore.open(tmp_path / "s.zarr").boxes("tp")) == 4 + 15
    with pytest.raises(BadInputError, match=r"train_tp.csv:6: duplicate of line 2"):
        build_store(dataset, tmp_path / "s2.zarr", backend="torch", device="cpu", strict=True, progress=False)


def test_header_only_tp_table_is_said_and_train_refuses_it(dataset, tmp_path) -> None:
    (dataset / "train_tp.csv").write_text(BOX_HEADER)
    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(
        app, ["build-store", "--data", str(dataset), "--store", str(store), "--backend", "torch", "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    assert (
        "warning: " in res.output and "train_tp.csv: has a header and no rows: the store gets no TP box" in res.output
    )
    summary = build_store(dataset, store, backend="torch", device="cpu", progress=False)
    assert len(summary.warnings) == 1 and "no TP box" in summary.warnings[0]
    assert len(FeatureStore.open(store).boxes("fp")) == 4  # FP boxes only

    with pytest.raises(ValueError, match=r"no TP box \(4 FP\): round 0 learns from the TP boxes"):
        train_rounds(str(store), tmp_path / "runs", get_config("tiny"), 0, progress=False)
    assert not (tmp_path / "runs" / "config.json").exists()
    res = CliRunner().invoke(
        app, ["train", "--store", str(store), "--runs", str(tmp_path / "runs"), "--config", "tiny"]
    )
    assert res.exit_code == 1 and "no TP box" in res.output


def test_tp_rows_all_rejected_is_said(dataset, tmp_path) -> None:
    (dataset / "train_tp.csv").write_text(BOX_HEADER + "nosuch,1,1,0.1,10,0.2,20\n")
    summary = build_store(dataset, tmp_path / "s.zarr", backend="torch", device="cpu", progress=False)
    assert summary.warnings == [
        f"{dataset / 'train_tp.csv'}: has no usable row (1 rejected, each named above): "
        f"the store gets no TP box, and `rfcx train` refuses a store without one (round 0 "
        f"learns from them)"
    ]
