"""A tiny round 0 -> 1 run end to end, resume after an interruption, and the run directory's guards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import rfcx.train.member as train_mod
from rfcx.cli import app
from rfcx.runs.directory import RunDir
from rfcx.scoring.yardsticks import round_table
from rfcx.train import teachers
from rfcx.train.config import get_config
from rfcx.train.pseudo import read_pseudo_labels
from rfcx.train.rounds import train_rounds
from store import build_store
from tests.conftest import make_synth_store


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> str:
    return str(make_synth_store(tmp_path_factory.mktemp("tiny"), n_train=8, n_test=3, seconds=10.0))


def _cfg(**changes):
    return get_config("tiny").replace(**changes)


def test_round_0_to_1_end_to_end(tiny_store, tmp_path) -> None:
    runs = tmp_path / "runs"
    cfg = _cfg(pseudo_epochs=2)  # round 1 trains 2 epochs, round 0 the config's 1
    results = train_rounds(tiny_store, runs, cfg, until_round=1, progress=False, echo=lambda *_: None)
    assert [m["round"] for m in results] == [0, 1]
    run = RunDir(runs)
    for k in (0, 1):
        assert run.is_complete(k) and (run.round_dir(k) / "loss.png").is_file()
        m = json.loads(run.metrics(k).read_text())
        assert 0 <= m["oof_lwlrap"] <= 1 and 0 <= m["test_lwlrap"] <= 1 and 0 <= m["oof_box_auc"] <= 1
        assert set(m["freq_channel_check"]) == {"loss", "loss_zeroed_freq_channel"}
        assert set(m["members"]) == {"test_efficientnet-2s_fold0", "test_efficientnet-2s_fold1"}
        assert all(len(history) == (1 if k == 0 else 2) for history in m["members"].values())
    assert (runs / "lwlrap.png").is_file()
    # rounds 0-1 together (rfcx infer --round all): the mean of every member's clip scores over both rounds
    from rfcx.runs.predictions import load_predictions
    from rfcx.scoring.metrics import lwlrap
    from store import FeatureStore

    truth = FeatureStore.open(tiny_store).truth("test")
    clips = {}
    for k in (0, 1):
        for fold in range(2):
            for rid, s in load_predictions(run.predictions(k, _cfg().backbones[0], fold))[1].items():
                clips.setdefault(rid, []).append(s.max(axis=0))
    ids = list(truth.index)
    expected = lwlrap(truth.loc[ids].to_numpy(), np.stack([np.mean(clips[r], axis=0) for r in ids]))
    assert json.loads(run.metrics(1).read_text())["test_lwlrap_rounds"] == pytest.approx(expected)
    assert "test_lwlrap_rounds" not in json.loads(run.metrics(0).read_text())
    assert sorted(p.name for p in run.models_dir(1).iterdir()) == [
        "test_efficientnet-2s_fold0.pt2",
        "test_efficientnet-2s_fold0.ts",
        "test_efficientnet-2s_fold1.pt2",
        "test_efficientnet-2s_fold1.ts",
    ]
    pseudo = read_pseudo_labels(run.pseudo_labels(0))
    assert len(pseudo.ids) == 8 and pseudo.window_seconds == 2.0 and pseudo.hop_seconds == 0.5
    assert all(len(pseudo.clip(r)) == 17 for r in pseudo.ids)  # (10 s - 2 s) / 0.5 s + 1 windows
    assert ((pseudo.scores >= 0) & (pseudo.scores <= 1)).all()

    ckpt = run.checkpoint(1, _cfg().backbones[0], 0)
    before = ckpt.stat().st_mtime_ns
    again = train_rounds(tiny_store, runs, cfg, until_round=1, progress=False, echo=lambda *_: None, export_formats=())
    assert ckpt.stat().st_mtime_ns == before and again[1]["test_lwlrap"] == results[1]["test_lwlrap"]


def test_equal_compute_trains_round_0_as_long_as_the_pseudo_label_rounds(tiny_store, tmp_path) -> None:
    runs = tmp_path / "runs"
    cfg = _cfg(pseudo_epochs=2)  # round 1 trains 2 epochs, round 0 1
    train_rounds(tiny_store, runs, cfg, until_round=1, progress=False, echo=lambda *_: None, export_formats=())
    round1 = json.loads(RunDir(runs).metrics(1).read_text())
    assert (round1["epochs"], round1["steps"]) == (2, 4) and "pseudo_gain" not in round1
    said: list[str] = []
    res = train_rounds(tiny_store, runs, cfg, progress=False, echo=said.append, export_formats=(), equal_compute=True)
    assert [m["round"] for m in res] == [0]
    equal = RunDir(runs / "equal-compute")
    assert equal.is_complete(0) and json.loads(equal.config_file.read_text())["epochs"] == 2
    m = json.loads(equal.metrics(0).read_text())
    assert (m["epochs"], m["steps"]) == (2, 4)
    assert all(len(history) == 2 for history in m["members"].values())
    row = round_table(runs)[1]
    assert row["equal_compute"] == m["test_lwlrap"]
    assert row["pseudo_gain"] == pytest.approx(round1["test_lwlrap"] - m["test_lwlrap"])
    # another recipe than the run's is refused, naming the difference; nothing is written
    with pytest.raises(ValueError, match="lr: 0.001 \\(run\\) vs 0.002 \\(asked\\)"):
        train_rounds(tiny_store, tmp_path / "runs", cfg.replace(lr=2e-3), progress=False, equal_compute=True)
    # where round 0 already trains as long, there is nothing to train
    said.clear()
    assert train_rounds(tiny_store, tmp_path / "r2", _cfg(), progress=False, echo=said.append, equal_compute=True) == []
    assert "nothing to train" in said[0] and not (tmp_path / "r2").exists()
    with pytest.raises(ValueError, match="--oracle and --equal-compute"):
        train_rounds(tiny_store, runs, cfg, progress=False, oracle=True, equal_compute=True)


def test_resume_after_interruption_repeats_the_same_training(tiny_store, tmp_path, monkeypatch) -> None:
    cfg = _cfg(epochs=3, folds=2)
    full = tmp_path / "full"
    train_rounds(tiny_store, full, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())

    real_save, calls = train_mod._save, {"n": 0}

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 2:  # after the second epoch of fold 0
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save", save_then_die)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_rounds(tiny_store, cut, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    spec = cfg.backbones[0]
    assert torch.load(RunDir(cut).checkpoint(0, spec, 0), weights_only=False)["epoch"] == 2
    monkeypatch.setattr(train_mod, "_save", real_save)
    train_rounds(tiny_store, cut, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    a = torch.load(RunDir(full).checkpoint(0, spec, 0), weights_only=False)
    b = torch.load(RunDir(cut).checkpoint(0, spec, 0), weights_only=False)
    assert b["complete"] and len(b["history"]) == 3
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value)


def test_run_directory_of_another_config_is_refused(tiny_store, tmp_path) -> None:
    runs = tmp_path / "runs"
    train_rounds(
        tiny_store, runs, _cfg(batches_per_epoch=1), 0, progress=False, echo=lambda *_: None, export_formats=()
    )
    with pytest.raises(ValueError, match=r"another config \(batches_per_epoch: 1 \(run\) vs 2 \(asked\)\).*new --runs"):
        train_rounds(tiny_store, runs, _cfg(), 0, progress=False, echo=lambda *_: None, export_formats=())
    # how a run executes is not what it learns: it resumes under other values of these
    again = _cfg(batches_per_epoch=1, num_workers=1, cpu_processes=1, store_cache_mb=0)
    assert train_rounds(tiny_store, runs, again, 0, progress=False, echo=lambda *_: None, export_formats=())


def test_bad_inputs(tiny_store, tmp_path, dataset) -> None:
    with pytest.raises(FileNotFoundError, match="feature store not found"):
        train_rounds(str(tmp_path / "none.zarr"), tmp_path / "r", _cfg(), 0, progress=False)
    (dataset / "train_tp.csv").unlink()
    (dataset / "train_fp.csv").unlink()
    build_store(dataset, tmp_path / "nobox.zarr", backend="torch", device="cpu", progress=False)
    with pytest.raises(ValueError, match="no TP/FP boxes"):
        train_rounds(str(tmp_path / "nobox.zarr"), tmp_path / "r", _cfg(), 0, progress=False)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            "--store",
            tiny_store,
            "--runs",
            str(tmp_path / "r2"),
            "--config",
            "tiny",
            "--set",
            "backbones=[{backbone: resnet_51, crop_seconds: 2.0}]",
        ],
    )
    assert res.exit_code == 1 and "resnet_51" in res.output and "not a timm model" in res.output
    res = runner.invoke(
        app,
        [
            "train",
            "--store",
            tiny_store,
            "--runs",
            str(tmp_path / "r2"),
            "--config",
            "tiny",
            "--set",
            "learning_rate=0.1",
        ],
    )
    assert res.exit_code == 1 and "unknown config field 'learning_rate'" in res.output
    res = runner.invoke(app, ["train", "--store", tiny_store, "--runs", str(tmp_path / "r2"), "--config", "nope"])
    assert res.exit_code == 1 and "unknown config 'nope'" in res.output


def test_runs_that_cannot_be_a_run_directory_are_refused_before_anything_is_written(tiny_store, tmp_path) -> None:
    runner = CliRunner()
    (tmp_path / "afile").write_text("notes")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    for runs, needle in (
        (tmp_path / "afile", "is a file; --runs takes a folder"),
        (other, "a folder holding other files than a training run (a.jpg)"),
    ):
        for extra in ([], ["--oracle"], ["--equal-compute", "--set", "pseudo_epochs=2"]):
            res = runner.invoke(app, ["train", "--store", tiny_store, "--runs", str(runs), "--config", "tiny", *extra])
            assert res.exit_code == 1 and needle in res.output and "Traceback" not in res.output, res.output
    assert sorted(p.name for p in other.iterdir()) == ["a.jpg"] and (tmp_path / "afile").read_text() == "notes"
    # a folder prepared for a run (the oracle linked in, as benchmarks/quality_set.sh does) is taken
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "oracle").symlink_to(tmp_path / "elsewhere")
    train_rounds(tiny_store, prepared, _cfg(), progress=False, echo=lambda *_: None, export_formats=())
    assert RunDir(prepared).is_complete(0)


def test_cli_train_prints_lwlrap_per_round(tiny_store, tmp_path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--round",
            "0",
            "--store",
            tiny_store,
            "--runs",
            str(tmp_path / "r"),
            "--config",
            "tiny",
            "--set",
            "batches_per_epoch=1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "round 0: OOF LWLRAP" in res.output and "test LWLRAP" in res.output


def test_optimizer_field_is_honoured(tiny_store, tmp_path) -> None:
    """``optimizer = "sgd"`` trains with SGD (momentum 0.9, Nesterov); the default is AdamW."""
    from rfcx.train.member import make_optimizer

    cfg = _cfg(optimizer="sgd", batches_per_epoch=1)
    runs = tmp_path / "runs"
    train_rounds(tiny_store, runs, cfg, 0, progress=False, echo=lambda *_: None, export_formats=())
    ckpt = torch.load(RunDir(runs).checkpoint(0, cfg.backbones[0], 0), weights_only=False)
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and group["nesterov"] is True and group["lr"] == pytest.approx(cfg.lr, rel=1)
    assert "betas" not in group
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(_cfg(), params), torch.optim.AdamW)
    assert isinstance(make_optimizer(cfg, params), torch.optim.SGD)
    with pytest.raises(ValueError, match=r"optimizer = 'adam' is not one of \['adamw', 'sgd'\]"):
        _cfg(optimizer="adam")


def test_round_1_resumes_after_clips_were_added_to_the_store(tiny_store, tmp_path) -> None:
    """Round 0's pseudo labels lack a clip (added to the store after round 0): round 1 trains without it and
    says so once, instead of a bare KeyError."""
    from rfcx.train.pseudo import write_pseudo_labels
    from store import FeatureStore
    from store.atomic import write_json_atomic

    cfg = _cfg(batches_per_epoch=1)
    run = RunDir(tmp_path / "runs")
    ids = FeatureStore.open(tiny_store).ids("train")
    rng = np.random.default_rng(0)
    write_pseudo_labels(
        run.pseudo_labels(0), {rid: rng.random((17, 24), dtype=np.float32) for rid in ids[2:]}, 2.0, 0.5
    )  # as if ids[:2] came later
    write_json_atomic(run.metrics(0), {"round": 0, "oof_lwlrap": 0.5, "oof_box_auc": 0.5, "test_lwlrap": None})
    write_json_atomic(run.complete_marker(0), {"round": 0})
    echoed = []
    results = train_rounds(tiny_store, run.root, cfg, 1, progress=False, echo=echoed.append, export_formats=())
    assert results[1]["round"] == 1 and run.is_complete(1)
    said = [e for e in echoed if "no pseudo labels" in e]
    assert len(said) == 1 and said[0].startswith("round 1: 2 train clip(s) have no pseudo labels from round 0")
    assert f"{ids[0]}, {ids[1]})" in said[0]


def test_until_converged_records_the_better_round(tiny_store, tmp_path) -> None:
    """``--until-converged`` stops after completing a worse round; best_round.json keeps the better one."""
    from store.atomic import write_json_atomic

    run = RunDir(tmp_path / "runs")
    for k, value in ((0, 0.30), (1, 0.45), (2, 0.41)):  # complete rounds, skipped by train_rounds
        write_json_atomic(run.metrics(k), {"round": k, "oof_lwlrap": value, "oof_box_auc": 0.5, "test_lwlrap": None})
        write_json_atomic(run.complete_marker(k), {"round": k})
    echoed = []
    results = train_rounds(tiny_store, run.root, _cfg(), 3, progress=False, echo=echoed.append, until_converged=True)
    assert [m["round"] for m in results] == [0, 1, 2]
    assert run.best_round() == {
        "round": 1,
        "signal": "oof_lwlrap",
        "value": 0.45,
        "rounds": {"0": 0.30, "1": 0.45, "2": 0.41},
    }
    assert "stopping (--until-converged); best round: 1 (oof_lwlrap 0.4500)" in echoed[-1]


def test_ensemble_teacher_labels_every_clip_with_every_member(tiny_store, tmp_path) -> None:
    """pseudo_teacher = "ensemble": each member also scores the clips it trained on, and a clip's soft labels are
    the mean over all members (out-of-fold metrics still come from the held-out member only)."""
    from rfcx.runs.predictions import load_infold, load_predictions

    cfg = _cfg(pseudo_teacher="ensemble")
    runs = tmp_path / "runs"
    train_rounds(tiny_store, runs, cfg, until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    run = RunDir(runs)
    spec = cfg.backbones[0]
    folds = json.loads((runs / "folds.json").read_text())
    per_member = []
    for fold in range(cfg.folds):
        oof, _ = load_predictions(run.predictions(0, spec, fold))
        infold = load_infold(run.predictions(0, spec, fold))
        assert set(oof) == {r for r, f in folds.items() if f == fold}
        assert set(infold) == {r for r, f in folds.items() if f != fold}
        per_member.append({**oof, **infold})
    pseudo = read_pseudo_labels(run.pseudo_labels(0))
    for rid in pseudo.ids:
        np.testing.assert_allclose(pseudo.clip(rid), np.mean([m[rid] for m in per_member], axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="pseudo_teacher"):
        _cfg(pseudo_teacher="teacher")


@pytest.mark.parametrize("combine", ["max", "mean", "select"])
def test_template_teacher_raises_the_next_rounds_labels(tiny_store, tmp_path, monkeypatch, combine) -> None:
    """pseudo_templates: round 1 learns from the larger of the network's and the template teacher's label of each
    window ("max"), or their mean for the species the templates calibrate and the network's for the others ("mean");
    the template labels are computed once per run (templates.zarr, kept on resume)."""
    seen = []
    real = train_mod.train_member

    def spy(ctx, k, spec, fold, pseudo, group=train_mod.SINGLE):
        if k == 1:
            seen.append(pseudo)
        return real(ctx, k, spec, fold, pseudo, group)

    monkeypatch.setattr(train_mod, "train_member", spy)
    cfg = _cfg(pseudo_templates=True, pseudo_templates_combine=combine)
    runs = tmp_path / "runs"
    train_rounds(tiny_store, runs, cfg, until_round=1, progress=False, echo=lambda *_: None, export_formats=())
    run = RunDir(runs)
    network, tm = read_pseudo_labels(run.pseudo_labels(0)), read_pseudo_labels(run.template_labels)
    assert tm.ids == network.ids and np.array_equal(tm.offsets, network.offsets)
    assert ((tm.scores >= 0) & (tm.scores <= 1)).all()
    summary = json.loads(run.template_labels.with_suffix(".json").read_text())
    assert summary["templates"] >= 1 and set(summary["levels"]) == {str(s) for s in summary["species_calibrated"]}
    if combine == "max":
        expected = np.maximum(network.scores, tm.scores)
    elif combine == "select":  # the teachers' TP AUCs recorded: round 0's network in its metrics, the templates'
        net_auc = json.loads(run.metrics(0).read_text())["oof_tp_auc"]
        assert len(net_auc) == 24 and all(v is None or 0.0 <= v <= 1.0 for v in net_auc)
        assert set(summary["tp_auc"]) <= set(summary["levels"])
        only = teachers.template_only(
            summary["species_calibrated"], dict(enumerate(net_auc)), {int(s): v for s, v in summary["tp_auc"].items()}
        )
        expected = np.maximum(network.scores, tm.scores)
        expected[:, only] = tm.scores[:, only]
    else:
        calibrated = [int(s) for s in summary["species_calibrated"]]
        assert len(calibrated) < 24  # the tiny store boxes some species only
        expected = network.scores.copy()
        expected[:, calibrated] = (network.scores[:, calibrated] + tm.scores[:, calibrated]) / 2
        others = [s for s in range(24) if s not in calibrated]
        assert (tm.scores[:, others] == 0).all()
    assert seen and all(np.allclose(p.scores, expected, atol=1e-6) for p in seen)


def test_combine_teachers_max_mean_and_select() -> None:
    network = np.array([[0.8, 0.2, 0.6], [0.1, 0.9, 0.0]], dtype=np.float32)
    template = np.array([[0.0, 1.0, 0.0], [0.5, 0.3, 0.0]], dtype=np.float32)
    before = network.copy(), template.copy()
    assert np.array_equal(teachers.combine(network, template, "max", [0, 1]), np.maximum(network, template))
    mean = teachers.combine(network, template, "mean", [0, 1])
    assert np.allclose(mean, [[0.4, 0.6, 0.6], [0.3, 0.6, 0.0]])
    assert np.array_equal(teachers.combine(network, template, "mean", []), network)
    # select: species 0's templates find its TP boxes clearly better (0.9 vs 0.6): their label alone; species 1's
    # network is within the margin (0.89 vs 0.9): the larger label; species 2 is not calibrated: the network's
    select = teachers.combine(network, template, "select", [0, 1], {0: 0.6, 1: 0.89, 2: 0.7}, {0: 0.9, 1: 0.9})
    assert np.allclose(select, [[0.0, 1.0, 0.6], [0.5, 0.9, 0.0]])
    assert np.array_equal(network, before[0]) and np.array_equal(template, before[1])  # inputs untouched
    # a species without a network figure (no TP box held out) keeps the larger label
    assert np.allclose(
        teachers.combine(network, template, "select", [0, 1], {}, {0: 0.9, 1: 0.9}), np.maximum(network, template)
    )
    # geometric: a template match raises a label only as far as the network believes in the species there
    geometric = teachers.combine(network, template, "geometric", [0, 1])
    assert np.allclose(geometric, [[0.8, np.sqrt(0.2), 0.6], [np.sqrt(0.05), 0.9, 0.0]])
    assert np.array_equal(network, before[0]) and np.array_equal(template, before[1])
    with pytest.raises(ValueError, match="combine"):
        teachers.combine(network, template, "sum", [0])


def test_tp_auc_is_the_rank_auc_of_the_tp_windows_against_all() -> None:
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.3])
    # positives 0.9 and 0.3 against all five: 0.9 beats 4 and ties itself; 0.3 beats 1, ties 2 -> (4.5 + 2) / 10
    assert teachers.tp_auc(scores, np.array([1, 2])) == pytest.approx(0.65)
    assert teachers.auc(np.array([1.0, 2.0]), np.array([0.0, 1.0])) == pytest.approx(0.875)
    assert teachers.tp_auc(scores, np.array([], dtype=np.int64)) is None
