"""Store build throughput: DALI and torch backends vs a hand-written librosa loop vs decoding alone.

The torch backend on the CPU (what ``--backend auto`` picks there) computes one clip per thread of the build
(threads = cores) with a banded mel product (``store.torch_mel``); ``decode + float32 rfft`` is the floor of any
STFT builder on one core (decoding and the FFT, nothing else).

What a user would write instead of ``rfcx build-store`` is the loop ``soundfile.read`` ->
``librosa.feature.melspectrogram`` -> ``10*log10`` -> ``np.save`` (one float16 ``.npy`` per clip); the limit of
any builder is decoding the FLAC files alone. All candidates run side by side, interleaved, on the same clips
(copies of the real recording in ../shared/rfcx, or synthetic clips where it is absent).

Run alone: ``python -m benchmarks.store_build [--quick] [--data DIR] [--json FILE]``; ``rfcx bench`` runs it
with the others.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from benchmarks.common import fresh_dir, goal, interleaved, print_result, row, section, write_clips, write_empty_tables
from store import build_store
from store.audio import list_audio_files
from store.dali_pipeline import dali_available
from store.params import MelParams

QUICK = {"clips": 4, "repeats": 3, "seconds": None}
FULL = {"clips": 16, "repeats": 5, "seconds": None}

DECODE = "decode only (soundfile: FLAC -> PCM)"
DECODE_FFT = "decode + float32 rfft of every frame (one thread)"
LIBROSA = "librosa + np.save (hand-written loop)"


def decode_only(files: list[Path]) -> None:
    for f in files:
        sf.read(str(f), dtype="float32")


def decode_and_fft(files: list[Path], params: MelParams) -> None:
    """What no log-mel builder can beat on one core: decoding, plus the windowed float32 real FFT of every frame
    (the frame blocks the torch backend's CPU path uses), with no power, mel product, log or write."""
    import torch

    from store.torch_mel import CPU_BLOCK_FRAMES

    window = torch.hann_window(params.n_fft, periodic=True)
    half = params.n_fft // 2
    for f in files:
        y, _ = sf.read(str(f), dtype="float32")
        frames = torch.nn.functional.pad(torch.from_numpy(y), (half, half)).unfold(0, params.n_fft, params.hop)
        windowed = torch.empty(CPU_BLOCK_FRAMES, params.n_fft)
        spec = torch.empty(CPU_BLOCK_FRAMES, half + 1, dtype=torch.complex64)
        for s in range(0, frames.shape[0], CPU_BLOCK_FRAMES):
            m = min(CPU_BLOCK_FRAMES, frames.shape[0] - s)
            torch.fft.rfft(torch.mul(frames[s : s + m], window, out=windowed[:m]), dim=1, out=spec[:m])


def librosa_loop(files: list[Path], params: MelParams, out_dir: Path) -> None:
    import librosa

    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        y, sr = sf.read(str(f), dtype="float32")
        s = librosa.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=params.n_fft,
            hop_length=params.hop,
            n_mels=params.n_mels,
            fmin=params.f_min,
            fmax=params.f_max,
            power=params.power,
        )
        np.save(out_dir / f"{f.stem}.npy", (10 * np.log10(np.maximum(s, params.amin))).astype(np.float16))


def _backends() -> list[tuple[str, str]]:
    """(backend, device) pairs to time: DALI and torch on the CPU, and on the GPU where there is one."""
    import torch

    out = ([("dali", "cpu")] if dali_available() else []) + [("torch", "cpu")]
    if torch.cuda.is_available():
        out += ([("dali", "gpu")] if dali_available() else []) + [("torch", "gpu")]
    return out


def backend_name(backend: str, device: str) -> str:
    return f"rfcx build-store --backend {backend} ({device})"


def _clips_done(work: Callable[[], None], files: list[Path]) -> Callable[[], float]:
    """A timed candidate: runs ``work``, then returns how many clips it did (``len(files)``)."""

    def go() -> float:
        work()
        return len(files)

    return go


