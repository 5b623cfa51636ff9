"""Training pieces: folds, crop sampling and label fixing, pseudo-label windows, the FreqConv channel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from engine.net import SpectrogramClassifier
from engine.windows import n_windows, window_starts
from rfcx.train.folds import assign_folds
from rfcx.train.pseudo import clip_windows, rescale
from rfcx.train.sampling import CropSampler, PseudoLabels
from store.params import MelParams

P = MelParams()
FPS = P.frames_per_second
CROP = P.seconds_to_frames(4.0)


def _boxes() -> pd.DataFrame:
    rows = [
        ("a", 3, True, 10.0, 11.0, 1000.0, 2000.0),
        ("a", 7, False, 10.5, 11.5, 1200.0, 2500.0),  # overlaps the TP box of a
        ("a", 3, False, 40.0, 41.0, 1000.0, 2000.0),  # far away from it
        ("b", 5, True, 30.0, 32.0, 4000.0, 6000.0),
        ("c", 9, False, 5.0, 6.0, 300.0, 900.0),
    ]
    return pd.DataFrame(rows, columns=["recording_id", "species_id", "is_tp", "t_min", "t_max", "f_min", "f_max"])


FRAMES = {rid: 5626 for rid in ("a", "b", "c", "d")}


def test_window_count_and_grid() -> None:
    assert n_windows(5626, FPS, 4.0, 0.5) == 113
    assert n_windows(5626, FPS, 8.0, 0.5) == 105
    starts = window_starts(5626, FPS, 4.0, 0.5)
    assert starts[0] == 0 and starts[-1] + CROP <= 5626 and np.allclose(np.diff(starts), 46.875, atol=1)
    assert n_windows(100, FPS, 4.0, 0.5) == 1  # a clip shorter than a window is one padded window
    mel = np.arange(5626, dtype=np.float32)[None, :].repeat(2, 0)
    w4 = clip_windows(mel, FPS, 4.0, 0.5, 4.0, fill=-100)
    w8 = clip_windows(mel, FPS, 4.0, 0.5, 8.0, fill=-100)
    assert w4.shape == (113, 2, 375) and w8.shape == (113, 2, 750)
    np.testing.assert_array_equal(w4[5, 0], mel[0, starts[5] : starts[5] + 375])
    # an 8 s crop is centred on the same window centre (within a frame), shifted inside the clip at its edges
    assert abs(w8[10, 0].mean() - w4[10, 0].mean()) <= 1
    assert (w8 != -100).all() and w8[0, 0, 0] == 0 and w8[-1, 0, -1] <= 5625


@pytest.mark.parametrize("frames", [375, 750, 751, 1000, 2345, 5626])
@pytest.mark.parametrize("crop_s", [4.0, 6.0, 8.0])
def test_member_windows_lie_inside_the_clip_and_are_the_engines(frames: int, crop_s: float) -> None:
    """A longer member's windows near the clip's edges are shifted inside it (no -100 dB padding, which training
    never shows), and they are the windows the engine scores (issue 10, 4c)."""
    from engine.windows import frame_windows
    from rfcx.train.pseudo import member_windows

    crop = int(round(crop_s * FPS))
    mel = (np.arange(frames, dtype=np.float32)[None, :] % 97).repeat(3, 0)
    windows = clip_windows(mel, FPS, 4.0, 0.5, crop_s, fill=-100)
    assert len(windows) == n_windows(frames, FPS, 4.0, 0.5)
    starts, index = member_windows(frames, FPS, 4.0, 0.5, crop_s)
    engine = window_starts(frames, FPS, crop_s, 0.5)  # what engine.batch scores for this member
    np.testing.assert_array_equal(starts, engine)
    np.testing.assert_array_equal(windows, frame_windows(mel, engine[index], crop, -100))
    if frames >= crop:
        assert (windows != -100).all()  # no padding where the clip holds a whole crop
        assert (starts >= 0).all() and (starts + crop <= frames).all()
        assert sorted(set(index.tolist())) == list(range(len(engine)))  # the clip max is over the engine's windows
        # each is within a hop of the grid window's centred crop clamped to [0, frames - crop]
        clamped = np.clip((np.arange(len(index)) * 0.5 + 2.0) * FPS - crop / 2, 0, frames - crop)
        assert (np.abs(engine[index] - clamped) <= 0.5 * FPS + 1).all()
    else:
        assert len(engine) == 1 and (windows[:, :, frames:] == -100).all()  # one window padded at its end


class _Clips:
    """Random dB spectrograms of the given lengths (the engine's ``Clips`` protocol and predict_windows' store)."""

    params = P

    def __init__(self, frames: dict[str, int]) -> None:
        self.frames = frames

    def mel(self, rid: str) -> np.ndarray:
        rng = np.random.default_rng(self.frames[rid])
        return (-60.0 + 15.0 * rng.standard_normal((256, self.frames[rid]))).astype(np.float32)


def test_training_side_clip_scores_of_an_8s_member_equal_the_engines(tmp_path) -> None:
    """The clip scores finish_round takes (max over predict_windows) equal rfcx infer's exact mode for an 8 s
    member on a 4 s grid (its pseudo-label windows were padded 8 s crops centred on the grid before)."""
    from engine.batch import infer_clips
    from engine.export import export_torchscript, load_model
    from rfcx.train.config import ModelSpec, get_config
    from rfcx.train.models import build_classifier
    from rfcx.train.pseudo import predict_windows

    clips = _Clips({"long": 1400, "crop": 750, "short": 600})
    cfg, spec = get_config("tiny"), ModelSpec("test_efficientnet", 8.0)
    torch.manual_seed(0)
    net = build_classifier(cfg, spec).eval()
    with torch.no_grad():
        head = net.backbone.get_classifier()
        head.weight.mul_(50.0)  # a visible spread of scores
    meta = {"crop_seconds": 8.0, "hop_seconds": 0.5, "mel": P.to_dict()}
    model = load_model(export_torchscript(net, meta, tmp_path / "m.ts"))
    ids = list(clips.frames)
    with torch.inference_mode():
        mine = predict_windows(net, clips, ids, grid_window_s=4.0, hop_s=0.5, crop_s=8.0, device=torch.device("cpu"))
    engine, _ = infer_clips([model], clips, ids, P, mode="exact", progress=False)
    ours = np.stack([mine[rid].max(axis=0) for rid in ids])
    assert [len(mine[rid]) for rid in ids] == [n_windows(clips.frames[r], FPS, 4.0, 0.5) for r in ids]
    assert ours.std() > 0.01
    np.testing.assert_allclose(ours, engine.set_index("recording_id").loc[ids].to_numpy(float), atol=2e-5)


@pytest.mark.parametrize("crop_s", [4.0, 8.0])
def test_training_side_fcn_scores_equal_the_engines_fcn(tmp_path, crop_s: float) -> None:
    """``score_mode = "fcn"`` (predict_windows(mode="fcn")): one forward per clip, windows pooled from the feature
    map, equal to rfcx infer's --mode fcn on the exported member, and close to the exact windows."""
    from engine.batch import infer_clips
    from engine.export import export_torchscript, load_model
    from rfcx.train.config import ModelSpec, get_config
    from rfcx.train.models import build_classifier
    from rfcx.train.pseudo import predict_windows

    clips = _Clips({"long": 1400, "long2": 1401, "crop": 750, "short": 600})
    cfg = get_config("tiny").replace(input_pool=(2, 1))
    spec = ModelSpec("mobilenetv3_small_050", crop_s)
    torch.manual_seed(0)
    net = build_classifier(cfg, spec).eval()
    with torch.no_grad():
        head = net.backbone.get_classifier()
        head.weight.mul_(50.0)
    meta = {"crop_seconds": crop_s, "hop_seconds": 0.5, "mel": P.to_dict()}
    model = load_model(export_torchscript(net, meta, tmp_path / "m.ts"))
    ids = list(clips.frames)
    kw = dict(grid_window_s=4.0, hop_s=0.5, crop_s=crop_s, device=torch.device("cpu"), batch_size=8)
    fcn = predict_windows(net, clips, ids, mode="fcn", **kw)
    exact = predict_windows(net, clips, ids, mode="exact", **kw)
    assert (
        [len(fcn[r]) for r in ids]
        == [len(exact[r]) for r in ids]
        == [n_windows(clips.frames[r], FPS, 4.0, 0.5) for r in ids]
    )
    engine, _ = infer_clips([model], clips, ids, P, mode="fcn", progress=False)
    ours = np.stack([fcn[rid].max(axis=0) for rid in ids])
    assert ours.std() > 0.01
    np.testing.assert_allclose(ours, engine.set_index("recording_id").loc[ids].to_numpy(float), atol=2e-5)
    flat_fcn, flat_exact = np.concatenate([fcn[r] for r in ids]), np.concatenate([exact[r] for r in ids])
    assert np.corrcoef(flat_fcn.ravel(), flat_exact.ravel())[0, 1] > 0.5  # an approximation of the same windows
    with pytest.raises(ValueError, match="score mode"):
        predict_windows(net, clips, ids, mode="fast", **kw)


