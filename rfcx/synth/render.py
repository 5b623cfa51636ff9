"""A synthetic clip: calls placed on a background (a real rainforest recording or synthetic noise and rain), as
audio, with the boxes of the calls the plan labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from rfcx.errors import InvalidInputError
from rfcx.synth.calls import SR, Call, CallShape, render_call
from rfcx.synth.plan import (
    SPLIT_CODES,
    TEST_SPECIES_P,
    TRAIN,
    Mix,
    _check_label_density,
    _check_tp_fraction,
    _plan_mix,
    _plan_train,
    _round_half_up,
    _World,
    _world,
)
from rfcx.synth.species import N_SPECIES
from rfcx.synth.variety import (
    N_OUTSIDERS,
    QUIETER_DB,
    VARIABLE,
    CallVariety,
    draw_singer,
    sing,
    song_types,
    voice,
)

PEAK = 0.5  # clips are normalised to this peak before 16-bit PCM
CALLS_PER_SPECIES = (2, 6)  # each species present in a clip calls this many times (inclusive)


@dataclass(frozen=True)
class PlacedCall:
    species_id: int
    start: int  # sample index
    call: Call
    snr_db: float  # call power over background power in the call's band
    songtype_id: int = 0

    @property
    def t_min(self) -> float:
        return self.start / SR

    @property
    def t_max(self) -> float:
        return (self.start + len(self.call.audio)) / SR


@dataclass(frozen=True)
class Clip:
    """One synthetic clip: audio, its label boxes (species_id, songtype_id, t_min, f_min,
    t_max, f_max), the species present and every placed call of theirs; ``others``: the calls of species
    outside the 24 (never labelled, species ids from ``N_SPECIES`` on)."""

    audio: np.ndarray
    tp: list[tuple]
    fp: list[tuple]
    species: tuple[int, ...]
    calls: list[PlacedCall]
    others: tuple[PlacedCall, ...] = ()


@dataclass(frozen=True)
class _Voice:
    """A call placed in a clip before its level is set: species, start sample, audio, song type, and how much
    quieter than its species' level its individual calls (distance)."""

    species: int
    start: int
    call: Call
    songtype_id: int
    quieter_db: float = 0.0


def _spread(rng: np.random.Generator, calls: list[Call], n: int) -> list[tuple[int, int]]:
    """Non-overlapping start samples for the first of ``calls`` that fit an n-sample clip, at random times:
    (start, index) pairs."""
    seconds = n / SR
    calls = list(calls)
    gap = min(0.25, 0.02 * seconds)
    while len(calls) > 1 and sum(c.duration for c in calls) + gap * (len(calls) - 1) > seconds:
        calls.pop()
    slack = seconds - sum(c.duration for c in calls) - gap * (len(calls) - 1)
    offsets = np.sort(rng.uniform(0, max(slack, 0.0), len(calls)))
    placed, t = [], 0.0
    for i, (off, call) in enumerate(zip(offsets, calls)):
        start = min(int(round((t + off) * SR)), n - len(call.audio))
        placed.append((max(start, 0), i))
        t += call.duration + gap
    return placed


def _place_calls(rng: np.random.Generator, shape: CallShape, n: int) -> list[tuple[int, Call]]:
    """2-6 non-overlapping calls of one species at random times in an n-sample clip (one call shape)."""
    k = int(rng.integers(CALLS_PER_SPECIES[0], CALLS_PER_SPECIES[1] + 1))
    calls = [render_call(shape, rng, max_duration=0.9 * n / SR) for _ in range(k)]
    return [(start, calls[i]) for start, i in _spread(rng, calls, n)]


def _place_voices(rng: np.random.Generator, species: list[int], variety: CallVariety, n: int) -> list[_Voice]:
    """The calls of ``species`` (rfcx.synth.variety.voice: outsiders from ``N_SPECIES`` on) in an n-sample
    clip: each species one individual, or in a chorus (``chorus_p``) 2-3 whose calls may overlap; an individual
    calls 2-6 times (2-5 in a chorus), its calls never overlapping one another."""
    seconds = n / SR
    out = []
    for s in species:
        types = voice(s, variety)
        singers = 1 if rng.random() >= variety.chorus_p else int(rng.integers(2, 4))
        most = CALLS_PER_SPECIES[1] if singers == 1 else CALLS_PER_SPECIES[1] - 1
        for _ in range(singers):
            singer = draw_singer(rng, types, variety)
            sung = [sing(rng, singer, variety, 0.9 * seconds) for _ in range(int(rng.integers(2, most + 1)))]
            for start, i in _spread(rng, [c.call for c in sung], n):
                out.append(_Voice(s, start, sung[i].call, sung[i].songtype_id, singer.quieter_db))
    return out


