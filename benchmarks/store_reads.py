"""Store reads: random 4 s and 8 s training crops per second from the feature store vs what a user would do instead.

Candidates, side by side on the same random crops of the same clips:

- ``FeatureStore.crops`` in batches of 16 (what training reads: only the chunks a crop overlaps, threads);
- per-clip ``.npy`` files (float16, as the hand-written librosa loop would leave them), ``np.load(mmap_mode="r")``
  and slicing;
- on the fly, no store: ``store.audio.decode`` of the whole FLAC, then ``TorchLogMel`` of just the samples the
  crop needs (the baseline);
- on the fly with a seeking decoder: ``soundfile.read(start=, stop=)`` of just those samples, then the same mel.

Also the chunk/codec table of :mod:`benchmarks.store_layout`. Goal: store crops >= 20x on the fly.
All files are in the page cache after the first pass (warm reads); see the report's caveats.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from benchmarks import store_layout
from benchmarks.common import fresh_dir, goal, interleaved, module_main, row, section, write_clips, write_empty_tables
from store import FeatureStore, build_store
from store.audio import decode
from store.params import MelParams
from store.torch_mel import TorchLogMel

QUICK = {"clips": 4, "seconds": None, "repeats": 3, "batch": 16, "store_batches": 8, "fly_batches": 1, "layout": True}
FULL = {"clips": 16, "seconds": None, "repeats": 5, "batch": 16, "store_batches": 40, "fly_batches": 3, "layout": True}

STORE = "FeatureStore.crops (batch of 16)"
NPY = "per-clip .npy (np.load mmap_mode='r')"
FLY = "on the fly: decode FLAC + torch log-mel of the crop"
SEEK = "on the fly, seeking: soundfile.read(start, stop) + torch log-mel"
CONTEXT_FRAMES = 4  # n_fft / 2 / hop: frames of context a centred STFT needs on each side


class OnTheFly:
    """Log-mel crops computed from the audio, no store: frames [start, start + n) exactly as the store has them."""

    def __init__(self, params: MelParams) -> None:
        self.params = params
        self.mel = TorchLogMel(params)
        self.context = params.n_fft // 2 // params.hop
        if self.context * params.hop != params.n_fft // 2:
            raise ValueError("on-the-fly crops assume n_fft / 2 is a multiple of hop")

    def _bounds(self, start: int, n: int) -> tuple[int, int]:
        hop = self.params.hop
        return (start - self.context) * hop, (start + n - 1 + self.context) * hop + 1

    def from_signal(self, signal: np.ndarray, lo: int, start: int, n: int) -> np.ndarray:
        """``signal`` holds the samples from ``lo`` on (``lo`` may be negative: zeros before the clip)."""
        want_lo, want_hi = self._bounds(start, n)
        seg = np.zeros(want_hi - want_lo, dtype=np.float32)
        a, b = max(want_lo, lo), min(want_hi, lo + len(signal))
        if b > a:
            seg[a - want_lo : b - want_lo] = signal[a - lo : b - lo]
        with torch.inference_mode():
            db = self.mel.logmel(torch.from_numpy(seg)[None])[0].numpy()
        return db[:, self.context : self.context + n]

    def decode_crop(self, path: Path, start: int, n: int) -> np.ndarray:
        signal, _ = decode(path, self.params.sample_rate)
        return self.from_signal(signal, 0, start, n)

    def seek_crop(self, path: Path, start: int, n: int) -> np.ndarray:
        lo, hi = self._bounds(start, n)
        part, _ = sf.read(str(path), start=max(0, lo), stop=hi, dtype="float32", always_2d=True)
        return self.from_signal(part.mean(axis=1) if part.shape[1] > 1 else part[:, 0], max(0, lo), start, n)


def run(quick: bool, workdir: Path, sizes: dict | None = None) -> dict:
    """Crops/s of each way to get training crops, for 4 s and 8 s crops; plus the layout table."""
    size = {**(QUICK if quick else FULL), **(sizes or {})}
    workdir = Path(workdir)
    data = fresh_dir(workdir / "data")
    files, source = write_clips(data / "train", size["clips"], size["seconds"])
    write_empty_tables(data)
    store_path = workdir / "reads.zarr"
    build_store(data, store_path, backend="torch", device="cpu", progress=False)
    fs = FeatureStore.open(store_path)
    params = fs.params
    ids = fs.ids("train")
    path_of = {f.stem: f for f in files}
    npy = fresh_dir(workdir / "npy")
    for rid in ids:
        np.save(npy / f"{rid}.npy", fs.array(rid)[:])
    fly = OnTheFly(params)
    gen = np.random.default_rng(0)
    b = size["batch"]
    sections, goals, notes = [], [], []
    for seconds in (4, 8):
        n = params.seconds_to_frames(seconds)

        def batches(k: int, n: int = n) -> list[list[tuple[str, int, int]]]:
            return [
                [(ids[int(gen.integers(len(ids)))], int(gen.integers(0, fs.n_frames(ids[0]) - n)), n) for _ in range(b)]
                for _ in range(k)
            ]

        store_b, fly_b = batches(size["store_batches"]), batches(size["fly_batches"])

        def store_reads(bs: list = store_b) -> float:
            for batch in bs:
                fs.crops(batch)
            return sum(len(x) for x in bs)

        def npy_reads(bs: list = store_b) -> float:
            for batch in bs:
                out = np.empty((len(batch), params.n_mels, batch[0][2]), dtype=np.float32)
                for j, (rid, s, k) in enumerate(batch):
                    out[j] = np.load(npy / f"{rid}.npy", mmap_mode="r")[:, s : s + k]
            return sum(len(x) for x in bs)

        def fly_reads(crop: Callable, bs: list = fly_b) -> Callable[[], float]:
            def go() -> float:
                for batch in bs:
                    np.stack([crop(path_of[rid], s, k) for rid, s, k in batch])
                return sum(len(x) for x in bs)

            return go

        rates = interleaved(
            {STORE: store_reads, NPY: npy_reads, FLY: fly_reads(fly.decode_crop), SEEK: fly_reads(fly.seek_crop)},
            size["repeats"],
            warmup=True,
        )
        rows = [row(name, r) for name, r in rates.items()]
        sections.append(
            section(
                f"crops_{seconds}s",
                f"Store reads: random {seconds} s crops",
                "crops/s",
                rows,
                baseline=FLY,
                note=f"{len(ids)} clips ({source}); {b} crops per batch; ratio = to decoding + log-mel on the fly.",
            )
        )
        st = next(r for r in rows if r["name"] == STORE)
        base = next(r for r in rows if r["name"] == FLY)
        goals.append(
            goal(
                f"store {seconds} s crops >= 20x on the fly",
                st["ratio"],
                20.0,
                f"{st['median']:.0f} vs {base['median']:.1f} crops/s",
            )
        )
        # the baseline computes the same features: compare one crop with the store's (float16 rounding)
        rid, s, k = fly_b[0][0]
        diff = float(np.abs(fly.decode_crop(path_of[rid], s, k) - fs.crop(rid, s, k)).max())
        diff_seek = float(np.abs(fly.seek_crop(path_of[rid], s, k) - fs.crop(rid, s, k)).max())
        notes.append(
            f"{seconds} s crop computed on the fly vs read from the store: largest difference "
            f"{diff:.3f} dB (decode), {diff_seek:.3f} dB (seeking decode); the store keeps float16."
        )
    result: dict[str, Any] = {
        "name": "store_reads",
        "title": "2. Store reads",
        "about": "Random training crops per second: the Zarr store (`FeatureStore.crops`, batches of 16) vs "
        "per-clip `.npy` files vs computing the log-mel from the FLAC on the fly (the baseline), "
        "plus the chunk/codec table behind the store's layout.",
        "params": {**size, "source": source},
        "sections": sections,
        "goals": goals,
        "notes": notes,
    }
    if size["layout"]:
        layout = store_layout.run(quick, workdir / "layout")
        result["sections"] += layout["sections"]
        result["params"]["layout"] = layout["params"]
    return result


def main() -> None:
    module_main(run, __doc__.splitlines()[0], "rfcx-reads-")


if __name__ == "__main__":
    main()
