"""Writing a store: its root group (:func:`open_or_create`), the clips of a split and their index
(:class:`_SplitWriter`), and the tables (one 1-D array per column)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from . import layout
from .audio import AudioInfo
from .dali_pipeline import dali_available
from .errors import InvalidInputError
from .location import Location
from .params import MelParams

INDEX_EVERY = 256  # clips between index checkpoints


def open_or_create(
    store_path: str | Path | Location, params: MelParams, backend: str, storage_options: Mapping[str, Any] | None = None
) -> zarr.Group:
    """The store's root group: created when new, checked (format, mel parameters) when it exists.

    ``store_path`` is a local path or an fsspec URL (see :mod:`store.location`)."""
    loc = Location.parse(store_path, storage_options)
    store_path = loc.text
    if loc.is_local and loc.local_path.exists() and not loc.local_path.is_dir():
        raise InvalidInputError(f"{store_path}: is a file; --store takes a folder (a new one, or a feature store)")
    try:
        root = zarr.open_group(loc.zarr_store(), mode="r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        root = None
    if root is None:
        if loc.has_content():
            raise InvalidInputError(f"{store_path}: exists and is not a feature store; choose another --store")
        root = zarr.open_group(loc.zarr_store(), mode="w")
        root.attrs.update(
            {
                "format": layout.FORMAT,
                "version": layout.VERSION,
                "mel": params.to_dict(),
                "backend": backend,
                "rejected": [],
            }
        )
        return root
    attrs: dict[str, Any] = dict(root.attrs)  # JSON values: the layout fixes what each holds
    if attrs.get("format") != layout.FORMAT:
        raise InvalidInputError(f"{store_path}: not an rfcx feature store (format={attrs.get('format')!r})")
    stored = MelParams.from_dict(attrs["mel"])
    if stored != params:
        diff = {k: (v, params.to_dict()[k]) for k, v in stored.to_dict().items() if params.to_dict()[k] != v}
        raise InvalidInputError(
            f"{store_path}: made with other mel parameters {diff} (stored, asked); use a new --store"
        )
    built_with = attrs.get("backend")
    if built_with != backend:
        if built_with is not None and layout.holds_clips(root):
            raise InvalidInputError(_backend_mix(store_path, built_with, backend))
        root.attrs["backend"] = backend  # no clip is stored yet: the store takes this run's backend
    return root


def _backend_mix(store_path: str, built_with: str, backend: str) -> str:
    """Why a store keeps one backend: the two decode and compute the log-mel each its own way."""
    if built_with == "dali" and not dali_available():
        how = "NVIDIA DALI is not installed here: resume it where DALI is, or use a new --store"
    else:
        how = f"resume it with --backend {built_with}, or use a new --store"
    return (
        f"{store_path}: built with the {built_with} backend, and this run decodes with {backend}: one store keeps "
        f"the features of one backend (the two differ by up to 0.1 dB); {how}"
    )


class _SplitWriter:
    """Writes the clips of one split and keeps its index."""

    def __init__(self, root: zarr.Group, split: str, params: MelParams) -> None:
        self.root, self.split, self.params = root, split, params
        self.group = root.require_group(split)
        self.mel = self.group.require_group("mel")
        self.entries = self._load_index()

    def _load_index(self) -> dict[str, tuple[int, int, int]]:
        """Complete clips: the index where it can be trusted (:func:`store.layout.read_index`), plus any complete
        clip it is missing: a damaged index is rebuilt from the clips' own arrays."""
        entries: dict[str, tuple[int, int, int]] = {}
        cols, damage = layout.read_index(self.group)
        indexed = any(name in self.group for name in layout.INDEX_ARRAYS)
        self.rebuilt = damage if indexed and cols is None else None  # why a stored index is not taken
        if cols is not None:
            entries = {
                str(r): (int(f), int(s), int(sr)) for r, f, s, sr in zip(*(cols[n] for n in layout.INDEX_ARRAYS))
            }
        with warnings.catch_warnings():  # a clip folder whose metadata a killed or full-disk write never wrote
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            clips = list(self.mel.arrays())
        for name, arr in clips:
            if name in entries:
                continue
            attrs: Mapping[str, Any] = arr.attrs  # JSON values: the layout fixes what each holds
            if attrs.get("complete"):
                entries[name] = (arr.shape[1], int(attrs["n_samples"]), int(attrs["source_sample_rate"]))
        return entries

    def done(self, recording_id: str) -> bool:
        return recording_id in self.entries

    def write(self, recording_id: str, logmel: np.ndarray, n_samples: int, info: AudioInfo) -> None:
        layout.write_mel(self.mel, recording_id, logmel, n_samples, info.sample_rate, info.channels)
        self.entries[recording_id] = (logmel.shape[1], int(n_samples), info.sample_rate)

    def write_index(self) -> None:
        ids = sorted(self.entries)
        cols = {
            "ids": np.array(ids, dtype=str),
            "n_frames": np.array([self.entries[r][0] for r in ids], dtype=np.int32),
            "n_samples": np.array([self.entries[r][1] for r in ids], dtype=np.int64),
            "source_sample_rate": np.array([self.entries[r][2] for r in ids], dtype=np.int32),
        }
        for name, values in cols.items():
            write_column(self.group, name, values)
        self.group.attrs["n_clips"] = len(ids)


def _write_truth(group: zarr.Group, rows: pd.DataFrame) -> None:
    """``recording_id`` (str) and ``labels`` (uint8, (n, n_species)), each in one chunk."""
    write_column(group, "recording_id", rows["recording_id"].to_numpy(dtype=object))
    labels = rows.drop(columns="recording_id").to_numpy(dtype=np.uint8)
    arr = group.create_array(
        "labels",
        shape=labels.shape,
        dtype=np.uint8,
        chunks=(max(1, len(labels)), labels.shape[1]),
        overwrite=True,
        dimension_names=("clip", "species"),
    )
    if len(labels):
        arr[:] = labels
    group.attrs["n_rows"] = len(rows)


def _write_table(group: zarr.Group, rows: pd.DataFrame) -> None:
    for column in rows.columns:
        write_column(group, column, rows[column].to_numpy())
    group.attrs["n_rows"] = len(rows)


def write_column(group: zarr.Group, name: str, values: np.ndarray) -> None:
    """A 1-D array in one chunk; text as Zarr's variable-length UTF-8 strings."""
    dtype: type[str] | np.dtype
    if values.dtype.kind in "OUT":
        values, dtype = values.astype(str).astype(object), str
    else:
        dtype = values.dtype
    arr = group.create_array(name, shape=values.shape, dtype=dtype, chunks=(max(1, len(values)),), overwrite=True)
    if len(values):
        arr[:] = values
