"""The network as trained and as exported: dB spectrogram in, species logits out.

:class:`SpectrogramClassifier` wraps a backbone with everything between a stored crop and the backbone
(scaling of the dB values, the optional FreqConv channel, input pooling), so that an exported file needs
nothing but torch and the store's crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DB_OFFSET = -50.0  # dB values are mapped by (x - DB_OFFSET) / DB_SCALE before the backbone
DB_SCALE = 20.0


def prepare_input(x: torch.Tensor, ramp: torch.Tensor | None, pool: tuple[int, int]) -> torch.Tensor:
    """(B, 1, n_mels, T) dB -> the backbone's input: scaled dB, the FreqConv ``ramp`` (1, 1, n_mels, 1) appended
    as a second channel when given, then (freq, time) average pooling. Shared by training and export."""
    x = (x - DB_OFFSET) / DB_SCALE
    if ramp is not None:
        x = torch.cat([x, ramp.to(x.dtype).expand(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)
    return pool_input(x, pool)


def pool_input(x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
    """Average-pool a (B, C, n_mels, T) batch by ``(freq, time)`` factors, e.g. (2, 2): 256 x 376 -> 128 x 188 (a
    trailing partial window is dropped); (1, 1) returns it as it is."""
    if pool[0] > 1 or pool[1] > 1:
        x = F.avg_pool2d(x, kernel_size=pool, stride=pool)
    return x


class SpectrogramClassifier(nn.Module):
    """(B, n_mels, T) dB -> (B, n_classes) logits.

    ``freq_channel`` appends the mel-bin index scaled to 0..1 as a second input channel ("FreqConv");
    ``pool`` average-pools (freq, time) before the backbone. Set ``zero_freq_channel`` to feed zeros in
    that channel instead (the check that a trained model uses it).
    """

    def __init__(self, backbone: nn.Module, freq_channel: bool = True, pool: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.backbone = backbone
        self.freq_channel = freq_channel
        self.pool = (int(pool[0]), int(pool[1]))
        self.zero_freq_channel = False

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) or (B, 1, n_mels, T) dB -> the backbone's input (B, C, F', T')."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        ramp = None
        if self.freq_channel:
            f = x.shape[2]
            ramp = torch.linspace(0.0, 1.0, f, device=x.device, dtype=x.dtype).view(1, 1, f, 1)
            if self.zero_freq_channel:
                ramp = torch.zeros_like(ramp)
        return prepare_input(x, ramp, self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))
