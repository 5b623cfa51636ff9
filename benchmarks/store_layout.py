"""Chunk shape and codec of the stored spectrograms: size on disk, write MB/s and random crop reads/s.

A clip's log-mel (the real recording in ../shared/rfcx, or a synthetic clip where it is absent) is written
N times (rolled in time, so chunks differ) under each layout; then random 4 s and 8 s crops are read back,
one at a time on one thread, the layouts interleaved repeat after repeat (medians reported).

Run alone: ``python -m benchmarks.store_layout [--quick] [--clip FLAC] [--clips N] [--reads R]``;
``rfcx bench`` runs it as part of the store-reads benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from benchmarks.common import REAL_CLIP, fresh_dir, interleaved, row, section, write_clips
from store.audio import decode
from store.params import MelParams
from store.torch_mel import TorchLogMel

DEFAULT_CLIP = REAL_CLIP

CODECS = {
    "none": None,
    "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-zstd3-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "zstd3": ZstdCodec(level=3),
    "blosc-zstd1-shuffle": BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
}
CHOSEN = ("float16", 512, "blosc-zstd1-shuffle")  # what store/layout.py uses
LAYOUTS_FULL = [
    ("float32", 512, "none"),
    ("float16", 128, "none"),
    ("float16", 512, "none"),
    ("float16", 512, "blosc-lz4-shuffle"),
    CHOSEN,
    ("float16", 512, "blosc-zstd3-shuffle"),
    ("float16", 512, "zstd3"),
    ("float16", 1024, "blosc-zstd3-shuffle"),
    ("float16", 8192, "blosc-zstd3-shuffle"),
]
LAYOUTS_QUICK = [("float32", 512, "none"), ("float16", 512, "none"), CHOSEN, ("float16", 8192, "blosc-zstd1-shuffle")]
QUICK = {"clips": 4, "reads": 60, "repeats": 3, "layouts": LAYOUTS_QUICK}
FULL = {"clips": 16, "reads": 300, "repeats": 5, "layouts": LAYOUTS_FULL}


def layout_name(dtype: str, chunk_t: int, codec: str) -> str:
    return f"{dtype} / {chunk_t} frames / {codec}"


def write_layout(root: Path, mels: list[np.ndarray], dtype: str, chunk_t: int, codec_name: str) -> tuple[float, float]:
    """Write the clips under one layout into a fresh group at ``root``; returns (write MB/s, MB per clip on disk)."""
    fresh_dir(root)
    group = zarr.open_group(root / "s.zarr", mode="w")
    codec = CODECS[codec_name]
    t0 = time.perf_counter()
    for i, m in enumerate(mels):
        a = group.create_array(
            f"c{i}",
            shape=m.shape,
            dtype=dtype,
            chunks=(m.shape[0], min(chunk_t, m.shape[1])),
            compressors=[codec] if codec else None,
        )
        a[:] = m.astype(dtype)
    write_s = time.perf_counter() - t0
    raw_mb = sum(m.size for m in mels) * np.dtype(dtype).itemsize / 1e6
    disk_mb = sum(f.stat().st_size for f in (root / "s.zarr").rglob("*") if f.is_file()) / 1e6
    return raw_mb / write_s, disk_mb / len(mels)


def clip_mel(clip: Path | None, workdir: Path) -> tuple[np.ndarray, str]:
    """The log-mel of ``clip`` (default: the real recording, or a synthetic clip where it is absent)."""
    params = MelParams()
    if clip is None:
        files, source = write_clips(workdir / "layout-clip", 1)
        clip = files[0]
    else:
        source = str(clip)
    signal, _ = decode(clip, params.sample_rate)
    return TorchLogMel(params)([signal])[0], source


def run(quick: bool, workdir: Path, clip: Path | None = None, sizes: dict | None = None) -> dict:
    """Size, write MB/s and 4 s / 8 s crop reads/s of each layout (ratio: to the chosen layout)."""
    size = {**(QUICK if quick else FULL), **(sizes or {})}
    workdir = Path(workdir)
    mel, source = clip_mel(clip, workdir)
    mels = [np.roll(mel, 97 * i, axis=1) for i in range(size["clips"])]
    gen = np.random.default_rng(0)
    layouts = [tuple(x) for x in size["layouts"]]
    written: dict[str, dict] = {}
    for dtype, chunk_t, codec in layouts:
        name = layout_name(dtype, chunk_t, codec)
        speeds = []
        for _ in range(size["repeats"]):  # write speed: the median of writing the whole set each repeat
            mb_s, disk = write_layout(workdir / "layouts" / name.replace(" / ", "_"), mels, dtype, chunk_t, codec)
            speeds.append(mb_s)
        group = zarr.open_group(workdir / "layouts" / name.replace(" / ", "_") / "s.zarr", mode="r")
        written[name] = {
            "arrays": [group[f"c{i}"] for i in range(len(mels))],
            "write_mb_s": statistics.median(speeds),
            "disk_mb_per_clip": disk * mels[0].shape[1] / 5626,
            "dtype": dtype,
            "chunk_frames": chunk_t,
            "codec": codec,
        }
    reads: dict[int, dict[str, list[float]]] = {}
    for seconds in (4, 8):
        n = int(round(seconds * 48000 / 512))
        picks = [
            (int(gen.integers(len(mels))), int(gen.integers(0, mels[0].shape[1] - n))) for _ in range(size["reads"])
        ]

        def reader(arrays: list, picks: list = picks, n: int = n):
            def go() -> float:
                for c, s in picks:
                    arrays[c][:, s : s + n]
                return len(picks)

            return go

        reads[seconds] = interleaved(
            {name: reader(w["arrays"]) for name, w in written.items()}, size["repeats"], warmup=True
        )
    rows = []
    for name, w in written.items():
        rows.append(
            row(
                name,
                reads[4][name],
                crops_8s_per_s=statistics.median(reads[8][name]),
                disk_mb_per_clip=w["disk_mb_per_clip"],
                write_mb_s=w["write_mb_s"],
                dtype=w["dtype"],
                chunk_frames=w["chunk_frames"],
                codec=w["codec"],
            )
        )
    sec = section(
        "layout",
        "Store layout: chunk frames and codec (random crops, one thread)",
        "4 s crops/s",
        rows,
        baseline=layout_name(*CHOSEN),
        columns=[
            ("crops_8s_per_s", "8 s crops/s", ".0f"),
            ("disk_mb_per_clip", "MB per 60 s clip", ".2f"),
            ("write_mb_s", "write MB/s", ".0f"),
        ],
        note=f"{len(mels)} clips ({source}), {size['reads']} random crops per repeat; "
        f"ratio = to the layout the store uses ({layout_name(*CHOSEN)}).",
    )
    return {
        "name": "store_layout",
        "title": "Store layout",
        "params": {k: v for k, v in size.items() if k != "layouts"},
        "sections": [sec],
        "goals": [],
        "notes": [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clip", type=Path, default=None, help="FLAC clip (default: the real recording)")
    ap.add_argument("--clips", type=int, default=None)
    ap.add_argument("--reads", type=int, default=None)
    args = ap.parse_args()
    sizes = {k: v for k, v in (("clips", args.clips), ("reads", args.reads)) if v}
    with tempfile.TemporaryDirectory(prefix="rfcx-layout-") as tmp:
        out = run(args.quick, Path(tmp), clip=args.clip, sizes=sizes)
    print("| dtype | chunk frames | codec | MB per 60 s clip | write MB/s | 4 s crops/s | 8 s crops/s |")
    print("|---|---|---|---|---|---|---|")
    for r in out["sections"][0]["rows"]:
        print(
            f"| {r['dtype']} | {r['chunk_frames']} | {r['codec']} | {r['disk_mb_per_clip']:.2f} | "
            f"{r['write_mb_s']:.0f} | {r['median']:.0f} | {r['crops_8s_per_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
