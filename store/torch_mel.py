"""The torch backend: torch.stft log-mel on the CPU or a GPU, numerically the same features as the DALI pipeline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .melbank import mel_filter_bank
from .params import MelParams


class TorchLogMel:
    """Log-mel of mono float32 signals with torch (batched on ``device``)."""

    def __init__(self, params: MelParams, device: str | torch.device = "cpu") -> None:
        self.params = params
        self.device = torch.device(device)
        bank = mel_filter_bank(params.sample_rate, params.n_fft, params.n_mels, params.f_min, params.f_max)
        self.bank = torch.from_numpy(bank).to(self.device)
        self.window = torch.hann_window(params.n_fft, periodic=True, device=self.device)

    @torch.inference_mode()
    def __call__(self, signals: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One float32 (n_mels, frames) array in dB per signal; equal lengths are batched together."""
        out: list[np.ndarray | None] = [None] * len(signals)
        by_length: dict[int, list[int]] = {}
        for i, s in enumerate(signals):
            by_length.setdefault(len(s), []).append(i)
        for idx in by_length.values():
            batch = torch.from_numpy(np.stack([signals[i] for i in idx])).to(self.device, non_blocking=True)
            db = self.logmel(batch).cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = db[j]
        return out  # type: ignore[return-value]

    def logmel(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, samples) float32 -> (B, n_mels, frames) dB."""
        p = self.params
        spec = torch.stft(
            batch, n_fft=p.n_fft, hop_length=p.hop, window=self.window, center=True, pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        if p.power != 2.0:
            power = power.pow(p.power / 2.0)
        mel = torch.matmul(self.bank, power)
        return 10.0 * torch.log10(torch.clamp(mel, min=p.amin))
