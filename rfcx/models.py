"""Model construction (timm backbones, never pretrained) and input pooling."""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F

from rfcx.config import ModelSpec, TrainConfig


def build_model(
    spec: ModelSpec | str, n_classes: int = 24, in_chans: int = 2, channels_last: bool = False
) -> torch.nn.Module:
    """A timm classifier emitting ``n_classes`` logits from (B, in_chans, n_mels, T) input.

    Weights are random (``pretrained=False``: nothing is downloaded). With
    ``channels_last`` the parameters use that memory format (feed inputs likewise).
    """
    name = spec.backbone if isinstance(spec, ModelSpec) else spec
    model = timm.create_model(name, pretrained=False, num_classes=n_classes, in_chans=in_chans)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def pool_input(x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
    """Average-pool a (B, C, n_mels, T) batch by ``(freq, time)`` factors, e.g. (2, 2):
    256 x 376 -> 128 x 188 (a trailing partial window is dropped)."""
    if tuple(pool) == (1, 1):
        return x
    return F.avg_pool2d(x, kernel_size=tuple(pool), stride=tuple(pool))


def build_classifier(cfg: TrainConfig, spec: ModelSpec, n_classes: int = 24) -> "SpectrogramClassifier":
    """The trained/exported network of one ensemble member: dB crop in, logits out (see engine.net)."""
    from engine.net import SpectrogramClassifier

    backbone = build_model(spec, n_classes=n_classes, in_chans=cfg.in_chans, channels_last=False)
    return SpectrogramClassifier(backbone, freq_channel=cfg.freq_channel, pool=tuple(cfg.input_pool))
