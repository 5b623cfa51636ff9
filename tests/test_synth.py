"""Tests for the synthetic RFCX-layout data generator (rfcx.synth, rfcx.synth.calls, rfcx.synth.species)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from rfcx.synth.calls import KINDS, SPECIES_KIND, SR, make_shape, render_call, species_shapes
from rfcx.synth.dataset import LABEL_COLUMNS, SUBMISSION_COLUMNS, synthesize
from rfcx.synth.plan import _kind_probs, _plan_train, _world
from rfcx.synth.render import make_clip
from rfcx.synth.species import (
    N_SPECIES,
    band_similarity,
    derive_layout_stats,
    derive_species_table,
    load_layout_stats,
    load_species_table,
)
from rfcx.synth.variety import VARIABLE, CallVariety, song_types

REAL = Path(__file__).resolve().parents[2] / "shared" / "rfcx"
N_TRAIN, N_TEST, SECONDS, SEED = 12, 6, 15.0, 7
TOL = 1e-3


def _need_real() -> Path:
    if not (REAL / "train_tp.csv").is_file() or not (REAL / "train_fp.csv").is_file():
        pytest.skip(f"real RFCX label tables not found under {REAL}")
    return REAL


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data set of the default generator (variable calls)."""
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = synthesize(out, n_train=N_TRAIN, n_test=N_TEST, seconds=SECONDS, seed=SEED, progress=False)
    assert (summary.n_train, summary.n_test, summary.seconds) == (N_TRAIN, N_TEST, SECONDS)
    assert summary.n_tp_rows == len(pd.read_csv(out / "train_tp.csv"))
    assert summary.n_fp_rows == len(pd.read_csv(out / "train_fp.csv"))
    return out


@pytest.fixture(scope="module")
def fixed(tmp_path_factory) -> Path:
    """The same data set with one call shape per species (``calls=None``, ``rfcx synth --calls fixed``)."""
    out = tmp_path_factory.mktemp("synth") / "fixed"
    synthesize(out, n_train=N_TRAIN, n_test=N_TEST, seconds=SECONDS, seed=SEED, progress=False, calls=None)
    return out