def test_folds_are_deterministic_and_stratified() -> None:
    ids = [f"r{i:03d}" for i in range(40)]
    boxes = pd.DataFrame({"recording_id": ids, "species_id": [i % 4 for i in range(40)], "is_tp": True})
    folds = assign_folds(ids, boxes, 4, seed=1)
    assert folds == assign_folds(ids, boxes, 4, seed=1) and set(folds) == set(ids)
    assert folds != assign_folds(ids, boxes, 4, seed=2)
    for species in range(4):  # every species lands in every fold
        assert {folds[r] for r, s in zip(ids, boxes.species_id) if s == species} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="cannot be split"):
        assign_folds(ids[:3], boxes, 4)


def test_round0_crops_are_around_boxes_with_masked_box_labels() -> None:
    s = CropSampler(_boxes(), FRAMES, P, CROP, round_idx=0, seed=0)
    b = s.sample(200)
    assert set(b.recording_ids) == {"a", "b", "c"}
    for rid, start, target, mask, bins in zip(b.recording_ids, b.starts, b.target, b.mask, b.box_bins):
        c0, c1 = start / FPS, (start + CROP) / FPS
        covered = _boxes()[(_boxes().recording_id == rid)]
        covered = covered[
            (np.minimum(covered.t_max, c1) - np.maximum(covered.t_min, c0)) >= 0.5 * (covered.t_max - covered.t_min)
        ]
        assert len(covered) >= 1  # the crop holds its box
        known = set(covered.species_id)
        assert set(np.flatnonzero(mask)) == known  # every other class is masked out
        for row in covered.itertuples():
            if row.is_tp:
                assert target[row.species_id] == 1
        if rid == "a" and 7 in known:
            assert target[7] == 0 and target[3] == 1  # FP 7 target 0 next to TP 3
        assert 0 <= bins[0] <= bins[1] < 256
    # the bands of the TP boxes that label each crop go along (the frequency masking drops a label it erased)
    assert b.label_boxes.shape[0] == 200 and b.label_boxes.shape[2] == 3
    for rid, target, rows, _bins in zip(b.recording_ids, b.target, b.label_boxes, b.box_bins):
        rows = rows[rows[:, 0] >= 0]
        assert sorted(rows[:, 0]) == sorted(np.flatnonzero(target == 1))
        if rid == "a" and len(rows):
            assert rows.tolist() == [[3, *s._bins[0]]]
    assert CropSampler(_boxes(), FRAMES, P, CROP, 1, pseudo=_pseudo(), seed=0).sample(4).label_boxes is None
    # all boxes are used (no sampling): one pass over 5 boxes shows each of them
    first = CropSampler(_boxes(), FRAMES, P, CROP, round_idx=0, seed=3).sample(5)
    assert sorted(first.recording_ids) == ["a", "a", "a", "b", "c"]


