"""Streaming training batches from the feature store, in worker processes when asked.

Each worker opens the store itself and draws crops with its own seeded :class:`CropSampler`; a batch is read
with one batched ``FeatureStore.crops`` call that touches only the chunks the crops overlap. Given an open
:class:`FeatureStore` and no workers, the loader reads through it, so its clip cache (``cache_mb``) stays warm
from epoch to epoch; workers open the store again with the same cache size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rfcx.train.sampling import CropSampler
from store import FeatureStore


class CropStream(IterableDataset):
    """Yields ``n_batches`` batches ``(x (B,1,n_mels,T), target, mask, box_bins, label_boxes)`` in total, over all
    workers (``label_boxes``: see :class:`rfcx.train.sampling.CropBatch`; (B, 0, 3) in rounds >= 1)."""

    def __init__(
        self, store: str | FeatureStore, make_sampler: Callable[[int], CropSampler], batch_size: int, n_batches: int
    ) -> None:
        self.store, self.make_sampler = store, make_sampler
        self.batch_size, self.n_batches = batch_size, n_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        fs = self.store
        if not isinstance(fs, FeatureStore):
            fs = FeatureStore.open(fs)
        elif info is not None:  # a worker process: its own handle (zarr handles and caches are per process)
            fs = FeatureStore.open(fs.location, cache_mb=fs.cache_mb)
        sampler = self.make_sampler(worker)
        for _ in range(worker, self.n_batches, workers):
            b = sampler.sample(self.batch_size)
            x = fs.crops(list(zip(b.recording_ids, b.starts.tolist(), [sampler.crop] * len(b.starts))), workers=1)
            boxes = b.label_boxes if b.label_boxes is not None else np.zeros((len(b.starts), 0, 3), np.int64)
            yield (
                torch.from_numpy(x).unsqueeze(1),
                torch.from_numpy(b.target),
                torch.from_numpy(b.mask),
                torch.from_numpy(b.box_bins),
                torch.from_numpy(boxes),
            )


def crop_loader(
    store: str | FeatureStore,
    make_sampler: Callable[[int], CropSampler],
    batch_size: int,
    n_batches: int,
    num_workers: int,
) -> DataLoader:
    """A DataLoader over :class:`CropStream` (batches are made in the workers: ``batch_size=None``)."""
    return DataLoader(
        CropStream(store, make_sampler, batch_size, n_batches),
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        worker_init_fn=_quiet_worker if num_workers else None,
    )


def _quiet_worker(_: int) -> None:
    torch.set_num_threads(1)
    np.seterr(all="ignore")