def _ids(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.flac"))


def test_layout_and_columns(data: Path) -> None:
    train, test = _ids(data / "train"), _ids(data / "test")
    assert len(train) == N_TRAIN and len(test) == N_TEST
    for name in ("train_tp.csv", "train_fp.csv"):
        assert list(pd.read_csv(data / name).columns) == LABEL_COLUMNS
    sub, labels = pd.read_csv(data / "sample_submission.csv"), pd.read_csv(data / "test_labels.csv")
    assert list(sub.columns) == SUBMISSION_COLUMNS == list(labels.columns)
    assert sorted(sub.recording_id) == test == sorted(labels.recording_id)
    assert (sub.iloc[:, 1:] == 0).all().all()
    assert labels.iloc[:, 1:].isin([0, 1]).all().all()
    info = sf.info(str(data / "train" / f"{train[0]}.flac"))
    assert (info.samplerate, info.channels, info.format, info.subtype) == (SR, 1, "FLAC", "PCM_16")
    assert info.frames == int(SECONDS * SR)
    audio, _ = sf.read(str(data / "test" / f"{test[0]}.flac"))
    assert 0.1 < np.abs(audio).max() < 0.9  # normalised, no clipping


def test_ids_unique_hex(data: Path) -> None:
    ids = _ids(data / "train") + _ids(data / "test")
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{9}", i) for i in ids)
    boxes = pd.concat(
        [
            pd.read_csv(data / "train_tp.csv", dtype={"recording_id": str}),
            pd.read_csv(data / "train_fp.csv", dtype={"recording_id": str}),
        ]
    )
    assert set(boxes.recording_id) <= set(_ids(data / "train"))


def test_deterministic(data: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"  # same seed, made in parallel
    synthesize(again, n_train=N_TRAIN, n_test=N_TEST, seconds=SECONDS, seed=SEED, progress=False, workers=2)
    for name in ("train_tp.csv", "train_fp.csv", "sample_submission.csv", "test_labels.csv", "calls_truth.csv"):
        assert (data / name).read_bytes() == (again / name).read_bytes(), name
    for split in ("train", "test"):
        assert _ids(data / split) == _ids(again / split)
        for rid in _ids(data / split)[:3]:
            a, _ = sf.read(str(data / split / f"{rid}.flac"), dtype="int16")
            b, _ = sf.read(str(again / split / f"{rid}.flac"), dtype="int16")
            assert np.array_equal(a, b)
    other = synthesize(tmp_path / "other", n_train=2, n_test=1, seconds=SECONDS, seed=SEED + 1, progress=False)
    assert not set(_ids(other.out_dir / "train")) & set(_ids(data / "train"))
    assert not np.array_equal(make_clip("train", 0, SEED, 5.0).audio, make_clip("train", 0, SEED + 1, 5.0).audio)


def test_boxes_inside_clip_and_band(fixed: Path) -> None:
    table = load_species_table().set_index("species_id")
    for name in ("train_tp.csv", "train_fp.csv"):
        df = pd.read_csv(fixed / name)
        band = table.loc[df.species_id]
        width = (band.f_max - band.f_min).to_numpy()
        assert ((df.t_min >= 0) & (df.t_min < df.t_max) & (df.t_max <= SECONDS + TOL)).all()
        assert (df.f_min.to_numpy() >= band.f_min.to_numpy() - 0.12 * width).all()
        assert (df.f_max.to_numpy() <= band.f_max.to_numpy() + 0.12 * width).all()
        assert (df.f_max <= SR / 2).all()
        assert (df.songtype_id.to_numpy() == band.songtype_id.to_numpy()).all()


def test_variable_boxes_inside_clip_and_near_band(data: Path) -> None:
    """Variable calls: boxes in the clip, near the species' band (pitch +-12 %, bent contours), under one of
    the species' song types (ids from the real table's on)."""
    table = load_species_table().set_index("species_id")
    for name in ("train_tp.csv", "train_fp.csv"):
        df = pd.read_csv(data / name)
        band = table.loc[df.species_id]
        assert ((df.t_min >= 0) & (df.t_min < df.t_max) & (df.t_max <= SECONDS + TOL)).all()
        assert (df.f_min.to_numpy() >= 0.6 * band.f_min.to_numpy() - 60).all()
        assert (df.f_max.to_numpy() <= 1.5 * band.f_max.to_numpy()).all()
        assert (df.f_max <= SR / 2).all()
        offset = df.songtype_id.to_numpy() - band.songtype_id.to_numpy()
        assert ((offset >= 0) & (offset < 4)).all()


def test_label_sparsity(data: Path) -> None:
    tp, fp = pd.read_csv(data / "train_tp.csv"), pd.read_csv(data / "train_fp.csv")
    assert set(tp.recording_id) | set(fp.recording_id) == set(_ids(data / "train"))  # >= 1 box each
    assert tp.groupby("recording_id").size().max() <= load_layout_stats()["max_tp_rows"]
    truth = pd.read_csv(data / "calls_truth.csv")
    calls_per_tp = truth.merge(tp[["recording_id", "species_id"]]).groupby(["recording_id", "species_id"]).size()
    assert calls_per_tp.mean() > 1.5  # labelled species call more often than they are labelled


def test_layout_follows_real_proportions() -> None:
    w, lay = _world(), load_layout_stats()
    plans = [_plan_train(np.random.default_rng([3, i]), w) for i in range(3000)]
    n_tp = np.array([len(p[1]) for p in plans])
    n_fp = np.array([len(p[2]) for p in plans])
    assert ((n_tp > 0) | (n_fp > 0)).all()
    assert abs(np.mean((n_tp > 0) & (n_fp == 0)) - lay["frac_tp_only"]) < 0.03
    assert abs(np.mean((n_tp == 0) & (n_fp > 0)) - lay["frac_fp_only"]) < 0.03
    assert abs(n_tp[n_tp > 0].mean() - lay["mean_tp_rows"]) < 0.05
    assert abs(n_fp[n_fp > 0].mean() - lay["mean_fp_rows"]) < 0.15


@pytest.mark.parametrize("tp_fraction", [None, 0.3, 0.6, 1.0])
def test_tp_fraction_sets_share_of_tp_recordings(tp_fraction: float | None) -> None:
    w, lay = _world(), load_layout_stats()
    real_tp = lay["frac_tp_only"] + lay["frac_both"]
    target = real_tp if tp_fraction is None else tp_fraction
    plans = [_plan_train(np.random.default_rng([11, i]), w, tp_fraction) for i in range(200)]
    n_tp = np.array([len(p[1]) for p in plans])
    n_fp = np.array([len(p[2]) for p in plans])
    assert ((n_tp > 0) | (n_fp > 0)).all()  # every recording still has a box
    assert abs(np.mean(n_tp > 0) - target) < 0.1
    if tp_fraction == 1.0:
        assert (n_tp > 0).all()
    p = _kind_probs(lay, tp_fraction)  # TP recordings split into TP only / both in the real ratio
    assert p.sum() == pytest.approx(1.0) and p[0] + p[2] == pytest.approx(target, abs=1e-3)
    assert p[2] / (p[0] + p[2]) == pytest.approx(lay["frac_both"] / real_tp)


def test_tp_fraction_none_unchanged() -> None:
    w, lay = _world(), load_layout_stats()
    p = _kind_probs(lay, None)
    assert p == pytest.approx([lay["frac_tp_only"], lay["frac_fp_only"], lay["frac_both"]], abs=1e-3)
    for i in range(20):
        assert _plan_train(np.random.default_rng([4, i]), w) == _plan_train(np.random.default_rng([4, i]), w, None)
        a, b = make_clip("train", i, SEED, 1.0), make_clip("train", i, SEED, 1.0, tp_fraction=None)
        assert (a.tp, a.fp) == (b.tp, b.fp) and np.array_equal(a.audio, b.audio)


def test_tp_fraction_end_to_end(tmp_path: Path) -> None:
    kw = dict(n_train=8, n_test=2, seconds=2.0, seed=SEED, progress=False, tp_fraction=1.0)
    a, b = synthesize(tmp_path / "a", **kw).out_dir, synthesize(tmp_path / "b", workers=2, **kw).out_dir
    for name in ("train_tp.csv", "train_fp.csv", "test_labels.csv", "calls_truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name  # deterministic
    tp = pd.read_csv(a / "train_tp.csv", dtype={"recording_id": str})
    assert set(tp.recording_id) == set(_ids(a / "train"))  # every train recording has a TP box
    plain = synthesize(tmp_path / "plain", **{**kw, "tp_fraction": None}).out_dir
    assert (a / "test_labels.csv").read_bytes() == (plain / "test_labels.csv").read_bytes()  # test clips as before
    assert _ids(a / "train") == _ids(plain / "train")


def test_label_density_one_unchanged(tmp_path: Path) -> None:
    w = _world()
    for tp_fraction in (None, 1.0):
        for i in range(50):
            rng = lambda: np.random.default_rng([6, i])  # noqa: E731
            assert _plan_train(rng(), w, tp_fraction) == _plan_train(rng(), w, tp_fraction, 1.0)
    for i in range(4):
        a, b = make_clip("train", i, SEED, 2.0, tp_fraction=1.0), make_clip("train", i, SEED, 2.0, None, 1.0, 1)
        assert (a.tp, a.fp, a.species) == (b.tp, b.fp, b.species) and np.array_equal(a.audio, b.audio)
    kw = dict(n_train=4, n_test=1, seconds=2.0, seed=SEED, progress=False, tp_fraction=1.0)
    a, b = synthesize(tmp_path / "a", **kw).out_dir, synthesize(tmp_path / "b", label_density=1.0, **kw).out_dir
    for name in ("train_tp.csv", "train_fp.csv", "test_labels.csv", "calls_truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for rid in _ids(a / "train"):
        assert (a / "train" / f"{rid}.flac").read_bytes() == (b / "train" / f"{rid}.flac").read_bytes()


def _templates(a: int, variable: bool) -> set[tuple[int, float, float]]:
    """(song type, f_min, f_max) of the templates an FP box of species a may take: the species' band and song
    type (one call shape), or those of one of its song types (variable calls)."""
    if not variable:
        row = load_species_table().iloc[a]
        return {(int(row.songtype_id), float(row.f_min), float(row.f_max))}
    return {(t.songtype_id, t.shape.f_lo, t.shape.f_hi) for t in song_types(a)}


def _check_clip_labels(clip, tp_calls: int, variable: bool = True) -> None:  # noqa: ANN001 (rfcx.synth.render.Clip)
    """TP boxes: each on its own call of its species, under that call's song type, min(tp_calls, its calls) per
    species; FP boxes of A: A silent, a call of a band-overlapping species B != A under the box, the box one of
    A's templates."""
    sim = band_similarity(load_species_table())
    hits = []
    for s, song, t0, _, t1, _ in clip.tp:
        hit = [
            k
            for k, c in enumerate(clip.calls)
            if c.species_id == s and abs(c.t_min - t0) < TOL and abs(c.t_max - t1) < TOL
        ]
        assert len(hit) == 1
        assert clip.calls[hit[0]].songtype_id == song
        hits += hit
    assert len(hits) == len(set(hits))  # no call labelled twice
    for s in {b[0] for b in clip.tp}:
        n_calls = sum(c.species_id == s for c in clip.calls)
        assert sum(b[0] == s for b in clip.tp) == min(tp_calls, n_calls)
    for a, song, t0, f0, t1, f1 in clip.fp:
        assert a not in clip.species and a not in {b[0] for b in clip.tp}
        under = [c for c in clip.calls if t0 - TOL <= (c.t_min + c.t_max) / 2 <= t1 + TOL]
        assert any(c.species_id != a and sim[a, c.species_id] > 0 for c in under)
        assert (song, f0, f1) in _templates(a, variable)
    assert len({b[0] for b in clip.fp}) == len(clip.fp)  # one FP row per labelled species, as before


@pytest.mark.parametrize("calls", [None, VARIABLE], ids=["fixed", "variable"])
def test_label_density_labels_more(calls: CallVariety | None) -> None:
    counts = {}
    for density in (1.0, 4.0):
        n_tp = n_fp = 0
        for i in range(30):
            clip = make_clip("train", i, SEED, 20.0, tp_fraction=1.0, label_density=density, calls=calls)
            _check_clip_labels(clip, round(density), calls is not None)
            assert clip.tp  # tp_fraction=1.0: every recording has TP boxes
            n_tp, n_fp = n_tp + len(clip.tp), n_fp + len(clip.fp)
        counts[density] = (n_tp, n_fp)
    (tp1, fp1), (tp4, fp4) = counts[1.0], counts[4.0]
    assert tp4 >= 2.5 * tp1 and fp4 >= 2.5 * fp1, counts
    assert fp4 > tp4  # as in the real tables, FP boxes outnumber TP boxes
    again = make_clip("train", 29, SEED, 20.0, tp_fraction=1.0, label_density=4.0, calls=calls)  # deterministic
    assert (again.tp, again.fp) == (clip.tp, clip.fp) and np.array_equal(again.audio, clip.audio)


def test_label_density_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rfcx.cli import app

    base = [
        "synth",
        "--train",
        "2",
        "--test",
        "0",
        "--seconds",
        "1",
        "--seed",
        str(SEED),
        "--mix",
        "labels",
        "--tp-fraction",
        "1.0",
    ]
    bad = CliRunner().invoke(app, [*base[:1], str(tmp_path / "bad"), *base[1:], "--label-density", "0.5"])
    assert bad.exit_code == 1 and "label_density" in bad.output
    ok = CliRunner().invoke(app, [*base[:1], str(tmp_path / "ok"), *base[1:], "--label-density", "3"])
    assert ok.exit_code == 0, ok.output
    direct = synthesize(
        tmp_path / "direct",
        n_train=2,
        n_test=0,
        seconds=1.0,
        seed=SEED,
        progress=False,
        tp_fraction=1.0,
        label_density=3.0,
    ).out_dir
    for name in ("train_tp.csv", "train_fp.csv"):
        assert (tmp_path / "ok" / name).read_bytes() == (direct / name).read_bytes(), name


def test_label_density_plans() -> None:
    w, lay = _world(), load_layout_stats()
    for density in (2.0, 4.0, 25.0):
        plans = [_plan_train(np.random.default_rng([8, i]), w, 1.0, density) for i in range(300)]
        for present, tp, fp in plans:
            labelled = [a for a, _ in fp]
            assert len(labelled) == len(set(labelled)) <= round(lay["max_fp_rows"] * density)
            assert not set(labelled) & set(present) and not set(labelled) & set(tp)
            assert all(b != a and w.similarity[a, b] > 0 and b in present for a, b in fp)
            assert tp and set(tp) <= set(present)
        with_fp = np.mean([len(p[2]) > 0 for p in plans])  # TP-only recordings get FP rows too
        assert with_fp > 0.9 * (1 - 1 / density), (density, with_fp)


@pytest.mark.parametrize("calls", [None, VARIABLE], ids=["fixed", "variable"])
def test_tp_and_fp_boxes_sit_on_calls(calls: CallVariety | None) -> None:
    sim = band_similarity(load_species_table())
    n_fp = 0
    for i in range(10):
        clip = make_clip("train", i, SEED, 20.0, calls=calls)
        for s, song, t0, _, t1, _ in clip.tp:  # a TP box covers exactly one call of its species, of its song type
            assert any(
                c.species_id == s and c.songtype_id == song and abs(c.t_min - t0) < TOL and abs(c.t_max - t1) < TOL
                for c in clip.calls
            )
        for a, song, t0, f0, t1, f1 in clip.fp:  # under an FP box of A: a call of a similar species B
            n_fp += 1
            assert a not in clip.species
            under = [c for c in clip.calls if t0 - TOL <= (c.t_min + c.t_max) / 2 <= t1 + TOL]
            assert any(c.species_id != a and sim[a, c.species_id] > 0 for c in under)
            assert (song, f0, f1) in _templates(a, calls is not None)
    assert n_fp > 0


def test_test_clips_have_0_to_3_species(data: Path) -> None:
    labels = pd.read_csv(data / "test_labels.csv").set_index("recording_id")
    assert labels.sum(axis=1).between(0, 3).all()
    truth = pd.read_csv(data / "calls_truth.csv")
    for rid, row in labels.iterrows():
        assert set(truth[truth.recording_id == rid].species_id) == {int(c[1:]) for c in row.index[row == 1]}
    counts = [len(make_clip("test", i, SEED, 5.0).species) for i in range(40)]
    assert min(counts) >= 0 and max(counts) <= 3 and len(set(counts)) > 1


def _contrast(x: np.ndarray, box: tuple, calls: list[tuple], nfft: int = 1024) -> float | None:
    """Mean power in the box (t_min, f_min, t_max, f_max) over the power in the same band at
    times free of any call (t_min, f_min, t_max, f_max) touching that band; numpy FFT frames."""
    t0, f0, t1, f1 = box
    hop = nfft // 2
    frames = np.lib.stride_tricks.sliding_window_view(x, nfft)[::hop] * np.hanning(nfft)
    f = np.fft.rfftfreq(nfft, 1 / SR)
    power = (np.abs(np.fft.rfft(frames, axis=1))[:, (f >= f0) & (f <= f1)] ** 2).sum(axis=1)
    t = (np.arange(len(power)) * hop + nfft / 2) / SR  # frame centres
    busy = np.zeros(len(t), bool)
    for c0, g0, c1, g1 in calls:
        if g1 > f0 and g0 < f1:
            busy |= (t >= c0 - 0.03) & (t <= c1 + 0.03)
    inside = (t >= t0) & (t <= t1)
    return None if not inside.any() or (~busy).sum() < 5 else power[inside].mean() / power[~busy].mean()


def test_call_energy_under_tp_boxes(data: Path) -> None:
    ratios = []
    tp, truth = pd.read_csv(data / "train_tp.csv"), pd.read_csv(data / "calls_truth.csv")
    for box in tp.itertuples():  # on the written FLACs
        x, _ = sf.read(str(data / "train" / f"{box.recording_id}.flac"))
        calls = truth[truth.recording_id == box.recording_id][["t_min", "f_min", "t_max", "f_max"]]
        ratios.append(_contrast(x, (box.t_min, box.f_min, box.t_max, box.f_max), calls.values.tolist()))
    for i in range(30):  # and on more clips in memory
        clip = make_clip("train", i, SEED, 10.0)
        calls = [(c.t_min, c.call.f_min, c.t_max, c.call.f_max) for c in clip.calls]
        ratios += [_contrast(clip.audio.astype(float), (b[2], b[3], b[4], b[5]), calls) for b in clip.tp]
    ratios = [r for r in ratios if r is not None]
    assert len(ratios) >= 5 and np.median(ratios) > 3.0 and min(ratios) > 1.1, ratios


def test_species_table_and_layout() -> None:
    table = load_species_table()
    assert len(table) == N_SPECIES and list(table.species_id) == list(range(N_SPECIES))
    assert ((table.f_min > 0) & (table.f_min < table.f_max) & (table.f_max <= SR / 2)).all()
    assert (table.duration > 0).all() and table.songtype_id.isin([1, 4]).all()
    lay = load_layout_stats()
    assert abs(lay["frac_tp_only"] + lay["frac_fp_only"] + lay["frac_both"] - 1) < 1e-3
    assert 1.0 <= lay["mean_tp_rows"] < 1.2 and 1.5 < lay["mean_fp_rows"] < 2.5


def test_derive_reproduces_shipped_tables() -> None:
    real = _need_real()
    derived = derive_species_table(real / "train_tp.csv", real / "train_fp.csv")
    pd.testing.assert_frame_equal(derived, load_species_table(), check_dtype=False)
    assert derive_layout_stats(real / "train_tp.csv", real / "train_fp.csv") == pytest.approx(load_layout_stats())


def test_call_shapes_differ_between_similar_bands() -> None:
    assert len(SPECIES_KIND) == N_SPECIES and set(SPECIES_KIND) <= set(KINDS)
    sim = band_similarity(load_species_table())
    for a in range(N_SPECIES):
        for b in np.argsort(-sim[a], kind="stable")[:3]:
            assert SPECIES_KIND[a] != SPECIES_KIND[b], (a, int(b))
    s = species_shapes()[5]
    assert make_shape(5, s.f_lo, s.f_hi, s.duration) == s  # deterministic per species


@pytest.mark.parametrize("species_id", range(N_SPECIES))
def test_calls_inside_species_band(species_id: int) -> None:
    shape = species_shapes()[species_id]
    call = render_call(shape, np.random.default_rng(species_id))
    assert abs(call.duration / shape.duration - 1) <= 0.16
    assert shape.f_lo * 0.94 <= call.f_min < call.f_max <= shape.f_hi * 1.06
    power = np.abs(np.fft.rfft(call.audio.astype(float))) ** 2
    f = np.fft.rfftfreq(len(call.audio), 1 / SR)
    width = shape.f_hi - shape.f_lo
    inside = (f >= shape.f_lo - 0.1 * width) & (f <= shape.f_hi + 0.1 * width)
    assert power[inside].sum() / power.sum() > 0.95


def test_background_recording(tmp_path: Path) -> None:
    real = _need_real()
    if not (real / "f97ababc1.flac").is_file():
        pytest.skip("background recording not found")
    x, sr = sf.read(str(real / "f97ababc1.flac"), frames=SR * 2)
    low = tmp_path / "low.wav"
    sf.write(str(low), x[::3], sr // 3)  # 16 kHz: resampled to 48 kHz on load
    plain = synthesize(tmp_path / "plain", n_train=3, n_test=1, seconds=5.0, seed=1, progress=False).out_dir
    for bg in (real / "f97ababc1.flac", low):
        out = synthesize(
            tmp_path / bg.stem, n_train=3, n_test=1, seconds=5.0, seed=1, background=bg, progress=False
        ).out_dir
        for name in ("train_tp.csv", "train_fp.csv", "test_labels.csv"):  # labels don't depend on it
            assert (out / name).read_bytes() == (plain / name).read_bytes()
        rid = _ids(out / "train")[0]
        assert not np.array_equal(
            sf.read(str(out / "train" / f"{rid}.flac"))[0], sf.read(str(plain / "train" / f"{rid}.flac"))[0]
        )


def test_bad_arguments(tmp_path: Path) -> None:
    bad = [
        (dict(n_train=0), "n_train"),
        (dict(n_test=-1), "n_test"),
        (dict(seconds=0), "seconds"),
        (dict(seconds=float("nan")), "seconds"),
        (dict(workers=0), "workers"),
        (dict(background=tmp_path / "missing.flac"), "missing.flac"),
        (dict(tp_fraction=0.0), "tp_fraction"),
        (dict(tp_fraction=-0.2), "tp_fraction"),
        (dict(tp_fraction=1.5), "tp_fraction"),
        (dict(tp_fraction=float("nan")), "tp_fraction"),
        (dict(tp_fraction="0.5"), "tp_fraction"),
        (dict(tp_fraction=True), "tp_fraction"),
        (dict(label_density=0.5), "label_density"),
        (dict(label_density=0), "label_density"),
        (dict(label_density=-2.0), "label_density"),
        (dict(label_density=float("nan")), "label_density"),
        (dict(label_density=float("inf")), "label_density"),
        (dict(label_density="4"), "label_density"),
        (dict(label_density=True), "label_density"),
        (dict(label_density=None), "label_density"),
    ]
    text = tmp_path / "notes.flac"
    text.write_text("not audio")
    bad.append((dict(background=text), "notes.flac"))
    for kwargs, needle in bad:
        with pytest.raises(ValueError, match=re.escape(needle)):
            synthesize(tmp_path / "out", **{"n_train": 1, "n_test": 0, "seconds": 1.0, "progress": False, **kwargs})
    stale = tmp_path / "stale"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "0123abcde.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds"):
        synthesize(stale, n_train=1, n_test=0, seconds=1.0, progress=False)


def test_time_per_60s_clip() -> None:
    make_clip("train", 0, 0, 5.0)  # warm caches
    t0 = time.perf_counter()
    for i in range(3):
        make_clip("train", i, 0, 60.0)
    print(f"\nsynthetic 60 s clip: {(time.perf_counter() - t0) / 3:.3f} s (audio only, no FLAC)")


def test_label_density_spreads_tp_species_over_all_species() -> None:
    from rfcx.synth.plan import SPLIT_CODES, _plan_train, _world

    w = _world()
    counts = np.zeros(24, dtype=int)
    for i in range(96):
        rng = np.random.default_rng([0, SPLIT_CODES["train"], i])
        _, tp, _ = _plan_train(rng, w, 1.0, 4.0, i)
        assert tp[0] == i % 24  # the first TP species follows the clip index
        counts[tp] += 1
    assert counts.min() >= 4  # every species has TP recordings, about equally many
