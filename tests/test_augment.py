"""Augmentations: shapes, determinism, box-safe frequency masking, gain, mixup labels."""

from __future__ import annotations

import pytest
import torch

from rfcx.train.augment import (
    Augmenter,
    add_freq_channel,
    drop_masked_labels,
    freq_channel,
    freq_mask_outside_box,
    gaussian_noise,
    mixup,
    pitch_shift,
    spec_augment,
    time_warp,
    volume_gain,
)
from rfcx.train.config import AugmentConfig

B, F, T = 6, 32, 50


def batch(seed: int = 0) -> torch.Tensor:
    return -80 + 60 * torch.rand(B, 1, F, T, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


BOXES = torch.tensor([[10, 15], [0, 3], [28, 31], [-1, -1], [5, 5], [0, 31]])

AUGS = {
    "time_warp": lambda x, g: time_warp(x, 0.2, 1.0, g),
    "freq_mask": lambda x, g: freq_mask_outside_box(x, BOXES, 1.0, generator=g),
    "noise": lambda x, g: gaussian_noise(x, 3.0, 1.0, g),
    "gain": lambda x, g: volume_gain(x, 6.0, 1.0, g),
    "spec_augment": lambda x, g: spec_augment(x, p=1.0, generator=g),
    "pitch_shift": lambda x, g: pitch_shift(x, 7, 1.0, g),
}


@pytest.mark.parametrize("name", AUGS)
def test_shape_and_determinism(name: str) -> None:
    x = batch()
    a, b, c = AUGS[name](x, gen(1)), AUGS[name](x, gen(1)), AUGS[name](x, gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, x)


@pytest.mark.parametrize("name", AUGS)
def test_probability_zero_is_identity(name: str) -> None:
    fns = {
        "time_warp": lambda x, g: time_warp(x, 0.2, 0.0, g),
        "freq_mask": lambda x, g: freq_mask_outside_box(x, BOXES, 0.0, generator=g),
        "noise": lambda x, g: gaussian_noise(x, 3.0, 0.0, g),
        "gain": lambda x, g: volume_gain(x, 6.0, 0.0, g),
        "spec_augment": lambda x, g: spec_augment(x, p=0.0, generator=g),
        "pitch_shift": lambda x, g: pitch_shift(x, 7, 0.0, g),
    }
    x = batch()
    assert torch.equal(fns[name](x, gen()), x)


def test_time_warp_keeps_endpoints_and_values_range() -> None:
    x = batch()
    y = time_warp(x, 0.2, 1.0, gen(3))
    assert torch.allclose(y[..., 0], x[..., 0]) and torch.allclose(y[..., -1], x[..., -1])
    assert y.min() >= x.min() - 1e-4 and y.max() <= x.max() + 1e-4  # linear interpolation
    ramp = torch.arange(T, dtype=torch.float32).expand(B, 1, F, T)
    warped = time_warp(ramp, 0.2, 1.0, gen(3))
    assert torch.all(warped.diff(dim=-1) > 0)  # monotone resampling


def test_freq_mask_never_touches_box_bins() -> None:
    x = batch()
    for seed in range(20):
        y = freq_mask_outside_box(x, BOXES, 1.0, generator=gen(seed))
        for i, (lo, hi) in enumerate(BOXES.tolist()):
            if lo < 0:
                assert torch.equal(y[i], x[i])  # no box: unchanged
                continue
            assert torch.equal(y[i, :, lo : hi + 1], x[i, :, lo : hi + 1])
            changed = (y[i] != x[i]).any(dim=-1).squeeze(0).nonzero().flatten().tolist()
            assert all(b < lo or b > hi for b in changed)
    # masks are adjacent to the band and fully mask the whole outside for some draw
    hits = [freq_mask_outside_box(x, BOXES, 1.0, fill=0.0, generator=gen(s))[0, 0, :, 0] for s in range(50)]
    assert any(bool((h[:10] == 0).all()) for h in hits) and any(bool((h[16:] == 0).all()) for h in hits)


def test_pitch_shift_moves_whole_bins_and_fills_with_the_minimum() -> None:
    x = batch()
    g = gen(3)
    y = pitch_shift(x, 4, 1.0, g)
    moved = 0
    for r in range(B):
        found = [
            d
            for d in range(-4, 5)
            if torch.equal(y[r, :, max(d, 0) : F + min(d, 0)], x[r, :, max(-d, 0) : F - max(d, 0)])
        ]
        assert len(found) == 1
        d = found[0]
        vacated = y[r, :, :d] if d > 0 else y[r, :, F + d :]
        assert (vacated == x[r].min()).all()
        moved += d != 0
    assert moved >= B // 2
    before = gen(5)
    pitch_shift(x, 4, 0.0, before)  # p = 0: no draw, the stream goes on as without the step
    assert torch.equal(torch.rand(3, generator=before), torch.rand(3, generator=gen(5)))


def test_gain_shifts_mean_by_constant() -> None:
    x = batch()
    y = volume_gain(x, 6.0, 1.0, gen(5))
    shift = (y - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-4)
    assert torch.allclose(y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)), shift[:, 0], atol=1e-4)
    assert shift.abs().max() <= 6.0 and shift[:, 0].std() > 0


