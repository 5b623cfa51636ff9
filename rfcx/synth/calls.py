"""Synthetic call shapes, one per species, inside each species' real band and duration.

Every species gets a call *kind* (sweep, harmonic stack, trill, ...) chosen so that
species with similar bands have different kinds, plus a few shape parameters drawn
deterministically from the species id. ``render_call`` then makes one call with small
random variation (pitch, duration, phase, noise) using phase accumulation, or with the pitch, duration and
contour it is given: rfcx.synth.variety draws those as real calls vary (song types, individuals, distance).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from rfcx.synth.species import N_SPECIES, load_species_table

SR = 48_000
KINDS = (
    "sweep_up",
    "sweep_down",
    "harmonic",
    "trill",
    "notes",
    "clicks",
    "buzz",
    "warble",
    "chevron",
    "series",
)
# Chosen by hand so that each species' three most band-similar species (IoU of bands)
# have a different kind; tests/test_synth.py checks this against the shipped table.
SPECIES_KIND: tuple[str, ...] = (
    "notes",
    "sweep_up",
    "harmonic",
    "warble",
    "harmonic",
    "chevron",  # 0-5
    "sweep_up",
    "harmonic",
    "trill",
    "buzz",
    "clicks",
    "chevron",  # 6-11
    "clicks",
    "buzz",
    "clicks",
    "trill",
    "warble",
    "trill",  # 12-17
    "sweep_down",
    "sweep_down",
    "series",
    "notes",
    "sweep_up",
    "trill",  # 18-23
)
BAND_MARGIN = 0.05  # calls keep this fraction of the band width off each band edge
PITCH_JITTER = 0.02  # std of the per-call log pitch factor (clipped to +-5 %)
DURATION_JITTER = 0.15  # per-call duration factor in [1 - j, 1 + j]


@dataclass(frozen=True)
class CallShape:
    """A species' call template: kind, band (Hz), median duration (s) and shape parameters."""

    species_id: int
    kind: str
    f_lo: float
    f_hi: float
    duration: float
    units: int  # sub-units: sweeps, croaks, notes, buzz bursts
    rate: float  # Hz: pulse rate (trill, clicks), AM rate (buzz), FM rate (warble)
    curve: float  # sweep/chevron exponent, glide depth for harmonic stacks, duty for pulses
    direction: int  # +1 rising, -1 falling
    pattern: tuple[float, ...]  # note pitches (notes) or partial weights (harmonic), in [0, 1]


@dataclass(frozen=True)
class Call:
    """One rendered call: unit-RMS float32 audio and its actual frequency extent (Hz)."""

    audio: np.ndarray
    f_min: float
    f_max: float

    @property
    def duration(self) -> float:
        return len(self.audio) / SR


def make_shape(
    species_id: int, f_lo: float, f_hi: float, duration: float, kind: str | None = None, salt: tuple[int, ...] = ()
) -> CallShape:
    """Deterministic call template for one species (its kind from ``SPECIES_KIND``), or, with ``kind`` and
    ``salt`` given, another template of that kind drawn from (species_id, *salt): a species' other song types,
    the calls of species outside the 24 (rfcx.synth.variety)."""
    kind = SPECIES_KIND[species_id] if kind is None else kind
    rng = np.random.default_rng([0x5EC1E5, species_id, *salt])
    unit_len = rng.uniform(0.35, 0.8)
    units = int(np.clip(round(duration / unit_len), 1, 6))
    direction = int(rng.choice([-1, 1]))
    pattern: tuple[float, ...]
    rate, curve, pattern = 0.0, 1.0, ()
    if kind in ("sweep_up", "sweep_down"):
        curve = float(rng.uniform(0.5, 2.0))
        units = min(units, 3)
        direction = 1 if kind == "sweep_up" else -1
    elif kind == "chevron":
        curve = float(rng.uniform(0.5, 2.0))
        units = max(units, 2)
    elif kind == "harmonic":
        curve = float(rng.uniform(0.0, 0.08))  # downward glide depth
        pattern = tuple(rng.uniform(0.3, 1.0, size=int(rng.integers(3, 7))))
    elif kind == "trill":
        rate, curve = float(rng.uniform(10, 25)), float(rng.uniform(0.5, 0.75))
    elif kind == "clicks":
        rate = float(rng.uniform(6, 14))
        curve = float(rng.uniform(0.004, 0.008)) * rate  # duty: 4-8 ms clicks
    elif kind == "notes":
        inner = rng.uniform(0.15, 0.85, size=int(rng.integers(0, 3)))
        pattern = tuple(rng.permutation(np.r_[0.0, 1.0, inner]))
        units = len(pattern)
    elif kind == "buzz":
        rate = float(rng.uniform(60, 150))
        units = min(units, 3)
    elif kind == "warble":
        rate = float(rng.uniform(5, 14))
    elif kind == "series":
        units = int(rng.integers(5, 13))
    return CallShape(
        species_id,
        kind,
        float(f_lo),
        float(f_hi),
        float(duration),
        units,
        rate,
        curve,
        direction,
        tuple(float(p) for p in pattern),
    )


