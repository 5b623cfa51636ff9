"""Looking at and decoding audio files with libsndfile: header checks, downmix, resampling to the store's rate."""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import BadInputError

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(path: Path) -> AudioInfo:
    """Read the header; raise :class:`BadInputError` naming the file for anything that is not usable audio."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError.of(path, "file not found")
    if path.stat().st_size == 0:
        raise BadInputError.of(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile says why: "Format not recognised", ...
        raise BadInputError.of(path, f"not a readable audio file ({_first_line(exc)})") from None
    if info.frames <= 0:
        raise BadInputError.of(path, "no audio samples in the file")
    if info.samplerate <= 0 or info.channels <= 0:
        raise BadInputError.of(path, f"bad header: {info.samplerate} Hz, {info.channels} channels")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def decode(path: Path, sample_rate: int) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file to mono float32 in [-1, 1] at ``sample_rate`` (downmixing and resampling as needed).

    A truncated or corrupt file raises :class:`BadInputError` with libsndfile's reason.
    """
    info = probe(path)
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise BadInputError.of(path, f"corrupt or truncated audio ({_first_line(exc)})") from None
    if data.shape[0] < info.frames:
        raise BadInputError.of(
            path, f"truncated: decoded {data.shape[0]} of the {info.frames} samples its header announces"
        )
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(np.ascontiguousarray(mono, dtype=np.float32), info.sample_rate, sample_rate), info


def resample(signal: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (Kaiser-windowed FIR), a no-op when the rates agree."""
    if from_rate == to_rate:
        return signal
    from scipy.signal import resample_poly

    g = gcd(from_rate, to_rate)
    return resample_poly(signal, to_rate // g, from_rate // g).astype(np.float32)


def list_audio_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
