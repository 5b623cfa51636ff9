"""Exported ensemble members: frozen TorchScript (``.ts``) and ``torch.export`` programs (``.pt2``).

Each file holds two entry points of one trained :class:`engine.net.SpectrogramClassifier`, and its metadata:

- ``forward(x)``: (B, n_mels, T) dB -> (B, n_classes) logits, the network as trained (one window per row);
- ``windows(x, starts)``: the *fully convolutional* path. The backbone runs once over whole clips
  (B, n_mels, T); its feature map (before global pooling) is averaged over frequency, and each window
  (``starts``: float tensor (W,) of start frames) averages the time positions a crop of ``window_frames``
  frames at that start would have had, then the classifier head scores it: (B, W, n_classes) logits.
  Feature position ``j`` is centred on input frame ``j * stride`` (``stride`` = input time pooling x backbone
  reduction) and a crop has ``positions`` of them, so window ``s`` takes positions ``[s / stride,
  s / stride + positions)`` with equal weights, fractional at the ends when ``s`` is not a multiple of
  ``stride``; positions past the clip's end drop out (weights renormalised). For a window aligned with the
  grid this is the crop's own global average pool. Squeeze-excitation blocks (EfficientNet, MobileNetV3,
  ReXNet) take their channel gates from a moving average over as many time positions as a crop has at their
  depth (:func:`local_se`), not from the whole clip. The remaining difference to ``forward`` is what the backbone
  sees beyond the crop (its receptive field) instead of padding: small where a window spans many feature
  positions, large where it spans few (tests/test_engine_fcn.py and the README's infer section measure it).

A ``.ts`` file is a frozen TorchScript module with ``forward`` and ``windows`` methods and ``meta.json`` as an
extra file. A ``.pt2`` file is a ``torch.export`` archive: the ``model`` program (what
``torch.export.load(path)`` returns) plus a ``windows`` program, both with dynamic batch and time dimensions,
and ``meta.json``. :func:`load_model` reads either with torch alone (no timm, no rfcx).

Meta keys: ``format_version``, ``format``, ``config_name``, ``config``, ``backbone``, ``crop_seconds``
(= the window length), ``window_frames``, ``hop_seconds``, ``mel`` (the store's MelParams dict),
``n_mels``, ``n_classes``, ``round``, ``fold``, ``freq_channel``, ``pool``, ``fcn`` (geometry of the
windows path: ``stride_frames``, ``positions``, ``reduction``, ``local_se_blocks``; null where the backbone has
no average-pooled head), ``torch`` (the version that wrote the file: TorchScript and torch.export archives are
read by the running torch, and a file that does not load names both).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from store.atomic import atomic_path
from store.errors import InvalidInputError, NotFoundError, RfcxError

from .net import prepare_input

FORMAT_VERSION = 1
SUFFIXES = {"torchscript": ".ts", "export": ".pt2"}
META_FILE = "meta.json"
REQUIRED_META = ("crop_seconds", "hop_seconds", "mel")


class ModelFileError(RfcxError, ValueError):
    """An exported model file that cannot be used; the message names the file and says why."""


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence TorchScript's deprecation and tracer warnings here only (TorchScript is deprecated in torch 2.14)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


# -- what is exported ------------------------------------------------------------------------------------------


def fcn_geometry(net: nn.Module, n_mels: int, window_frames: int) -> dict[str, float] | None:
    """``{"stride_frames", "positions", "reduction"}`` of the windows path, or None where it does not apply.

    Needs a timm-style backbone: ``forward_features``, ``forward_head`` and an average ``global_pool``
    (``feature_info`` gives the reduction). ``positions`` is measured on a crop of ``window_frames``.
    """
    bb = getattr(net, "backbone", None)
    pool = getattr(getattr(bb, "global_pool", None), "pool_type", None)
    info = getattr(bb, "feature_info", None)
    if (
        bb is None
        or pool != "avg"
        or not hasattr(bb, "forward_features")
        or not hasattr(bb, "forward_head")
        or not info
    ):
        return None
    reduction = info[-1]["reduction"] if isinstance(info, list) else info.reduction()[-1]
    clf: Any = net  # a SpectrogramClassifier (prepare, pool): nn.Module types its attributes as Tensor | Module
    with torch.no_grad():
        positions = clf.backbone.forward_features(clf.prepare(torch.zeros(1, n_mels, window_frames))).shape[-1]
    return {
        "stride_frames": float(int(clf.pool[1]) * reduction),
        "positions": float(positions),
        "reduction": float(reduction),
    }


# -- squeeze-excitation in the windows path ---------------------------------------------------------------------

_SE_PARTS = {
    "SqueezeExcite": ("conv_reduce", "act1", "conv_expand", "gate"),  # EfficientNet / MobileNetV3 family
    "SEModule": ("fc1", "bn", "act", "fc2", "gate"),
}  # timm.layers (ReXNet, ResNet-SE, ...)
_KERNEL = "_rfcx_fcn_se_kernel"


def _se_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The squeeze-excitation blocks of a timm backbone whose context the windows path can make local."""
    found = []
    for m in backbone.modules():
        parts = _SE_PARTS.get(type(m).__name__)
        if parts and all(hasattr(m, p) for p in parts) and not getattr(m, "add_maxpool", False):
            found.append(m)
    return found