def shapes_from_table(table: pd.DataFrame) -> tuple[CallShape, ...]:
    """Call templates for every species of a species table."""
    return tuple(make_shape(int(r.species_id), r.f_min, r.f_max, r.duration) for r in table.itertuples())


@lru_cache(maxsize=1)
def species_shapes() -> tuple[CallShape, ...]:
    """Call templates for the shipped species table (cached)."""
    shapes = shapes_from_table(load_species_table())
    assert len(shapes) == N_SPECIES
    return shapes


def _tukey(u: np.ndarray, taper: float) -> np.ndarray:
    """Window over u in [0, 1] with raised-cosine ramps of ``taper`` at each end."""
    r = np.clip(np.minimum(u, 1.0 - u) / taper, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * r)


def _units(n: int, units: int, fill: float, taper: float) -> tuple[np.ndarray, np.ndarray]:
    """Split n samples into ``units`` slots; return the phase u in [0, 1] within each
    slot's active part and a smooth on/off envelope (zero in the gaps)."""
    if units == 1:
        fill = 1.0
    slot = np.arange(n) * (units / n)
    local = (slot - np.floor(slot)) / fill
    active = local <= 1.0
    u = np.clip(local, 0.0, 1.0)
    return u, active * _tukey(u, taper)


def _pulses(n: int, sr: int, rate: float, duty: float) -> tuple[np.ndarray, np.ndarray]:
    """Periodic pulses: phase w in [0, 1] within each pulse and a sin^2 pulse envelope."""
    v = (np.arange(n) * (rate / sr)) % 1.0
    w = np.clip(v / duty, 0.0, 1.0)
    return w, (v < duty) * np.sin(np.pi * w) ** 2


def _phase(freq: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq) / sr + rng.uniform(0, 2 * np.pi)


def _extent(freq: np.ndarray, env: np.ndarray) -> tuple[float, float]:
    on = freq[env > 1e-3]
    return float(on.min()), float(on.max())


