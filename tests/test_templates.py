"""The template teacher (rfcx.train.templates): a TP box's patch finds the same call in other clips, not a confuser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rfcx.train import templates
from store.melbank import hz_to_mel, mel_to_hz
from store.params import MelParams

PARAMS = MelParams()
FPS = PARAMS.frames_per_second
SECONDS = 10.0
BAND = (100, 130)  # mel bins of the species' call


def _hz(bin_: float) -> float:
    """The centre frequency of a (fractional) mel bin: bin k is centred on edge k + 1."""
    lo, hi = hz_to_mel(PARAMS.f_min), hz_to_mel(PARAMS.f_max)
    return float(mel_to_hz(lo + (bin_ + 1) * (hi - lo) / (PARAMS.n_mels + 1)))


def _chirp(clip: np.ndarray, t: float) -> None:
    """A rising call of 0.5 s over BAND, 15 dB above the noise."""
    a, n = int(t * FPS), int(0.5 * FPS)
    for i in range(n):
        b = BAND[0] + int((BAND[1] - BAND[0] - 4) * i / n)
        clip[b : b + 4, a + i] += 15.0


def _tone(clip: np.ndarray, t: float) -> None:
    """A flat call in the same band: another species' (a confuser)."""
    a, n = int(t * FPS), int(0.5 * FPS)
    mid = (BAND[0] + BAND[1]) // 2
    clip[mid - 2 : mid + 2, a : a + n] += 15.0


class Store:
    """Just what the matcher reads from a feature store: ``params`` and ``mel``."""

    params = PARAMS

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        frames = int(SECONDS * FPS)
        self.clips = {rid: rng.normal(-40.0, 3.0, (PARAMS.n_mels, frames)).astype(np.float32) for rid in "abcde"}
        _chirp(self.clips["a"], 2.0)  # TP box
        _chirp(self.clips["d"], 7.0)  # TP box
        _chirp(self.clips["b"], 6.0)  # the same call, unlabelled: the teacher should find it
        _tone(self.clips["c"], 6.0)  # a confuser in the band, where an FP box of the species lies

    def mel(self, rid: str) -> np.ndarray:
        return self.clips[rid]


def _boxes() -> pd.DataFrame:
    f_min, f_max = _hz(BAND[0]), _hz(BAND[1])
    rows = [("a", 5, 2.0, 2.5, True), ("d", 5, 7.0, 7.5, True), ("c", 5, 6.0, 6.5, False)]
    return pd.DataFrame(
        [
            dict(recording_id=r, species_id=s, songtype_id=1, t_min=a, f_min=f_min, t_max=e, f_max=f_max, is_tp=tp)
            for r, s, a, e, tp in rows
        ]
    )


WINDOW, HOP = 2.0, 0.5
N_WINDOWS = {rid: int((SECONDS - WINDOW) / HOP) + 1 for rid in "abcde"}


def _windows_holding(t: float) -> np.ndarray:
    starts = np.arange(N_WINDOWS["a"]) * HOP
    return (starts <= t) & (starts + WINDOW >= t + 0.5)


def test_match_finds_the_call_elsewhere_and_leaves_the_own_clip_out_of_other() -> None:
    fs, boxes = Store(), _boxes()
    tm = templates.cut_templates(fs, boxes[boxes.is_tp], templates.POOL, per_species=16)
    assert [(t.species, t.recording_id) for t in tm] == [(5, "a"), (5, "d")]
    res = templates.match(fs, sorted(N_WINDOWS), tm, N_WINDOWS, WINDOW, HOP, boxes)
    assert res.best["b"].shape == (N_WINDOWS["b"], 24)
    b = res.best["b"][:, 5]
    assert (
        b[_windows_holding(6.0)].min() > 0.7 > 0.3 > b[~_windows_holding(6.0) & (np.arange(len(b)) * HOP > 7.5)].max()
    )
    assert res.best["c"][_windows_holding(6.0), 5].max() < 0.5  # the confuser
    assert res.best["a"][_windows_holding(2.0), 5].max() == pytest.approx(1.0, abs=1e-3)  # its own template
    assert 0.7 < res.other["a"][_windows_holding(2.0), 5].max() < 0.999  # d's template only
    assert (res.best["a"][:, [0, 6, 23]] == -1).all()  # species without a template
    assert sorted(s for s, _ in res.tp) == [5, 5] and min(v for _, v in res.tp) > 0.7
    assert [s for s, _ in res.fp] == [5] and res.fp[0][1] < 0.5


def test_teacher_labels_the_unlabelled_call_and_not_the_confuser() -> None:
    fs, boxes = Store(), _boxes()
    labels, summary = templates.teacher(fs, boxes, N_WINDOWS, WINDOW, HOP)
    assert summary["templates"] == 2 and summary["species_calibrated"] == [5]
    lab = labels["b"][:, 5]
    assert lab[_windows_holding(6.0)].min() > 0.8
    assert lab[np.arange(len(lab)) * HOP > 7.5].max() < 0.2
    assert labels["c"][:, 5].max() < 0.2 and labels["e"][:, 5].max() < 0.2
    assert all(not labels[r][:, [s for s in range(24) if s != 5]].any() for r in labels)
    assert all(((v >= 0) & (v <= 1)).all() for v in labels.values())


