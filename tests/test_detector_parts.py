"""The detector's yardsticks, class-rate calibration, oracle labels and round-0 weak negatives; the zipf species
mix of ``rfcx synth`` and the calls' truth in the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.windows import n_windows
from rfcx.scoring.yardsticks import (
    EQUAL_COMPUTE,
    equal_compute_metrics,
    gap_closed,
    prior_lwlrap,
    random_lwlrap,
    round_table,
    tp_prior,
)
from rfcx.synth.dataset import synthesize
from rfcx.synth.plan import Mix
from rfcx.synth.render import make_clip
from rfcx.train.calibration import class_priors, class_rates, positive_rate, rescale_by_rate
from rfcx.train.pseudo import rescale, tp_windows
from rfcx.train.sampling import CropSampler, PseudoLabels
from store import FeatureStore, build_store
from store.params import MelParams

P = MelParams()
FPS = P.frames_per_second
CROP = P.seconds_to_frames(4.0)


# -- yardsticks ------------------------------------------------------------------------------------------------


def test_random_and_prior_yardsticks() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((200, 24)) < np.linspace(0.4, 0.01, 24)).astype(int)  # class 0 common, 23 rare
    r = random_lwlrap(truth)
    assert 0.1 < r < 0.35
    good = prior_lwlrap(truth, np.linspace(0.4, 0.01, 24))
    bad = prior_lwlrap(truth, np.linspace(0.01, 0.4, 24))
    assert good > r + 0.1 > bad + 0.1
    assert prior_lwlrap(truth, np.zeros(24)) == pytest.approx(r, abs=0.03)  # all ties: random order


def test_tp_prior_counts_recordings_once() -> None:
    tp = pd.DataFrame({"recording_id": ["a", "a", "b", "z"], "species_id": [3, 3, 3, 5]})
    prior = tp_prior(tp, ["a", "b", "c", "d"])
    assert prior[3] == 0.5 and prior[5] == 0.0 and prior.sum() == 0.5  # z is not a training recording


def test_gap_closed() -> None:
    assert gap_closed(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert gap_closed(0.4, 0.5, 0.9) == pytest.approx(-0.25)
    assert gap_closed(0.7, 0.5, None) is None and gap_closed(0.7, 0.9, 0.8) is None


def test_round_table_reads_rounds_and_oracle(tmp_path: Path) -> None:
    for name, k, score in (("", 0, 0.5), ("", 1, 0.7), ("oracle/", 0, 0.9)):
        d = tmp_path / f"{name}round{k}"
        d.mkdir(parents=True)
        together = {"test_lwlrap_rounds": 0.75, "gap_closed_rounds": 0.1} if k and not name else {}  # 0.1: stale
        (d / "metrics.json").write_text(
            json.dumps({"round": k, "test_lwlrap": score, **together, "yardsticks": {"random": 0.2, "prior_only": 0.3}})
        )
        (d / "complete.json").write_text("{}")
    rows = round_table(tmp_path)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["gap_closed"] == pytest.approx(0.5) and rows[1]["yardsticks"]["oracle"] == 0.9
    # against the oracle run as it is now (one trained again after the round wrote its metrics counts)
    assert rows[1]["gap_closed_rounds"] == pytest.approx(0.625) and rows[0]["gap_closed_rounds"] is None


def _round(folder: Path, k: int, score: float, steps: int | None) -> None:
    folder.mkdir(parents=True)
    extra = {} if steps is None else {"steps": steps}
    (folder / "metrics.json").write_text(json.dumps({"round": k, "test_lwlrap": score, **extra, "yardsticks": {}}))
    (folder / "complete.json").write_text("{}")


def test_round_table_sets_each_round_beside_round_0_trained_as_long(tmp_path: Path) -> None:
    _round(tmp_path / "round0", 0, 0.5, 640)
    _round(tmp_path / "round1", 1, 0.7, 3840)
    _round(tmp_path / "round2", 2, 0.72, 1920)  # another length: no bootstrap of its steps
    rows = round_table(tmp_path)
    assert [r["equal_compute"] for r in rows] == [None, None, None]  # not trained yet
    _round(tmp_path / EQUAL_COMPUTE / "round0", 0, 0.8, 3840)
    rows = round_table(tmp_path)
    assert rows[1]["equal_compute"] == 0.8 and rows[1]["pseudo_gain"] == pytest.approx(-0.1)
    assert rows[1]["equal_compute_source"] == EQUAL_COMPUTE and rows[1]["yardsticks"]["equal_compute"] == 0.8
    assert rows[0]["equal_compute"] is None and rows[2]["equal_compute"] is None and rows[2]["pseudo_gain"] is None
    assert equal_compute_metrics(tmp_path, None) is None  # a round from before steps were recorded
    # a config whose round 0 trains as long as its later rounds: round 0 is its own yardstick
    same = tmp_path / "same"
    _round(same / "round0", 0, 0.6, 3840)
    _round(same / "round1", 1, 0.65, 3840)
    row = round_table(same)[1]
    assert row["equal_compute"] == 0.6 and row["equal_compute_source"] == "round 0"
    assert row["pseudo_gain"] == pytest.approx(0.05)


def test_report_prints_round_0_trained_as_long(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rfcx.cli import app

    _round(tmp_path / "round0", 0, 0.5, 640)
    _round(tmp_path / "round1", 1, 0.7, 3840)
    out = CliRunner().invoke(app, ["report", "--runs", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "round 0 as long  pseudo-label gain" in out.output and "rfcx train --equal-compute" in out.output
    _round(tmp_path / EQUAL_COMPUTE / "round0", 0, 0.65, 3840)
    out = CliRunner().invoke(app, ["report", "--runs", str(tmp_path)])
    assert "0.6500" in out.output and "+0.0500" in out.output and "--equal-compute" not in out.output


# -- calibration -----------------------------------------------------------------------------------------------


def _scores(rate: float, n: int, rng: np.random.Generator, sep: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.random(n) < rate
    return rng.normal(sep * truth, 1.0), truth


def test_positive_rate_tracks_each_class_rate() -> None:
    rng = np.random.default_rng(1)
    for rate in (0.005, 0.01, 0.03):
        scores, truth = _scores(rate, 20000, rng)
        labelled = rng.choice(np.flatnonzero(truth), 30, replace=False)  # a random sample of the positives
        est = positive_rate(scores, scores[labelled])
        assert rate * 0.5 < est < rate + 0.015, (rate, est)  # an upper bound: negatives above the threshold add
    scores, truth = _scores(0.2, 20000, rng)  # a common class: capped at the quantile rescaling's 5 %
    assert positive_rate(scores, scores[np.flatnonzero(truth)[:30]]) == 0.05
    assert positive_rate(np.zeros(10), np.zeros(2)) is None  # too few labelled positives


def test_class_rates_fill_unlabelled_classes_and_rescale_respects_them() -> None:
    rng = np.random.default_rng(2)
    rates_true = np.array([0.04, 0.005, 0.02])
    cols, index = [], []
    for c, rate in enumerate(rates_true):
        s, t = _scores(rate, 10000, rng)
        cols.append(s)
        index.append(rng.choice(np.flatnonzero(t), 25, replace=False) if c < 2 else np.array([1]))
    scores = 1 / (1 + np.exp(-np.stack(cols, 1)))
    rates, estimated = class_rates(scores, index)
    assert estimated.tolist() == [True, True, False]
    assert rates[2] == pytest.approx(np.median(rates[:2]))
    labels = rescale_by_rate(scores, rates)
    share = (labels >= 0.5).mean(axis=0)
    assert share[0] > 3 * share[1]  # the common class gets many more positive windows than the rare one
    for c in range(2):
        assert rates[c] * 0.4 < share[c] < rates[c] * 2.5


def test_class_priors_from_clip_scores() -> None:
    rng = np.random.default_rng(3)
    present = rng.random((4000, 2)) < [0.04, 0.005]
    clip = rng.normal(3.0 * present, 1.0)
    labelled = present & (rng.random(present.shape) < 0.5)
    prior, estimated = class_priors(clip, labelled)
    assert estimated.all() and prior[0] > prior[1] + 0.02


def test_prior_rescale_of_pseudo_labels() -> None:
    rng = np.random.default_rng(4)
    n_clips, n = 40, 113
    scores = rng.random((n_clips * n, 24)).astype(np.float32) * 0.3
    ids = [f"r{i}" for i in range(n_clips)]
    offsets = np.arange(n_clips + 1) * n
    rows = []
    for i in range(0, n_clips, 2):  # species 4 calls in half the clips around 10 s; a TP box on some of them
        w = offsets[i] + 19  # the window centred on 11.5 s
        scores[w - 2 : w + 3, 4] = 0.9
        if i % 4 == 0:
            rows.append((ids[i], 4, True, 11.0, 12.0, 1000.0, 2000.0))
    labels = PseudoLabels(ids, offsets, scores, 4.0, 0.5)
    boxes = pd.DataFrame(rows, columns=["recording_id", "species_id", "is_tp", "t_min", "t_max", "f_min", "f_max"])
    assert tp_windows(labels, boxes)[4].tolist() == [offsets[i] + 19 for i in range(0, n_clips, 4)]
    out = rescale(labels, "prior", boxes=boxes)
    assert out.scores.shape == scores.shape and out.scores.min() >= 0 and out.scores.max() <= 1
    peaks = np.concatenate([np.arange(offsets[i] + 17, offsets[i] + 22) for i in range(0, n_clips, 2)])
    assert out.scores[peaks, 4].min() > 0.9 and (out.scores[:, 4] >= 0.5).mean() < 0.1
    with pytest.raises(ValueError, match="TP boxes"):
        rescale(labels, "prior")


def test_tp_clips_labels_find_the_boxed_species_other_calls() -> None:
    """``pseudo_rescale = "tp_clips"``: in a clip with a TP box of a species, its windows are read between the clip's
    median (0) and the boxed window (1): its other, unboxed call becomes a positive, its background a negative;
    every other clip and species keeps its raw score."""
    n = 113
    rng = np.random.default_rng(5)
    scores = (0.05 + 0.02 * rng.random((2 * n, 24))).astype(np.float32)
    scores[19, 7] = 0.5  # clip a: the boxed call of species 7 (window centred on 11.5 s) ...
    scores[80, 7] = 0.42  # ... and an unboxed one
    scores[n + 19, 7] = 0.5  # clip b: a call of species 7, no box
    labels = PseudoLabels(["a", "b"], np.array([0, n, 2 * n]), scores, 4.0, 0.5)
    boxes = pd.DataFrame(
        [("a", 7, True, 11.0, 12.0, 1000.0, 2000.0), ("b", 3, False, 11.0, 12.0, 1000.0, 2000.0)],
        columns=["recording_id", "species_id", "is_tp", "t_min", "t_max", "f_min", "f_max"],
    )
    out = rescale(labels, "tp_clips", boxes=boxes).scores
    assert out[19, 7] == 1.0 and 0.75 < out[80, 7] < 0.9  # (0.42 - median) / (0.5 - median)
    background = np.delete(np.arange(n), [19, 80])
    assert out[background, 7].max() < 0.1 and np.median(out[:n, 7]) == 0.0
    untouched = np.ones(scores.shape, dtype=bool)
    untouched[:n, 7] = False
    np.testing.assert_array_equal(out[untouched], scores[untouched])  # clip b and the other species: raw scores
    with pytest.raises(ValueError, match="TP boxes"):
        rescale(labels, "tp_clips")


# -- sampling: oracle labels, weak negatives --------------------------------------------------------------------

FRAMES = {rid: 5626 for rid in ("a", "b")}


def _boxes() -> pd.DataFrame:
    rows = [("a", 3, True, 10.0, 11.0, 1000.0, 2000.0), ("b", 5, False, 30.0, 32.0, 4000.0, 6000.0)]
    return pd.DataFrame(rows, columns=["recording_id", "species_id", "is_tp", "t_min", "t_max", "f_min", "f_max"])


def test_oracle_labels_follow_every_call() -> None:
    calls = pd.DataFrame(
        {
            "recording_id": ["a", "a", "b"],
            "species_id": [3, 8, 5],
            "t_min": [10.0, 40.0, 30.0],
            "t_max": [11.0, 41.0, 32.0],
        }
    )
    sampler = CropSampler(_boxes(), FRAMES, P, CROP, 0, seed=0, truth=calls)
    b = sampler.sample(400)
    assert (b.mask == 1).all() and (b.box_bins == -1).all()
    for rid, start, target in zip(b.recording_ids, b.starts, b.target):
        c0, c1 = start / FPS, (start + CROP) / FPS
        own = calls[calls.recording_id == rid]
        inside = own[(np.minimum(own.t_max, c1) - np.maximum(own.t_min, c0)) >= 0.5 * (own.t_max - own.t_min)]
        assert set(np.flatnonzero(target)) == set(inside.species_id)
    assert 0.1 < b.target.any(axis=1).mean() < 0.95  # crops with calls and crops without
    # the truth stands in for pseudo labels in any round (it was a TypeError past round 0 without them)
    later = CropSampler(_boxes(), FRAMES, P, CROP, 1, seed=0, truth=calls)
    assert later.unlabelled == [] and later.sample(8).target.shape == (8, 24)


def test_round0_unlabelled_weight_and_random_crops() -> None:
    plain = CropSampler(_boxes(), FRAMES, P, CROP, 0, seed=0).sample(64)
    assert set(np.unique(plain.mask).tolist()) == {0.0, 1.0}
    weak = CropSampler(_boxes(), FRAMES, P, CROP, 0, seed=0, unlabelled_weight=0.1, random_crop_p=0.5).sample(256)
    assert np.allclose(np.unique(weak.mask), [0.1, 1.0])
    assert ((weak.mask == 1) <= ((weak.target == 1) | (weak.mask == 1))).all()
    boxed = weak.box_bins[:, 0] >= 0
    assert 0.3 < boxed.mean() < 0.7  # half the crops around a box, half anywhere
    assert weak.label_boxes.shape[0] == 256 and (weak.label_boxes[~boxed] == -1).all()  # one row of bands per crop
    tp_crops = boxed & (weak.target[:, 3] == 1) & (weak.mask[:, 3] == 1)
    assert tp_crops.any() and (weak.label_boxes[tp_crops, 0, 0] == 3).all()
    assert (weak.target[weak.mask < 1] == 0).all()


def test_pseudo_negative_weight_of_rounds_after_the_bootstrap() -> None:
    """Rounds >= 1: a soft label y weighs w + (1 - w) y (w = pseudo_negative_weight; 1, the seed's: all ones), the
    species of a box covering the crop keeps its box label at full weight."""
    n = n_windows(5626, FPS, 4.0, 0.5)
    rng = np.random.default_rng(1)
    scores = (rng.random((2 * n, 24)) ** 4).astype(np.float32)
    pseudo = PseudoLabels(["a", "b"], np.array([0, n, 2 * n]), scores, 4.0, 0.5)
    seed = CropSampler(_boxes(), FRAMES, P, CROP, 1, pseudo, seed=3).sample(128)
    assert (seed.mask == 1).all()
    weak = CropSampler(_boxes(), FRAMES, P, CROP, 1, pseudo, seed=3, pseudo_negative_weight=0.1).sample(128)
    np.testing.assert_array_equal(weak.target, seed.target)  # the same draws and labels, other weights
    boxed = weak.mask == 1
    expected = 0.1 + 0.9 * weak.target
    assert np.allclose(weak.mask[~boxed], expected[~boxed]) and weak.mask.min() < 0.2
    a = np.array([r == "a" for r in weak.recording_ids])
    c0 = weak.starts / FPS
    covers_tp = a & (np.minimum(11.0, c0 + CROP / FPS) - np.maximum(10.0, c0) >= 0.5)
    assert covers_tp.any() and (weak.target[covers_tp, 3] == 1).all() and (weak.mask[covers_tp, 3] == 1).all()


def test_tp_box_share_draws_tp_boxes_that_often() -> None:
    """``tp_box_share``: a box crop is around a TP box with that probability (round 0 walks each kind in turn,
    later rounds draw); 0 keeps every box alike; a fold without FP (or TP) boxes ignores it."""
    rows = [("a", 3, True, 10.0, 11.0, 1000.0, 2000.0)] + [
        ("b", 5, False, t, t + 1.0, 4000.0, 6000.0) for t in np.arange(5.0, 50.0, 5.0)
    ]
    boxes = pd.DataFrame(rows, columns=["recording_id", "species_id", "is_tp", "t_min", "t_max", "f_min", "f_max"])

    def tp_rate(round_idx: int, share: float, **kw) -> float:
        b = CropSampler(boxes, FRAMES, P, CROP, round_idx, seed=2, tp_box_share=share, **kw).sample(600)
        return float(((b.target[:, 3] == 1) & (b.mask[:, 3] == 1)).mean())

    assert abs(tp_rate(0, 0.0) - 0.1) < 0.02  # 1 TP box of 10, walked in turn
    assert abs(tp_rate(0, 0.5) - 0.5) < 0.06
    n = n_windows(5626, FPS, 4.0, 0.5)
    pseudo = PseudoLabels(["a", "b"], np.array([0, n, 2 * n]), np.zeros((2 * n, 24), np.float32), 4.0, 0.5)
    assert abs(tp_rate(1, 0.5, pseudo=pseudo, tp_fp_p=1.0) - 0.5) < 0.06
    only_fp = CropSampler(boxes[~boxes.is_tp], FRAMES, P, CROP, 0, seed=2, tp_box_share=0.5)
    assert only_fp.tp_box_share == 0.0 and (only_fp.sample(50).target == 0).all()


# -- synthetic mix and the store's calls --------------------------------------------------------------------------


def test_zipf_mix_is_skewed_and_sparse() -> None:
    mix = Mix()
    pop = mix.popularity(0)
    assert pop.max() / pop.min() > 15 and np.isclose(pop.sum(), 1)
    counts, tp, fp = np.zeros(24), 0, 0
    n = 300
    for i in range(n):
        clip = make_clip("train", i, 0, 2.0, mix=mix)
        counts[list(clip.species)] += 1
        tp, fp = tp + len(clip.tp), fp + len(clip.fp)
        assert not {b[0] for b in clip.fp} & set(clip.species)  # an FP box names a species that is not there
    assert 0.15 < tp / n < 0.45 and 1.2 < fp / n < 2.0
    assert np.corrcoef(counts, pop)[0, 1] > 0.8
    again = make_clip("train", 5, 0, 2.0, mix=mix)
    assert np.array_equal(again.audio, make_clip("train", 5, 0, 2.0, mix=mix).audio)
    with pytest.raises(ValueError, match="tp_balance"):
        Mix(tp_balance=2.0)
    dense = Mix(tp_per_clip=1.0, fp_per_clip=6.0, tp_balance=0.0)  # many FP pairs on few calls: each box once
    for i in range(40):
        boxes = make_clip("train", i, 0, 2.0, mix=dense).fp
        assert len(boxes) == len(set(boxes)) and len(boxes) > 0


def test_several_backgrounds_and_calls_in_store(tmp_path: Path, real_clip: Path) -> None:
    bg = tmp_path / "bg"
    bg.mkdir()
    for name in ("x", "y"):
        (bg / f"{name}.flac").symlink_to(real_clip)
    data = tmp_path / "data"
    synthesize(data, n_train=3, n_test=2, seconds=3.0, seed=1, background=bg, progress=False, mix=Mix(tp_per_clip=1.0))
    build_store(data, tmp_path / "f.zarr", backend="torch", device="cpu", progress=False)
    fs = FeatureStore.open(tmp_path / "f.zarr")
    truth = pd.read_csv(data / "calls_truth.csv")
    calls = fs.calls(None)
    assert len(calls) == len(truth) and set(calls.split) <= {"train", "test"}
    assert (fs.calls("train").split == "train").all()
    with pytest.raises(ValueError, match="background folder"):
        synthesize(tmp_path / "d2", n_train=1, n_test=0, seconds=1.0, background=tmp_path / "f.zarr", progress=False)
    with pytest.raises(ValueError, match="label density"):
        synthesize(tmp_path / "d3", n_train=1, n_test=0, seconds=1.0, label_density=2.0, mix=Mix(), progress=False)


def test_report_and_evaluate_print_the_yardsticks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rfcx.cli import app

    runs = tmp_path / "runs"
    test_round_table_reads_rounds_and_oracle(runs)
    (runs / "best_round.json").write_text(json.dumps({"round": 1, "signal": "oof_clip_lwlrap", "value": 0.3}))
    out = CliRunner().invoke(app, ["report", "--runs", str(runs)])
    assert out.exit_code == 0, out.output
    assert "prior-only 0.3000" in out.output and "oracle 0.9000" in out.output and "50%" in out.output
    assert (
        "rfcx infer uses round 1 by default (--round best: the best held-out signal, RUNS/best_round.json); "
        "--round all uses rounds 0-1 together" in out.output
    )
    cols = ",".join(f"s{k}" for k in range(24))
    (tmp_path / "truth.csv").write_text(f"recording_id,{cols}\na,1{',0' * 23}\nb,0,1{',0' * 22}\n")
    (tmp_path / "pred.csv").write_text(f"recording_id,{cols}\na,0.9{',0.1' * 23}\nb,0.1,0.8{',0.1' * 22}\n")
    (tmp_path / "tp.csv").write_text(
        "recording_id,species_id,songtype_id,t_min,f_min,t_max,f_max\n"
        "x,0,1,1,100,2,200\ny,0,1,1,100,2,200\nz,1,1,1,100,2,200\n"
    )
    ev = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(tmp_path / "pred.csv"),
            "--truth",
            str(tmp_path / "truth.csv"),
            "--train-tp",
            str(tmp_path / "tp.csv"),
        ],
    )
    assert ev.exit_code == 0, ev.output
    first = ev.output.splitlines()[0]
    assert first.startswith("LWLRAP 1.0000") and "random" in first and "prior-only 0.7500" in first