def render_call(
    shape: CallShape,
    rng: np.random.Generator,
    sr: int = SR,
    max_duration: float | None = None,
    pitch: float | None = None,
    stretch: float | None = None,
    bend: tuple[float, float] = (0.0, 0.0),
) -> Call:
    """Render one call of ``shape`` at unit RMS. Its pitch and duration factors are drawn (small variation: the
    one-shape generator) unless given; ``bend`` (b1, b2) bends the frequency contour by the factor
    ``1 + b1 sin(pi u) + b2 sin(2 pi u)`` over the call's time u in [0, 1] (an arch and an S)."""
    if pitch is None:
        pitch = float(np.exp(np.clip(rng.normal(0, PITCH_JITTER), -0.05, 0.05)))
    if stretch is None:
        stretch = float(rng.uniform(1 - DURATION_JITTER, 1 + DURATION_JITTER))
    dur = shape.duration * stretch
    if max_duration is not None:
        dur = min(dur, max_duration)
    n = max(int(round(dur * sr)), 64)
    lo, hi = shape.f_lo * pitch, min(shape.f_hi * pitch, 0.95 * sr / 2)
    a, b = lo + BAND_MARGIN * (hi - lo), hi - BAND_MARGIN * (hi - lo)
    t = np.arange(n) / sr
    kind = shape.kind
    warp: np.ndarray | float = 1.0
    if bend != (0.0, 0.0):
        u_all = t / max(t[-1], 1e-12)
        arch = 1.0 + bend[0] * np.sin(np.pi * u_all) + bend[1] * np.sin(2 * np.pi * u_all)
        warp = np.minimum(arch, 0.97 * sr / 2 / b)  # never past Nyquist

    if kind in ("sweep_up", "sweep_down", "chevron"):
        u, env = _units(n, shape.units, fill=0.8, taper=0.12)
        g = u**shape.curve if kind != "chevron" else np.sin(np.pi * u) ** shape.curve
        if shape.direction < 0:
            g = 1.0 - g
        freq = (a + (b - a) * g) * warp
        x = env * np.sin(_phase(freq, sr, rng))
        f_min, f_max = _extent(freq, env)
    elif kind == "harmonic":
        u, env = _units(n, shape.units, fill=0.75, taper=0.15)
        glide = (1.0 - shape.curve * u) * warp
        k = len(shape.pattern)
        partials = np.linspace(a / (1.0 - shape.curve), b, k)
        phase = _phase(glide, sr, rng)
        x = sum(w * np.sin(f * phase + 2 * np.pi * rng.random()) for f, w in zip(partials, shape.pattern))
        x = env * x
        f_min, f_max = a, b
    elif kind in ("trill", "clicks"):
        w, env = _pulses(n, sr, shape.rate, shape.curve)
        freq = (b - (b - a) * w if shape.direction < 0 else a + (b - a) * w) * warp
        env = env * _tukey(t / t[-1], 0.05)
        x = env * np.sin(_phase(freq, sr, rng))
        f_min, f_max = a, b
    elif kind in ("notes", "series"):
        units = shape.units
        u, env = _units(n, units, fill=0.7 if kind == "notes" else 0.6, taper=0.15)
        slot = np.minimum((np.arange(n) * units) // n, units - 1)
        if kind == "notes":
            level = np.asarray(shape.pattern)[slot]
            vib = 0.03 * np.sin(2 * np.pi * 7.0 * t)  # gentle vibrato
            freq = a + (b - a) * (0.03 + 0.94 * level + vib)
        else:
            level = slot / (units - 1)
            if shape.direction < 0:
                level = 1.0 - level
            freq = a + (b - a) * (0.85 * level + 0.15 * u)  # stepped up-slurred notes
        freq = freq * warp
        x = env * np.sin(_phase(freq, sr, rng))
        f_min, f_max = _extent(freq, env)
    elif kind == "buzz":
        spec = np.zeros(n // 2 + 1, dtype=np.complex128)
        bins = np.arange(int(np.ceil(a * n / sr)), int(b * n / sr) + 1)
        spec[bins] = rng.standard_normal(bins.size) + 1j * rng.standard_normal(bins.size)
        noise = np.fft.irfft(spec, n)
        _, env = _units(n, shape.units, fill=0.8, taper=0.1)
        am = (0.55 + 0.45 * np.sin(2 * np.pi * shape.rate * t)) ** 2
        x = env * am * noise
        f_min, f_max = a, b
    elif kind == "warble":
        c, d = (a + b) / 2, (b - a) / 2
        freq = (c + d * np.sin(2 * np.pi * shape.rate * t + rng.uniform(0, 2 * np.pi))) * warp
        env = _tukey(t / t[-1], 0.1)
        x = env * np.sin(_phase(freq, sr, rng))
        f_min, f_max = a, b
    else:
        raise ValueError(f"unknown call kind {kind!r}")

    if isinstance(warp, np.ndarray) and kind in ("harmonic", "trill", "clicks", "warble"):  # extents a..b, bent
        f_min, f_max = f_min * float(warp.min()), f_max * float(warp.max())
    rms = float(np.sqrt(np.mean(np.square(x))))
    return Call((x / max(rms, 1e-12)).astype(np.float32), float(f_min), float(f_max))
