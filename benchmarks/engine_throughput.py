"""Inference throughput of one ensemble member: eager vs TorchScript vs torch.export vs the fcn path.

Run: ``python -m benchmarks.engine_throughput [--config cpu] [--threads N] [--batch-sizes 16 64] [--seconds S]``.
The member is the config's first backbone with random weights (its input pooling, its crop length as the
window); windows are 0.5 s apart over 60 s clips (113 windows of 4 s), the model's inputs random dB values.
``exact`` formats score batches of windows; ``fcn`` scores whole clips (``B * window / clip`` clips per pass,
i.e. about the same input frames). Prints windows/s per format and batch size, and load times, as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.export import export_program, export_torchscript, load_model
from engine.windows import n_windows, window_starts
from rfcx.config import get_config
from rfcx.models import build_classifier
from store import MelParams

CLIP_FRAMES = MelParams().n_frames(60 * 48_000)  # 5626


def _rate(fn: Callable[[], None], windows_per_call: int, seconds: float) -> float:
    fn()  # warm-up (TorchScript's profiling executor optimises on the first calls)
    fn()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    return calls * windows_per_call / (time.perf_counter() - t0)


def run(config: str, batch_sizes: list[int], seconds: float) -> dict:
    cfg = get_config(config)
    spec = cfg.backbones[0]
    params = MelParams()
    net = build_classifier(cfg, spec).eval()
    meta = {"config_name": cfg.name, "config": cfg.to_dict(), "backbone": spec.backbone,
            "crop_seconds": spec.crop_seconds, "hop_seconds": 0.5, "mel": params.to_dict(), "round": 0, "fold": 0}
    out: dict = {"config": config, "backbone": spec.backbone, "pool": list(cfg.input_pool),
                 "window_s": spec.crop_seconds, "threads": torch.get_num_threads(), "windows_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ts = export_torchscript(net, meta, Path(tmp) / "m.ts")
        out["export_ts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pt2 = export_program(net, meta, Path(tmp) / "m.pt2")
        out["export_pt2_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ts_model = load_model(ts)
        out["load_ts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pt2_model = load_model(pt2)
        out["load_pt2_s"] = time.perf_counter() - t0
    frames = ts_model.window_frames
    per_clip = n_windows(CLIP_FRAMES, params.frames_per_second, spec.crop_seconds, 0.5)
    starts = torch.from_numpy(window_starts(CLIP_FRAMES, params.frames_per_second, spec.crop_seconds, 0.5)).float()
    eager = torch.inference_mode()(net.forward)
    for b in batch_sizes:
        x = -60.0 + 15.0 * torch.randn(b, params.n_mels, frames)
        clips = max(1, b * frames // CLIP_FRAMES)
        whole = -60.0 + 15.0 * torch.randn(clips, params.n_mels, CLIP_FRAMES)
        rates = {
            "eager": _rate(lambda: eager(x), b, seconds),
            "torchscript": _rate(lambda: ts_model(x), b, seconds),
            "export": _rate(lambda: pt2_model(x), b, seconds),
            f"fcn torchscript ({clips} clip/pass)": _rate(lambda: ts_model.windows(whole, starts), clips * per_clip,
                                                          seconds),
            f"fcn export ({clips} clip/pass)": _rate(lambda: pt2_model.windows(whole, starts), clips * per_clip,
                                                     seconds),
        }
        out["windows_per_s"][f"batch {b}"] = {k: round(v, 1) for k, v in rates.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--seconds", type=float, default=5.0, help="timing per measurement")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args.config, args.batch_sizes, args.seconds), indent=1))


if __name__ == "__main__":
    main()
