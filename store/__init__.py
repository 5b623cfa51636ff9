"""The feature store: DALI (or torch) log-mel spectrograms of audio clips in a chunked Zarr v3 group.

Public API::

    from store import FeatureStore, MelParams, build_store

The errors are imported at once; the rest when first asked for, so that importing ``store.errors`` (every layer's
error root) or ``store.atomic`` does not load Zarr, pandas and the builder (the command line starts in ~0.05 s).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, DamagedStoreError, Rejection, RfcxError, StoreError

if TYPE_CHECKING:
    from .builder import BuildSummary, build_store
    from .feature_store import CropRequest, FeatureStore
    from .lock import LockedError
    from .params import MelParams

_LAZY = {
    "BuildSummary": "builder",
    "build_store": "builder",
    "CropRequest": "feature_store",
    "FeatureStore": "feature_store",
    "LockedError": "lock",
    "MelParams": "params",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BadInputError",
    "BuildSummary",
    "CropRequest",
    "DamagedStoreError",
    "FeatureStore",
    "LockedError",
    "MelParams",
    "Rejection",
    "RfcxError",
    "StoreError",
    "build_store",
]
