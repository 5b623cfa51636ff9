"""Calls that vary as real ones do (``rfcx synth --calls variable``, the default).

A species sings one to four song types, each a shape of its own (kind, sub-band, duration) inside the species'
band; the first is the species' one-shape call (rfcx.synth.calls), under the real table's song type id. In a clip
a species calls as one individual or, in a chorus, as two or three whose calls overlap. An individual has its own
pitch, tempo, favourite song type and distance; each of its calls varies around them in pitch, duration and
frequency contour, and its shape parameters (sweep curve, pulse rate, note pitches) move a little. A distant
individual is quieter, duller (high frequencies absorbed) and reverberant. Species outside the 24 call too
("outsiders"): sounds that no label names, in train and test clips alike.

``CallVariety(song_types=1, pitch=0.05, tempo=0.15, contour=0, chorus_p=0, distance=0, outsiders=0)`` comes close
to the one-shape generator; ``None`` in its place (``--calls fixed``) is that generator, draw for draw.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from functools import lru_cache

import numpy as np
from scipy.fft import next_fast_len

from rfcx.errors import InvalidInputError
from rfcx.synth.calls import KINDS, SR, Call, CallShape, make_shape, render_call, species_shapes
from rfcx.synth.species import N_SPECIES, load_species_table

SONG_TYPES_P = (0.3, 0.3, 0.25, 0.15)  # P(a species sings 1, 2, 3, 4 song types), cut at CallVariety.song_types
FAVOURITE_P = 0.8  # P(a call is of its individual's favourite song type)
N_OUTSIDERS = 48  # species outside the 24 whose calls the backgrounds may hold
QUIETER_DB = 9.0  # the farthest individual (distance 1) calls this much below its species' level
ABSORB_DB = 24.0  # ... and loses this much at 20 kHz (x (f / 20 kHz) ** 1.5: 8.5 dB at 10 kHz, 3 dB at 5 kHz)
REVERB_S = (0.04, 0.16)  # the decay time of the reverberation, near and far; its share is half the distance


@dataclass(frozen=True)
class CallVariety:
    """How much calls vary (see the module docstring). ``pitch``: a call's pitch within +-``pitch`` (log) of its
    song type, of which an individual's own pitch is most; ``tempo``: its duration within a factor ``1 +- tempo``;
    ``contour``: the typical bend of its frequency contour (a fraction of its frequency); ``chorus_p``: P(a species
    in a clip calls as 2-3 individuals); ``distance``: the farthest an individual stands (0: all near, 1: up to
    ``QUIETER_DB`` quieter, ``ABSORB_DB`` duller at 20 kHz, half reverberant); ``outsiders``: the mean number of
    species outside the 24 calling in a clip (Poisson)."""

    song_types: int = 4
    pitch: float = 0.12
    tempo: float = 0.35
    contour: float = 0.05
    chorus_p: float = 0.25
    distance: float = 1.0
    outsiders: float = 1.0

    def __post_init__(self) -> None:
        limits = {
            "song_types": (1, len(SONG_TYPES_P)),
            "pitch": (0.0, 0.3),
            "tempo": (0.0, 0.6),
            "contour": (0.0, 0.2),
            "chorus_p": (0.0, 1.0),
            "distance": (0.0, 1.0),
            "outsiders": (0.0, 10.0),
        }
        for f in fields(self):
            value, (lo, hi) = getattr(self, f.name), limits[f.name]
            integral = f.name == "song_types"
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Integral if integral else numbers.Real)
                or not math.isfinite(value)
                or not lo <= value <= hi  # type: ignore[operator]  # typeshed: numbers.Real does not compare
            ):
                kind = "an integer" if integral else "a number"
                raise InvalidInputError(f"{f.name} must be {kind} in [{lo:g}, {hi:g}], got {value!r}")


VARIABLE = CallVariety()


@dataclass(frozen=True)
class SongType:
    """One song type of a species: its id (as in the label tables' ``songtype_id``), shape and share of calls."""

    songtype_id: int
    shape: CallShape
    weight: float


@dataclass(frozen=True)
class Singer:
    """One individual in a clip: the song types it can sing, its favourite, pitch (log factor), tempo (duration
    factor) and distance (0 near .. 1 far)."""

    types: tuple[SongType, ...]
    favourite: int
    log_pitch: float
    tempo: float
    distance: float

    @property
    def quieter_db(self) -> float:
        return QUIETER_DB * self.distance


@dataclass(frozen=True)
class Sung:
    """A call an individual sang: the audio and extent, and its song type id."""

    call: Call
    songtype_id: int


@lru_cache(maxsize=1)
def _main_songtypes() -> tuple[int, ...]:
    return tuple(int(v) for v in load_species_table().songtype_id)


@lru_cache(maxsize=4 * N_SPECIES)
def song_types(species_id: int, most: int = len(SONG_TYPES_P)) -> tuple[SongType, ...]:
    """The song types of a species (at most ``most``), deterministic per species: the first its one-shape call
    under the real table's song type id, the others (ids following it) of other kinds, each in a sub-band of at
    least 45 % of the species' band and lasting 0.5-1.6 times its call."""
    main = species_shapes()[species_id]
    first = _main_songtypes()[species_id]
    rng = np.random.default_rng([0x50C7, species_id])
    p = np.asarray(SONG_TYPES_P[:most])
    n = 1 + int(rng.choice(most, p=p / p.sum()))
    types = [SongType(first, main, 1.0)]
    kinds = [k for k in KINDS if k != main.kind]
    width = main.f_hi - main.f_lo
    for j in range(1, n):
        kind = kinds[int(rng.integers(len(kinds)))]
        sub = width * rng.uniform(0.45, 1.0)
        lo = main.f_lo + rng.uniform(0.0, width - sub)
        duration = float(np.clip(main.duration * math.exp(rng.uniform(math.log(0.5), math.log(1.6))), 0.25, 8.0))
        types.append(SongType(first + j, make_shape(species_id, lo, lo + sub, duration, kind, (j,)), 0.6**j))
    return tuple(types)


@lru_cache(maxsize=1)
def outsider_shapes() -> tuple[CallShape, ...]:
    """The calls of ``N_OUTSIDERS`` species outside the 24: any kind, a band anywhere from 250 Hz to 21 kHz
    (1.2-2.5 times wide), 0.2-4 s long; deterministic."""
    rng = np.random.default_rng(0x0075)
    shapes = []
    for i in range(N_OUTSIDERS):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        centre, ratio = math.exp(rng.uniform(math.log(350), math.log(14_000))), math.exp(rng.uniform(0.18, 0.92))
        lo, hi = centre / math.sqrt(ratio), min(centre * math.sqrt(ratio), 21_000.0)
        duration = math.exp(rng.uniform(math.log(0.2), math.log(4.0)))
        shapes.append(make_shape(N_SPECIES + i, lo, hi, duration, kind, (0x0075,)))
    return tuple(shapes)


def voice(species: int, variety: CallVariety) -> tuple[SongType, ...]:
    """The song types of ``species``: one of the 24 (:func:`song_types`) or, from ``N_SPECIES`` on, an
    outsider (one type, id -1)."""
    if species < N_SPECIES:
        return song_types(species, variety.song_types)
    return (SongType(-1, outsider_shapes()[species - N_SPECIES], 1.0),)


def draw_singer(rng: np.random.Generator, types: tuple[SongType, ...], variety: CallVariety) -> Singer:
    """An individual: a favourite song type by the types' shares, a pitch about ``pitch / 2.5`` (sd) off its
    species', a tempo within ``1 +- 0.6 tempo``, a distance uniform in [0, ``distance``]."""
    w = np.asarray([t.weight for t in types])
    favourite = int(rng.choice(len(types), p=w / w.sum()))
    log_pitch = float(np.clip(rng.normal(0.0, variety.pitch / 2.5), -variety.pitch, variety.pitch))
    tempo = float(rng.uniform(1 - 0.6 * variety.tempo, 1 + 0.6 * variety.tempo))
    return Singer(types, favourite, log_pitch, tempo, float(variety.distance * rng.random()))


def sing(rng: np.random.Generator, singer: Singer, variety: CallVariety, max_duration: float | None = None) -> Sung:
    """One call of ``singer``: its favourite song type (``FAVOURITE_P``) or another by the shares, its shape
    parameters moved a little, pitch, duration and contour varied around the singer's, heard from its distance."""
    types = singer.types
    k = singer.favourite
    if len(types) > 1 and rng.random() >= FAVOURITE_P:
        w = np.asarray([t.weight for t in types])
        k = int(rng.choice(len(types), p=w / w.sum()))
    stretch = float(
        np.clip(singer.tempo * rng.uniform(1 - 0.4 * variety.tempo, 1 + 0.4 * variety.tempo), *_bounds(variety.tempo))
    )
    log_pitch = singer.log_pitch + rng.normal(0.0, variety.pitch / 6)
    pitch = math.exp(float(np.clip(log_pitch, -variety.pitch, variety.pitch)))
    limit = 2.5 * variety.contour
    bend = (
        float(np.clip(rng.normal(0.0, variety.contour), -limit, limit)),
        float(np.clip(rng.normal(0.0, variety.contour / 2), -limit, limit)),
    )
    shape = _moved(types[k].shape, rng, stretch)
    call = render_call(shape, rng, max_duration=max_duration, pitch=pitch, stretch=stretch, bend=bend)
    if singer.distance > 0:
        call = at_distance(call, singer.distance, rng)
    return Sung(call, types[k].songtype_id)


def _bounds(tempo: float) -> tuple[float, float]:
    return 1.0 - tempo, 1.0 + tempo


def _moved(shape: CallShape, rng: np.random.Generator, stretch: float) -> CallShape:
    """``shape`` with its parameters moved as one call differs from the next: the curve (sweep exponent, glide
    depth, pulse duty) by a factor 0.8-1.25, the pulse/AM/FM rate by 0.88-1.14 and faster in a shorter call
    (divided by the square root of ``stretch``), note pitches by about 0.05 of the band."""
    curve = shape.curve * rng.uniform(0.8, 1.25)
    if shape.kind == "harmonic":
        curve = min(curve, 0.15)  # a glide depth
    elif shape.kind in ("trill", "clicks"):
        curve = min(curve, 0.95)  # a duty cycle
    pattern = shape.pattern
    if shape.kind == "notes":
        pattern = tuple(float(v) for v in np.clip(np.asarray(pattern) + rng.normal(0.0, 0.05, len(pattern)), 0, 1))
    rate = shape.rate * rng.uniform(0.88, 1.14) / math.sqrt(stretch)
    return replace(shape, curve=float(curve), rate=float(rate), pattern=pattern)


def at_distance(call: Call, distance: float, rng: np.random.Generator) -> Call:
    """``call`` heard from ``distance`` (0..1): high frequencies absorbed (``ABSORB_DB`` at 20 kHz when farthest)
    and a reverberant share (half, farthest) of decaying noise convolved in, cut to the call's length with a
    10 ms fade; unit RMS, the same extent."""
    x = call.audio.astype(np.float64)
    n = len(x)
    tau = (REVERB_S[0] + (REVERB_S[1] - REVERB_S[0]) * distance) * SR
    taps = max(min(int(4 * tau), n), 1)
    response = rng.standard_normal(taps) * np.exp(-np.arange(taps) / tau)
    m = next_fast_len(n + taps, real=True)
    spectrum = np.fft.rfft(x, m)
    spectrum *= 10 ** (-ABSORB_DB * distance * (np.fft.rfftfreq(m, 1 / SR) / 20_000) ** 1.5 / 20)
    dry = np.fft.irfft(spectrum, m)[:n]
    wet = np.fft.irfft(spectrum * np.fft.rfft(response, m), m)[:n]
    wet *= _rms(dry) / max(_rms(wet), 1e-12)
    y = (1 - 0.5 * distance) * dry + 0.5 * distance * wet
    fade = min(int(0.01 * SR), n)
    y[n - fade :] *= np.linspace(1.0, 0.0, fade)
    return Call((y / max(_rms(y), 1e-12)).astype(np.float32), call.f_min, call.f_max)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))
