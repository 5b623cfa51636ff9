"""Model construction (timm backbones: random, timm's ImageNet weights, or a local weights file) and input pooling."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import timm
import torch

from engine.net import SpectrogramClassifier
from rfcx.errors import InvalidInputError
from rfcx.train.config import ModelSpec, TrainConfig
from store.tables import N_SPECIES


def build_model(
    spec: ModelSpec | str,
    n_classes: int = N_SPECIES,
    in_chans: int = 2,
    channels_last: bool = False,
    pretrained: bool | str = False,
) -> torch.nn.Module:
    """A timm classifier emitting ``n_classes`` logits from (B, in_chans, n_mels, T) input.

    ``pretrained``: ``False``, random weights (nothing is downloaded); ``"imagenet"``, timm's pretrained weights
    (``pretrained=True``: downloaded, which needs a network or the Hugging Face cache); a path to a local state
    dict (``.pth``/``.pt``, or ``.safetensors``) of the same backbone, loaded by :func:`load_backbone_weights`
    (first conv adapted to ``in_chans``, classifier head left random). Failures raise ``ValueError`` saying why and
    what to do. With ``channels_last`` the parameters use that memory format (feed inputs likewise).
    """
    name = spec.backbone if isinstance(spec, ModelSpec) else spec
    if pretrained == "imagenet":
        try:
            with _offline_unless_reachable():
                model = timm.create_model(name, pretrained=True, num_classes=n_classes, in_chans=in_chans)
        except Exception as exc:  # offline (huggingface_hub / urllib errors), or no weights for this model
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
            raise InvalidInputError(
                f"pretrained = 'imagenet': could not get timm's pretrained weights of {name} ({type(exc).__name__}: "
                f"{reason}); they are downloaded, which needs a network. Offline, set pretrained to a local weights "
                f"file instead (--set pretrained=PATH), e.g. one saved on a machine with a network by "
                f"`torch.save(timm.create_model('{name}', pretrained=True).state_dict(), '{name}.pth')`"
            ) from None
    else:
        model = timm.create_model(name, pretrained=False, num_classes=n_classes, in_chans=in_chans)
        if pretrained:
            load_backbone_weights(model, cast(str, pretrained), in_chans)  # a path (TrainConfig refuses true)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@contextlib.contextmanager
def _offline_unless_reachable(timeout_s: float = 3.0) -> Iterator[None]:
    """Hugging Face Hub offline mode (the cache only) while the hub does not answer a connection within
    ``timeout_s``: without a network huggingface_hub would otherwise retry each file for about half a minute
    before failing."""
    try:
        import huggingface_hub.constants as hf
    except ImportError:
        yield
        return
    if hf.is_offline_mode():
        yield
        return
    host = urlparse(hf.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        reachable = True
    except OSError:
        reachable = False
    before = hf.HF_HUB_OFFLINE
    hf.HF_HUB_OFFLINE = before or not reachable
    try:
        yield
    finally:
        hf.HF_HUB_OFFLINE = before


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a safetensors file, or a ``torch.save``d state dict (also one wrapped in a
    checkpoint dict under ``state_dict`` / ``model``; a DataParallel ``module.`` prefix is removed)."""
    path = Path(path)
    state: Any  # what the file holds, checked below
    if not path.is_file():
        raise InvalidInputError(
            f"pretrained = {str(path)!r}: weights file not found (give a .pth/.pt state dict or a "
            f".safetensors file, 'imagenet', or false)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
        raise InvalidInputError(f"{path}: not a readable weights file ({reason})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _names(value: str | Iterable[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def load_backbone_weights(model: torch.nn.Module, path: str | Path, in_chans: int) -> None:
    """Load a local state dict of the same timm backbone into ``model``: its first conv (``pretrained_cfg``'s
    ``first_conv``) is adapted to ``in_chans`` input channels (timm's ``adapt_input_conv``: summed for 1, repeated
    and rescaled otherwise) and its classifier head dropped (``model`` keeps its own, randomly initialised, for its
    number of classes). Keys or shapes that do not fit raise ``ValueError`` naming a few of them."""
    from timm.models._manipulate import adapt_input_conv

    state = dict(read_state_dict(path))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    own = model.state_dict()
    for conv in _names(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in state and key in own and state[key].ndim == 4 and state[key].shape[1] != own[key].shape[1]:
            state[key] = adapt_input_conv(in_chans, state[key])
    head = tuple(f"{c}." for c in _names(cfg.get("classifier")))
    state = {k: v for k, v in state.items() if not k.startswith(head)} if head else state
    missing = [k for k in own if k not in state and not (head and k.startswith(head))]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        name = cfg.get("architecture") or type(model).__name__

        def few(items: list[str]) -> str:
            return ", ".join(items[:4]) + (f", ... ({len(items)} in all)" if len(items) > 4 else "")

        parts = [
            f"missing keys: {few(missing)}" if missing else "",
            f"unexpected keys: {few(unexpected)}" if unexpected else "",
            f"shapes differ (file vs model): {few(shapes)}" if shapes else "",
        ]
        raise InvalidInputError(
            f"{path}: the weights do not fit the backbone {name} ({'; '.join(p for p in parts if p)}); "
            f"is it a state dict of {name}?"
        )
    model.load_state_dict(state, strict=False)


def check_pretrained(cfg: TrainConfig) -> None:
    """Fail at once (before any training) where ``cfg.pretrained`` cannot be loaded for one of its backbones:
    ``imagenet`` without a network, a missing file, weights of another backbone."""
    if not cfg.pretrained:
        return
    for backbone in dict.fromkeys(spec.backbone for spec in cfg.backbones):
        build_model(backbone, in_chans=cfg.in_chans, pretrained=cfg.pretrained)


def build_classifier(
    cfg: TrainConfig, spec: ModelSpec, n_classes: int = N_SPECIES, pretrained: bool = False
) -> SpectrogramClassifier:
    """The trained/exported network of one ensemble member: dB crop in, logits out (see engine.net).

    ``pretrained=True`` starts the backbone from ``cfg.pretrained`` (a new member's training); otherwise the
    weights are random (to be replaced by a checkpoint's)."""

    backbone = build_model(
        spec,
        n_classes=n_classes,
        in_chans=cfg.in_chans,
        channels_last=False,
        pretrained=cfg.pretrained if pretrained else False,
    )
    return SpectrogramClassifier(
        backbone, freq_channel=cfg.freq_channel, pool=cast(tuple[int, int], tuple(cfg.input_pool))
    )