def test_noise_is_zero_mean_ish() -> None:
    x = torch.zeros(4, 1, 64, 200)
    y = gaussian_noise(x, 3.0, 1.0, gen(0))
    assert y.mean().abs() < 0.05 and y.std(dim=(1, 2, 3)).max() <= 3.1


def test_spec_augment_masks_bands_with_minimum() -> None:
    x = batch()
    y = spec_augment(x, time_masks=1, max_time=0.3, freq_masks=1, max_freq=0.3, p=1.0, generator=gen(0))
    changed = y != x
    assert changed.any()
    assert torch.all(y[changed] == x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)[changed])


def labels() -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i holds one box of species i (so partners are identifiable): TP if i is even."""
    mask = torch.eye(B)
    target = torch.eye(B) * (torch.arange(B) % 2 == 0)
    return target, mask


def _check_mix(x: torch.Tensor, xm: torch.Tensor, i: int, j: int) -> None:
    if i == j:
        assert torch.allclose(xm[i], x[i], atol=1e-4)
        return
    lam = ((xm[i] - x[j]) * (x[i] - x[j])).sum() / ((x[i] - x[j]) ** 2).sum()
    assert -1e-4 <= lam <= 1 + 1e-4
    assert torch.allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-3)


def test_mixup_hard_labels() -> None:
    x = batch()
    target, mask = labels()
    xm, tm, mm = mixup(x, target, mask, alpha=0.5, mode="hard", p=1.0, generator=gen(7))
    partners = []
    for i in range(B):
        known = mm[i].nonzero().flatten().tolist()
        assert i in known and len(known) <= 2  # mask = OR of both samples' masks
        j = next((k for k in known if k != i), i)
        partners.append(j)
        assert torch.equal(tm[i], (target[i] + target[j]).clamp(0, 1))
        assert torch.equal(mm[i], torch.maximum(mask[i], mask[j]))
        _check_mix(x, xm, i, j)
    assert sorted(partners) == list(range(B))  # a permutation
    assert partners != list(range(B))


def test_mixup_soft_labels() -> None:
    x = batch()
    target = 0.6 * torch.eye(B)
    mask = torch.ones(B, B)
    xm, tm, mm = mixup(x, target, mask, alpha=0.5, mode="soft", p=1.0, generator=gen(8))
    assert torch.equal(mm, torch.ones(B, B))
    for i in range(B):
        nz = tm[i].nonzero().flatten().tolist()
        j = next((k for k in nz if k != i), i)
        assert torch.allclose(tm[i], (target[i] + target[j]).clamp(0, 1))  # summed, clipped
        _check_mix(x, xm, i, j)
    # soft mode makes every class known even if the input mask was partial
    _, _, mm = mixup(x, target, torch.zeros(B, B), mode="soft", p=1.0, generator=gen(8))
    assert torch.equal(mm, torch.ones(B, B))


def test_mixup_deterministic_and_p_zero() -> None:
    x = batch()
    target, mask = labels()
    a = mixup(x, target, mask, generator=gen(1))
    b = mixup(x, target, mask, generator=gen(1))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    xs, ts, ms = mixup(x, target, mask, p=0.0, generator=gen(1))
    assert torch.equal(xs, x) and torch.equal(ts, target) and torch.equal(ms, mask)
    with pytest.raises(ValueError):
        mixup(x, target, mask, mode="medium")  # type: ignore[arg-type]


def test_freq_channel_values() -> None:
    fc = freq_channel(128, 10)
    assert fc.shape == (1, 1, 128, 10)
    assert fc[0, 0, 0, 0] == 0 and fc[0, 0, -1, 0] == 1
    assert torch.allclose(fc[0, 0, 64, :], torch.full((10,), 64 / 127))
    assert torch.all(fc.diff(dim=2) > 0) and torch.all(fc.diff(dim=3) == 0)
    x = batch()
    y = add_freq_channel(x)
    assert y.shape == (B, 2, F, T)
    assert torch.equal(y[:, :1], x) and torch.equal(y[:, 1:], freq_channel(F, T).expand(B, 1, F, T))


@pytest.mark.parametrize("round_idx", [0, 1, 2])
def test_augmenter_chain(round_idx: int) -> None:
    cfg = AugmentConfig(time_warp_p=1, freq_mask_p=1, noise_p=1, gain_p=1, spec_augment_p=1, mixup_p=1)
    x = batch()
    target, mask = labels()
    if round_idx:
        mask = torch.ones_like(mask)
    out = [Augmenter(cfg, 0.5, gen(4))(x, target, mask, round_idx, BOXES) for _ in range(2)]
    xa, ta, ma = out[0]
    assert xa.shape == x.shape and ta.shape == target.shape and ma.shape == mask.shape
    assert all(torch.equal(u, v) for u, v in zip(out[0], out[1]))
    assert not torch.equal(xa, x)
    if round_idx:
        assert torch.equal(ma, torch.ones_like(mask))
    else:
        assert ma.sum(dim=1).max() <= 2 and torch.all(ma >= mask)
    # everything off: identity
    off = AugmentConfig(time_warp_p=0, freq_mask_p=0, noise_p=0, gain_p=0, spec_augment_p=0, mixup_p=0)
    xo, to, mo = Augmenter(off, 0.5, gen(4))(x, target, mask, round_idx, BOXES)
    assert torch.equal(xo, x) and torch.equal(to, target) and torch.equal(mo, mask)


def test_freq_mask_returns_what_it_masked_with_the_same_draws() -> None:
    x = batch()
    for seed in range(10):
        plain = freq_mask_outside_box(x, BOXES, 0.7, fill=0.0, generator=gen(seed))
        y, masked = freq_mask_outside_box(x, BOXES, 0.7, fill=0.0, generator=gen(seed), return_masked=True)
        assert torch.equal(y, plain) and masked.shape == (B, F) and masked.dtype == torch.bool
        assert torch.equal(masked, (y == 0).all(dim=-1).squeeze(1))  # x is never 0: exactly the masked bins


def test_a_tp_label_whose_band_was_masked_becomes_unknown() -> None:
    """Round 0 masks bins around the crop's box only; a second TP call of another species whose band lies in the
    masked region must not train as 1 with its signal erased (issue 10, 4b)."""
    f = 64
    x = -80 + 60 * torch.rand(1, 1, f, T, generator=gen(0))
    box_bins = torch.tensor([[40, 45]])  # the crop's box: species 3
    # species 3 (the crop's box), species 5 (bins 10-20, below it), species 7 in two boxes: one below (bins 30-35)
    # and one inside the crop box's band (never masked), species 9: above (bins 50-60)
    label_boxes = torch.tensor([[[3, 40, 45], [5, 10, 20], [7, 30, 35], [7, 41, 44], [9, 50, 60], [-1, -1, -1]]])
    target = torch.zeros(1, 24)
    target[0, [3, 5, 7, 9]] = 1
    target[0, 11] = 0  # an FP label: stays known
    mask = target.clone()
    mask[0, 11] = 1
    cfg = AugmentConfig(time_warp_p=0, freq_mask_p=1, noise_p=0, gain_p=0, spec_augment_p=0, mixup_p=0)
    seen = set()
    for seed in range(60):
        xa, ta, ma = Augmenter(cfg, 0.5, gen(seed))(x, target, mask, 0, box_bins, label_boxes)
        g = gen(seed)
        time_warp(x, cfg.time_warp_max, 0.0, g)  # the chain's draws before the masking
        y, masked = freq_mask_outside_box(x, box_bins, 1.0, generator=g, return_masked=True)
        assert torch.equal(xa, y)  # the same draws as before the fix
        for c, (lo, hi) in ((5, (10, 20)), (9, (50, 60))):
            erased = bool(masked[0, lo : hi + 1].float().mean() >= 0.5)
            seen.add((c, erased))
            assert (ta[0, c], ma[0, c]) == ((0.0, 0.0) if erased else (1.0, 1.0))
        assert ta[0, 3] == ma[0, 3] == 1 and ta[0, 7] == ma[0, 7] == 1  # species 7 keeps an unmasked box
        assert ma[0, 11] == 1 and ta[0, 11] == 0
    assert seen == {(5, True), (5, False), (9, True), (9, False)}
    # no label boxes: the labels as before; malformed ones are refused
    _, ta, ma = Augmenter(cfg, 0.5, gen(0))(x, target, mask, 0, box_bins)
    assert torch.equal(ta, target) and torch.equal(ma, mask)
    with pytest.raises(ValueError, match="label_boxes must be shaped"):
        drop_masked_labels(target, mask, torch.zeros(1, 2), torch.zeros(1, f, dtype=torch.bool))


# -- the faster ops against the whole-batch formulation they replaced (tests/augment_reference.py) -------------

import rfcx.train.augment as fast  # noqa: E402
from tests import augment_reference as ref  # noqa: E402


def _labels(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    t, m = labels()
    return t[:n], m[:n]


SAME_DRAWS = {
    "time_warp": lambda m, x, g, p: m.time_warp(x, 0.2, p, g),
    "freq_mask": lambda m, x, g, p: m.freq_mask_outside_box(
        x, BOXES[: x.shape[0]].clamp(max=x.shape[2] - 1), p, generator=g, return_masked=True
    ),
    "freq_mask_fill": lambda m, x, g, p: m.freq_mask_outside_box(
        x, BOXES[: x.shape[0]].clamp(max=x.shape[2] - 1), p, fill=-99.0, generator=g
    ),
    "gain": lambda m, x, g, p: m.volume_gain(x, 6.0, p, g),
    "spec_augment": lambda m, x, g, p: m.spec_augment(x, p=p, generator=g),
    "spec_augment_fill": lambda m, x, g, p: m.spec_augment(x, p=p, fill=-99.0, generator=g),
    "mixup_hard": lambda m, x, g, p: m.mixup(x, *_labels(x.shape[0]), 0.5, "hard", p, g),
    "mixup_soft": lambda m, x, g, p: m.mixup(x, *_labels(x.shape[0]), 0.5, "soft", p, g),
}


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("shape", [(B, 1, F, T), (B, 2, F, T), (5, 1, 7, 9)])  # 7 x 9: no 16-normal blocks
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", SAME_DRAWS)
def test_same_draws_and_values_as_the_reference(name: str, p: float, shape: tuple) -> None:
    x = -80 + 60 * torch.rand(shape, generator=gen(7))
    before = x.clone()
    for seed in range(4):
        g_new, g_ref = gen(seed), gen(seed)
        new = _as_tuple(SAME_DRAWS[name](fast, x, g_new, p))
        old = _as_tuple(SAME_DRAWS[name](ref, x, g_ref, p))
        assert len(new) == len(old)
        for a, b in zip(new, old):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert torch.equal(a, b), f"{name} p={p} seed={seed}"
        assert torch.equal(g_new.get_state(), g_ref.get_state())  # the same draws: the stream goes on alike
        assert torch.equal(x, before)  # the input is never modified


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_noise_draws_three_numbers_per_sample_and_noises_only_the_selected(p: float) -> None:
    """What changed on purpose: the normals come from a generator seeded by one draw, for the selected samples
    only; the CPU generator takes the selection, the stds and that seed (the same on every device)."""
    x = batch()
    g, expected = gen(5), gen(5)
    y = gaussian_noise(x, 3.0, p, g)
    sel = torch.rand(B, generator=expected) < p
    std = torch.rand(B, generator=expected) * 3.0 * sel
    seed = int(torch.randint(0, 2**62, (1,), generator=expected))
    assert torch.equal(g.get_state(), expected.get_state())
    rows = sel.nonzero().flatten()
    noise = torch.randn((len(rows), 1, F, T), generator=torch.Generator().manual_seed(seed))
    want = x.clone()
    want[rows] = x[rows] + noise * std[rows].view(-1, 1, 1, 1)
    assert torch.equal(y, want)
    assert torch.equal(y[~sel], x[~sel])


@pytest.mark.parametrize("round_idx", [0, 1])
def test_augmenter_same_as_reference_over_batches(round_idx: int, monkeypatch) -> None:
    """The whole chain, batch after batch on one generator, equals the reference chain whose noise step is the
    new one (the one step whose draws changed)."""
    monkeypatch.setattr(ref, "gaussian_noise", fast.gaussian_noise)
    cfg = AugmentConfig()
    new, old = Augmenter(cfg, 0.4, gen(3)), ref.Augmenter(cfg, 0.4, gen(3))
    boxes = BOXES.clone()
    label_boxes = torch.tensor([[[2, 10, 15]], [[5, 0, 3]], [[-1, -1, -1]], [[1, 2, 4]], [[7, 5, 5]], [[9, 0, 31]]])
    for i in range(6):
        x = batch(i)
        t, m = labels()
        args = (round_idx, boxes, label_boxes) if round_idx == 0 else (round_idx,)
        for a, b in zip(new(x, t, m, *args), old(x, t, m, *args)):
            assert torch.equal(a, b), f"batch {i}"
