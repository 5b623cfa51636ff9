"""Chunk shape and codec of the stored spectrograms: size on disk, write MB/s and random crop reads/s.

Run: ``python -m benchmarks.store_layout [--clip FLAC] [--clips N]``. The clip (by default the real
recording in ../shared/rfcx) is turned into a log-mel and written N times (rolled in time, so chunks differ)
under each layout; then random 4 s and 8 s crops are read back.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from store.audio import decode
from store.params import MelParams
from store.torch_mel import TorchLogMel

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "rfcx" / "f97ababc1.flac"

CODECS = {
    "none": None,
    "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd3-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "zstd3": ZstdCodec(level=3),
    "blosc-zstd1-shuffle": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
}


def measure(mels: list[np.ndarray], dtype: str, chunk_t: int, codec_name: str, n_reads: int, rng) -> dict:
    root = Path(tempfile.mkdtemp(prefix="rfcx-layout-"))
    try:
        group = zarr.open_group(root / "s.zarr", mode="w")
        t0 = time.perf_counter()
        arrays = []
        for i, m in enumerate(mels):
            codec = CODECS[codec_name]
            a = group.create_array(
                f"c{i}", shape=m.shape, dtype=dtype, chunks=(m.shape[0], min(chunk_t, m.shape[1])),
                compressors=[codec] if codec else None,
            )
            a[:] = m.astype(dtype)
            arrays.append(a)
        write_s = time.perf_counter() - t0
        raw_mb = sum(m.size for m in mels) * np.dtype(dtype).itemsize / 1e6
        disk_mb = sum(f.stat().st_size for f in (root / "s.zarr").rglob("*") if f.is_file()) / 1e6
        out = {"dtype": dtype, "chunk_frames": chunk_t, "codec": codec_name, "disk_mb_per_clip": disk_mb / len(mels),
               "write_mb_s": raw_mb / write_s}
        group = zarr.open_group(root / "s.zarr", mode="r")
        arrays = [group[f"c{i}"] for i in range(len(mels))]
        for seconds in (4, 8):
            n = int(round(seconds * 48000 / 512))
            picks = [(int(rng.integers(len(mels))), int(rng.integers(0, mels[0].shape[1] - n))) for _ in range(n_reads)]
            t0 = time.perf_counter()
            for c, s in picks:
                arrays[c][:, s:s + n]
            out[f"crops_{seconds}s_per_s"] = n_reads / (time.perf_counter() - t0)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--reads", type=int, default=300)
    args = ap.parse_args()
    params = MelParams()
    signal, _ = decode(args.clip, params.sample_rate)
    mel = TorchLogMel(params)([signal])[0]
    mels = [np.roll(mel, 97 * i, axis=1) for i in range(args.clips)]
    rng = np.random.default_rng(0)
    rows = []
    for dtype in ("float16", "float32"):
        for chunk_t in (128, 256, 512, 1024, 8192):
            for codec in CODECS:
                if dtype == "float32" and (codec not in ("none", "blosc-lz4-shuffle") or chunk_t != 512):
                    continue
                rows.append(measure(mels, dtype, chunk_t, codec, args.reads, rng))
                r = rows[-1]
                print(f"| {r['dtype']} | {r['chunk_frames']} | {r['codec']} | {r['disk_mb_per_clip']:.2f} | "
                      f"{r['write_mb_s']:.0f} | {r['crops_4s_per_s']:.0f} | {r['crops_8s_per_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
