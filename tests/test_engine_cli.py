"""``rfcx infer`` (a store's split with --batch, or audio files), ``rfcx export`` and ``rfcx evaluate`` from the
command line, including every kind of bad input: clear message, non-zero exit, no output left half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.postprocess import apply_prior, prior_from_boxes
from rfcx.cli import app
from rfcx.runs.directory import RunDir
from rfcx.scoring.metrics import lwlrap, per_class_lwlrap
from store import FeatureStore
from tests.engine_fixtures import copy_run, engine_base, lively, make_run, one_thread, tiny, tiny_run, tiny_store  # noqa: F401

COLS = [f"s{c}" for c in range(24)]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def _infer(run: dict, out: Path, *extra: str) -> tuple[int, str]:
    return _run(
        "infer",
        "--batch",
        "--store",
        run["store"],
        "--runs",
        run["runs"],
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    )


def test_infer_batch_writes_the_submission(tiny_run, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "submission.csv"
    det = tmp_path / "detections.csv"
    code, text = _infer(tiny_run, out, "--detections", det, "--detections-level", "windows", "--threshold", "0.9")
    assert code == 0, text
    assert "round 0: 2 torchscript model(s), mode exact on cpu: scored 3 clips" in text
    sample = pd.read_csv(tiny_run["data"] / "sample_submission.csv")
    sub = pd.read_csv(out)
    assert list(sub.columns) == list(sample.columns) == ["recording_id", *COLS]
    assert sub.recording_id.tolist() == sample.recording_id.tolist() == ["u2", "u1", "u0"]  # its order, not sorted
    assert sub[COLS].to_numpy().min() >= 0 and sub[COLS].to_numpy().max() <= 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]  # parts and temp files are gone
    d = pd.read_csv(det)
    assert list(d.columns) == ["recording_id", "start_s", "end_s", "species_id", "score"]
    assert len(d) and (d.score > 0.9).all() and set(d.recording_id) <= {"u0", "u1", "u2"}
    assert np.allclose(d.end_s - d.start_s, 188 / 93.75)
    for rid, g in d.groupby("recording_id"):  # a detection's species scores at least that high for the clip
        assert (
            sub.set_index("recording_id").loc[rid, [f"s{s}" for s in g.species_id]].to_numpy()
            >= g.score.to_numpy() - 1e-5
        ).all()

    out2 = tmp_path / "sub2.csv"
    code, text = _infer(tiny_run, out2, "--format", "export", "--mode", "fcn", "--batch-size", "7")
    assert code == 0, text
    assert (
        "warning: --mode fcn approximates --mode exact, and these windows span only 2 feature position(s)" in text
    )  # the tiny models' 2 s windows pooled 4x: fcn is not for them
    assert "fcn approximates" not in _infer(tiny_run, tmp_path / "sub4.csv")[1]
    code, text = _infer(tiny_run, tmp_path / "sub3.csv", "--mode", "fcn")
    assert code == 0, text
    # the same models as torch.export programs and as TorchScript: equal but for float rounding (1.4e-5 measured in
    # session 28 whatever the batch size; 4.2e-4 once, on a fixture trained under load)
    np.testing.assert_allclose(pd.read_csv(out2)[COLS], pd.read_csv(tmp_path / "sub3.csv")[COLS], atol=1e-3)


def test_infer_prior_postprocess(tiny_run, tmp_path: Path) -> None:
    code, text = _infer(tiny_run, tmp_path / "plain.csv")
    assert code == 0, text
    code, text = _infer(tiny_run, tmp_path / "prior.csv", "--postprocess", "prior")
    assert code == 0, text
    plain, post = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "prior.csv")
    tp = FeatureStore.open(tiny_run["store"]).boxes("tp")
    prior = prior_from_boxes(tp.recording_id, tp.species_id, 24)
    np.testing.assert_allclose(post[COLS], apply_prior(plain[COLS].to_numpy(), prior), atol=2e-6)
    labels = tmp_path / "labels.csv"
    pd.DataFrame([["a"] + [1] * 3 + [0] * 21, ["b"] + [0] * 24], columns=["recording_id", *COLS]).to_csv(
        labels, index=False
    )
    code, text = _infer(tiny_run, tmp_path / "prior2.csv", "--postprocess", "prior", "--prior", labels)
    assert code == 0, text


def test_infer_audio_files_equals_store(tiny_run, tmp_path: Path) -> None:
    code, text = _infer(tiny_run, tmp_path / "store.csv")
    assert code == 0, text
    test_dir = tiny_run["data"] / "test"
    out = tmp_path / "files.csv"
    code, text = _run(
        "infer",
        test_dir / "u1.flac",
        test_dir,
        "--runs",
        tiny_run["runs"],
        "--out",
        out,
        "--device",
        "cpu",
        "--no-progress",
    )
    assert code == 1 and "two files share the recording id 'u1'" in text  # u1 given twice
    code, text = _run("infer", test_dir, "--runs", tiny_run["runs"], "--out", out, "--device", "cpu", "--no-progress")
    assert code == 0, text
    files, store = pd.read_csv(out), pd.read_csv(tmp_path / "store.csv").set_index("recording_id")
    assert files.recording_id.tolist() == ["u0", "u1", "u2"]  # sorted: there is no sample submission
    np.testing.assert_allclose(files.set_index("recording_id")[COLS], store.loc[files.recording_id, COLS], atol=1e-5)

    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"this is not audio")
    code, text = _run("infer", bad, "--runs", tiny_run["runs"], "--out", tmp_path / "bad.csv", "--no-progress")
    assert code == 1 and "bad.flac: not a readable audio file" in text and not (tmp_path / "bad.csv").exists()


def test_infer_bad_input(tiny_run, tiny_store, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"

    def fails(expect: str, *args: str, run: dict = tiny_run) -> None:
        code, text = _infer(run, out, *args)
        assert code == 1 and "error:" in text and expect in text, text
        assert not out.exists() and not list(tmp_path.glob(".out.csv*"))

    fails("give either --batch", tiny_store["data"] / "test")
    fails("--mode must be one of exact, fcn", "--mode", "fast")
    fails("no split 'valid' (has: train, test)", "--split", "valid")
    fails("missing.zarr: feature store not found", "--store", tmp_path / "missing.zarr")
    fails("no such run directory", "--runs", tmp_path / "nowhere")

    # no complete round
    incomplete = copy_run(tiny_run["runs"], tmp_path / "incomplete")
    RunDir(incomplete).complete_marker(0).unlink()
    fails("no complete round to infer with (rounds present: 0", "--runs", incomplete)
    fails("round 0 is not complete", "--runs", incomplete, "--round", "0")

    # exported files missing, or corrupt
    broken = copy_run(tiny_run["runs"], tmp_path / "broken")
    models = RunDir(broken).models_dir(0)
    for f in models.glob("*.pt2"):
        f.unlink()
    fails("no exported export models (*.pt2); run `rfcx export --round 0", "--runs", broken, "--format", "export")
    victim = models / "test_efficientnet-2s_fold1.ts"
    victim.write_bytes(victim.read_bytes()[:1000])
    fails(f"{victim}: not a TorchScript archive", "--runs", broken)

    # the store's features differ from the model's
    cfg, spec = tiny()
    other = FeatureStore.open(tiny_store["store"]).params.to_dict() | {"f_max": 16000.0}
    from rfcx.train.models import build_classifier

    mismatched = make_run(
        tmp_path / "mismatch", other, [lively(build_classifier(cfg, spec), 0)], formats=("torchscript",)
    )
    fails("the model was trained on other log-mel features than store", "--runs", mismatched.root)
    fails("f_max: 16000.0 (model) vs 24000.0 (store", "--runs", mismatched.root)

    # a test clip rejected at build time: the sample submission lists a recording the store lacks
    from store import build_store
    from tests.conftest import make_dataset

    data = make_dataset(tmp_path / "gap", n_train=2, n_test=3, seconds=2.0)
    (data / "test" / "u0.flac").write_bytes(b"not audio")
    build_store(data, tmp_path / "gap.zarr", backend="torch", device="cpu", progress=False)
    fails("1 recording(s) of the sample submission are not in split 'test' (e.g. u0", "--store", tmp_path / "gap.zarr")

    # an output that cannot be written
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, text = _infer(tiny_run, blocker / "sub.csv")
    assert code == 1 and "a_file/sub.csv: cannot be written" in text
    code, text = _infer(tiny_run, tmp_path)
    assert code == 1 and "is a folder, not a file" in text


def test_export_command(tiny_run, tmp_path: Path) -> None:
    runs = copy_run(tiny_run["runs"], tmp_path / "runs")
    shutil.rmtree(RunDir(runs).models_dir(0))
    code, text = _run("export", "--round", "0", "--runs", runs, "--format", "torchscript")
    assert code == 0, text
    assert sorted(p.name for p in RunDir(runs).models_dir(0).iterdir()) == [
        "test_efficientnet-2s_fold0.ts",
        "test_efficientnet-2s_fold1.ts",
    ]
    code, text = _run("export", "--round", "3", "--runs", runs)
    assert code == 1 and "round3: no such round (rounds in" in text
    code, text = _run("export", "--round", "0", "--runs", runs, "--format", "onnx")
    assert code == 1 and "--format must be torchscript, export or both" in text


def test_evaluate(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(30)]
    truth = (rng.random((30, 24)) < 0.1).astype(int)
    truth[0, 3] = 1
    scores = np.clip(truth * 0.5 + rng.random((30, 24)) * 0.6, 0, 1)
    pd.DataFrame(truth, columns=COLS).assign(recording_id=ids)[["recording_id", *COLS]].to_csv(
        tmp_path / "truth.csv", index=False
    )
    pred = pd.DataFrame(scores, columns=COLS).assign(recording_id=ids)[["recording_id", *COLS]]
    pd.concat([pred.iloc[::-1], pred.iloc[:1].assign(recording_id="extra")]).to_csv(tmp_path / "pred.csv", index=False)
    code, text = _run("evaluate", "--pred", tmp_path / "pred.csv", "--truth", tmp_path / "truth.csv")
    assert code == 0, text
    assert f"LWLRAP {lwlrap(truth, scores):.4f} on 30 clips (1 predicted clips without truth ignored)" in text
    per_class, weight = per_class_lwlrap(truth, scores)
    lines = text.splitlines()
    assert lines[1].split() == ["species", "positives", "weight", "lwlrap"] and len(lines) == 2 + 24
    assert lines[2 + 3].split() == ["3", str(truth[:, 3].sum()), f"{weight[3]:.3f}", f"{per_class[3]:.4f}"]

    pred.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    code, text = _run("evaluate", "--pred", tmp_path / "short.csv", "--truth", tmp_path / "truth.csv")
    assert code == 1 and "short.csv: no prediction for 1 clip(s)" in text and "r0" in text
    code, text = _run("evaluate", "--pred", tmp_path / "nope.csv", "--truth", tmp_path / "truth.csv")
    assert code == 1 and "nope.csv: prediction file not found" in text
    (tmp_path / "cols.csv").write_text("recording_id,a,b\nr0,1,2\n")
    code, text = _run("evaluate", "--pred", tmp_path / "cols.csv", "--truth", tmp_path / "truth.csv")
    assert code == 1 and "expected columns recording_id,s0..sN" in text


@pytest.mark.parametrize("suffix", ["csv"])
def test_detections_threshold_edges(suffix: str, tmp_path: Path) -> None:
    from engine.outputs import detections, submission_frame

    windows = pd.DataFrame(
        {
            "recording_id": ["a", "a", "b"],
            "window_s": 4.0,
            "start_s": [0.0, 0.5, 0.0],
            "end_s": [4.0, 4.5, 4.0],
            **{c: [0.1, 0.6, 0.95] if c == "s5" else [0.0] * 3 for c in COLS},
        }
    )
    d = detections(windows, 0.5)
    assert d[["recording_id", "start_s", "species_id"]].values.tolist() == [["a", 0.5, 5], ["b", 0.0, 5]]
    assert detections(windows, 0.99).empty
    clips = pd.DataFrame({"recording_id": ["a", "b"], **{c: [0.0, 1.0] for c in COLS}})
    assert submission_frame(clips).recording_id.tolist() == ["a", "b"]
    assert submission_frame(clips, ["b", "a"]).recording_id.tolist() == ["b", "a"]
    with pytest.raises(ValueError, match="1 recording\\(s\\) of the sample submission have no scores \\(e.g. c\\)"):
        submission_frame(clips, ["b", "a", "c"])


def test_infer_and_export_default_to_the_best_round(tiny_run, tmp_path: Path) -> None:
    """A run whose round 1 is worse than round 0 (``--until-converged`` stops after completing it): ``rfcx infer``
    and ``rfcx export`` without --round use round 0 (best_round.json), and say why; a run without the file (older
    runs) falls back to the latest complete round."""
    from rfcx.train.round_metrics import record_best_round
    from store.atomic import write_json_atomic

    runs = copy_run(tiny_run["runs"], tmp_path / "runs")
    mel = FeatureStore.open(tiny_run["store"]).params.to_dict()
    from rfcx.train.models import build_classifier

    cfg, spec = tiny()
    make_run(
        runs, mel, [lively(build_classifier(cfg, spec), seed=9 + f) for f in range(2)], k=1, formats=("torchscript",)
    )  # new nets: the session's tiny_run nets stay as they are
    run = RunDir(runs)
    write_json_atomic(run.metrics(0), {"round": 0, "oof_lwlrap": 0.40})
    write_json_atomic(run.metrics(1), {"round": 1, "oof_lwlrap": 0.33})

    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "old.csv", "--round", "best")  # no best_round.json
    assert code == 0, text
    assert "round 1: the latest complete round (the run has no best_round.json" in text
    assert "round 1: 2 torchscript model(s)" in text

    best = record_best_round(run)
    assert best == {"round": 0, "signal": "oof_lwlrap", "value": 0.40, "rounds": {"0": 0.40, "1": 0.33}}
    assert json.loads(run.best_round_file.read_text()) == best
    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "best.csv", "--round", "best")
    assert code == 0, text
    assert "round 0: the run's best round (held-out oof_lwlrap 0.4000; round 1: 0.3300, best_round.json)" in text
    assert "round 0: 2 torchscript model(s)" in text
    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "r0.csv", "--round", "0")
    assert code == 0 and "best round" not in text
    assert (tmp_path / "best.csv").read_text() == (tmp_path / "r0.csv").read_text()

    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "default.csv")  # the default: the best round
    assert code == 0 and "round 0: the run's best round" in text, text
    assert (tmp_path / "default.csv").read_text() == (tmp_path / "r0.csv").read_text()
    # --round all: every complete round's models together (the rounds' ensemble), clip scores the mean of the
    # rounds' own (each round has as many members)
    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "all.csv", "--round", "all")
    assert code == 0, text
    assert (
        "rounds 0, 1: every complete round's models together (the rounds' ensemble; best_round.json names round 0)"
        in text
        and "rounds 0-1: 4 torchscript model(s)" in text
    )
    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "r1.csv", "--round", "1")
    assert code == 0, text
    frames = [pd.read_csv(tmp_path / f"{n}.csv").set_index("recording_id") for n in ("all", "r0", "r1")]
    np.testing.assert_allclose(frames[0].to_numpy(), (frames[1].to_numpy() + frames[2].to_numpy()) / 2, atol=1e-5)
    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "bad.csv", "--round", "last")
    assert code != 0 and "--round 'last': give a round number (0, 1, ...), 'best' or 'all'" in text

    code, text = _run("export", "--runs", runs, "--format", "torchscript", "--force")
    assert code == 0, text
    assert "round 0: the run's best round" in text and f"wrote {run.models_dir(0)}" in text
    assert "round1" not in text

    run.complete_marker(0).unlink()  # a best round that is not complete (half-synced): the latest complete one
    code, text = _infer({**tiny_run, "runs": runs}, tmp_path / "half.csv", "--round", "best")
    assert code == 0 and "round 1: the latest complete round (best_round.json names round 0, which is not" in text
