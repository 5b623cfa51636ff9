"""The feature store: DALI (or torch) log-mel spectrograms of audio clips in a chunked Zarr v3 group.

Public API::

    from store import FeatureStore, MelParams, build_store
"""

from .builder import BuildSummary, build_store
from .errors import BadInputError, DamagedStoreError, Rejection, RfcxError, StoreError
from .feature_store import CropRequest, FeatureStore
from .lock import LockedError
from .params import MelParams

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
