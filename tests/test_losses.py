"""Masked BCE: reduction, equivalence to plain BCE, no gradient through unknown classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rfcx.train.losses import box_targets, masked_bce


def test_all_ones_mask_equals_plain_bce() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 24, generator=g)
    target = torch.rand(8, 24, generator=g)
    loss = masked_bce(logits, target, torch.ones(8, 24))
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)


def test_reduction_sum_over_mask_sum() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 24, generator=g)
    target = (torch.rand(4, 24, generator=g) > 0.5).float()
    mask = (torch.rand(4, 24, generator=g) > 0.7).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = (bce * mask).sum() / mask.sum()
    assert masked_bce(logits, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    # empty mask: zero loss, denominator clamped to 1 (no division by zero)
    assert masked_bce(logits, target, torch.zeros(4, 24)).item() == 0.0


def test_masked_classes_get_zero_gradient() -> None:
    logits = torch.randn(3, 24, requires_grad=True)
    rows = [box_targets(5, True), box_targets(0, False), box_targets(23, True)]
    target = torch.stack([t for t, _ in rows])
    mask = torch.stack([m for _, m in rows])
    masked_bce(logits, target, mask).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[mask == 0] == 0)
    assert torch.all(logits.grad[mask == 1] != 0)
    assert logits.grad[0, 5] < 0 and logits.grad[1, 0] > 0  # TP pushed up, FP pushed down


def test_box_targets() -> None:
    t, m = box_targets(3, True)
    assert t.shape == m.shape == (24,)
    assert t[3] == 1 and m[3] == 1 and t.sum() == 1 and m.sum() == 1
    t, m = box_targets(3, False, n_classes=5)
    assert t.shape == (5,) and t.sum() == 0 and m[3] == 1 and m.sum() == 1
    with pytest.raises(ValueError):
        box_targets(24, True)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        masked_bce(torch.zeros(2, 24), torch.zeros(2, 24), torch.zeros(2, 23))
