"""The device a command runs on, from what it was asked for (``--device``): one resolver for the whole project."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import RfcxError

if TYPE_CHECKING:
    import torch

ACCEPTED = "auto, cpu, gpu, cuda or cuda:N"


class DeviceNameError(RfcxError, ValueError):
    """A device name that is none of :data:`ACCEPTED`."""


class NoCudaError(RfcxError, RuntimeError):
    """A CUDA device was asked for, and no CUDA GPU is visible."""


def cuda_available() -> bool:
    """Whether a CUDA GPU is usable here (False where asking fails)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when a CUDA GPU is usable, else cpu; ``gpu`` is an alias of ``cuda``; ``cpu``, ``cuda`` and
    ``cuda:N`` as they are; a ``torch.device`` is returned as given. A CUDA device without a visible GPU raises
    :class:`NoCudaError` (a RuntimeError), any other name :class:`DeviceNameError` (a ValueError)."""
    import torch

    if isinstance(name, torch.device):
        return name
    if not isinstance(name, str):
        raise DeviceNameError(f"device must be {ACCEPTED}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not (name in ("gpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise DeviceNameError(f"device must be {ACCEPTED}, got {name!r}")
    if not cuda_available():
        raise NoCudaError(f"device {name!r} was asked for, but no CUDA GPU is visible")
    return torch.device("cuda" if name == "gpu" else name)