def _outsiders(rng: np.random.Generator, variety: CallVariety) -> list[int]:
    """The species outside the 24 that call in a clip: Poisson(``outsiders``) of them, as ids from ``N_SPECIES``."""
    k = min(int(rng.poisson(variety.outsiders)), N_OUTSIDERS)
    return [N_SPECIES + int(i) for i in rng.choice(N_OUTSIDERS, k, replace=False)] if k else []


def _noise_spectrum(rng: np.random.Generator, n: int) -> np.ndarray:
    """Power per rfft bin of the stationary background, each component at unit total power
    times its level: coloured 1/f^alpha noise (pink..brown above a knee, rolled off at the
    top), a white floor, and 0-2 insect choruses (cicada-like: a tone pulsed at 30-250 Hz
    with slow swells, i.e. narrow lines at fc + {0, +-1, +-2} * pulse rate)."""
    f = np.fft.rfftfreq(n, 1 / SR)
    alpha = rng.uniform(0.5, 2.0)
    knee, top = rng.uniform(150, 800), rng.uniform(9_000, 18_000)
    coloured = np.maximum(f, knee) ** -alpha / (1 + (f / top) ** 6)
    coloured[f < 20] = 0.0
    power = coloured / coloured.sum()
    power += 10 ** (rng.uniform(-35, -20) / 10) / f.size
    df = f[1] if f.size > 1 else SR
    for _ in range(int(rng.integers(0, 3))):
        fc = float(np.exp(rng.uniform(np.log(2_500), np.log(12_000))))
        rate, width = rng.uniform(30, 250), rng.uniform(0.5, 3.0)
        level = 10 ** (rng.uniform(-25, -8) / 10)
        for k, amp in ((-2, 0.0625), (-1, 0.25), (0, 0.375), (1, 0.25), (2, 0.0625)):
            centre = fc + k * rate
            lo, hi = np.searchsorted(f, [centre - 5 * width - df, centre + 5 * width + df])
            bump = np.exp(-0.5 * ((f[lo:hi] - centre) / width) ** 2)
            if bump.sum() > 0:
                power[lo:hi] += level * amp**2 * bump / bump.sum()
    return power


def _rain(rng: np.random.Generator, n: int) -> np.ndarray:
    """Broadband random impulses: short decaying noise bursts at Poisson times."""
    n_drops = int(rng.poisson(rng.uniform(5, 80) * n / SR))
    x = np.zeros(n)
    if n_drops == 0:
        return x
    length = 144  # 3 ms
    pos = rng.integers(0, max(n - length, 1), n_drops)
    decay = np.exp(-np.arange(length)[None, :] / (rng.uniform(0.2, 1.2, (n_drops, 1)) * SR / 1000))
    amp = np.exp(rng.uniform(np.log(0.1), 0.0, (n_drops, 1)))
    drops = rng.standard_normal((n_drops, length)) * decay * amp
    idx = np.minimum(pos[:, None] + np.arange(length)[None, :], n - 1)
    # numpy's stubs type bincount as an int array, also with float weights (it returns float64 then)
    x = np.bincount(idx.ravel(), weights=drops.ravel(), minlength=n)  # type: ignore[assignment]
    return x / (x.std() + 1e-12)


