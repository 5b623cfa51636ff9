"""Detections people use (issue 14): events merged from windows, the species' bands from the TP boxes, per-species
thresholds (a file, or chosen on out-of-fold scores for a target precision), and the CSV, parquet, Raven and
Audacity tables, each written and read back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.detection_formats import (
    is_folder_target,
    raven_table,
    read_audacity,
    read_frame,
    read_raven,
    write_audacity,
    write_frame,
    write_raven,
)
from engine.events import EVENT_COLUMNS, merge_events, species_bands, threshold_vector
from engine.outputs import write_detections
from engine.thresholds import read_thresholds, threshold_for_precision, thresholds_for_precision, write_thresholds

COLS = [f"s{c}" for c in range(24)]


def _windows(rows: list[tuple[str, float, float, dict[int, float]]]) -> pd.DataFrame:
    """Window scores: (recording, start, end, {species: score}), the other species 0."""
    frame = pd.DataFrame(
        {
            "recording_id": [r[0] for r in rows],
            "window_s": [r[2] - r[1] for r in rows],
            "start_s": [r[1] for r in rows],
            "end_s": [r[2] for r in rows],
        }
    )
    for c in range(24):
        frame[f"s{c}"] = np.array([r[3].get(c, 0.0) for r in rows], dtype=np.float32)
    return frame


WINDOWS = _windows(
    [
        ("a", 0.0, 2.0, {3: 0.9, 7: 0.6}),
        ("a", 0.5, 2.5, {3: 0.7}),  # overlaps the first: one event of species 3 (0.0-2.5)
        ("a", 2.5, 4.5, {3: 0.8}),  # touches it: the same event (0.0-4.5)
        ("a", 5.0, 7.0, {3: 0.6, 7: 0.4}),  # a gap: a new event; species 7 below 0.5 here
        ("b", 0.0, 2.0, {3: 0.2}),
        ("b", 1.0, 3.0, {5: 0.95}),
    ]
)
BOXES = pd.DataFrame(
    {
        "recording_id": ["t0", "t1", "t2", "t3"],
        "species_id": [3, 3, 3, 7],
        "songtype_id": 1,
        "t_min": 0.0,
        "f_min": [1000.0, 1200.0, 800.0, 5000.0],
        "t_max": 1.0,
        "f_max": [3000.0, 2600.0, 2800.0, 6000.0],
    }
)


def test_events_merge_overlapping_and_touching_windows() -> None:
    bands = species_bands(BOXES, 24, 24_000)
    ev = merge_events(WINDOWS, 0.5, bands)
    assert list(ev.columns) == EVENT_COLUMNS
    got = ev[["recording_id", "species_id", "start_s", "end_s", "n_windows"]].values.tolist()
    assert got == [["a", 3, 0.0, 4.5, 3], ["a", 7, 0.0, 2.0, 1], ["a", 3, 5.0, 7.0, 1], ["b", 5, 1.0, 3.0, 1]]
    first = ev.iloc[0]
    assert first.peak_score == pytest.approx(0.9) and first.mean_score == pytest.approx((0.9 + 0.7 + 0.8) / 3, 1e-6)
    # the band: 5th percentile of f_min, 95th of f_max over the species' TP boxes; the full band without a box
    assert first.low_hz == pytest.approx(np.quantile([1000, 1200, 800], 0.05))
    assert first.high_hz == pytest.approx(np.quantile([3000, 2600, 2800], 0.95))
    assert ev.iloc[3][["low_hz", "high_hz"]].tolist() == [0.0, 24_000.0]  # species 5: no TP box
    # per-species thresholds beside the global one: species 3 at 0.75 keeps the 0.9 and 0.8 windows only
    ev2 = merge_events(WINDOWS, threshold_vector(24, 0.5, {3: 0.75}), bands)
    assert ev2[ev2.species_id == 3][["start_s", "end_s", "n_windows"]].values.tolist() == [[0.0, 2.0, 1], [2.5, 4.5, 1]]
    assert merge_events(WINDOWS, 0.99).empty and list(merge_events(WINDOWS, 0.99).columns) == EVENT_COLUMNS
    with pytest.raises(ValueError, match="species 30 has a threshold"):
        threshold_vector(24, 0.5, {30: 0.1})


def test_threshold_for_a_target_precision() -> None:
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    tp = np.array([1, 1, 0, 1, 1, 0, 0, 1], dtype=bool)
    # precision of the top n: 1, 1, .67, .75, .8, .67, .57, .625: 0.8 is reached down to 0.7 (4 positives)
    t = threshold_for_precision(scores, tp, 0.8, min_positives=1)
    assert t == pytest.approx((0.7 + 0.6) / 2)
    assert threshold_for_precision(scores, tp, 1.0, min_positives=1) == pytest.approx((0.9 + 0.85) / 2)
    assert threshold_for_precision(scores, tp, 0.8, min_positives=6) is None  # too few positives
    assert threshold_for_precision(np.array([0.9, 0.8]), np.array([False, True]), 0.9, 1) is None  # never reached
    labelled = pd.DataFrame(
        {"species_id": [2] * 8 + [4] * 2, "score": [*scores, 0.9, 0.8], "is_tp": [*tp, False, True]}
    )
    assert thresholds_for_precision(labelled, 0.8, min_positives=1) == {2: pytest.approx(0.65)}


def test_thresholds_file(tmp_path: Path) -> None:
    path = write_thresholds({3: 0.7, 1: 0.25}, tmp_path / "t.csv")
    assert path.read_text() == "species_id,threshold\n1,0.25\n3,0.7\n"
    assert read_thresholds(path, 24) == {1: 0.25, 3: 0.7}
    (tmp_path / "bad.csv").write_text("species_id,threshold\n1,0.2\n40,0.5\n")
    with pytest.raises(ValueError, match="line 3: species_id must be 0..23"):
        read_thresholds(tmp_path / "bad.csv", 24)
    (tmp_path / "high.csv").write_text("species_id,threshold\n1,0.2\n2,1.5\n3,\n")
    with pytest.raises(ValueError, match=r"line 3: .* got species_id 2, threshold 1.5$"):  # as written, no np.float64
        read_thresholds(tmp_path / "high.csv", 24)
    (tmp_path / "high.csv").write_text("species_id,threshold\n3,\n")
    with pytest.raises(ValueError, match=r"got species_id 3, threshold \(empty\)$"):
        read_thresholds(tmp_path / "high.csv", 24)
    (tmp_path / "cols.csv").write_text("species,t\n1,0.2\n")
    with pytest.raises(ValueError, match="expected columns species_id,threshold"):
        read_thresholds(tmp_path / "cols.csv", 24)
    with pytest.raises(FileNotFoundError, match="thresholds file not found"):
        read_thresholds(tmp_path / "nope.csv", 24)


def _events() -> pd.DataFrame:
    return merge_events(WINDOWS, 0.5, species_bands(BOXES, 24, 24_000))


def _same(back: pd.DataFrame, events: pd.DataFrame, cols: list[str] = EVENT_COLUMNS) -> None:
    key = ["recording_id", "start_s", "species_id"]
    a = back.sort_values(key).reset_index(drop=True)[cols]
    b = events.sort_values(key).reset_index(drop=True)[cols]
    assert a["recording_id"].tolist() == b["recording_id"].tolist()
    for c in cols[1:]:
        np.testing.assert_allclose(a[c].to_numpy(np.float64), b[c].to_numpy(np.float64), atol=1e-3, err_msg=c)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_round_trip(fmt: str, tmp_path: Path) -> None:
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is not installed")
    ev = _events()
    path = write_frame(ev, tmp_path / f"ev.{fmt}", fmt)
    _same(read_frame(path, fmt), ev)


def test_raven_tables_round_trip(tmp_path: Path) -> None:
    """Raven Pro selection tables: the standard columns first, tab-separated; a folder of one table per recording
    (every recording scored gets one, header only where nothing was found), or one table with Begin File."""
    ev = _events()
    assert is_folder_target(tmp_path / "raven", "raven") and not is_folder_target(tmp_path / "r.txt", "raven")
    written = write_raven(ev, tmp_path / "raven", ["a", "b", "c"])
    assert [p.name for p in written] == [
        "a.Table.1.selections.txt",
        "b.Table.1.selections.txt",
        "c.Table.1.selections.txt",
    ]
    lines = written[0].read_text().splitlines()
    assert lines[0].split("\t") == [
        "Selection",
        "View",
        "Channel",
        "Begin Time (s)",
        "End Time (s)",
        "Low Freq (Hz)",
        "High Freq (Hz)",
        "Species",
        "Score",
        "Mean Score",
        "Windows",
    ]
    assert lines[1].split("\t")[:5] == ["1", "Spectrogram 1", "1", "0.000000", "4.500000"]
    assert len(lines) == 4  # header + the 3 events of a
    assert written[2].read_text().count("\n") == 1  # c: header only
    _same(read_raven(tmp_path / "raven"), ev)

    combined = write_raven(ev, tmp_path / "all.txt", ["a", "b"], files={"a": "a.flac", "b": "b.flac"})[0]
    table = pd.read_csv(combined, sep="\t")
    assert list(table.columns[:8]) == [
        "Selection",
        "View",
        "Channel",
        "Begin Time (s)",
        "End Time (s)",
        "Low Freq (Hz)",
        "High Freq (Hz)",
        "Begin File",
    ]
    assert table["Selection"].tolist() == [1, 2, 3, 4] and table["Begin File"].tolist()[-1] == "b.flac"
    _same(read_raven(combined), ev)
    assert list(raven_table(ev.iloc[:0]).columns)[:7] == [
        "Selection",
        "View",
        "Channel",
        "Begin Time (s)",
        "End Time (s)",
        "Low Freq (Hz)",
        "High Freq (Hz)",
    ]


def test_audacity_labels_round_trip(tmp_path: Path) -> None:
    """Audacity label tracks: ``start<TAB>end<TAB>label`` and under each the frequency line ``\\<TAB>low<TAB>high``."""
    ev = _events()
    written = write_audacity(ev, tmp_path / "labels", ["a", "b"])
    assert [p.name for p in written] == ["a.txt", "b.txt"]
    lines = written[1].read_text().splitlines()
    low, high = species_bands(BOXES, 24, 24_000).loc[5].tolist()
    assert lines == ["1.000000\t3.000000\tspecies 5 0.950", f"\\\t{low:.6f}\t{high:.6f}"]
    _same(
        read_audacity(tmp_path / "labels"),
        ev,
        ["recording_id", "species_id", "start_s", "end_s", "low_hz", "high_hz", "peak_score"],
    )
    one = write_audacity(ev[ev.recording_id == "a"], tmp_path / "a.txt", ["a"])[0]
    _same(
        read_audacity(one),
        ev[ev.recording_id == "a"],
        ["recording_id", "species_id", "start_s", "end_s", "low_hz", "high_hz", "peak_score"],
    )
    with pytest.raises(ValueError, match="holds one recording's labels, and 2 were scored; give a folder"):
        write_audacity(ev, tmp_path / "both.txt", ["a", "b"])
    (tmp_path / "broken.txt").write_text("\\\t1\t2\n")
    with pytest.raises(ValueError, match="line 1: a frequency line must follow a label"):
        read_audacity(tmp_path / "broken.txt")


def test_write_detections_levels_and_formats(tmp_path: Path) -> None:
    bands = species_bands(BOXES, 24, 24_000)
    w = write_detections(WINDOWS, tmp_path / "ev.csv", 0.5, bands=bands)
    assert (w.level, w.fmt, w.rows) == ("events", "csv", 4)
    assert list(pd.read_csv(tmp_path / "ev.csv").columns) == EVENT_COLUMNS
    w = write_detections(WINDOWS, tmp_path / "win.csv", 0.5, level="windows", thresholds={3: 0.75})
    assert (w.level, w.rows) == ("windows", 4)  # species 3: 0.9, 0.8; species 7: 0.6; species 5: 0.95
    assert list(pd.read_csv(tmp_path / "win.csv").columns) == [
        "recording_id",
        "start_s",
        "end_s",
        "species_id",
        "score",
    ]
    w = write_detections(WINDOWS, tmp_path / "rav", 0.5, level="windows", fmt="raven", bands=bands)
    assert w.rows == 6 and len(w.paths) == 2 and read_raven(tmp_path / "rav")["n_windows"].eq(1).all()
    assert "6 window(s) in 2 raven file(s) in" in w.describe(tmp_path / "rav")
    with pytest.raises(ValueError, match="--detections-format must be one of csv, parquet, raven, audacity"):
        write_detections(WINDOWS, tmp_path / "x.csv", 0.5, fmt="excel")
    with pytest.raises(ValueError, match="give a folder"):
        write_detections(WINDOWS, tmp_path / "x.txt", 0.5, fmt="audacity")


# -- the command line ----------------------------------------------------------------------------------------------

from tests.engine_fixtures import engine_base, one_thread, tiny_run  # noqa: E402, F401


def _infer(run: dict, tmp_path: Path, *extra: object) -> tuple[int, str]:
    from rfcx.cli import app

    args = [
        "infer",
        "--batch",
        "--store",
        run["store"],
        "--runs",
        run["runs"],
        "--out",
        tmp_path / "sub.csv",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_infer_writes_events_raven_and_audacity(tiny_run, tmp_path: Path) -> None:
    code, text = _infer(tiny_run, tmp_path, "--detections", tmp_path / "ev.csv", "--threshold", "0.6")
    assert code == 0, text
    ev = pd.read_csv(tmp_path / "ev.csv")
    assert list(ev.columns) == EVENT_COLUMNS and len(ev)
    assert f"{len(ev)} event(s) in {tmp_path / 'ev.csv'}" in text
    assert (ev.peak_score > 0.6).all() and (ev.n_windows >= 1).all() and (ev.end_s > ev.start_s).all()
    from store import FeatureStore

    tp = FeatureStore.open(tiny_run["store"]).boxes("tp")
    bands = species_bands(tp, 24, 24_000)
    np.testing.assert_allclose(ev.low_hz, bands.low_hz.reindex(ev.species_id))

    code, text = _infer(
        tiny_run, tmp_path, "--detections", tmp_path / "raven", "--detections-format", "raven", "--threshold", "0.6"
    )
    assert code == 0, text
    assert sorted(p.name for p in (tmp_path / "raven").iterdir()) == [f"u{i}.Table.1.selections.txt" for i in range(3)]
    _same(read_raven(tmp_path / "raven"), ev)

    code, text = _infer(tiny_run, tmp_path, "--detections", tmp_path / "one.txt", "--detections-format", "audacity")
    assert code == 1 and "give a folder" in text and not (tmp_path / "one.txt").exists()  # refused before scoring

    thr = write_thresholds({int(ev.species_id.iloc[0]): 1.0}, tmp_path / "thr.csv")
    code, text = _infer(
        tiny_run, tmp_path, "--detections", tmp_path / "ev2.csv", "--threshold", "0.6", "--species-thresholds", thr
    )
    assert code == 0, text
    assert "thresholds: 1 species from" in text
    ev2 = pd.read_csv(tmp_path / "ev2.csv")
    assert ev.species_id.iloc[0] not in set(ev2.species_id) and len(ev2) < len(ev)


def test_target_precision_on_out_of_fold_scores(tiny_run, tmp_path: Path) -> None:
    """OOF window scores written as training writes them (predictions.npz of each member): the thresholds
    reach the precision on the TP/FP boxes' windows; from the command line, species with too few TP boxes (the
    tiny store has one per species) keep --threshold, and the thresholds file is written beside."""
    from rfcx.runs.directory import RunDir
    from rfcx.train.thresholds import oof_thresholds
    from tests.engine_fixtures import copy_run

    runs = copy_run(tiny_run["runs"], tmp_path / "runs")
    run = RunDir(runs)
    rng = np.random.default_rng(0)
    ids = [f"t{i}" for i in range(4)]
    per_fold = {0: ids[:2], 1: ids[2:]}
    for fold, mine in per_fold.items():
        scores = [rng.uniform(0, 0.3, (3, 24)).astype(np.float32) for _ in mine]
        for s in scores:  # windows 0-2 s, 0.5-2.5 s, 1-3 s (the tiny member's 2 s windows every 0.5 s)
            s[1, 3] = 0.9  # species 3 scores high in the middle window of every clip
        offsets = np.arange(len(mine) + 1) * 3
        path = run.round_dir(0) / "members" / f"{tiny_run['member']}_fold{fold}" / "predictions.npz"
        np.savez(
            path,
            oof_ids=np.array(mine),
            oof_offsets=offsets,
            oof_scores=np.concatenate(scores),
            test_ids=np.array([], dtype=str),
            test_offsets=np.zeros(1, dtype=np.int64),
            test_scores=np.zeros((0, 24), dtype=np.float32),
        )
    box = dict(songtype_id=1, f_min=1000.0, f_max=2000.0)
    tp = pd.DataFrame([dict(recording_id=r, species_id=3, t_min=1.0, t_max=2.5, **box) for r in ids[:3]])
    fp = pd.DataFrame([dict(recording_id="t3", species_id=3, t_min=0.0, t_max=0.5, **box)])  # window 0: low score
    thresholds, labelled = oof_thresholds(run, 0, tp, fp, 0.9, min_positives=3)
    assert len(labelled) == 4 and labelled.is_tp.sum() == 3
    assert labelled[labelled.is_tp].score.tolist() == pytest.approx([0.9] * 3)
    assert set(thresholds) == {3} and labelled[~labelled.is_tp].score.max() < thresholds[3] < 0.9

    code, text = _infer(
        {**tiny_run, "runs": runs}, tmp_path, "--detections", tmp_path / "ev.csv", "--target-precision", "0.9"
    )
    assert code == 0, text
    assert "thresholds: 0 species at precision >= 0.9 on round 0's out-of-fold scores of 4 TP / 4 FP boxes" in text
    assert "24 keep --threshold 0.5" in text
    assert (tmp_path / "ev.thresholds.csv").read_text() == "species_id,threshold\n"
    code, text = _infer(tiny_run, tmp_path, "--detections", tmp_path / "ev.csv", "--target-precision", "0.9")
    assert code == 1 and "no predictions.npz of round 0" in text


def test_detections_as_other_tools_and_reviewers_leave_them(tmp_path: Path) -> None:
    from engine.detection_formats import read_detections

    head = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)"
    # a Raven table a reviewer trimmed (no Mean Score, no Windows) and whose species they wrote as s3 / species 4
    trimmed = tmp_path / "rec1.Table.1.selections.txt"
    trimmed.write_text(
        f"{head}\tSpecies\tScore\n1\tSpectrogram 1\t1\t1.0\t4.0\t900\t2000\ts3\t0.9\n"
        "2\tSpectrogram 1\t1\t5.0\t9.0\t900\t2000\tspecies 4\t0.7\n"
    )
    events = read_detections(trimmed)
    assert events.recording_id.tolist() == ["rec1", "rec1"] and events.species_id.tolist() == [3, 4]
    assert events.peak_score.tolist() == [0.9, 0.7] and events.mean_score.tolist() == [0.9, 0.7]
    assert events.n_windows.tolist() == [0, 0] and list(events.columns) == EVENT_COLUMNS
    # a BirdNET-Analyzer table: Common Name / Species Code, Confidence, Begin Path, no Begin File
    birdnet = tmp_path / "x.BirdNET.selection.table.txt"
    birdnet.write_text(
        f"{head}\tCommon Name\tSpecies Code\tConfidence\tBegin Path\tFile Offset (s)\n"
        "1\tSpectrogram 1\t1\t0\t3\t0\t15000\ts5\ts5\t0.8123\t/data/site2/abc123.WAV\t0\n"
    )
    got = read_detections(birdnet).iloc[0]
    assert (got.recording_id, got.species_id, got.peak_score) == ("abc123", 5, 0.8123)
    # its real species names are named with their file, line and column
    birdnet.write_text(
        f"{head}\tCommon Name\tConfidence\n1\tSpectrogram 1\t1\t0\t3\t0\t15000\ts5\t0.8\n"
        "2\tSpectrogram 1\t1\t3\t6\t0\t15000\tPuerto Rican Tody\t0.7\n"
    )
    with pytest.raises(ValueError, match=r"x.BirdNET.selection.table.txt: line 3, column Common Name: 'Puerto Rican"):
        read_detections(birdnet)
    broken = tmp_path / "b.Table.1.selections.txt"
    broken.write_text(f"{head}\tSpecies\tScore\n1\tSpectrogram 1\t1\tsoon\t4.0\t900\t2000\t3\t0.9\n")
    with pytest.raises(ValueError, match=r"line 2, column Begin Time \(s\): 'soon' is not a number"):
        read_detections(broken)
    # Audacity labels with the reviewer's words around them
    labels = tmp_path / "rec2.txt"
    labels.write_text(
        "1.000000\t3.000000\tok: species 3 0.912 checked by Ana\n\\\t900.0\t2000.0\n4.000000\t5.000000\ts7 maybe\n"
    )
    events = read_detections(labels, "audacity")
    assert events.species_id.tolist() == [3, 7] and events.peak_score.iloc[0] == 0.912
    assert np.isnan(events.peak_score.iloc[1]) and events.low_hz.iloc[0] == 900.0
    labels.write_text("1.0\t3.0\ta frog\n")
    with pytest.raises(ValueError, match=r"rec2.txt: line 1, label: 'a frog' names no species"):
        read_detections(labels, "audacity")
