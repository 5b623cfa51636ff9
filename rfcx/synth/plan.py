"""The plan of a synthetic data set: which species call in each clip (a zipf :class:`Mix`, or the species that
follow the labels), its recording ids, and which of the calls get TP and FP boxes."""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from rfcx.errors import InvalidInputError
from rfcx.synth.calls import CallShape, species_shapes
from rfcx.synth.species import N_SPECIES, band_similarity, load_layout_stats, load_species_table

TRAIN, TEST = "train", "test"
SPLIT_CODES = {TRAIN: 1, TEST: 2}
EXTRA_SPECIES = (0, 2)  # unlabelled species calling in a train clip
TEST_SPECIES_P = (0.1, 0.35, 0.35, 0.2)  # P(0, 1, 2, 3 species) in a test clip
N_CONFUSERS = 3  # an FP box of A sits on a call of one of A's most band-similar species


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