def _pseudo(value: float = 0.2) -> PseudoLabels:
    ids = sorted(FRAMES)
    scores = np.full((113 * len(ids), 24), value, dtype=np.float32)
    scores[113 + 60, 11] = 0.9  # clip b, window 60 (30 s - 34 s): class 11
    return PseudoLabels(ids, np.arange(len(ids) + 1) * 113, scores, 4.0, 0.5)


def test_pseudo_labels_for_a_crop() -> None:
    p = _pseudo()
    assert p.for_crop("b", 30.0, 4.0)[11] == pytest.approx(0.9)  # exactly window 60
    assert p.for_crop("b", 28.0, 8.0)[11] == pytest.approx(0.9)  # an 8 s crop takes the max of its windows
    assert p.for_crop("b", 40.0, 4.0)[11] == pytest.approx(0.2)


def test_quantile_rescaling_pins_background_to_zero_and_keeps_ranking() -> None:
    rng = np.random.default_rng(0)
    scores = np.clip(0.3 + 0.05 * rng.standard_normal((1000, 24)), 0, 1).astype(np.float32)  # biased background
    scores[:80, 2] = np.linspace(0.5, 0.8, 80)  # class 2 calls in 8 % of the windows
    labels = PseudoLabels(["x"], np.array([0, 1000]), scores, 4.0, 0.5)
    assert rescale(labels, "none") is labels
    out = rescale(labels, "quantile", (0.95, 0.99)).scores
    assert out.shape == scores.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert (out[80:, 2] == 0).all() and out[79, 2] == 1.0 and (out[60:80, 2] > 0).all()
    assert ((out == 0).mean(axis=0) >= 0.949).all()  # 95 % of every class's windows pinned to 0
    assert (np.diff(out[:80, 2]) >= 0).all()  # the ranking of the windows is kept
    with pytest.raises(ValueError, match="rescaling"):
        rescale(labels, "zscore")