def _background(rng: np.random.Generator, n: int, real: np.ndarray | None) -> np.ndarray:
    """Stationary noise (see ``_noise_spectrum``), sometimes rain, optionally a real recording."""
    mag = np.sqrt(_noise_spectrum(rng, n))
    spec = (rng.standard_normal(mag.size) + 1j * rng.standard_normal(mag.size)) * mag
    bg = np.fft.irfft(spec, n)
    bg /= bg.std() + 1e-12
    if rng.random() < 0.3:
        bg += 10 ** (rng.uniform(-20, -6) / 20) * _rain(rng, n)
    if real is not None:
        offset = int(rng.integers(0, len(real)))
        seg = np.tile(real, -(-(offset + n) // len(real)))[offset : offset + n].astype(np.float64)
        bg += 10 ** (rng.uniform(-6, 6) / 20) * seg / (seg.std() + 1e-12)
    return bg / (bg.std() + 1e-12)


def _band_psd(x: np.ndarray, nfft: int = 2048, frames: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin power such that the sum over a band is the signal's mean power in that band."""
    nfft = min(nfft, len(x) - len(x) % 2)
    starts = np.linspace(0, len(x) - nfft, frames).astype(int)
    win = np.hanning(nfft)
    spec = np.abs(np.fft.rfft(x[starts[:, None] + np.arange(nfft)] * win, axis=1)) ** 2
    return np.fft.rfftfreq(nfft, 1 / SR), 2 * spec.mean(0) / (nfft * np.sum(win**2))


def _boxes(
    rng: np.random.Generator,
    w: _World,
    placed: list[_Voice],
    tp_species: list[int],
    fp_pairs: list[tuple[int, int]],
    seconds: float,
    tp_calls: int = 1,
    fp_noise: int = 0,
    present: tuple[int, ...] = (),
    variety: CallVariety | None = None,
    others: list[_Voice] | None = None,
) -> tuple[list[tuple], list[tuple]]:
    """TP boxes tight around ``tp_calls`` distinct calls of each TP species (fewer when it
    calls fewer times), under the call's song type; FP boxes of a template of A (one call shape: A's median
    duration and band; with a ``variety``: one of A's song types, by their shares) centred on a call of the
    confused species B (each box once). ``fp_noise`` more FP boxes of absent species sit on background, or,
    half of them where ``others`` (outsiders' calls) are in the clip, on one of those."""
    used: set[int] = set()

    def pick(species: int) -> _Voice:
        own = [i for i, p in enumerate(placed) if p.species == species]
        fresh = [i for i in own if i not in used] or own
        i = fresh[int(rng.integers(len(fresh)))]
        used.add(i)
        return placed[i]

    songtype = w.table.songtype_id.to_numpy()

    def template(a: int) -> tuple[int, float, float, float]:
        """(song type, duration, f_min, f_max) of a matcher's template of species a."""
        if variety is None:
            return int(songtype[a]), float(w.table.duration[a]), float(w.table.f_min[a]), float(w.table.f_max[a])
        types = song_types(a, variety.song_types)
        weights = np.asarray([t.weight for t in types])
        t = types[int(rng.choice(len(types), p=weights / weights.sum()))]
        return t.songtype_id, t.shape.duration, t.shape.f_lo, t.shape.f_hi

    tp, fp = [], []
    for s in tp_species:
        for _ in range(min(tp_calls, sum(p.species == s for p in placed))):
            v = pick(s)  # TP picks come first, so each is a call not labelled yet
            (t0, t1), call = _span(v), v.call
            pad = max(0.05 * (call.f_max - call.f_min), 50.0)
            tp.append((s, v.songtype_id, t0, max(call.f_min - pad, 0.0), t1, min(call.f_max + pad, SR / 2)))
    for a, b in fp_pairs:
        t0, t1 = _span(pick(b))
        song, dur, f0, f1 = template(a)
        dur = min(dur, seconds)
        start = float(np.clip((t0 + t1 - dur) / 2, 0.0, seconds - dur))
        fp.append((a, song, start, f0, start + dur, f1))
    absent = [s for s in range(N_SPECIES) if s not in present]
    for _ in range(fp_noise if absent else 0):  # a matcher's hit on background or another sound: a species not there
        a = absent[int(rng.integers(len(absent)))]
        song, dur, f0, f1 = template(a)
        dur = min(dur, seconds)
        if others and rng.random() < 0.5:
            t0, t1 = _span(others[int(rng.integers(len(others)))])
            start = float(np.clip((t0 + t1 - dur) / 2, 0.0, seconds - dur))
        else:
            start = float(rng.uniform(0.0, seconds - dur))
        fp.append((a, song, start, f0, start + dur, f1))
    return tp, list(dict.fromkeys(fp))  # a matcher reports a hit once (a pair drawn again on one call, a clip-long box)


def _span(v: _Voice) -> tuple[float, float]:
    return v.start / SR, (v.start + len(v.call.audio)) / SR


def make_clip(
    split: str,
    index: int,
    seed: int = 0,
    seconds: float = 60.0,
    background: np.ndarray | Sequence[np.ndarray] | None = None,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
    mix: Mix | None = None,
    calls: CallVariety | None = VARIABLE,
) -> Clip:
    """Make one clip from the RNG seeded by (seed, split, index). Its labels do not depend
    on ``background`` (a real recording, mono float at 48 kHz, or several: each clip mixes in one of them),
    only its audio does. Without ``mix`` the species follow the labels (``tp_fraction`` and ``label_density``,
    train clips only: see ``_plan_train``; a TP species gets up to round(``label_density``) of its calls
    labelled); with a :class:`Mix` they follow its skewed species mix and its sparse labels. ``calls``: how
    calls vary (rfcx.synth.variety: song types, individuals, choruses, distance, outsiders), or None for one
    call shape per species."""
    _check_tp_fraction(tp_fraction)
    _check_label_density(label_density)
    w = _world()
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    n = max(int(round(seconds * SR)), 64)
    if background is not None and not isinstance(background, np.ndarray):
        background = (
            background[int(np.random.default_rng([seed, SPLIT_CODES[split], index, 7]).integers(len(background)))]
            if len(background)
            else None
        )
    fp_noise = 0
    if mix is not None:
        present, tp_species, fp_pairs, fp_noise = _plan_mix(
            rng, w, mix, mix.popularity(seed), mix.tp_probability(seed), split == TRAIN
        )
    elif split == TRAIN:
        present, tp_species, fp_pairs = _plan_train(rng, w, tp_fraction, label_density, index)
    else:
        k = int(rng.choice(len(TEST_SPECIES_P), p=TEST_SPECIES_P))
        present = [int(s) for s in rng.choice(N_SPECIES, k, replace=False)]
        tp_species, fp_pairs = [], []
    others: list[_Voice] = []
    if calls is None:
        songtype = w.table.songtype_id.to_numpy()
        placed = [
            _Voice(s, start, call, int(songtype[s]))
            for s in present
            for start, call in _place_calls(rng, w.shapes[s], n)
        ]
    else:
        placed = _place_voices(rng, present, calls, n)
        others = _place_voices(rng, _outsiders(rng, calls), calls, n)
    tp, fp = _boxes(
        rng,
        w,
        placed,
        tp_species,
        fp_pairs,
        n / SR,
        _round_half_up(label_density),
        fp_noise,
        tuple(present),
        calls,
        others,
    )

    audio = _background(rng, n, background)
    freqs, psd = _band_psd(audio)
    callers = list(dict.fromkeys([*present, *(v.species for v in others)]))
    if mix is None:
        level = {s: rng.normal(10, 6) for s in callers}  # per species: near or far
        lo, hi, jitter = -5.0, 25.0, 2.0
    else:
        level = {s: rng.uniform(*mix.snr_db) for s in callers}
        lo, hi, jitter = mix.snr_db[0] - 3.0, mix.snr_db[1] + 3.0, 1.5
    if calls is not None:
        lo -= QUIETER_DB * calls.distance
    mixed: list[PlacedCall] = []
    for v in placed + others:
        call = v.call
        snr = float(np.clip(level[v.species] - v.quieter_db + rng.normal(0, jitter), lo, hi))
        band = (freqs >= call.f_min) & (freqs <= call.f_max)
        p_band = float(psd[band].sum()) if band.any() else float(psd[np.argmin(abs(freqs - call.f_min))])
        audio[v.start : v.start + len(call.audio)] += math.sqrt(p_band * 10 ** (snr / 10)) * call.audio
        mixed.append(PlacedCall(v.species, v.start, call, snr, v.songtype_id))
    audio *= PEAK / (np.abs(audio).max() + 1e-12)
    own = mixed[: len(placed)]
    return Clip(audio.astype(np.float32), tp, fp, tuple(sorted(present)), own, tuple(mixed[len(placed) :]))


def _load_background(path: Path) -> np.ndarray:
    """Read a background recording once, as mono float32 at 48 kHz."""
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files
        raise InvalidInputError(f"background file {path} is not a readable audio file: {e}") from e
    x = x.mean(axis=1)
    if x.size == 0:
        raise InvalidInputError(f"background file {path} holds no samples")
    if sr != SR:
        from scipy.signal import resample_poly

        g = math.gcd(SR, sr)
        x = resample_poly(x, SR // g, sr // g).astype(np.float32)
    return x
