"""Where things live in a feature store, and how spectrograms are encoded (one place for writer and reader).

Layout (a Zarr v3 group, readable with plain zarr-python)::

    STORE/                      attrs: format, version, mel (MelParams), backend, rejected [...]
      train/ , test/            one group per split
        mel/<recording_id>      float16 (n_mels, frames) dB; chunks (n_mels, 512); Blosc zstd-1 + shuffle, then a
                                CRC-32C checksum of each compressed chunk (clips written before it have none)
                                attrs: complete, n_samples, source_sample_rate, source_channels
        ids, n_frames, n_samples, source_sample_rate      the split's index, one row per stored clip
      tables/tp/<column>, tables/fp/<column>              the checked TP/FP boxes, one 1-D array per column
      tables/sample_submission/recording_id               the submission's row order (when given)
      tables/test_labels/recording_id, labels             test clips' 0/1 truth, labels uint8 (n, 24) (when given)
      tables/calls_truth/<column>                         every call of every stored clip (calls_truth.csv, when given)

A clip is whole only once its ``complete`` attribute is true: the writer sets it after the last chunk.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

FORMAT = "rfcx-feature-store"
VERSION = 1
SPLITS = ("train", "test")
MEL_DTYPE = "float16"
CHUNK_FRAMES = 512
INDEX_ARRAYS = ("ids", "n_frames", "n_samples", "source_sample_rate")
TABLE_KINDS = ("tp", "fp")


def mel_codec() -> BloscCodec:
    """Chosen by ``benchmarks/store_layout.py`` (see README): ~35 % smaller than raw float16, fast to read."""
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


def mel_codecs() -> list:
    """What a mel chunk goes through after its bytes: the compressor, then Zarr v3's ``crc32c`` checksum of the
    compressed chunk (4 bytes a chunk; zarr computes it with ``google-crc32c``, one of its own dependencies), so
    that a read of a chunk whose bytes changed fails (:mod:`store.integrity`) instead of returning other values."""
    return [mel_codec(), Crc32cCodec()]


def group_at(parent: zarr.Group, key: str) -> zarr.Group:
    """``parent[key]`` where the layout keeps a group (zarr types every member as ``Array | Group``)."""
    return cast(zarr.Group, parent[key])


def array_at(parent: zarr.Group, key: str) -> zarr.Array:
    """``parent[key]`` where the layout keeps an array (zarr types every member as ``Array | Group``)."""
    return cast(zarr.Array, parent[key])


def read_column(parent: zarr.Group, key: str) -> np.ndarray:
    """``parent[key][:]``: the whole of a stored array, as the numpy array zarr reads it into."""
    return cast(np.ndarray, array_at(parent, key)[:])


def read_index(group: zarr.Group) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """A split's index columns (``INDEX_ARRAYS``), or None with the reason it cannot be trusted: a column missing,
    one whose chunk file is gone (Zarr would read its fill value: empty ids, zeros), columns of other lengths, or
    an empty id. The clips' own arrays hold what the index holds: a build rebuilds it from them."""
    cols: dict[str, np.ndarray] = {}
    for name in INDEX_ARRAYS:
        if name not in group:
            return None, f"its {name} array is missing"
        arr = group[name]
        if not isinstance(arr, zarr.Array):
            return None, f"its {name} array is missing"
        if arr.nchunks_initialized < arr.nchunks:
            return None, f"a chunk file of its {name} array is missing"
        cols[name] = cast(np.ndarray, arr[:])
    if len({len(c) for c in cols.values()}) != 1:
        return None, "its arrays have other lengths (an interrupted build?)"
    if any(not str(rid) for rid in cols["ids"]):
        return None, "it holds an empty recording id"
    return cols, None


def mel_key(split: str, recording_id: str) -> str:
    return f"{split}/mel/{recording_id}"


def write_mel(
    mel: zarr.Group,
    recording_id: str,
    logmel: np.ndarray,
    n_samples: int,
    source_sample_rate: int,
    source_channels: int,
) -> None:
    """Write one clip's (n_mels, frames) log-mel into a split's ``mel`` group (replacing a partial one), then
    mark it ``complete`` with its attributes in one metadata write (``attrs.update`` writes once per key: a kill
    in between left ``complete`` without the rest)."""
    n_mels, frames = logmel.shape
    arr = mel.create_array(
        recording_id,
        shape=(n_mels, frames),
        dtype=MEL_DTYPE,
        chunks=(n_mels, min(CHUNK_FRAMES, frames)),
        compressors=mel_codecs(),
        attributes={"complete": False},
        overwrite=True,
        dimension_names=("mel", "frame"),
    )
    arr[:] = np.asarray(logmel, dtype=MEL_DTYPE)
    arr.update_attributes(
        {
            "complete": True,
            "n_samples": int(n_samples),
            "source_sample_rate": int(source_sample_rate),
            "source_channels": int(source_channels),
        }
    )


def holds_clips(root: zarr.Group) -> bool:
    """Whether any clip array is stored (complete or not)."""
    for split in SPLITS:
        if (
            split in root
            and "mel" in group_at(root, split)
            and next(iter(group_at(group_at(root, split), "mel").array_keys()), None) is not None
        ):
            return True
    return False
