"""Reading a feature store: ids, whole spectrograms, crops (one or a batch), label tables, test truth,
rejections."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import zarr

from . import integrity, layout
from .clip_cache import ClipCache
from .errors import DamagedStoreError, InvalidInputError, MissingKeyError, NotFoundError, Rejection
from .location import Location
from .params import MelParams
from .tables import BOX_COLUMNS, empty_boxes


@dataclass(frozen=True)
class CropRequest:
    """``n_frames`` frames of ``recording_id`` from ``start_frame`` (may reach outside the clip: padded)."""

    recording_id: str
    start_frame: int
    n_frames: int


class FeatureStore:
    """Read-only view of a store written by :func:`store.build_store`.

    Example::

        fs = FeatureStore.open("features.zarr")
        rid = fs.ids("train")[0]
        x = fs.crop(rid, start_frame=100, n_frames=375)      # (256, 375) float32 dB
        batch = fs.crops([(rid, 0, 375), (rid, 500, 375)])   # (2, 256, 375)
    """

    def __init__(self, root: zarr.Group, path: str, location: Location | None = None, cache_mb: float = 0) -> None:
        attrs: dict[str, Any] = dict(root.attrs)  # JSON values: the layout fixes what each holds
        if attrs.get("format") != layout.FORMAT:
            raise InvalidInputError(f"{path}: not an rfcx feature store (no format attribute {layout.FORMAT!r})")
        self.path = path
        self.location = location or Location.parse(path)  # where it lives: a local path or an fsspec URL
        self.root = root
        self.params = MelParams.from_dict(attrs["mel"])
        self.backend: str = attrs.get("backend", "?")
        self._index: dict[str, pd.DataFrame] = {}
        self._split_of: dict[str, str] = {}
        self._arrays: dict[str, zarr.Array] = {}
        for split in layout.SPLITS:
            if split in root and any(name in layout.group_at(root, split) for name in layout.INDEX_ARRAYS):
                frame = self._read_index(split)
                self._index[split] = frame
                self._split_of.update(dict.fromkeys(frame.index, split))
        self._n_frames: dict[str, int] = {
            rid: int(n) for frame in self._index.values() for rid, n in frame["n_frames"].items()
        }
        self._pool: ThreadPoolExecutor | None = None
        self.cache_mb = float(cache_mb)
        self.cache = ClipCache(int(cache_mb * 2**20)) if cache_mb > 0 else None

    @classmethod
    def open(
        cls, path: str | os.PathLike | Location, storage_options: Mapping[str, Any] | None = None, cache_mb: float = 0
    ) -> "FeatureStore":
        """Open a store read-only: a local path or an fsspec URL (``file://``, ``memory://``, ``s3://``, ... with
        ``storage_options`` for its filesystem, see :mod:`store.location`). A missing store or a non-store
        raises with the location in the message; a URL whose fsspec backend is not installed raises
        :class:`store.location.MissingBackendError` naming the package.

        ``cache_mb`` > 0 keeps up to that many MiB of decoded clips in memory (:class:`store.clip_cache.ClipCache`):
        each clip is then decompressed once and every later crop of it is a slice (what training wants)."""
        loc = Location.parse(path, storage_options)
        path = loc.text
        if not loc.exists():
            raise NotFoundError(f"{path}: feature store not found (build it with `rfcx build-store`)")
        try:
            root = zarr.open_group(loc.zarr_store(read_only=True), mode="r")
        except Exception as exc:
            raise InvalidInputError(f"{path}: not a Zarr group ({exc})") from None
        return cls(root, path, loc, cache_mb=cache_mb)

    def _read_index(self, split: str) -> pd.DataFrame:
        group = layout.group_at(self.root, split)
        cols, damage = layout.read_index(group)
        if cols is None:
            raise DamagedStoreError(
                f"{self.path}: the index of split {split!r} is damaged: {damage}; run `rfcx build-store --data DIR "
                f"--store {self.path}` (or with --repair) to rebuild it from the clips' own arrays"
            )
        frame = pd.DataFrame(
            {k: v for k, v in cols.items() if k != "ids"}, index=pd.Index(cols["ids"].tolist(), dtype=object)
        )
        frame.index.name = "recording_id"
        return frame

    # -- what is stored ---------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Whether a build finished on this store: ``build-store`` writes the label tables last (empty ones where
        the data folder has none), so a build stopped before its end leaves none."""
        return all(f"tables/{kind}" in self.root for kind in layout.TABLE_KINDS)

    def incomplete_reason(self) -> str:
        """What to tell about a store a build did not finish: the clips stored so far and how to finish it."""
        counts = []
        for split in layout.SPLITS:
            key = f"{split}/mel"
            if key in self.root:
                counts.append(f"{sum(1 for _ in layout.group_at(self.root, key).array_keys())} {split}")
        stored = f" ({' and '.join(counts)} clips stored so far)" if counts else ""
        return (
            f"{self.path}: the store is incomplete: a build-store was stopped before its end{stored}; run the same "
            f"`rfcx build-store --data DIR --store {self.path}` again to finish it (what is stored is kept)"
        )

    def require_complete(self) -> None:
        """Raise :class:`InvalidInputError` (:meth:`incomplete_reason`) where a build did not finish."""
        if not self.complete:
            raise InvalidInputError(self.incomplete_reason())

    @property
    def splits(self) -> list[str]:
        return list(self._index)

    def ids(self, split: str) -> list[str]:
        """Recording ids of a split, sorted."""
        return self._split_index(split).index.tolist()

    def index(self, split: str) -> pd.DataFrame:
        """Per clip: n_frames, n_samples, source_sample_rate (indexed by recording_id)."""
        return self._split_index(split).copy()

    def _split_index(self, split: str) -> pd.DataFrame:
        if split not in self._index:
            raise MissingKeyError(f"{self.path}: no split {split!r} (has: {', '.join(self.splits) or 'none'})")
        return self._index[split]

    def split_of(self, recording_id: str) -> str:
        try:
            return self._split_of[recording_id]
        except KeyError:
            raise MissingKeyError(f"{self.path}: no recording {recording_id!r}") from None

    def n_frames(self, recording_id: str) -> int:
        frames = self._n_frames.get(recording_id)
        if frames is None:
            self.split_of(recording_id)  # raises the clear KeyError
        return cast(int, frames)  # _n_frames and _split_of hold the same ids

    def __contains__(self, recording_id: object) -> bool:
        return recording_id in self._split_of

    def __len__(self) -> int:
        return len(self._split_of)

    # -- spectrograms -----------------------------------------------------------------------------------
    def array(self, recording_id: str) -> zarr.Array:
        """The clip's Zarr array (float16, (n_mels, frames))."""
        arr = self._arrays.get(recording_id)
        if arr is None:
            split = self.split_of(recording_id)
            try:
                arr = layout.array_at(self.root, layout.mel_key(split, recording_id))
            except (KeyError, FileNotFoundError, ValueError) as exc:  # its zarr.json gone or unreadable
                damage = integrity.Damage(split, recording_id, None, f"its array does not open ({integrity.why(exc)})")
                raise integrity.damaged_error(self.path, damage) from None
            self._arrays[recording_id] = arr
        return arr

    def mel(self, recording_id: str) -> np.ndarray:
        """The whole clip: float32 (n_mels, frames) in dB."""
        return self._clip(recording_id).astype(np.float32)

    def _clip(self, recording_id: str) -> np.ndarray:
        """The whole stored float16 array (through the cache, when there is one)."""
        if self.cache is None:
            return self._read(recording_id)
        return self.cache.get(recording_id, lambda: self._read(recording_id))

    def _read(self, recording_id: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Frames [lo, hi) of the stored clip (float16); a chunk that does not read back as written (checksum,
        decompression) or whose file is missing (Zarr would read it as zeros) raises
        :class:`store.errors.DamagedStoreError` naming the split, clip and chunk."""
        arr = self.array(recording_id)
        try:
            values = cast(np.ndarray, arr[:, lo:hi])
        except integrity.READ_ERRORS as exc:
            hi = arr.shape[1] if hi is None else hi
            damage = integrity.locate(arr, self.split_of(recording_id), recording_id, lo, hi, exc)
            raise integrity.damaged_error(self.path, damage) from None
        gone = integrity.absent_chunk(arr, values, lo)
        if gone is not None:
            damage = integrity.Damage(
                self.split_of(recording_id),
                recording_id,
                gone,
                "missing chunk file (would read as zeros)",
                integrity.chunk_frames(arr, gone),
            )
            raise integrity.damaged_error(self.path, damage)
        return values

    def crop(self, recording_id: str, start_frame: int, n_frames: int) -> np.ndarray:
        """float32 (n_mels, n_frames); frames outside the clip hold the silence floor (``params.floor_db``)."""
        if n_frames <= 0:
            raise InvalidInputError(f"n_frames must be positive, got {n_frames}")
        total = self.n_frames(recording_id)
        lo, hi = max(0, start_frame), min(total, start_frame + n_frames)
        if hi <= lo:
            return np.full((self.params.n_mels, n_frames), self.params.floor_db, dtype=np.float32)
        out = np.empty((self.params.n_mels, n_frames), dtype=np.float32)
        a, b = lo - start_frame, hi - start_frame
        out[:, :a] = self.params.floor_db
        out[:, b:] = self.params.floor_db
        out[:, a:b] = self._read(recording_id, lo, hi) if self.cache is None else self._clip(recording_id)[:, lo:hi]
        return out

    def crops(self, requests: Sequence[CropRequest | tuple[str, int, int]], workers: int | None = None) -> np.ndarray:
        """A batch of equally long crops, (B, n_mels, n_frames) float32, read concurrently.

        Each crop reads only the chunks that overlap it (chunks span ``layout.CHUNK_FRAMES`` frames).
        """
        reqs = [r if isinstance(r, CropRequest) else CropRequest(*r) for r in requests]
        if not reqs:
            return np.zeros((0, self.params.n_mels, 0), dtype=np.float32)
        n = reqs[0].n_frames
        if any(r.n_frames != n for r in reqs):
            raise InvalidInputError("all crops of a batch must have the same n_frames")
        out = np.empty((len(reqs), self.params.n_mels, n), dtype=np.float32)

        def read(i: int) -> None:
            r = reqs[i]
            out[i] = self.crop(r.recording_id, r.start_frame, r.n_frames)

        if workers == 1 or len(reqs) == 1:
            for i in range(len(reqs)):
                read(i)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(workers or min(8, (os.cpu_count() or 1) * 2))
            list(self._pool.map(read, range(len(reqs))))
        return out

    def verify(self, progress: bool = True) -> integrity.VerifyReport:
        """Read every chunk of every stored clip (a progress bar of clips): the damaged ones (a checksum that
        does not match, a chunk that does not decompress or is missing) in ``report.damaged``. What ``rfcx info
        --check`` runs; ``rfcx build-store --repair`` decodes the damaged clips again from their audio."""
        return integrity.verify_clips(self.root, {split: self.ids(split) for split in self.splits}, progress)

    # -- tables -----------------------------------------------------------------------------------------
    def boxes(self, kind: str) -> pd.DataFrame:
        """The checked ``tp`` or ``fp`` boxes (columns of ``train_tp.csv``)."""
        if kind not in layout.TABLE_KINDS:
            raise InvalidInputError(f"kind must be one of {layout.TABLE_KINDS}, got {kind!r}")
        key = f"tables/{kind}"
        if key not in self.root:
            raise MissingKeyError(
                f"{self.path}: has no {kind.upper()} table (was train_{kind}.csv given to build-store?)"
            )
        group = layout.group_at(self.root, key)
        if "recording_id" not in group:
            return empty_boxes()
        frame = pd.DataFrame(
            {
                c: layout.read_column(group, c).tolist() if c == "recording_id" else layout.read_column(group, c)
                for c in BOX_COLUMNS
            }
        )
        return frame

    def submission_ids(self) -> list[str] | None:
        """Row order of the ``sample_submission.csv`` the store was built with, if any."""
        key = "tables/sample_submission"
        if key not in self.root:
            return None
        return layout.read_column(layout.group_at(self.root, key), "recording_id").tolist()

    def missing_submission_ids(self) -> list[str]:
        """The ``sample_submission.csv`` recordings (in its order) that have no stored test clip: no audio file,
        or audio rejected at build time. ``rfcx infer --batch`` refuses a submission that lacks rows, so ``rfcx
        info`` shows them up front; empty when the store has no sample submission."""
        order = self.submission_ids() or []
        stored = set(self._index["test"].index) if "test" in self._index else set()
        return [rid for rid in order if rid not in stored]

    def truth(self, split: str = "test") -> pd.DataFrame | None:
        """Clip-level 0/1 truth (uint8; index recording_id, columns s0..s23) from the ``test_labels.csv`` the
        store was built with; ``None`` when it has none."""
        if split not in layout.SPLITS:
            raise InvalidInputError(f"split must be one of {layout.SPLITS}, got {split!r}")
        key = f"tables/{split}_labels"
        if key not in self.root:
            return None
        group = layout.group_at(self.root, key)
        labels = np.asarray(layout.read_column(group, "labels"), dtype=np.uint8)
        index = pd.Index(layout.read_column(group, "recording_id").tolist(), dtype=object, name="recording_id")
        return pd.DataFrame(labels, index=index, columns=[f"s{k}" for k in range(labels.shape[1])])

    def calls(self, split: str | None = "train") -> pd.DataFrame | None:
        """Every call of the stored clips (``split``, ``recording_id``, ``species_id``, ``t_min``, ``f_min``,
        ``t_max``, ``f_max``) from the ``calls_truth.csv`` the store was built with (synthetic data), of one split
        or (``None``) all; ``None`` when the store has none."""
        key = "tables/calls_truth"
        if key not in self.root or "recording_id" not in layout.group_at(self.root, key):
            return None
        group = layout.group_at(self.root, key)
        frame = pd.DataFrame(
            {
                c: layout.read_column(group, c).tolist()
                if c in ("split", "recording_id")
                else layout.read_column(group, c)
                for c in ("split", "recording_id", "species_id", "t_min", "f_min", "t_max", "f_max")
            }
        )
        return frame if split is None else frame[frame.split == split].reset_index(drop=True)

    def rejections(self) -> list[Rejection]:
        """Every input the last build rejected, as :class:`Rejection` objects (with their ``cause``)."""
        return [Rejection.from_dict(d) for d in self._rejected_attr()]

    def _rejected_attr(self) -> list[dict[str, Any]]:
        """The root's ``rejected`` attribute: one dict a rejection (:meth:`Rejection.to_dict`)."""
        return cast(list[dict[str, Any]], self.root.attrs.get("rejected", []))

    def rejected(self) -> pd.DataFrame:
        """Every input the last build rejected: split, file, row (CSV line or empty), reason."""
        rows = self.rejections()
        frame = pd.DataFrame(
            [{"split": r.split or "", "file": r.file, "row": r.row, "reason": r.reason} for r in rows],
            columns=["split", "file", "row", "reason"],
        )
        return frame.astype({"row": "Int64"})

    def summary(self) -> dict:
        """Counts and hours per split, tables, rejections: what ``rfcx build-store`` prints."""
        out: dict = {"path": self.path, "backend": self.backend, "mel": self.params.to_dict(), "splits": {}}
        for split, frame in self._index.items():
            out["splits"][split] = {
                "clips": len(frame),
                "hours": float(frame["n_samples"].sum()) / self.params.sample_rate / 3600,
            }
        for kind in layout.TABLE_KINDS:
            try:
                out[f"{kind}_boxes"] = len(self.boxes(kind))
            except KeyError:
                out[f"{kind}_boxes"] = None
        out["rejected"] = len(self._rejected_attr())
        return out
