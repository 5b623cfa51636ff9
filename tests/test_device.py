"""store.device.resolve_device: the names it accepts, and clear errors for the others."""

from __future__ import annotations

import pytest
import torch

import store.device
from store.device import DeviceNameError, NoCudaError, resolve_device
from store.errors import RfcxError


def test_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cuda", 1)) == torch.device("cuda", 1)  # as given
    monkeypatch.setattr(store.device, "cuda_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("gpu", "cuda", "cuda:1"):
        with pytest.raises(NoCudaError, match="no CUDA GPU is visible") as err:
            resolve_device(name)
        assert isinstance(err.value, RuntimeError) and isinstance(err.value, RfcxError)
    monkeypatch.setattr(store.device, "cuda_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("gpu") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["GPU", "tpu", "cudax", "cuda:", ""])
def test_bad_names(name: str) -> None:
    with pytest.raises(DeviceNameError, match="auto, cpu, gpu, cuda or cuda:N") as err:
        resolve_device(name)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RfcxError)
