"""Variable calls in the synthetic generator (rfcx.synth.variety, ``rfcx synth --calls variable``): song types,
individuals, choruses, distance and unlabelled outsiders."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rfcx.errors import InvalidInputError
from rfcx.synth.calls import BAND_MARGIN, SR, CallShape, render_call, species_shapes
from rfcx.synth.dataset import synthesize
from rfcx.synth.plan import Mix
from rfcx.synth.render import make_clip
from rfcx.synth.species import N_SPECIES, load_species_table
from rfcx.synth.variety import (
    VARIABLE,
    CallVariety,
    Singer,
    at_distance,
    draw_singer,
    outsider_shapes,
    sing,
    song_types,
)


def test_song_types_per_species() -> None:
    table = load_species_table()
    counts = []
    for s in range(N_SPECIES):
        types = song_types(s)
        counts.append(len(types))
        main = species_shapes()[s]
        assert types[0].shape == main and types[0].songtype_id == table.songtype_id[s]  # the one-shape call first
        assert [t.songtype_id for t in types] == list(range(types[0].songtype_id, types[0].songtype_id + len(types)))
        for t in types[1:]:  # other kinds, inside the species' band
            assert t.shape.kind != main.kind
            assert main.f_lo - 1e-6 <= t.shape.f_lo < t.shape.f_hi <= main.f_hi + 1e-6
            assert t.shape.f_hi - t.shape.f_lo >= 0.45 * (main.f_hi - main.f_lo) - 1e-6
            assert 0.25 <= t.shape.duration <= 8.0
        assert song_types(s, 1) == types[:1]
        assert song_types(s) == types  # deterministic
    assert min(counts) == 1 and max(counts) >= 3 and 1.5 <= np.mean(counts) <= 3.0, counts


def _pitch(call_f_min: float, shape: CallShape) -> float:
    """The pitch factor of a trill call (its lowest frequency is the shape's band, moved by the pitch)."""
    return call_f_min / (shape.f_lo + BAND_MARGIN * (shape.f_hi - shape.f_lo))


def test_calls_vary_in_pitch_and_duration_within_bounds() -> None:
    first = song_types(8)[0]  # species 8: a trill, whose extent gives its pitch
    assert first.shape.kind == "trill"
    variety = CallVariety(contour=0.0, distance=0.0)
    rng = np.random.default_rng(0)
    pitches, stretches, by_singer = [], [], []
    for _ in range(12):
        singer = draw_singer(rng, (first,), variety)
        own = []
        for _ in range(8):
            call = sing(rng, singer, variety).call
            own.append(_pitch(call.f_min, first.shape))
            stretches.append(call.duration / first.shape.duration)
        pitches += own
        by_singer.append(own)
    assert math.exp(-0.12) - 1e-3 <= min(pitches) and max(pitches) <= math.exp(0.12) + 1e-3
    assert max(pitches) / min(pitches) > 1.1  # well beyond the one-shape generator's +-5 %...
    assert 0.65 - 1e-3 <= min(stretches) and max(stretches) <= 1.35 + 1e-3
    assert max(stretches) / min(stretches) > 1.4  # ... and +-15 %
    within = np.mean([np.std(np.log(p)) for p in by_singer])
    between = np.std([np.mean(np.log(p)) for p in by_singer])
    assert between > 1.5 * within  # an individual keeps its own pitch


def test_contour_bends_the_call() -> None:
    shape = species_shapes()[6]  # a rising sweep
    straight = render_call(shape, np.random.default_rng(1), pitch=1.0, stretch=1.0)
    bent = render_call(shape, np.random.default_rng(1), pitch=1.0, stretch=1.0, bend=(0.1, 0.0))
    assert len(bent.audio) == len(straight.audio)
    assert not np.allclose(bent.audio, straight.audio)
    assert bent.f_max > straight.f_max  # the arch lifts the middle of the sweep


def test_distance_dulls_and_keeps_unit_rms() -> None:
    wide = CallShape(0, "buzz", 2_000.0, 18_000.0, 1.0, 1, 80.0, 1.0, 1, ())
    call = render_call(wide, np.random.default_rng(2), pitch=1.0, stretch=1.0)

    def high_share(x: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(x.astype(float))) ** 2
        return float(power[np.fft.rfftfreq(len(x), 1 / SR) > 10_000].sum() / power.sum())

    shares = [high_share(at_distance(call, d, np.random.default_rng(3)).audio) for d in (0.0, 0.5, 1.0)]
    assert shares[0] == pytest.approx(high_share(call.audio), rel=0.02)
    assert shares[0] > shares[1] > shares[2]
    far = at_distance(call, 1.0, np.random.default_rng(3))
    assert len(far.audio) == len(call.audio) and (far.f_min, far.f_max) == (call.f_min, call.f_max)
    assert float(np.sqrt(np.mean(far.audio.astype(float) ** 2))) == pytest.approx(1.0, rel=1e-3)
    assert Singer((), 0, 0.0, 1.0, 1.0).quieter_db > Singer((), 0, 0.0, 1.0, 0.2).quieter_db > 0


def _overlapping(clip) -> bool:  # noqa: ANN001 (rfcx.synth.render.Clip)
    for s in clip.species:
        spans = sorted((c.t_min, c.t_max) for c in clip.calls if c.species_id == s)
        if any(b0 < a1 for (_, a1), (b0, _) in zip(spans, spans[1:])):
            return True
    return False


def test_choruses_overlap_and_solo_singers_do_not() -> None:
    mix = Mix(species_per_clip=2.0)
    chorus = [make_clip("test", i, 4, 30.0, mix=mix, calls=CallVariety(chorus_p=1.0)) for i in range(8)]
    solo = [make_clip("test", i, 4, 30.0, mix=mix, calls=CallVariety(chorus_p=0.0)) for i in range(8)]
    assert sum(map(_overlapping, chorus)) >= 3
    assert not any(map(_overlapping, solo))
    assert sum(len(c.calls) for c in chorus) > 1.5 * sum(len(c.calls) for c in solo)


def test_outsiders_call_unlabelled(tmp_path: Path) -> None:
    shapes = outsider_shapes()
    assert len(shapes) >= 24 and len({s.kind for s in shapes}) >= 6
    many = CallVariety(outsiders=3.0)
    clips = [make_clip("train", i, 5, 20.0, mix=Mix(tp_per_clip=1.0), calls=many) for i in range(6)]
    assert sum(len(c.others) for c in clips) >= 6
    for clip in clips:
        assert all(o.species_id >= N_SPECIES for o in clip.others)
        assert all(c.species_id < N_SPECIES for c in clip.calls)
        assert all(b[0] < N_SPECIES for b in clip.tp + clip.fp)
    quiet = make_clip("train", 0, 5, 20.0, mix=Mix(tp_per_clip=1.0), calls=CallVariety(outsiders=0.0))
    assert quiet.others == ()
    out = synthesize(tmp_path / "d", n_train=4, n_test=3, seconds=10.0, seed=5, progress=False, mix=Mix())
    truth = pd.read_csv(out.out_dir / "calls_truth.csv")
    assert truth.species_id.between(0, N_SPECIES - 1).all() and "songtype_id" in truth.columns
    labels = pd.read_csv(out.out_dir / "test_labels.csv")
    assert list(labels.columns[1:]) == [f"s{k}" for k in range(N_SPECIES)]


def test_call_variety_checks_its_values() -> None:
    for kwargs, name in (
        (dict(pitch=-0.1), "pitch"),
        (dict(song_types=0), "song_types"),
        (dict(song_types=2.5), "song_types"),
        (dict(chorus_p=1.5), "chorus_p"),
        (dict(outsiders=float("nan")), "outsiders"),
        (dict(distance=True), "distance"),
    ):
        with pytest.raises(InvalidInputError, match=re.escape(name)):
            CallVariety(**kwargs)
    assert VARIABLE == CallVariety()


def test_cli_calls_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rfcx.cli import app

    runner = CliRunner()
    base = ["synth", "--train", "3", "--test", "1", "--seconds", "4", "--seed", "2", "--mix", "labels"]
    fixed = runner.invoke(app, [*base, str(tmp_path / "f"), "--calls", "fixed"])
    assert fixed.exit_code == 0, fixed.output
    synthesize(tmp_path / "lib", n_train=3, n_test=1, seconds=4.0, seed=2, progress=False, calls=None)
    for name in ("train_tp.csv", "train_fp.csv", "calls_truth.csv"):
        assert (tmp_path / "f" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes(), name
    variable = runner.invoke(app, [*base, str(tmp_path / "v"), "--song-types", "2", "--outsiders", "0.5"])
    assert variable.exit_code == 0, variable.output
    tp = pd.read_csv(tmp_path / "v" / "calls_truth.csv")
    first = load_species_table().songtype_id.to_numpy()[tp.species_id]
    assert ((tp.songtype_id - first).between(0, 1)).all()  # at most two song types
    for args, needle in (
        (["--calls", "fixed", "--song-types", "2"], "--song-types and --outsiders belong to --calls variable"),
        (["--calls", "wobbly"], "--calls"),
        (["--song-types", "9"], "song_types"),
    ):
        bad = runner.invoke(app, [*base, str(tmp_path / "bad"), *args])
        assert bad.exit_code != 0 and needle in bad.output, bad.output
