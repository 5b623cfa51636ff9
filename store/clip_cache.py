"""A bounded, thread-safe LRU cache of decoded clips (whole float16 spectrograms), by size in bytes.

Training draws many random crops from the same clips, epoch after epoch; decompressing a chunk for every crop
costs more than the crop itself. With the cache, each clip is decoded once and later crops are slices.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class ClipCache:
    """Keeps the most recently used arrays while their total size stays within ``max_bytes``.

    An array larger than the whole cache is returned but not kept. ``hits``/``misses`` count lookups.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``key``, or ``load()``'s result (kept if it fits). Cached arrays are read-only.

        Threads asking for the same missing key wait for one load; different keys load concurrently."""
        with self._lock:
            arr = self._lookup(key)
            if arr is not None:
                return arr
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                arr = self._lookup(key)
            if arr is not None:
                return arr
            arr = load()
            arr.setflags(write=False)
            with self._lock:
                self.misses += 1
                self._loading.pop(key, None)
                if arr.nbytes <= self.max_bytes:
                    self._items[key] = arr
                    self.nbytes += arr.nbytes
                    while self.nbytes > self.max_bytes:
                        _, old = self._items.popitem(last=False)
                        self.nbytes -= old.nbytes
        return arr

    def _lookup(self, key: str) -> np.ndarray | None:
        arr = self._items.get(key)
        if arr is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return arr

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0
