"""Mel parameters of the feature store: one frozen object, written to and read from the store's attributes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import InvalidInputError


@dataclass(frozen=True)
class MelParams:
    """How a clip becomes a log-mel spectrogram (the seed solution's front end).

    Power spectrogram of a Hann-windowed STFT (``n_fft`` samples, ``hop`` step, windows centred on
    their frame with zero padding at the clip's edges), a Slaney mel filter bank with Slaney area
    normalisation (librosa's default) from ``f_min`` to ``f_max``, then ``10 * log10(max(x, amin))``.
    """

    sample_rate: int = 48_000
    n_fft: int = 4096
    hop: int = 512
    n_mels: int = 256
    f_min: float = 0.0
    f_max: float = 24_000.0
    power: float = 2.0
    amin: float = 1e-10

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop <= 0 or self.n_mels <= 0:
            raise InvalidInputError(f"mel parameters must be positive: {self}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise InvalidInputError(
                f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={self.f_max}"
            )

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop

    @property
    def floor_db(self) -> float:
        """The value silence maps to (10*log10(amin))."""
        import math

        return 10.0 * math.log10(self.amin)

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT over ``n_samples`` samples."""
        return 1 + n_samples // self.hop

    def seconds_to_frames(self, seconds: float) -> int:
        return int(round(seconds * self.frames_per_second))

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MelParams":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InvalidInputError(f"unknown mel parameter(s): {sorted(unknown)}")
        return cls(**d)