def mark_local_se(backbone: nn.Module, crop: torch.Tensor) -> int:
    """Give every squeeze-excitation block the number of time positions its input has for one crop (``crop``, the
    backbone's input for one window): the windows path then averages each position's context over that many
    positions around it instead of over the whole clip (:func:`local_se`). Returns how many blocks were marked."""
    blocks = _se_blocks(backbone)
    sizes: dict[int, int] = {}
    hooks = [
        m.register_forward_hook(lambda m, inp, _out: sizes.__setitem__(id(m), int(inp[0].shape[-1]))) for m in blocks
    ]
    try:
        with torch.no_grad():
            cast(Any, backbone).forward_features(crop)  # a timm backbone's method (not nn.Module's)
    finally:
        for h in hooks:
            h.remove()
    for m in blocks:
        object.__setattr__(m, _KERNEL, sizes.get(id(m), 1))
    return len(blocks)


def crop_context(s: torch.Tensor, kernel: int) -> torch.Tensor:
    """Mean of ``s`` (..., T) over ``kernel`` positions around each position: the span a crop of ``kernel`` positions
    centred there would have, shifted inside ``[0, T)`` near the ends (as the engine's windows lie inside the clip),
    so that where ``T <= kernel`` every position takes the mean over all of them (one crop: its global mean)."""
    if kernel <= 1:
        return s
    pos = torch.cumsum(torch.ones_like(s[(0,) * (s.dim() - 1)]), 0) - 1.0  # 0, 1, ..., T-1 (no device constant)
    last = pos[-1:]
    start = torch.clamp(torch.minimum(pos - float(kernel // 2), last - float(kernel - 1)), min=0.0)
    end = torch.minimum(start + float(kernel), last + 1.0)
    c = torch.cat([torch.zeros_like(s[..., :1]), torch.cumsum(s, -1)], -1)
    return (c.index_select(-1, end.long()) - c.index_select(-1, start.long())) / (end - start)


def _local_se_forward(m: nn.Module, kernel: int, x: torch.Tensor) -> torch.Tensor:
    s = crop_context(x.mean(2, keepdim=True), kernel)  # (B, C, 1, T): frequency mean, then a crop's span in time
    se: Any = m  # a timm SE block (_SE_PARTS): nn.Module types its layers as Tensor | Module
    if type(m).__name__ == "SqueezeExcite":
        s = se.conv_expand(se.act1(se.conv_reduce(s)))
    else:
        s = se.fc2(se.act(se.bn(se.fc1(s))))
    return x * se.gate(s)


@contextlib.contextmanager
def local_se(backbone: nn.Module) -> Iterator[None]:
    """Within: the squeeze-excitation blocks marked by :func:`mark_local_se` take their context from a crop's length
    of positions around each position (what the block sees in a window's own forward) rather than the whole clip."""
    import functools

    patched = [m for m in backbone.modules() if hasattr(m, _KERNEL)]
    for m in patched:
        object.__setattr__(m, "forward", functools.partial(_local_se_forward, m, getattr(m, _KERNEL)))
    try:
        yield
    finally:
        for m in patched:
            object.__delattr__(m, "forward")


class Deployable(nn.Module):
    """A :class:`~engine.net.SpectrogramClassifier` as exported: ``forward`` and ``windows`` (module docstring).

    ``prepare`` is ``SpectrogramClassifier``'s (:func:`engine.net.prepare_input`) with the FreqConv ramp kept as
    a buffer, so that the exported graph carries no device constant and runs wherever it is loaded.
    """

    def __init__(self, net: nn.Module, n_mels: int, window_frames: int) -> None:
        super().__init__()
        if getattr(net, "zero_freq_channel", False):
            raise InvalidInputError("refusing to export a model with zero_freq_channel set (a diagnostic switch)")
        clf: Any = net  # a SpectrogramClassifier: nn.Module types its attributes as Tensor | Module
        self.backbone = clf.backbone  # timm-style: forward_features, forward_head
        self.freq_channel = bool(clf.freq_channel)
        self.pool = (int(clf.pool[0]), int(clf.pool[1]))
        self.register_buffer("ramp", torch.linspace(0.0, 1.0, n_mels).view(1, 1, n_mels, 1), persistent=True)
        self.fcn = fcn_geometry(net, n_mels, window_frames)
        if self.fcn is not None:  # squeeze-excitation context of a window's length, not the whole clip's
            self.fcn["local_se_blocks"] = float(
                mark_local_se(self.backbone, clf.prepare(torch.zeros(1, n_mels, window_frames)))
            )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        # self.ramp is a buffer (a Tensor); nn.Module types its attributes as Tensor | Module
        return prepare_input(
            x.unsqueeze(1),
            self.ramp if self.freq_channel else None,  # type: ignore[arg-type]
            self.pool,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

    def windows(self, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        if self.fcn is None:
            raise RuntimeError("this backbone has no fully convolutional path")
        with local_se(self.backbone):
            cols = self.backbone.forward_features(self.prepare(x)).mean(2)  # (B, C, T')
        # position j covers [j, j + 1) in position units, window s covers [s / stride, s / stride + positions);
        # built from the data so that no device constant is baked into the exported graph
        pos = (torch.cumsum(torch.ones_like(cols[0, 0]), 0) - 1.0).unsqueeze(0)  # (1, T'): 0, 1, ..., T'-1
        first = (starts.to(cols.dtype) / self.fcn["stride_frames"]).unsqueeze(1)  # (W, 1)
        overlap = torch.clamp(
            torch.minimum(pos + 1.0, first + self.fcn["positions"]) - torch.maximum(pos, first), min=0.0
        )  # (W, T')
        weights = overlap / overlap.sum(1, keepdim=True).clamp_min(1e-6)
        pooled = torch.einsum("bct,wt->bwc", cols, weights)
        b, w, c = pooled.shape
        logits = self.backbone.forward_head(pooled.reshape(b * w, c, 1, 1))
        return logits.reshape(b, w, -1)


class _WindowsProgram(nn.Module):
    """``Deployable.windows`` as a ``forward`` (what ``torch.export`` exports)."""

    def __init__(self, deployable: Deployable) -> None:
        super().__init__()
        self.deployable = deployable

    def forward(self, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        return self.deployable.windows(x, starts)


def _complete_meta(model: nn.Module, meta: dict[str, Any], fmt: str) -> tuple[Deployable, dict[str, Any], torch.Tensor]:
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise InvalidInputError(f"export meta lacks {missing} (needs at least {list(REQUIRED_META)})")
    mel = dict(meta["mel"])
    n_mels = int(mel["n_mels"])
    window_frames = int(round(float(meta["crop_seconds"]) * mel["sample_rate"] / mel["hop"]))
    model.eval()  # what is exported is the eval network (batch-norm statistics, no dropout)
    deployable = Deployable(model.cpu(), n_mels, window_frames).eval()
    example = torch.full((2, n_mels, window_frames), -60.0) + 10.0 * torch.randn(2, n_mels, window_frames)
    with torch.inference_mode():
        n_classes = int(deployable(example).shape[-1])
    full = {
        **meta,
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "n_mels": n_mels,
        "window_frames": window_frames,
        "n_classes": n_classes,
        "freq_channel": deployable.freq_channel,
        "pool": list(deployable.pool),
        "fcn": deployable.fcn,
        "torch": torch.__version__,
    }
    return deployable, full, example


def _write_atomic(path: Path, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, keep_suffix=True) as tmp:  # .pt2 archives want their suffix
        write(tmp)
    return path


def export_torchscript(model: nn.Module, meta: dict[str, Any], path: str | os.PathLike) -> Path:
    """Trace ``forward`` and ``windows`` of the eval model, freeze, save with ``meta.json`` (atomically)."""
    deployable, meta, example = _complete_meta(model, meta, "torchscript")
    methods: dict[str, tuple[torch.Tensor, ...]] = {"forward": (example,)}
    preserved: list[str] = []
    if deployable.fcn is not None:
        clip = example.repeat(1, 1, 3)
        methods["windows"] = (clip, torch.tensor([0.0, 0.5 * example.shape[-1], example.shape[-1]]))
        preserved.append("windows")
    with quiet_jit(), torch.no_grad():
        traced = torch.jit.trace_module(deployable, methods, check_trace=False)
        frozen = torch.jit.freeze(traced.eval(), preserved_attrs=preserved)
        extra = {META_FILE: json.dumps(meta, indent=1)}
        return _write_atomic(Path(path), lambda tmp: torch.jit.save(frozen, str(tmp), _extra_files=extra))


def export_program(model: nn.Module, meta: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.export`` the eval model (dynamic batch and time) and its windows path into one ``.pt2`` archive.

    Written with ``package_pt2`` (what ``torch.export.save`` calls) so that the archive also holds the
    ``windows`` program; ``torch.export.load(path)`` still returns the per-window ``model`` program.
    """
    from torch.export import Dim
    from torch.export.pt2_archive._package import package_pt2

    deployable, meta, example = _complete_meta(model, meta, "export")
    batch, time = Dim.AUTO, Dim.AUTO  # export infers the valid range (the windows path needs a few positions)
    with torch.no_grad():
        programs = {"model": torch.export.export(deployable, (example,), dynamic_shapes={"x": {0: batch, 2: time}})}
        if deployable.fcn is not None:
            clip = example.repeat(1, 1, 3)
            starts = torch.tensor([0.0, 0.5 * example.shape[-1], example.shape[-1]])
            programs["windows"] = torch.export.export(
                _WindowsProgram(deployable),
                (clip, starts),
                dynamic_shapes={"x": {0: batch, 2: time}, "starts": {0: Dim.AUTO}},
            )
    extra = {META_FILE: json.dumps(meta, indent=1)}
    return _write_atomic(Path(path), lambda tmp: package_pt2(str(tmp), exported_programs=programs, extra_files=extra))


# -- loading ---------------------------------------------------------------------------------------------------


class LoadedModel:
    """An exported member ready to run: ``model(x)`` -> logits, ``model.windows(x, starts)``, ``model.meta``."""

    def __init__(
        self, path: Path, fmt: str, meta: dict[str, Any], forward: Any, windows: Any, device: torch.device
    ) -> None:
        self.path, self.format, self.meta, self.device = path, fmt, meta, device
        self._forward, self._windows = forward, windows

    @property
    def window_frames(self) -> int:
        return int(self.meta["window_frames"])

    @property
    def has_windows(self) -> bool:
        return self._windows is not None

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) float32 dB -> (B, n_classes) logits."""
        return self._forward(x.to(self.device, torch.float32))

    @torch.inference_mode()
    def windows(self, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) whole clips, (W,) window start frames -> (B, W, n_classes) logits (fcn path)."""
        if self._windows is None:
            raise InvalidInputError(
                f"{self.path}: has no fully convolutional 'windows' entry point "
                f"(backbone {self.meta.get('backbone')!r} has no average-pooled head); use mode 'exact'"
            )
        return self._windows(x.to(self.device, torch.float32), starts.to(self.device, torch.float32))

    def __repr__(self) -> str:
        return f"LoadedModel({self.path.name}, {self.format}, {self.meta.get('backbone')}, {self.device})"


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a ``.ts`` or ``.pt2`` file written by this module onto ``device``; only torch is needed."""
    path = Path(path)
    device = torch.device(device)
    if not path.is_file():
        raise NotFoundError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file (0 bytes)")
    if path.suffix == ".ts":
        return _load_torchscript(path, device)
    if path.suffix == ".pt2":
        return _load_program(path, device)
    raise ModelFileError(f"{path}: unknown model file type {path.suffix!r} (expected .ts or .pt2)")


def _check_meta(path: Path, text: str | bytes | None) -> dict[str, Any]:
    if not text:
        raise ModelFileError(f"{path}: no {META_FILE} inside (not written by engine.export)")
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {META_FILE} is not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {version!r} is not supported (this engine reads <= {FORMAT_VERSION})"
        )
    missing = [k for k in (*REQUIRED_META, "window_frames", "n_classes") if k not in meta]
    if missing:
        raise ModelFileError(f"{path}: {META_FILE} lacks {missing}")
    return meta


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def written_by(path: str | os.PathLike) -> str | None:
    """The torch version that wrote an exported file (its ``meta.json``, read without loading the model), or
    None where the file has no readable metadata."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith(f"/{META_FILE}") or n == META_FILE), None)
            version = json.loads(z.read(name)).get("torch") if name else None
    except Exception:  # noqa: BLE001 - a note for an error message: never an error of its own
        return None
    return str(version) if version else None


def torch_note(path: str | os.PathLike) -> str:
    """``written by torch X, running torch Y``: what a load failure says, since a file written by another torch
    may not load (TorchScript and torch.export archives are read by the torch that runs)."""
    written = written_by(path)
    running = torch.__version__
    if written is None:
        return f"which torch wrote it is unknown (no readable {META_FILE}), running torch {running}"
    if written == running:
        return f"written by torch {written}, the running version"
    return (
        f"written by torch {written}, running torch {running}: export it again with this torch, or load it with "
        "that one"
    )


def _load_torchscript(path: Path, device: torch.device) -> LoadedModel:
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a TorchScript archive (not a zip file: truncated or overwritten?)")
    extra = {META_FILE: ""}
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: cannot load this TorchScript file: corrupt, or not readable by this torch "
            f"({torch_note(path)}) ({_reason(exc)})"
        ) from None
    meta = _check_meta(path, extra[META_FILE])
    windows = getattr(module, "windows", None) if meta.get("fcn") else None
    return LoadedModel(path, "torchscript", meta, module.forward, windows, device)


def _load_program(path: Path, device: torch.device) -> LoadedModel:
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a torch.export archive (not a zip file: truncated or overwritten?)")
    try:
        from torch.export.pt2_archive._package import load_pt2

        contents = load_pt2(str(path))
        programs, extra = contents.exported_programs, contents.extra_files
    except ImportError:  # a torch without the archive module: the public loader gives the main program
        extra = {META_FILE: ""}
        try:
            programs = {"model": torch.export.load(str(path), extra_files=extra)}
        except Exception as exc:
            raise ModelFileError(
                f"{path}: cannot load this torch.export archive: corrupt, or not readable by this "
                f"torch ({torch_note(path)}) ({_reason(exc)})"
            ) from None
    except Exception as exc:
        raise ModelFileError(
            f"{path}: cannot load this torch.export archive: corrupt, or not readable by this torch "
            f"({torch_note(path)}) ({_reason(exc)})"
        ) from None
    if "model" not in programs:
        raise ModelFileError(f"{path}: no 'model' program in the archive")
    text = extra.get(META_FILE)
    meta = _check_meta(path, text.decode() if isinstance(text, bytes) else text)

    def module(name: str) -> Any:
        ep = programs[name]
        try:
            if device.type != "cpu":
                try:
                    from torch.export.passes import move_to_device_pass
                except ImportError:  # an older torch: moving the module's parameters and buffers is what it has
                    move_to_device_pass = None  # type: ignore[assignment]  # None marks it missing
                if move_to_device_pass is not None:
                    ep = move_to_device_pass(ep, device)
            return ep.module().to(device)
        except Exception as exc:
            raise ModelFileError(
                f"{path}: cannot make the {name!r} program of this torch.export archive run on "
                f"{device} ({torch_note(path)}) ({_reason(exc)})"
            ) from None

    windows = module("windows") if meta.get("fcn") and "windows" in programs else None
    return LoadedModel(path, "export", meta, module("model"), windows, device)


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta.json`` of an exported file, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: model file not found")
    try:
        with zipfile.ZipFile(path) as z:
            name = next(
                (n for n in z.namelist() if n.endswith(f"extra/{META_FILE}") or n.endswith(f"/{META_FILE}")), None
            )
            text = z.read(name) if name else None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: not a model archive ({_reason(exc)})") from None
    return _check_meta(path, text.decode() if text else None)


__all__ = [
    "Deployable",
    "LoadedModel",
    "ModelFileError",
    "export_program",
    "export_torchscript",
    "fcn_geometry",
    "load_model",
    "read_meta",
    "quiet_jit",
    "torch_note",
    "written_by",
    "SUFFIXES",
    "FORMAT_VERSION",
]
