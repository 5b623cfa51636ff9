"""The sliding windows of the recipe: fixed-length windows every ``hop_seconds`` over a clip."""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Mode(StrEnum):
    """How windows are scored: ``exact`` runs the model once per window, ``fcn`` once per clip."""

    EXACT = "exact"
    FCN = "fcn"


MODES = tuple(m.value for m in Mode)  # the names, as plain strings
DEFAULT_MODE = Mode.EXACT  # how `rfcx infer` scores unless told, and how training scores its rounds' test clips


def n_windows(n_frames: int, frames_per_second: float, window_seconds: float, hop_seconds: float) -> int:
    """How many windows fit in the clip's frames: 113 for a 60 s clip, 4 s windows and a 0.5 s hop; at least 1
    (a clip shorter than a window is one padded window)."""
    length = int(round(window_seconds * frames_per_second))
    step = hop_seconds * frames_per_second
    n = int(np.floor((n_frames - length) / step + 1e-9)) + 1
    while n > 1 and int(round((n - 1) * step)) + length > n_frames:
        n -= 1
    return max(1, n)


def window_starts(n_frames: int, frames_per_second: float, window_seconds: float, hop_seconds: float) -> np.ndarray:
    """Start frame of each window (int64), window ``w`` starting at ``w * hop_seconds``."""
    n = n_windows(n_frames, frames_per_second, window_seconds, hop_seconds)
    return np.round(np.arange(n) * hop_seconds * frames_per_second).astype(np.int64)


def frame_windows(mel: np.ndarray, starts: np.ndarray, length: int, fill: float) -> np.ndarray:
    """Stack the windows of a (n_mels, frames) spectrogram into (n, n_mels, length), padding with ``fill``."""
    n_mels, frames = mel.shape
    need = int(starts.max()) + length if len(starts) else length
    if need > frames:
        mel = np.concatenate([mel, np.full((n_mels, need - frames), fill, dtype=mel.dtype)], axis=1)
    idx = starts[:, None] + np.arange(length)[None, :]
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2))