def run(quick: bool, workdir: Path, data: Path | None = None) -> dict:
    """Clips/s and x-real-time of every builder; goals: >= 3x librosa and >= 0.7x decode-only."""
    size: dict[str, Any] = dict(QUICK if quick else FULL)
    workdir = Path(workdir)
    if data is None:
        data = fresh_dir(workdir / "data")
        _, source = write_clips(data / "train", size["clips"], size["seconds"])
        write_empty_tables(data)
    else:
        source = f"the clips of {data}"
    files = list_audio_files(data / "train") + list_audio_files(data / "test")
    if not files:
        raise FileNotFoundError(f"{data}: no audio files in train/ or test/")
    seconds = sum(sf.info(str(f)).duration for f in files)
    params = MelParams()
    stores = fresh_dir(workdir / "stores")
    counter = iter(range(10**9))

    def build(backend: str, device: str, source_dir: Path) -> Callable[[], float]:
        def go() -> float:
            build_store(source_dir, stores / f"s{next(counter)}.zarr", backend=backend, device=device, progress=False)
            return len(list_audio_files(source_dir / "train")) + len(list_audio_files(source_dir / "test"))

        return go

    # warm-up on one clip (numba caches of librosa, DALI's libraries, torch's FFT plans): not timed
    one = fresh_dir(workdir / "warmup")
    (one / "train").mkdir()
    shutil.copy(files[0], one / "train" / files[0].name)
    write_empty_tables(one)
    librosa_loop(files[:1], params, workdir / "npy-warmup")
    for backend, device in _backends():
        build(backend, device, one)()

    candidates: dict[str, Callable[[], float]] = {
        DECODE: _clips_done(lambda: decode_only(files), files),
        DECODE_FFT: _clips_done(lambda: decode_and_fft(files, params), files),
        LIBROSA: _clips_done(lambda: librosa_loop(files, params, workdir / "npy"), files),
    }
    for backend, device in _backends():
        candidates[backend_name(backend, device)] = build(backend, device, data)
    rates = interleaved(candidates, size["repeats"])
    shutil.rmtree(stores, ignore_errors=True)

    per_clip = seconds / len(files)
    rows = [row(name, r, x_realtime=float(np.median(r)) * per_clip) for name, r in rates.items()]
    decode_median = float(np.median(rates[DECODE]))
    for r in rows:
        r["vs_decode_only"] = r["median"] / decode_median if decode_median else None
    sec = section(
        "build",
        "Store build: decode + log-mel + write, whole clips",
        "clips/s",
        rows,
        baseline=LIBROSA,
        columns=[("x_realtime", "x real time", ".0f"), ("vs_decode_only", "x decode-only", ".2f")],
        note=f"{len(files)} clips, {seconds:.0f} s of audio ({source}); ratio = to the librosa loop.",
    )
    goals = []
    for backend, device in _backends():
        if device != "cpu":
            continue
        r = next(x for x in rows if x["name"] == backend_name(backend, device))
        goals.append(
            goal(
                f"{backend} backend (cpu) >= 3x the librosa loop",
                r["ratio"],
                3.0,
                f"{r['median']:.2f} vs {next(x for x in rows if x['name'] == LIBROSA)['median']:.2f} clips/s",
            )
        )
        goals.append(
            goal(
                f"{backend} backend (cpu) >= 0.7x decode-only",
                r["vs_decode_only"],
                0.7,
                f"{r['median']:.2f} vs {decode_median:.2f} clips/s",
            )
        )
    return {
        "name": "store_build",
        "title": "1. Store build",
        "about": "Clips/s and x-real-time of building the log-mel store from FLAC clips: the DALI and torch "
        "backends of `rfcx build-store` vs the hand-written loop a user would write (soundfile + "
        "`librosa.feature.melspectrogram` + `np.save` of float16) vs decoding alone (the limit). "
        "Each repeat builds a fresh store (DALI/torch pipeline set-up included).",
        "params": {**size, "clips": len(files), "audio_seconds": seconds, "source": source},
        "sections": [sec],
        "goals": goals,
        "notes": [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK} instead of {FULL}")
    ap.add_argument("--data", type=Path, help="a data folder (train/, test/) instead of copies of the real clip")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rfcx-bench-") as tmp:
        out = run(args.quick, Path(tmp), data=args.data)
    print_result(out, args.json)


if __name__ == "__main__":
    main()
