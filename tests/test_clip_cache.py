"""The decoded-clip cache: LRU by bytes, and crops through it equal crops read from the chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from store import FeatureStore, build_store
from store.clip_cache import ClipCache
from tests.conftest import make_dataset


def test_lru_keeps_recent_arrays_within_budget() -> None:
    cache = ClipCache(max_bytes=3 * 800)
    loads = []

    def loader(key: str):
        def load() -> np.ndarray:
            loads.append(key)
            return np.zeros(100, dtype=np.float64)  # 800 bytes

        return load

    for key in "abc":
        cache.get(key, loader(key))
    cache.get("a", loader("a"))  # hit: "a" becomes the most recent
    cache.get("d", loader("d"))  # evicts the least recent, "b"
    assert loads == ["a", "b", "c", "d"]
    assert "b" not in cache and {"a", "c", "d"} <= set(cache._items)
    assert cache.nbytes == 3 * 800 and (cache.hits, cache.misses) == (1, 4)
    big = cache.get("huge", lambda: np.zeros(1000))  # larger than the cache: returned, not kept
    assert big.shape == (1000,) and "huge" not in cache
    with pytest.raises(ValueError):
        cache.get("a", loader("a"))[0] = 1.0  # cached arrays are read-only
    with pytest.raises(ValueError, match="max_bytes"):
        ClipCache(-1)


def test_store_crops_through_the_cache_equal_chunk_reads(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n_train=3, n_test=1, seconds=4.0)
    build_store(data, tmp_path / "s.zarr", backend="torch", device="cpu", progress=False)
    plain = FeatureStore.open(tmp_path / "s.zarr")
    cached = FeatureStore.open(tmp_path / "s.zarr", cache_mb=64)
    assert plain.cache is None and cached.cache is not None
    rid = plain.ids("train")[0]
    requests = [(rid, -20, 100), (rid, 50, 100), (rid, plain.n_frames(rid) - 30, 100)]
    for _ in range(2):  # the second pass is served from the cache
        np.testing.assert_array_equal(cached.crops(requests), plain.crops(requests))
    np.testing.assert_array_equal(cached.mel(rid), plain.mel(rid))
    assert cached.cache.misses == 1 and cached.cache.hits >= 6
