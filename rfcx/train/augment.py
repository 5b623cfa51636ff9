"""Batch augmentations for log-mel crops and the "FreqConv" frequency channel.

All functions take a batch ``x`` shaped (B, C, n_mels, T) in dB (C is 1 before
:func:`add_freq_channel`, which should be applied *after* augmenting) and return a tensor of
the same shape: a new one, or ``x`` itself where no sample changed; ``x`` is never modified.
Randomness is drawn only from the given ``torch.Generator`` (a CPU generator; draws are moved
to ``x.device``), so the same generator state gives the same result. ``p`` is the per-sample
probability of applying an augmentation; samples not selected are returned unchanged.

They run where ``x`` is (training moves the batch to its device first). On the CPU only the
selected samples are computed, one sample at a time (in place in a copy of the batch; not
SpecAugment, whose whole-batch form measured as fast), with the same draws and the same values as the
whole-batch formulation they replaced (kept in tests/augment_reference.py; tests/test_augment.py checks the two
agree); on a GPU the ops stay whole-batch. The one exception to "draws from the CPU generator" is the noise of
:func:`gaussian_noise`: its normals are drawn where ``x`` is, for the selected samples only,
from a generator seeded by one draw of the CPU generator (before, one CPU ``randn`` over the
whole batch, selected or not: 1.5 million normals per batch of 16 4-s crops, more time than
reading the batch, and copied to the GPU there). So a seed now gives other noise values than
before, and, since the stream takes other draws, other draws for every augmentation after
the first noise step. The CPU generator takes the same draws on the CPU and on a GPU (the
noise values differ between the two: each device has its own generator).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from rfcx.train.config import AugmentConfig

MixupMode = Literal["hard", "soft"]


def _rand(n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator)


def _select(n: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample Bernoulli(p) selection (CPU bool tensor); always drawn to keep the stream fixed."""
    return _rand(n, generator) < p


def _where(sel: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (old.ndim - 1)
    return torch.where(sel.to(old.device).view(shape), new, old)


def _fill_value(x: torch.Tensor, fill: float | None) -> torch.Tensor:
    """Mask fill: ``fill`` if given, else each sample's minimum (its quietest dB value)."""
    if fill is not None:
        return torch.full((x.shape[0], 1, 1, 1), fill, dtype=x.dtype, device=x.device)
    return x.amin(dim=(1, 2, 3), keepdim=True)


def _on_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu"


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, n_mels, T) batch, got shape {tuple(x.shape)}")


