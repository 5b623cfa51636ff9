"""Masked binary cross-entropy for partially labelled clips.

Round 0 labels come from boxes: a TP box of species ``s`` gives ``target[s] = 1`` and
``mask[s] = 1``; an FP box gives ``target[s] = 0`` and ``mask[s] = 1``; every other
class is unknown (``mask = 0``) and therefore contributes neither loss nor gradient.
Later rounds use soft pseudo labels with ``mask`` all ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from store.tables import N_SPECIES as N_CLASSES


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over the known (masked-in) entries.

    Reduction: ``sum(bce * mask) / max(sum(mask), 1)``. With ``mask`` all ones this is
    the usual mean BCE over every element; a batch without any known entry gives 0.
    ``target`` may be soft (values in [0, 1]); ``mask`` may be fractional weights.
    """
    if not (logits.shape == target.shape == mask.shape):
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)}"
        )
    target = target.to(logits.dtype)
    mask = mask.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1.0)


def box_targets(species_id: int, is_tp: bool, n_classes: int = N_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-0 ``(target, mask)`` float vectors (n_classes,) for one TP or FP box."""
    if not 0 <= species_id < n_classes:
        raise ValueError(f"species_id {species_id} out of range [0, {n_classes})")
    target = torch.zeros(n_classes)
    mask = torch.zeros(n_classes)
    mask[species_id] = 1.0
    target[species_id] = 1.0 if is_tp else 0.0
    return target, mask