def test_a_species_boxed_in_one_clip_only_has_no_call_level() -> None:
    """Leave one clip out: with every TP box of a species in one clip, nothing says how well a call matches."""
    fs, boxes = Store(), _boxes()
    boxes = boxes[boxes.recording_id != "d"]
    labels, summary = templates.teacher(fs, boxes, N_WINDOWS, WINDOW, HOP)
    assert summary["templates"] == 1 and summary["species_calibrated"] == []
    assert not any(v.any() for v in labels.values())


def test_templates_per_species_are_capped() -> None:
    fs, boxes = Store(), _boxes()
    tp = boxes[boxes.is_tp]
    assert len(templates.cut_templates(fs, tp, templates.POOL, per_species=1)) == 1


def test_fp_boxes_raise_the_background_and_silence_their_windows() -> None:
    """A matcher's FP box on a call the templates match as well as the species' own (a person rejected it): the
    background level rises to such matches, and the species' label is 0 where the box lies."""
    fs, boxes = Store(), _boxes()
    _chirp(fs.clips["c"], 6.0)  # now the FP box of clip c holds a call the templates match
    labels, summary = templates.teacher(fs, boxes, N_WINDOWS, WINDOW, HOP)
    fp_ncc = templates.match(
        fs,
        sorted(N_WINDOWS),
        templates.cut_templates(fs, boxes[boxes.is_tp], templates.POOL, 16),
        N_WINDOWS,
        WINDOW,
        HOP,
        boxes,
    ).fp[0][1]
    assert fp_ncc > 0.5
    level = summary["levels"].get("5")
    assert level is None or level["background"] >= fp_ncc - 1e-3
    assert not labels["c"][_windows_holding(6.0), 5].any()


def test_calibration_levels() -> None:
    """Background: the larger of the windows' 0.9 quantile and the FP boxes' median; call: the TP boxes' median."""
    windows = {"x": np.full((10, 24), -1.0), "y": np.full((10, 24), -1.0)}
    windows["x"][:, 3] = 0.1
    windows["y"][:, 3] = np.linspace(0.0, 0.3, 10)
    res = templates.MatchResult(
        best=windows, other=windows, tp=[(3, 0.8), (3, 0.9), (3, 0.95)], fp=[(3, 0.6), (3, 0.7)]
    )
    assert templates.calibration(res) == {3: pytest.approx((0.65, 0.9))}
    quiet = templates.MatchResult(best=windows, other=windows, tp=res.tp, fp=[])
    lo, hi = templates.calibration(quiet)[3]
    assert lo == pytest.approx(np.quantile(np.concatenate([windows["x"][:, 3], windows["y"][:, 3]]), 0.9))
    assert templates.calibration(templates.MatchResult(windows, windows, [(3, 0.5)], [(3, 0.6)])) == {}
    lab = templates.labels(res, {3: (0.65, 0.9)})
    assert lab["x"][:, 3].max() == 0 and lab["x"][:, [0, 23]].max() == 0


def _call(clip: np.ndarray, t: float, seconds: float, lift: int = 0) -> None:
    """A rising call like ``_chirp``, ``seconds`` long, ``lift`` mel bins higher."""
    a, n = int(t * FPS), int(seconds * FPS)
    for i in range(n):
        b = BAND[0] + lift + int((BAND[1] - BAND[0] - 4) * i / n)
        clip[b : b + 4, a + i] += 15.0


def test_stretched_and_shifted_templates_find_calls_sung_slower_and_higher() -> None:
    fs, boxes = Store(), _boxes()
    _call(fs.clips["e"], 1.0, 0.8)  # the call 1.6 times as long
    _call(fs.clips["e"], 6.0, 0.5, lift=10)  # the call 10 mel bins (5 pooled bins) higher
    tp = boxes[boxes.is_tp]
    plain = templates.match(
        fs, ["e"], templates.cut_templates(fs, tp, templates.POOL, 16), N_WINDOWS, WINDOW, HOP, boxes
    )
    stretched = templates.cut_templates(fs, tp, templates.POOL, 16, stretches=(1.0, 1.6))
    assert len(stretched) == 4 and sorted({t.patch.shape[1] for t in stretched})[-1] > max(
        t.patch.shape[1] for t in templates.cut_templates(fs, tp, templates.POOL, 16)
    )
    wide = templates.match(fs, ["e"], stretched, N_WINDOWS, WINDOW, HOP, boxes, shift=5)
    slow, high = _windows_holding(1.0), _windows_holding(6.0)
    assert wide.best["e"][slow, 5].max() > plain.best["e"][slow, 5].max() + 0.1
    assert wide.best["e"][high, 5].max() > 0.85 > 0.7 > plain.best["e"][high, 5].max()
    labels, summary = templates.teacher(fs, boxes, N_WINDOWS, WINDOW, HOP, shift=5, stretches=(1.0, 1.6))
    assert summary["shift"] == 5 and summary["stretches"] == [1.0, 1.6] and summary["templates"] == 4
