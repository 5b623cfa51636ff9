"""Store build throughput: DALI and torch backends vs a hand-written librosa loop vs decoding alone.

Run: ``python -m benchmarks.store_build [--data DIR] [--clips N] [--repeats R]``. Without ``--data`` the real
recording in ../shared/rfcx is copied N times into a temporary ``train/`` folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from store import build_store
from store.builder import list_audio_files
from store.dali_pipeline import dali_available
from store.params import MelParams

DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "rfcx" / "f97ababc1.flac"


def decode_only(files: list[Path]) -> None:
    for f in files:
        sf.read(str(f), dtype="float32")


def librosa_loop(files: list[Path], params: MelParams) -> None:
    import librosa

    for f in files:
        y, sr = sf.read(str(f), dtype="float32")
        s = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=params.n_fft, hop_length=params.hop,
                                           n_mels=params.n_mels, power=params.power)
        np.save(f.with_suffix(".npy"), (10 * np.log10(np.maximum(s, params.amin))).astype(np.float16))


def run(data: Path, repeats: int) -> dict:
    files = list_audio_files(data / "train") + list_audio_files(data / "test")
    seconds = sum(sf.info(str(f)).duration for f in files)
    params = MelParams()
    candidates = {"decode only (soundfile)": lambda: decode_only(files),
                  "librosa + npy": lambda: librosa_loop(files, params)}
    for backend in (["dali"] if dali_available() else []) + ["torch"]:
        def go(backend=backend):
            out = Path(tempfile.mkdtemp()) / "s.zarr"
            build_store(data, out, backend=backend, device="auto", progress=False)
            shutil.rmtree(out.parent)
        candidates[f"rfcx build-store --backend {backend}"] = go
    librosa_loop(files[:1], params)  # warm numba caches before timing
    results = {}
    for name, fn in candidates.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results[name] = {"median_s": med, "clips_per_s": len(files) / med, "x_realtime": seconds / med}
        print(f"{name:<36} {len(files) / med:7.2f} clips/s  {seconds / med:7.0f}x real time  (median of {repeats})",
              flush=True)
    return {"clips": len(files), "audio_seconds": seconds, "results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = None
    if args.data is None:
        tmp = Path(tempfile.mkdtemp(prefix="rfcx-bench-"))
        (tmp / "train").mkdir()
        for i in range(args.clips):
            shutil.copy(DEFAULT_CLIP, tmp / "train" / f"clip{i:04d}.flac")
        args.data = tmp
    try:
        out = run(args.data, args.repeats)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    finally:
        if tmp:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
