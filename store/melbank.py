"""Slaney-style mel filter bank (the formula and area normalisation librosa and DALI use by default)."""

from __future__ import annotations

import numpy as np

_F_SP = 200.0 / 3  # Hz per mel below the break frequency
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


def mel_band_edges(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """The ``n_mels + 2`` corner frequencies (Hz) of the triangular filters."""
    return mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))


def mel_filter_bank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Filters as a float32 matrix (n_mels, n_fft // 2 + 1), each triangle scaled to unit area."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_band_edges(n_mels, f_min, f_max)
    widths = np.diff(edges)
    rising = (fft_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / widths[1:, None]
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return bank.astype(np.float32)


def hz_to_mel_bin(hz: np.ndarray | float, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Fractional mel-bin index of a frequency (bin k is centred on edge k+1)."""
    lo, hi = hz_to_mel(f_min), hz_to_mel(f_max)
    step = (hi - lo) / (n_mels + 1)
    return (hz_to_mel(hz) - lo) / step - 1.0


def mel_band_groups(bank: np.ndarray, size: int = 16) -> list[tuple[int, int, int, int]]:
    """The filter bank as dense blocks: ``(r0, r1, c0, c1)`` per run of ``size`` consecutive filters, where
    columns ``c0:c1`` hold every nonzero weight of filters ``r0:r1`` (the triangles touch only a few FFT bins,
    so the blocks together hold ~7 % of the dense product's work with 16 filters a block)."""
    out = []
    for r0 in range(0, bank.shape[0], size):
        r1 = min(r0 + size, bank.shape[0])
        cols = np.flatnonzero((bank[r0:r1] != 0).any(axis=0))
        c0, c1 = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 0)
        out.append((r0, r1, c0, c1))
    return out