def test_later_rounds_mix_box_crops_and_random_crops_with_fixed_labels() -> None:
    s = CropSampler(_boxes(), FRAMES, P, CROP, round_idx=1, pseudo=_pseudo(), tp_fp_p=0.5, seed=0)
    b = s.sample(400)
    assert (b.mask == 1).all()
    assert abs(np.mean([r == "d" for r in b.recording_ids]) - 0.5 * 0.25) < 0.05  # half are random crops, any clip
    for rid, start, target in zip(b.recording_ids, b.starts, b.target):
        c0, c1 = start / FPS, (start + CROP) / FPS
        if rid == "a" and c0 <= 10.0 and c1 >= 11.0:
            assert target[3] == 1  # fixed by the TP box
            if c0 <= 10.5 and c1 >= 11.5:
                assert target[7] == 0  # fixed by the FP box
        elif rid == "d":
            assert np.allclose(target, 0.2)  # pure pseudo labels
    only_boxes = CropSampler(_boxes(), FRAMES, P, CROP, 1, _pseudo(), tp_fp_p=1.0, seed=0).sample(100)
    assert "d" not in only_boxes.recording_ids
    no_boxes = CropSampler(_boxes(), FRAMES, P, CROP, 1, _pseudo(), tp_fp_sampling=False, seed=0).sample(400)
    assert abs(np.mean([r == "d" for r in no_boxes.recording_ids]) - 0.25) < 0.08  # uniform over clips


def test_freq_channel_input() -> None:
    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.mean(dim=(2, 3))

    net = SpectrogramClassifier(Probe(), freq_channel=True, pool=(2, 2))
    net(torch.zeros(3, 256, 100))
    x = seen["x"]
    assert x.shape == (3, 2, 128, 50)
    ramp = x[0, 1, :, 0]
    assert ramp[0] < 0.01 and ramp[-1] > 0.99 and torch.all(ramp[1:] > ramp[:-1])
    net.zero_freq_channel = True
    net(torch.zeros(3, 256, 100))
    assert torch.all(seen["x"][:, 1] == 0)
    SpectrogramClassifier(Probe(), freq_channel=False)(torch.zeros(1, 256, 8))
    assert seen["x"].shape == (1, 1, 256, 8)


def test_clips_without_pseudo_labels_are_left_out_of_the_draws() -> None:
    """Clips added to the store after the previous round have no pseudo labels: no KeyError, never drawn."""
    ids = ["a", "b", "d"]  # not c (which holds an FP box)
    scores = np.full((113 * len(ids), 24), 0.2, dtype=np.float32)
    labels = PseudoLabels(ids, np.arange(len(ids) + 1) * 113, scores, 4.0, 0.5)
    s = CropSampler(_boxes(), FRAMES, P, CROP, round_idx=1, pseudo=labels, tp_fp_p=0.5, seed=0)
    assert s.unlabelled == ["c"]
    b = s.sample(300)
    assert set(b.recording_ids) == {"a", "b", "d"}
    none = PseudoLabels(["x"], np.array([0, 113]), scores[:113], 4.0, 0.5)
    with pytest.raises(ValueError, match="none of the 4 training clips has pseudo labels"):
        CropSampler(_boxes(), FRAMES, P, CROP, round_idx=1, pseudo=none)
    # with labels for every clip nothing changes: the same draws as before
    full = CropSampler(_boxes(), FRAMES, P, CROP, round_idx=1, pseudo=_pseudo(), seed=0)
    assert full.unlabelled == [] and full.ids == sorted(FRAMES)
