"""The torch backend: torch.stft log-mel on the CPU or a GPU, numerically the same features as the DALI pipeline.

On a GPU a batch of equally long signals goes through ``torch.stft`` and the dense mel product at once. On the
CPU each signal goes block by block of frames (:meth:`TorchLogMel.logmel_cpu`): float32 real FFT into reused
buffers, the real and imaginary parts squared in place, and the mel product as the filter bank's dense blocks
(:func:`store.melbank.mel_band_groups`) with each weight twice (once for the real part's square, once for the
imaginary part's: the power's sum happens inside the product), not the 256 x 2049 dense product (mostly zeros)
that dominated the time; callers run several signals at once on threads (the work releases the GIL). The two
paths agree to float32 rounding (a few 1e-6 dB).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .melbank import mel_band_groups, mel_filter_bank
from .params import MelParams

CPU_BLOCK_FRAMES = 128  # frames per FFT call on the CPU (64-256 within 5 %; 128 measured fastest)
CPU_MEL_FRAMES = 256  # frames per mel product on the CPU (fewer, larger matmuls; 256 measured fastest of 64-512)
BAND_GROUP = 16  # filters per dense block of the CPU mel product


class TorchLogMel:
    """Log-mel of mono float32 signals with torch (batched on ``device``)."""

    def __init__(self, params: MelParams, device: str | torch.device = "cpu") -> None:
        self.params = params
        self.device = torch.device(device)
        bank = mel_filter_bank(params.sample_rate, params.n_fft, params.n_mels, params.f_min, params.f_max)
        self.bank = torch.from_numpy(bank).to(self.device)
        self.window = torch.hann_window(params.n_fft, periodic=True, device=self.device)
        # per dense block: its rows, the columns of the (real, imag) pairs it reads, each weight twice
        self.bands = [
            (r0, r1, 2 * c0, 2 * c1, torch.from_numpy(np.repeat(bank[r0:r1, c0:c1].T, 2, axis=0)))
            for r0, r1, c0, c1 in mel_band_groups(bank, BAND_GROUP)
            if c1 > c0
        ]

    @torch.inference_mode()
    def __call__(self, signals: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One float32 (n_mels, frames) array in dB per signal; equal lengths are batched together (GPU)."""
        if self.device.type == "cpu":
            return [self.logmel_cpu(s) for s in signals]
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
            batch,
            n_fft=p.n_fft,
            hop_length=p.hop,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        if p.power != 2.0:
            power = power.pow(p.power / 2.0)
        mel = torch.matmul(self.bank, power)
        return 10.0 * torch.log10(torch.clamp(mel, min=p.amin))

    @torch.inference_mode()
    def logmel_cpu(self, signal: np.ndarray) -> np.ndarray:
        """One mono signal -> float32 (n_mels, frames) dB on the CPU, as :meth:`logmel` computes it (centred
        frames, zero padding): FFTs of :data:`CPU_BLOCK_FRAMES` frames, mel products of :data:`CPU_MEL_FRAMES`.
        Thread-safe: the buffers are the call's own."""
        p = self.params
        if p.power != 2.0:  # the fused product sums squares: other powers take the batched path
            return self.logmel(torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))[None])[0].numpy()
        half = p.n_fft // 2
        y = torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32))
        frames = torch.nn.functional.pad(y, (half, half)).unfold(0, p.n_fft, p.hop)  # (frames, n_fft), a view
        n = frames.shape[0]
        mel = torch.empty(n, p.n_mels)
        per_mel = min(CPU_MEL_FRAMES, n)
        per_fft = min(CPU_BLOCK_FRAMES, per_mel)
        windowed = torch.empty(per_fft, p.n_fft)
        spec = torch.empty(per_mel, half + 1, dtype=torch.complex64)
        parts = torch.view_as_real(spec).view(per_mel, 2 * (half + 1))  # re0, im0, re1, im1, ...
        for s in range(0, n, per_mel):
            m = min(per_mel, n - s)
            for f in range(0, m, per_fft):
                k = min(per_fft, m - f)
                torch.mul(frames[s + f : s + f + k], self.window, out=windowed[:k])
                torch.fft.rfft(windowed[:k], dim=1, out=spec[f : f + k])
            squares = parts[:m].square_()
            for r0, r1, c0, c1, weights in self.bands:
                torch.matmul(squares[:, c0:c1], weights, out=mel[s : s + m, r0:r1])
        db = mel.T.contiguous().clamp_(min=p.amin).log10_().mul_(10.0)
        return db.numpy()