def time_warp(
    x: torch.Tensor, max_warp: float = 0.1, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Piecewise-linear resampling along time.

    A random centre frame ``c`` moves to ``c + d`` with ``d`` uniform in ``[-W, W]``,
    ``W = max_warp * T``; both sides are linearly stretched/compressed so the first and
    last frames stay in place.
    """
    _check(x)
    b, _, _, t = x.shape
    w = min(int(max_warp * t), (t - 3) // 2)
    sel = _select(b, p, generator)
    u_c, u_d = _rand(b, generator), _rand(b, generator)
    if w < 1:
        return x
    rows = sel.nonzero().flatten()  # only the selected samples are computed (the draws above are for all)
    if not len(rows):
        return x
    u_c, u_d = u_c[rows], u_d[rows]
    c = (w + 1 + torch.floor(u_c * (t - 2 * w - 2))).clamp(max=t - 2 - w)  # c in [w+1, t-2-w]
    new_c = c + (2 * u_d - 1) * w  # in [1, t-2]
    frames = torch.arange(t, dtype=torch.float64)[None, :]
    c, new_c = c.double()[:, None], new_c.double()[:, None]
    src = torch.where(
        frames <= new_c,
        frames * c / new_c,
        c + (frames - new_c) * (t - 1 - c) / (t - 1 - new_c),
    ).clamp(0, t - 1)
    i0 = src.floor().long().clamp(max=t - 1)
    i1 = (i0 + 1).clamp(max=t - 1)
    if _on_cpu(x):  # sample by sample: no gathered copy of the selected samples, no index_put back
        frac = (src - i0).to(x.dtype)
        out = x.clone()
        for k, r in enumerate(rows.tolist()):
            xr, f = x[r], frac[k]
            out[r] = xr.index_select(-1, i0[k]) * (1 - f) + xr.index_select(-1, i1[k]) * f
        return out
    frac = (src - i0).to(x.dtype).to(x.device)[:, None, None, :]
    xs = x[rows.to(x.device)]
    index_shape = (len(rows), 1, 1, t)
    i0 = i0.to(x.device).view(index_shape).expand_as(xs)
    i1 = i1.to(x.device).view(index_shape).expand_as(xs)
    out = x.clone()
    out[rows.to(x.device)] = xs.gather(3, i0) * (1 - frac) + xs.gather(3, i1) * frac
    return out


def pitch_shift(
    x: torch.Tensor, max_bins: int = 7, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Move the spectrogram up or down by a whole number of mel bins, uniform in ``[-max_bins, max_bins]`` (above
    1 kHz 7 bins of the store's 256 are about 12 % of the frequency: a call sung higher or lower); the rows that
    come in are each sample's minimum. With ``p = 0`` nothing is drawn (the stream stays as without this step)."""
    _check(x)
    b, _, f, _ = x.shape
    if p <= 0 or max_bins < 1:
        return x
    sel = _select(b, p, generator)
    shift = torch.floor(_rand(b, generator) * (2 * max_bins + 1)).long() - max_bins
    rows = (sel & (shift != 0)).nonzero().flatten().tolist()
    if not rows:
        return x
    out = x.clone()
    fill = _fill_value(x, None)
    for r in rows:
        d = int(shift[r])
        out[r] = fill[r]
        if d > 0:
            out[r, :, d:] = x[r, :, : f - d]
        else:
            out[r, :, : f + d] = x[r, :, -d:]
    return out


def freq_mask_outside_box(
    x: torch.Tensor,
    box_bins: torch.Tensor,
    p: float = 1.0,
    fill: float | None = None,
    generator: torch.Generator | None = None,
    return_masked: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mask random mel-bin extents just below and just above each sample's box band.

    ``box_bins`` is (B, 2) integer ``[lo, hi]`` (inclusive) mel bins of the box at the
    resolution of ``x``; rows with ``lo < 0`` have no box and are left unchanged. Below
    the box, bins ``[lo - a, lo)`` are masked with ``a`` uniform in ``{0..lo}``; above it,
    bins ``(hi, hi + b]`` with ``b`` uniform in ``{0..n_mels-1-hi}``. Box bins are never
    touched. The fill is ``fill`` or each sample's minimum. With ``return_masked`` also returns the (B, n_mels)
    bool (CPU) map of the masked bins (the draws are the same either way).
    """
    _check(x)
    b, _, f, _ = x.shape
    if box_bins.shape != (b, 2):
        raise ValueError(f"box_bins must be shaped ({b}, 2), got {tuple(box_bins.shape)}")
    sel = _select(b, p, generator)
    u_lo, u_hi = _rand(b, generator), _rand(b, generator)
    box_bins = box_bins.detach().cpu().long()
    has_box = sel & (box_bins[:, 0] >= 0) & (box_bins[:, 1] >= box_bins[:, 0])
    lo = box_bins[:, 0].clamp(0, f - 1)
    hi = box_bins[:, 1].clamp(0, f - 1)
    extent_lo = torch.floor(u_lo * (lo + 1)).long().clamp(max=lo)
    extent_hi = torch.floor(u_hi * (f - hi)).long().clamp(max=f - 1 - hi)
    bins = torch.arange(f)[None, :]
    below = (bins >= (lo - extent_lo)[:, None]) & (bins < lo[:, None])
    above = (bins > hi[:, None]) & (bins <= (hi + extent_hi)[:, None])
    masked_bins = (below | above) & has_box[:, None]
    rows = masked_bins.any(dim=1).nonzero().flatten().tolist()
    if not rows:
        out = x
    elif _on_cpu(x):
        out = x.clone()
        for r in rows:
            out[r].index_fill_(1, masked_bins[r].nonzero().flatten(), x[r].amin() if fill is None else fill)
    else:
        out = torch.where(masked_bins.to(x.device)[:, None, :, None], _fill_value(x, fill), x)
    return (out, masked_bins) if return_masked else out


MASKED_SHARE = 0.5  # a TP label whose box band is at least this much masked is dropped (unknown)


def drop_masked_labels(
    target: torch.Tensor,
    mask: torch.Tensor,
    label_boxes: torch.Tensor,
    masked_bins: torch.Tensor,
    share: float = MASKED_SHARE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make unknown (target 0, mask 0) the TP labels whose signal the frequency masking erased.

    ``label_boxes`` (B, K, 3) holds rows ``[species, lo, hi]`` (mel bins, inclusive; -1 rows pad) of the TP boxes
    that set a target to 1 (:class:`rfcx.train.sampling.CropBatch`), ``masked_bins`` (B, n_mels) what
    :func:`freq_mask_outside_box` masked. A class loses its label when every one of its TP boxes in the crop has at
    least ``share`` of its band masked (the crop's own box is never masked, so its label stays).
    """
    boxes = label_boxes.detach().cpu().long()
    b, f = masked_bins.shape
    if boxes.ndim != 3 or boxes.shape[0] != b or boxes.shape[2] != 3:
        raise ValueError(f"label_boxes must be shaped ({b}, K, 3), got {tuple(boxes.shape)}")
    if boxes.shape[1] == 0 or not masked_bins.any():
        return target, mask
    species, lo, hi = boxes.unbind(-1)
    valid = (species >= 0) & (lo >= 0) & (hi >= lo)
    pos = torch.arange(f)[None, None, :]
    band = (pos >= lo[..., None]) & (pos <= hi[..., None])  # (B, K, F)
    width = band.sum(-1).clamp_min(1)
    erased = (band & masked_bins.cpu()[:, None, :]).sum(-1) >= share * width  # (B, K)
    n_classes = target.shape[1]
    idx = species.clamp(0, n_classes - 1)
    has = torch.zeros(b, n_classes, dtype=torch.int64).scatter_add_(1, idx, valid.long())
    kept = torch.zeros(b, n_classes, dtype=torch.int64).scatter_add_(1, idx, (valid & ~erased).long())
    drop = ((has > 0) & (kept == 0)).to(target.device)
    zero = torch.zeros((), dtype=target.dtype, device=target.device)
    return torch.where(drop, zero, target), torch.where(drop, zero.to(mask.dtype), mask)


def gaussian_noise(
    x: torch.Tensor, max_std_db: float = 2.0, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add Gaussian noise whose std (dB) is uniform in ``[0, max_std_db]`` per sample.

    The normals of the selected samples are drawn on ``x.device`` from a generator seeded by one draw of
    ``generator`` (see the module's docstring), so ``generator`` takes the same draws on every device and
    for every batch shape."""
    _check(x)
    b = x.shape[0]
    sel = _select(b, p, generator)
    std = (_rand(b, generator) * max_std_db * sel).to(x.dtype)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rows = sel.nonzero().flatten()
    if not len(rows):
        return x
    noise_generator = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn((len(rows),) + tuple(x.shape[1:]), generator=noise_generator, dtype=x.dtype, device=x.device)
    noise *= std[rows].to(x.device).view(-1, 1, 1, 1)
    return x.clone().index_add_(0, rows.to(x.device), noise)


def volume_gain(
    x: torch.Tensor, max_db: float = 6.0, p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add a per-sample constant gain (dB) uniform in ``[-max_db, max_db]``."""
    _check(x)
    b = x.shape[0]
    sel = _select(b, p, generator)
    gain = ((2 * _rand(b, generator) - 1) * max_db * sel).to(x.dtype)
    if not sel.any():
        return x
    return x + gain.to(x.device).view(-1, 1, 1, 1)


def _band_masks(n: int, size: int, count: int, max_frac: float, generator: torch.Generator | None) -> torch.Tensor:
    """(n, size) bool: union of ``count`` random bands of width uniform in {0..max_frac*size}."""
    max_width = int(max_frac * size)
    width = torch.floor(torch.rand(n, count, generator=generator) * (max_width + 1)).long()
    start = torch.floor(torch.rand(n, count, generator=generator) * (size - width + 1)).long()
    pos = torch.arange(size)[None, None, :]
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
    return inside.any(dim=1)


def spec_augment(
    x: torch.Tensor,
    time_masks: int = 2,
    max_time: float = 0.1,
    freq_masks: int = 2,
    max_freq: float = 0.1,
    p: float = 1.0,
    fill: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment: ``time_masks`` time bands (width up to ``max_time * T``) and
    ``freq_masks`` mel bands (up to ``max_freq * n_mels``), filled with ``fill`` or the
    sample minimum."""
    _check(x)
    b, _, f, t = x.shape
    sel = _select(b, p, generator)
    t_mask = _band_masks(b, t, time_masks, max_time, generator)
    f_mask = _band_masks(b, f, freq_masks, max_freq, generator)
    masked = (t_mask[:, None, :] | f_mask[:, :, None]) & sel[:, None, None]
    if not masked.any():
        return x
    return torch.where(masked.to(x.device)[:, None], _fill_value(x, fill), x)


def mixup(
    x: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    alpha: float = 0.5,
    mode: MixupMode = "hard",
    p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mix each selected sample with a random partner: ``x = lam*x + (1-lam)*x[perm]``.

    ``lam ~ Beta(alpha, alpha)`` per sample. Labels of a mixed sample are the union of
    both samples' labels, ``target = clip(t + t[perm], 0, 1)``, in both modes:

    * ``"hard"`` (round 0, box labels): ``mask = max(m, m[perm])``, i.e. a class is
      known if it is known in either sample;
    * ``"soft"`` (later rounds, soft pseudo labels): ``mask`` becomes all ones.

    Unselected samples keep their input, target and mask.
    """
    _check(x)
    if mode not in ("hard", "soft"):
        raise ValueError(f"mixup mode must be 'hard' or 'soft', got {mode!r}")
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    b = x.shape[0]
    sel = _select(b, p, generator)
    perm = torch.randperm(b, generator=generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    if not sel.any():
        return x, target, mask
    lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=b))
    lam = torch.where(sel, lam, torch.ones_like(lam)).to(x.dtype).to(x.device).view(-1, 1, 1, 1)
    perm_d = perm.to(x.device)
    rows = sel.nonzero().flatten().to(x.device)  # unselected samples keep their input as it is
    x_mix = x.clone()
    if _on_cpu(x):
        for r in rows.tolist():
            x_mix[r] = lam[r] * x[r] + (1 - lam[r]) * x[int(perm[r])]
    else:
        x_mix[rows] = lam[rows] * x[rows] + (1 - lam[rows]) * x[perm_d[rows]]
    t_mix = (target + target[perm_d]).clamp(0, 1)
    m_mix = torch.maximum(mask, mask[perm_d]) if mode == "hard" else torch.ones_like(mask)
    return x_mix, _where(sel, t_mix, target), _where(sel, m_mix, mask)


def freq_channel(n_mels: int, n_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(1, 1, n_mels, n_frames) map of the mel-bin index scaled to [0, 1] (bin 0 -> 0, last -> 1)."""
    ramp = torch.linspace(0.0, 1.0, n_mels, device=device) if n_mels > 1 else torch.zeros(1, device=device)
    return ramp.view(1, 1, n_mels, 1).expand(1, 1, n_mels, n_frames)


def add_freq_channel(x: torch.Tensor) -> torch.Tensor:
    """Append the FreqConv channel: (B, 1, F, T) -> (B, 2, F, T)."""
    _check(x)
    b, _, f, t = x.shape
    fc = freq_channel(f, t, device=x.device).to(x.dtype).expand(b, 1, f, t)
    return torch.cat([x, fc], dim=1)


class Augmenter:
    """The training augmentation chain, configured by :class:`rfcx.train.config.AugmentConfig`.

    Round 0 (box labels): time warp, frequency masking around the box, pitch shift, noise, gain,
    hard mixup. Rounds >= 1 (soft pseudo labels): noise, gain, soft mixup, time warp, pitch shift,
    SpecAugment.
    """

    def __init__(self, cfg: AugmentConfig, mixup_alpha: float = 0.5, generator: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.mixup_alpha = mixup_alpha
        self.generator = generator

    def __call__(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        round_idx: int,
        box_bins: torch.Tensor | None = None,
        label_boxes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment a batch; ``box_bins`` (B, 2) is used in round 0 only (None skips that step). ``label_boxes``
        (B, K, 3) are the bands of the crop's TP boxes (:class:`rfcx.train.sampling.CropBatch`): a TP label whose bands
        the frequency masking erased becomes unknown (:func:`drop_masked_labels`)."""
        c, g = self.cfg, self.generator
        if round_idx == 0:
            x = time_warp(x, c.time_warp_max, c.time_warp_p, g)
            if box_bins is not None:
                x, masked = freq_mask_outside_box(x, box_bins, c.freq_mask_p, generator=g, return_masked=True)
                if label_boxes is not None:
                    target, mask = drop_masked_labels(target, mask, label_boxes, masked)
            x = pitch_shift(x, c.pitch_shift_bins, c.pitch_shift_p, g)
            x = gaussian_noise(x, c.noise_std_db, c.noise_p, g)
            x = volume_gain(x, c.gain_db, c.gain_p, g)
            x, target, mask = mixup(x, target, mask, self.mixup_alpha, "hard", c.mixup_p, g)
        else:
            x = gaussian_noise(x, c.noise_std_db, c.noise_p, g)
            x = volume_gain(x, c.gain_db, c.gain_p, g)
            x, target, mask = mixup(x, target, mask, self.mixup_alpha, "soft", c.mixup_p, g)
            x = time_warp(x, c.time_warp_max, c.time_warp_p, g)
            x = pitch_shift(x, c.pitch_shift_bins, c.pitch_shift_p, g)
            x = spec_augment(
                x, c.spec_time_masks, c.spec_time_max, c.spec_freq_masks, c.spec_freq_max, c.spec_augment_p, generator=g
            )
        return x, target, mask
