"""Real data dropped in, on the inference side (issue 11, items 2 and 5): `rfcx infer` counts the rows it writes,
goes on past audio files it cannot read (naming each, summing up; --strict stops), prints one line for a damaged
store chunk; `rfcx export` tells the files it wrote from those it left as they were."""

from __future__ import annotations

import shutil

import pandas as pd
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.runs.directory import RunDir
from store import build_store
from tests.conftest import make_dataset
from tests.engine_fixtures import copy_run, engine_base, one_thread, tiny_run, tiny_store  # noqa: F401


def _run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.output  # stdout and stderr, as a terminal shows them


def test_a_test_clip_absent_from_the_sample_submission_is_not_counted_as_a_row(tiny_run, tmp_path) -> None:
    data = make_dataset(tmp_path / "data", n_train=1, n_test=3, seconds=3.0)
    (data / "sample_submission.csv").write_text(
        "recording_id,"
        + ",".join(f"s{k}" for k in range(24))
        + "\n"
        + "".join(f"{rid}," + ",".join("0" for _ in range(24)) + "\n" for rid in ("u1", "u0"))
    )
    build_store(data, tmp_path / "s.zarr", backend="torch", device="cpu", progress=False)
    out = tmp_path / "sub.csv"
    code, text = _run(
        "infer",
        "--batch",
        "--store",
        tmp_path / "s.zarr",
        "--runs",
        tiny_run["runs"],
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 0, text
    assert pd.read_csv(out).recording_id.tolist() == ["u1", "u0"]
    assert "scored 3 clips" in text and f"wrote {out} (2 rows)" in text, text
    assert "note: 1 scored clip(s) of split 'test' are not in the sample submission, so not in sub.csv: u2" in text, (
        text
    )


def test_infer_files_goes_on_past_bad_files_and_sums_up(tiny_run, tmp_path) -> None:
    folder = tmp_path / "audio"
    shutil.copytree(tiny_run["data"] / "test", folder)
    (folder / "a_bad.flac").write_text("these are not audio\n" * 20)  # its header does not read
    good = (folder / "u0.flac").read_bytes()
    (folder / "trunc.flac").write_bytes(good[: len(good) // 2])  # its header reads; its audio does not decode
    out = tmp_path / "files.csv"
    code, text = _run("infer", folder, "--runs", tiny_run["runs"], "--out", out, "--device", "cpu", "--no-progress")
    assert code == 0, text
    assert f"skipped {folder / 'a_bad.flac'}: not a readable audio file" in text
    assert f"skipped {folder / 'trunc.flac'}: " in text
    assert "skipped 2 of 5 file(s) that cannot be read (each named above; --strict stops at the first)" in text
    assert "scored 3 clips" in text and f"wrote {out} (3 rows)" in text
    assert pd.read_csv(out).recording_id.tolist() == ["u0", "u1", "u2"]

    strict = tmp_path / "strict.csv"
    code, text = _run(
        "infer", folder, "--runs", tiny_run["runs"], "--out", strict, "--device", "cpu", "--no-progress", "--strict"
    )
    assert code == 2 and f"error: {folder / 'a_bad.flac'}: not a readable audio file" in text, text
    assert "--strict: stopped at the first file that cannot be read" in text and not strict.exists()
    (folder / "a_bad.flac").unlink()
    code, text = _run(
        "infer", folder, "--runs", tiny_run["runs"], "--out", strict, "--device", "cpu", "--no-progress", "--strict"
    )
    assert code == 2 and f"error: {folder / 'trunc.flac'}: " in text and "--strict: stopped" in text, text
    assert not strict.exists()


def test_infer_batch_on_a_damaged_store_prints_one_line(tiny_run, tmp_path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_run["store"], store)
    chunk = store / "test" / "mel" / "u1" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x5A
    chunk.write_bytes(bytes(data))
    code, text = _run(
        "infer",
        "--batch",
        "--store",
        store,
        "--runs",
        tiny_run["runs"],
        "--out",
        tmp_path / "o.csv",
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 1 and "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if "error:" in ln]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: {store}: damaged chunk 0 of clip u1 (split test, frames 0-281): checksum mismatch"
    ), text


def test_export_tells_written_from_up_to_date(tiny_run, tmp_path) -> None:
    runs = copy_run(tiny_run["runs"], tmp_path / "runs")
    models = RunDir(runs).models_dir(0)
    shutil.rmtree(models)
    code, text = _run("export", "--round", "0", "--runs", runs, "--format", "torchscript")
    assert code == 0 and text.count("wrote ") == 2 and "up to date" not in text, text
    (models / "test_efficientnet-2s_fold1.ts").unlink()
    code, text = _run("export", "--round", "0", "--runs", runs, "--format", "torchscript")
    assert code == 0, text
    assert f"wrote {models / 'test_efficientnet-2s_fold1.ts'}" in text and text.count("wrote ") == 1, text
    assert (
        f"up to date {models / 'test_efficientnet-2s_fold0.ts'} (newer than its checkpoint; --force writes it again)"
    ) in text
