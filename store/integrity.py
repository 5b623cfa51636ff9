"""Whether the stored spectrograms read back as written: chunk checksums, damage located to its chunk, and a
check of every chunk of a store.

The store writes each mel chunk with a CRC-32C checksum after its compression (:func:`store.layout.mel_codecs`:
Zarr v3's ``crc32c`` codec), so a chunk whose bytes changed fails its read instead of returning other values.
A read that fails (a checksum that does not match, a chunk that does not decompress) is located to its chunk
and raised as :class:`store.errors.DamagedStoreError` naming the split, the clip and the chunk
(:func:`locate`). :func:`check_array` reads every chunk of a clip and also finds the chunk files that are
missing (Zarr would read those as zeros); :meth:`FeatureStore.verify` and ``build_store(repair=True)`` run it
over every stored clip.

Clips written before the checksum (stores built before it) still open and read; a check of such a clip only
finds what fails to decompress or is missing (:attr:`VerifyReport.without_checksum` counts them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.codecs import Crc32cCodec
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync

from . import layout
from .errors import DamagedStoreError


@dataclass(frozen=True)
class Damage:
    """What is wrong with a stored clip: the chunk (None: the clip's array itself) and why."""

    split: str
    recording_id: str
    chunk: int | None
    reason: str
    frames: tuple[int, int] | None = None  # the chunk's frames, [lo, hi)

    def __str__(self) -> str:
        where = f"{self.split}/{self.recording_id}"
        if self.chunk is None:
            return f"{where}: {self.reason}"
        span = f" (frames {self.frames[0]}-{self.frames[1] - 1})" if self.frames else ""
        return f"{where} chunk {self.chunk}{span}: {self.reason}"


def has_checksum(arr: zarr.Array) -> bool:
    """Whether the clip's chunks carry a checksum (clips written before it do not)."""
    metadata = cast(ArrayV3Metadata, arr.metadata)  # the store's arrays are Zarr v3 (layout.write_mel)
    return any(isinstance(c, Crc32cCodec) for c in metadata.codecs)


def n_chunks(arr: zarr.Array) -> int:
    frames = arr.shape[1]
    per = arr.chunks[1]
    return max(1, -(-frames // per)) if frames else 0


def chunk_frames(arr: zarr.Array, chunk: int) -> tuple[int, int]:
    per = arr.chunks[1]
    return chunk * per, min(arr.shape[1], (chunk + 1) * per)


def why(exc: BaseException) -> str:
    """The reason of a failed chunk read, in words."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if "checksum" in text.lower():
        return "checksum mismatch (its bytes changed after it was written)"
    if "decompress" in text.lower() or "blosc" in text.lower():
        return f"does not decompress ({text})"
    return f"unreadable ({type(exc).__name__}: {text})"


READ_ERRORS = (ValueError, RuntimeError)  # what zarr's codecs raise for a chunk they cannot decode


def check_chunk(arr: zarr.Array, chunk: int) -> str | None:
    """Read one chunk; the reason it is damaged, or None."""
    lo, hi = chunk_frames(arr, chunk)
    try:
        arr[:, lo:hi]
    except READ_ERRORS as exc:
        return why(exc)
    return None


def missing_chunks(arr: zarr.Array) -> list[int]:
    """The chunks whose file is absent (a whole clip has every chunk: Zarr would read an absent one as zeros)."""
    total = n_chunks(arr)
    if arr.nchunks_initialized >= total:
        return []
    key = arr.metadata.encode_chunk_key
    return [c for c in range(total) if not sync((arr.store_path / key((0, c))).exists())]


def absent_chunk(arr: zarr.Array, values: np.ndarray, lo: int) -> int | None:
    """The first chunk whose file is absent among those ``values`` (frames [lo, lo + width) of ``arr``, as read)
    cover: Zarr reads such a chunk as its fill value, so only a region holding nothing else is looked up (a real
    log-mel never is one constant), with one existence check of its file. None when every chunk is there."""
    fill = arr.metadata.fill_value
    per = arr.chunks[1]
    hi = lo + values.shape[1]
    for c in range(lo // per, -(-hi // per)):
        a, b = max(lo, c * per) - lo, min(hi, (c + 1) * per) - lo
        region = values[:, a:b]
        if not region.size or not (region[:, 0] == fill).all() or not (region == fill).all():
            continue
        if not sync((arr.store_path / arr.metadata.encode_chunk_key((0, c))).exists()):
            return c
    return None


def check_array(arr: zarr.Array, split: str, recording_id: str) -> list[Damage]:
    """Every damaged chunk of an open clip array: missing chunk files, then every chunk read."""
    found = [
        Damage(split, recording_id, c, "missing chunk file (would read as zeros)", chunk_frames(arr, c))
        for c in missing_chunks(arr)
    ]
    gone = {d.chunk for d in found}
    for c in range(n_chunks(arr)):
        if c not in gone:
            reason = check_chunk(arr, c)
            if reason is not None:
                found.append(Damage(split, recording_id, c, reason, chunk_frames(arr, c)))
    return sorted(found, key=lambda d: cast(int, d.chunk))  # each of these names its chunk


def locate(arr: zarr.Array, split: str, recording_id: str, lo: int, hi: int, exc: BaseException) -> Damage:
    """The first damaged chunk among those overlapping frames [lo, hi) (a read of them raised ``exc``)."""
    per = arr.chunks[1]
    for c in range(lo // per, max(lo // per + 1, -(-hi // per))):
        reason = check_chunk(arr, c)
        if reason is not None:
            return Damage(split, recording_id, c, reason, chunk_frames(arr, c))
    return Damage(split, recording_id, lo // per, why(exc), (lo, hi))


def damaged_error(store: str, damage: Damage) -> DamagedStoreError:
    """The error a read of a damaged chunk raises: one line naming the store, split, clip and chunk."""
    what = (
        f"chunk {damage.chunk} of clip {damage.recording_id} (split {damage.split}"
        + (f", frames {damage.frames[0]}-{damage.frames[1] - 1}" if damage.frames else "")
        + ")"
        if damage.chunk is not None
        else f"clip {damage.recording_id} (split {damage.split})"
    )
    return DamagedStoreError(
        f"{store}: damaged {what}: {damage.reason}; run `rfcx build-store --repair --data DIR --store {store}` "
        f"to decode it again from its audio (`rfcx info --check --store {store}` lists every damaged clip)",
        damage,
    )


@dataclass
class VerifyReport:
    """What a check of every chunk found."""

    clips: int = 0
    chunks: int = 0
    without_checksum: int = 0  # clips written before checksums: only decompression and presence are checked
    damaged: list[Damage] = field(default_factory=list)

    @property
    def damaged_clips(self) -> list[tuple[str, str]]:
        """(split, recording_id) of every damaged clip, in the order found."""
        return list(dict.fromkeys((d.split, d.recording_id) for d in self.damaged))

    @property
    def ok(self) -> bool:
        return not self.damaged


def verify_clips(
    root: zarr.Group, clips: Mapping[str, Iterable[str]], progress: bool = True, desc: str = "check"
) -> VerifyReport:
    """Read every chunk of the clips (``{split: ids}``), with a progress bar of clips."""
    todo = [(split, rid) for split, ids in clips.items() for rid in ids]
    report = VerifyReport()
    bar = tqdm(todo, desc=desc, unit="clip", disable=not progress or not todo, dynamic_ncols=True)
    try:
        for split, rid in bar:
            report.clips += 1
            try:
                arr = layout.array_at(root, layout.mel_key(split, rid))
            except Exception as exc:  # noqa: BLE001 (a damaged or missing zarr.json: whatever zarr raises)
                report.damaged.append(Damage(split, rid, None, f"its array does not open ({why(exc)})"))
                continue
            report.chunks += n_chunks(arr)
            report.without_checksum += not has_checksum(arr)
            report.damaged += check_array(arr, split, rid)
            if report.damaged:
                bar.set_postfix(damaged=len(report.damaged_clips))
    finally:
        bar.close()
    return report
