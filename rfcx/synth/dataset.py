"""Synthetic RFCX-like data set: FLAC clips plus label tables in the competition's layout.

Each clip is made from its own RNG, seeded by (seed, split, index), so a data set is
reproducible and clips can be made in any order or in parallel. Train clips carry
sparse labels like the real ones: about one TP box per TP recording although its
species calls several times, and FP boxes that mark a call of a band-similar species
under the wrong species id. ``test_labels.csv`` holds the clip-level truth for the
test clips and ``calls_truth.csv`` every call placed in every clip. ``tp_fraction`` raises
(or lowers) the share of train recordings that carry TP boxes above the real ~24 %, and
``label_density`` labels more of what is in each train clip (more TP calls per TP species,
more FP rows per recording) while keeping the structure of the real labels.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from rfcx.errors import InvalidInputError
from rfcx.synth.calls import SR, Call, CallShape, render_call, species_shapes
from rfcx.synth.species import N_SPECIES, band_similarity, load_layout_stats, load_species_table

TRAIN, TEST = "train", "test"
SPLIT_CODES = {TRAIN: 1, TEST: 2}
LABEL_COLUMNS = ["recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"]
SUBMISSION_COLUMNS = ["recording_id"] + [f"s{i}" for i in range(N_SPECIES)]
TRUTH_COLUMNS = ["split", "recording_id", "species_id", "t_min", "f_min", "t_max", "f_max", "snr_db"]
MIN_SECONDS = 0.1
PEAK = 0.5  # clips are normalised to this peak before 16-bit PCM
CALLS_PER_SPECIES = (2, 6)  # each species present in a clip calls this many times (inclusive)
EXTRA_SPECIES = (0, 2)  # unlabelled species calling in a train clip
TEST_SPECIES_P = (0.1, 0.35, 0.35, 0.2)  # P(0, 1, 2, 3 species) in a test clip
N_CONFUSERS = 3  # an FP box of A sits on a call of one of A's most band-similar species


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    n_train: int
    n_test: int
    n_tp_rows: int
    n_fp_rows: int
    seconds: float
    elapsed_s: float


@dataclass(frozen=True)
class PlacedCall:
    species_id: int
    start: int  # sample index
    call: Call
    snr_db: float  # call power over background power in the call's band

    @property
    def t_min(self) -> float:
        return self.start / SR

    @property
    def t_max(self) -> float:
        return (self.start + len(self.call.audio)) / SR


@dataclass(frozen=True)
class Clip:
    """One synthetic clip: audio, its label boxes (species_id, songtype_id, t_min, f_min,
    t_max, f_max), the species present and every placed call."""

    audio: np.ndarray
    tp: list[tuple]
    fp: list[tuple]
    species: tuple[int, ...]
    calls: list[PlacedCall]


@dataclass(frozen=True)
class _World:
    table: pd.DataFrame
    shapes: tuple[CallShape, ...]
    layout: dict[str, float]
    similarity: np.ndarray


@lru_cache(maxsize=1)
def _world() -> _World:
    table = load_species_table()
    return _World(table, species_shapes(), load_layout_stats(), band_similarity(table))


@dataclass(frozen=True)
class Mix:
    """An ecological species mix (``rfcx synth --mix zipf``), shared by the train and test clips of a data set.

    Species presence is skewed: species ranked by a permutation drawn from the data set's seed, species of rank
    r (1-based) present with a weight proportional to ``r ** -zipf_s``; each clip holds Poisson(``species_per_clip``)
    species (at most ``MAX_SPECIES``). Labels are as sparse as the competition's: about ``tp_per_clip`` TP boxes
    per train clip (one labelled call of a labelled species), spread over the species by ``tp_balance`` (1: every
    species about as many TP boxes, as the competition's balanced tables; 0: TP boxes follow presence), and about
    ``fp_per_clip`` FP boxes per train clip, a template matcher's hits: a band-similar species' template on a call
    of a species that is present, or (``fp_noise_p``, or in a clip without calls) on background alone.
    Each species present calls at a level uniform in ``snr_db`` (dB over the background in its band), each call
    within +-3 dB of it: quiet, distant callers as well as loud, near ones."""

    zipf_s: float = 1.0
    species_per_clip: float = 1.5
    tp_per_clip: float = 0.26
    fp_per_clip: float = 1.6
    tp_balance: float = 1.0
    fp_noise_p: float = 0.25
    snr_db: tuple[float, float] = (-3.0, 22.0)

    def __post_init__(self) -> None:
        for name, lo, hi in (
            ("zipf_s", 0.0, 5.0),
            ("species_per_clip", 0.0, float(MAX_SPECIES)),
            ("tp_per_clip", 0.0, 10.0),
            ("fp_per_clip", 0.0, 20.0),
            ("tp_balance", 0.0, 1.0),
            ("fp_noise_p", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if (
                not isinstance(value, numbers.Real)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not lo <= value <= hi  # type: ignore[operator]  # typeshed: numbers.Real does not compare
            ):
                raise InvalidInputError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
        if len(self.snr_db) != 2 or not self.snr_db[0] <= self.snr_db[1]:
            raise InvalidInputError(f"snr_db must be two levels lo <= hi (dB), got {self.snr_db!r}")

    def popularity(self, seed: int) -> np.ndarray:
        """P(species) of one draw: Zipf weights over a seeded ranking of the species."""
        order = np.random.default_rng([seed, 0x2195]).permutation(N_SPECIES)
        w = np.empty(N_SPECIES)
        w[order] = np.arange(1, N_SPECIES + 1, dtype=float) ** -self.zipf_s
        return w / w.sum()

    def tp_probability(self, seed: int) -> np.ndarray:
        """P(a species present in a train clip gets its TP box), so that the expected TP boxes per clip are
        ``tp_per_clip``, shared over the species as ``popularity ** (1 - tp_balance)`` (capped at 1)."""
        return _tp_probability(self, seed).copy()


@lru_cache(maxsize=8)
def _tp_probability(mix: Mix, seed: int) -> np.ndarray:
    pop = mix.popularity(seed)
    present = _expected_presence(pop, mix.species_per_clip)  # P(species in a clip)
    share = pop ** (1.0 - mix.tp_balance)
    share /= share.sum()
    return np.clip(mix.tp_per_clip * share / np.maximum(present, 1e-12), 0.0, 1.0)


MAX_SPECIES = 6  # species in one clip of a Mix


def _expected_presence(pop: np.ndarray, mean_k: float, draws: int = 4000) -> np.ndarray:
    """P(species present in a clip) under Poisson(mean_k) species drawn without replacement by ``pop``
    (a fixed-seed Monte Carlo estimate: the same for the same arguments)."""
    rng = np.random.default_rng(0xE57)
    hits = np.zeros(len(pop))
    for k in np.minimum(rng.poisson(mean_k, draws), MAX_SPECIES):
        if k:
            hits[rng.choice(len(pop), int(k), replace=False, p=pop)] += 1
    return hits / draws


def _plan_mix(
    rng: np.random.Generator, w: _World, mix: Mix, pop: np.ndarray, tp_p: np.ndarray, train: bool
) -> tuple[list[int], list[int], list[tuple[int, int]], int]:
    """Species present (by popularity), TP-labelled species, FP (labelled A, on a call of B) pairs, and the
    number of FP boxes on background alone (train clips only)."""
    k = min(int(rng.poisson(mix.species_per_clip)), MAX_SPECIES)
    present = [int(s) for s in rng.choice(N_SPECIES, k, replace=False, p=pop)] if k else []
    if not train:
        return present, [], [], 0
    tp = [s for s in present if rng.random() < tp_p[s]]
    n_fp = int(rng.poisson(mix.fp_per_clip))
    fp, noise = [], 0
    for _ in range(n_fp):
        if not present or rng.random() < mix.fp_noise_p:
            noise += 1
            continue
        b = present[int(rng.integers(len(present)))]
        cand = [int(a) for a in np.argsort(-w.similarity[b], kind="stable") if a not in present][:N_CONFUSERS]
        sim = w.similarity[b, cand] + 1e-3
        fp.append((int(rng.choice(cand, p=sim / sim.sum())), b))
    return present, tp, fp, noise


def recording_ids(seed: int, n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    """Unique 9-hex-char recording ids, a hash of (seed, split, index)."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {TRAIN: [], TEST: []}
    for split, n in ((TRAIN, n_train), (TEST, n_test)):
        for i in range(n):
            salt = 0
            while True:
                rid = hashlib.sha1(f"rfcx-synth:{seed}:{split}:{i}:{salt}".encode()).hexdigest()[:9]
                if rid not in seen:
                    break
                salt += 1
            seen.add(rid)
            out[split].append(rid)
    return out[TRAIN], out[TEST]


def _weights(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    w = np.where(allowed, values.astype(float), 0.0)
    return w / w.sum()


def _kind_probs(layout: dict[str, float], tp_fraction: float | None) -> np.ndarray:
    """P(TP only, FP only, both) for a train recording. ``None``: the real tables' shares;
    otherwise ``tp_fraction`` of the recordings carry TP boxes, split between TP only and
    both in the real ratio, and the rest are FP only."""
    p = np.array([layout["frac_tp_only"], layout["frac_fp_only"], layout["frac_both"]])
    if tp_fraction is None:
        return p / p.sum()
    with_tp = p[0] + p[2]
    return np.array([tp_fraction * p[0] / with_tp, 1.0 - tp_fraction, tp_fraction * p[2] / with_tp])


def _check_tp_fraction(tp_fraction: float | None) -> None:
    if tp_fraction is None:
        return
    if (
        not isinstance(tp_fraction, numbers.Real)
        or isinstance(tp_fraction, bool)
        or not math.isfinite(tp_fraction)
        or not 0 < tp_fraction <= 1
    ):
        raise InvalidInputError(f"tp_fraction must be None or a number in (0, 1], got {tp_fraction!r}")


def _check_label_density(label_density: float) -> None:
    if (
        not isinstance(label_density, numbers.Real)
        or isinstance(label_density, bool)
        or not math.isfinite(label_density)
        or label_density < 1
    ):
        raise InvalidInputError(f"label_density must be a number >= 1, got {label_density!r}")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _plan_train(
    rng: np.random.Generator,
    w: _World,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
    index: int | None = None,
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Species calling, TP-labelled species, and FP (labelled A, calling B) pairs.
    ``tp_fraction``: the share of recordings with TP boxes (``None``: the real share).
    ``label_density`` D > 1: an FP recording draws about D times as many FP pairs (at most
    ``max_fp_rows * D`` and as many as there are species to label and confusers for them),
    and a TP-only recording also gets FP pairs with probability (D - 1) / D. D = 1 makes
    exactly the draws it always made. With D > 1 and the clip's ``index`` given, the first TP species
    of a recording is ``index % 24``, so that a small set has TP boxes for every species, about equally
    many, as the real tables do (34-100 TP boxes for each species)."""
    lay = w.layout
    dense = label_density > 1
    p = _kind_probs(lay, tp_fraction)
    kind = rng.choice(3, p=p)  # 0: TP only, 1: FP only, 2: both
    n_tp = 0 if kind == 1 else min(int(rng.geometric(1 / lay["mean_tp_rows"])), int(lay["max_tp_rows"]))
    with_fp = kind != 0 or (dense and rng.random() < (label_density - 1) / label_density)
    n_fp = 0 if not with_fp else min(int(rng.geometric(1 / lay["mean_fp_rows"])), int(lay["max_fp_rows"]))
    ids = np.arange(N_SPECIES)
    if dense and index is not None and n_tp:
        first = index % N_SPECIES
        rest = rng.choice(ids, n_tp - 1, replace=False, p=_weights(w.table.n_tp.to_numpy(), ids != first))
        tp = [first] + [int(s) for s in rest]
    else:
        tp = [int(s) for s in rng.choice(ids, n_tp, replace=False, p=_weights(w.table.n_tp.to_numpy(), ids >= 0))]
    free = ~np.isin(ids, tp)
    fp_weight = w.table.n_fp.to_numpy()
    if dense and n_fp:
        n_fp = min(
            _round_half_up(label_density * n_fp),
            _round_half_up(lay["max_fp_rows"] * label_density),
            int(np.count_nonzero(free & (fp_weight > 0))),
        )
    labelled = [int(s) for s in rng.choice(ids, n_fp, replace=False, p=_weights(fp_weight, free))]
    fp = []
    for a in labelled:
        ranked = [int(b) for b in np.argsort(-w.similarity[a], kind="stable") if b != a and b not in labelled]
        if dense:  # many labelled species: keep only confusers whose band overlaps A's, if any are left
            ranked = [b for b in ranked if w.similarity[a, b] > 0]
            if not ranked:
                continue
        cand = ranked[:N_CONFUSERS]
        sim = w.similarity[a, cand] + 1e-3
        fp.append((a, int(rng.choice(cand, p=sim / sim.sum()))))
    present = list(dict.fromkeys(tp + [b for _, b in fp]))
    others = ids[~np.isin(ids, present + labelled)]
    n_extra = min(int(rng.integers(EXTRA_SPECIES[0], EXTRA_SPECIES[1] + 1)), len(others))
    present += [int(s) for s in rng.choice(others, n_extra, replace=False)]
    return present, tp, fp


def _place_calls(rng: np.random.Generator, shape: CallShape, n: int) -> list[tuple[int, Call]]:
    """2-6 non-overlapping calls of one species at random times in an n-sample clip."""
    seconds = n / SR
    k = int(rng.integers(CALLS_PER_SPECIES[0], CALLS_PER_SPECIES[1] + 1))
    calls = [render_call(shape, rng, max_duration=0.9 * seconds) for _ in range(k)]
    gap = min(0.25, 0.02 * seconds)
    while len(calls) > 1 and sum(c.duration for c in calls) + gap * (len(calls) - 1) > seconds:
        calls.pop()
    slack = seconds - sum(c.duration for c in calls) - gap * (len(calls) - 1)
    offsets = np.sort(rng.uniform(0, max(slack, 0.0), len(calls)))
    placed, t = [], 0.0
    for off, call in zip(offsets, calls):
        start = min(int(round((t + off) * SR)), n - len(call.audio))
        placed.append((max(start, 0), call))
        t += call.duration + gap
    return placed


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
    placed: list[tuple[int, int, Call]],
    tp_species: list[int],
    fp_pairs: list[tuple[int, int]],
    seconds: float,
    tp_calls: int = 1,
    fp_noise: int = 0,
    present: tuple[int, ...] = (),
) -> tuple[list[tuple], list[tuple]]:
    """TP boxes tight around ``tp_calls`` distinct calls of each TP species (fewer when it
    calls fewer times); FP boxes of A's template size (A's median duration and band)
    centred on a call of the confused species B (each box once)."""
    used: set[int] = set()

    def pick(species: int) -> tuple[float, float, Call]:
        own = [i for i, p in enumerate(placed) if p[0] == species]
        fresh = [i for i in own if i not in used] or own
        i = fresh[int(rng.integers(len(fresh)))]
        used.add(i)
        _, start, call = placed[i]
        return start / SR, (start + len(call.audio)) / SR, call

    songtype = w.table.songtype_id.to_numpy()
    tp, fp = [], []
    for s in tp_species:
        for _ in range(min(tp_calls, sum(p[0] == s for p in placed))):
            t0, t1, call = pick(s)  # TP picks come first, so each is a call not labelled yet
            pad = max(0.05 * (call.f_max - call.f_min), 50.0)
            tp.append((s, int(songtype[s]), t0, max(call.f_min - pad, 0.0), t1, min(call.f_max + pad, SR / 2)))
    for a, b in fp_pairs:
        t0, t1, _ = pick(b)
        dur = min(float(w.table.duration[a]), seconds)
        start = float(np.clip((t0 + t1 - dur) / 2, 0.0, seconds - dur))
        fp.append((a, int(songtype[a]), start, float(w.table.f_min[a]), start + dur, float(w.table.f_max[a])))
    absent = [s for s in range(N_SPECIES) if s not in present]
    for _ in range(fp_noise if absent else 0):  # a matcher's hit on background: a species that is not there
        a = absent[int(rng.integers(len(absent)))]
        dur = min(float(w.table.duration[a]), seconds)
        start = float(rng.uniform(0.0, seconds - dur))
        fp.append((a, int(songtype[a]), start, float(w.table.f_min[a]), start + dur, float(w.table.f_max[a])))
    return tp, list(dict.fromkeys(fp))  # a matcher reports a hit once (a pair drawn again on one call, a clip-long box)


def make_clip(
    split: str,
    index: int,
    seed: int = 0,
    seconds: float = 60.0,
    background: np.ndarray | Sequence[np.ndarray] | None = None,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
    mix: Mix | None = None,
) -> Clip:
    """Make one clip from the RNG seeded by (seed, split, index). Its labels do not depend
    on ``background`` (a real recording, mono float at 48 kHz, or several: each clip mixes in one of them),
    only its audio does. Without ``mix`` the species follow the labels (``tp_fraction`` and ``label_density``,
    train clips only: see ``_plan_train``; a TP species gets up to round(``label_density``) of its calls
    labelled); with a :class:`Mix` they follow its skewed species mix and its sparse labels."""
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
    placed = [(s, start, call) for s in present for start, call in _place_calls(rng, w.shapes[s], n)]
    tp, fp = _boxes(
        rng, w, placed, tp_species, fp_pairs, n / SR, _round_half_up(label_density), fp_noise, tuple(present)
    )

    audio = _background(rng, n, background)
    freqs, psd = _band_psd(audio)
    if mix is None:
        level = {s: rng.normal(10, 6) for s in present}  # per species: near or far
        lo, hi, jitter = -5.0, 25.0, 2.0
    else:
        level = {s: rng.uniform(*mix.snr_db) for s in present}
        lo, hi, jitter = mix.snr_db[0] - 3.0, mix.snr_db[1] + 3.0, 1.5
    calls = []
    for s, start, call in placed:
        snr = float(np.clip(level[s] + rng.normal(0, jitter), lo, hi))
        band = (freqs >= call.f_min) & (freqs <= call.f_max)
        p_band = float(psd[band].sum()) if band.any() else float(psd[np.argmin(abs(freqs - call.f_min))])
        audio[start : start + len(call.audio)] += math.sqrt(p_band * 10 ** (snr / 10)) * call.audio
        calls.append(PlacedCall(s, start, call, snr))
    audio *= PEAK / (np.abs(audio).max() + 1e-12)
    return Clip(audio.astype(np.float32), tp, fp, tuple(sorted(present)), calls)


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


# Per-process job context (set in the parent for workers=1, by the pool initializer otherwise).
_JOB: dict = {}


def _init_job(ctx: dict) -> None:
    _JOB.clear()
    _JOB.update(ctx)


def _make_and_write(task: tuple[str, int, str]) -> tuple[list, list, tuple[int, ...], list]:
    """Make one clip, write its FLAC and return its label rows (without the audio)."""
    split, index, rid = task
    clip = make_clip(
        split,
        index,
        _JOB["seed"],
        _JOB["seconds"],
        _JOB["background"],
        _JOB["tp_fraction"],
        _JOB["label_density"],
        _JOB.get("mix"),
    )
    sf.write(str(_JOB["out_dir"] / split / f"{rid}.flac"), clip.audio, SR, format="FLAC", subtype="PCM_16")
    truth = [(split, rid, c.species_id, c.t_min, c.call.f_min, c.t_max, c.call.f_max, c.snr_db) for c in clip.calls]
    return [(rid, *b) for b in clip.tp], [(rid, *b) for b in clip.fp], clip.species, truth


def _validate(
    out_dir: Path,
    n_train: int,
    n_test: int,
    seconds: float,
    workers: int,
    background: Path | Sequence[Path] | None,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
) -> None:
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 0), ("workers", workers, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seconds, numbers.Real) or not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise InvalidInputError(f"seconds must be a number >= {MIN_SECONDS}, got {seconds!r}")
    _check_tp_fraction(tp_fraction)
    _check_label_density(label_density)
    background_files(background)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"out_dir {out_dir} exists and is not a directory")


def background_files(background: Path | str | Sequence[Path | str] | None) -> list[Path]:
    """The recordings named by ``background``: a file, a folder (its ``*.flac``, sorted), or a list of either."""
    if background is None:
        return []
    items = [background] if isinstance(background, (str, Path)) else list(background)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.glob("*.flac"))
            if not found:
                raise InvalidInputError(f"background folder {item} holds no .flac file")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise InvalidInputError(f"background file {item} does not exist or is not a file")
    return files


def synthesize(
    out_dir: Path,
    n_train: int = 100,
    n_test: int = 40,
    seconds: float = 60.0,
    seed: int = 0,
    background: Path | Sequence[Path] | None = None,
    progress: bool = True,
    workers: int = 1,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
    mix: Mix | None = None,
) -> SynthSummary:
    """Write a synthetic RFCX-layout data set into ``out_dir`` (see the module docstring).

    ``tp_fraction``: the share of train recordings that carry TP boxes, in (0, 1]; those are
    split between TP only and TP + FP in the real ratio, the rest carry FP boxes only.
    ``None`` keeps the real tables' shares (~24 % with TP boxes).
    ``label_density`` D >= 1: 1 gives the real sparsity (one labelled call per TP species,
    ~2 FP rows per FP recording). D > 1 labels more of what each train clip holds: up to
    round(D) calls of each TP species, about D times as many FP rows per FP recording, and
    TP-only recordings get FP rows too with probability (D - 1) / D. Test clips do not change.
    ``mix``: a :class:`Mix` (skewed species mix, competition-sparse labels) instead of species that follow the
    labels; ``tp_fraction`` and ``label_density`` then do not apply. ``background``: a recording, a folder of
    them or a list; each clip mixes in one, drawn by its own seed."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    _validate(out_dir, n_train, n_test, seconds, workers, background, tp_fraction, label_density)
    if mix is not None and (tp_fraction is not None or label_density != 1.0):
        raise InvalidInputError(
            "tp_fraction and label_density shape the labels-first species plan; a Mix sets its own "
            "label density (tp_per_clip, fp_per_clip)"
        )
    files = background_files(background)
    real = [_load_background(f) for f in files] if len(files) > 1 else (_load_background(files[0]) if files else None)
    train_ids, test_ids = recording_ids(seed, n_train, n_test)
    for split, ids in ((TRAIN, train_ids), (TEST, test_ids)):
        folder = out_dir / split
        stale = sorted(p.name for p in folder.glob("*.flac") if p.stem not in set(ids)) if folder.is_dir() else []
        if stale:
            raise InvalidInputError(f"{folder} already holds other recordings ({stale[0]}, ...); use an empty out_dir")
        folder.mkdir(parents=True, exist_ok=True)

    tasks = [(TRAIN, i, r) for i, r in enumerate(train_ids)] + [(TEST, i, r) for i, r in enumerate(test_ids)]
    ctx = {
        "seed": int(seed),
        "seconds": float(seconds),
        "background": real,
        "out_dir": out_dir,
        "tp_fraction": None if tp_fraction is None else float(tp_fraction),
        "label_density": float(label_density),
        "mix": mix,
    }
    if workers == 1:
        _init_job(ctx)
    with ProcessPoolExecutor(workers, initializer=_init_job, initargs=(ctx,)) if workers > 1 else nullcontext() as pool:
        made = pool.map(_make_and_write, tasks, chunksize=2) if pool else map(_make_and_write, tasks)
        results = list(tqdm(made, total=len(tasks), desc="synth", unit="clip", disable=not progress))

    tp_rows, fp_rows, truth, test_rows = [], [], [], []
    for (split, _, rid), (tp, fp, species, calls) in zip(tasks, results):
        tp_rows += tp
        fp_rows += fp
        truth += calls
        if split == TEST:
            test_rows.append([rid] + [int(s in species) for s in range(N_SPECIES)])

    def table(rows: list, columns: list[str]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=columns)
        rounding = {c: 4 for c in ("t_min", "t_max")} | {c: 2 for c in ("f_min", "f_max", "snr_db")}
        return df.round({c: r for c, r in rounding.items() if c in df.columns})

    by_id = dict(by="recording_id", kind="stable")
    table(tp_rows, LABEL_COLUMNS).sort_values(**by_id).to_csv(out_dir / "train_tp.csv", index=False)
    table(fp_rows, LABEL_COLUMNS).sort_values(**by_id).to_csv(out_dir / "train_fp.csv", index=False)
    table(truth, TRUTH_COLUMNS).to_csv(out_dir / "calls_truth.csv", index=False)
    labels = pd.DataFrame(test_rows, columns=SUBMISSION_COLUMNS).sort_values(**by_id)
    labels.to_csv(out_dir / "test_labels.csv", index=False)
    labels.assign(**{c: 0 for c in SUBMISSION_COLUMNS[1:]}).to_csv(out_dir / "sample_submission.csv", index=False)
    return SynthSummary(
        out_dir, n_train, n_test, len(tp_rows), len(fp_rows), float(seconds), time.perf_counter() - t_start
    )
