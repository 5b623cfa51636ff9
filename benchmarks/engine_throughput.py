"""Inference throughput of one ensemble member: eager vs TorchScript vs torch.export vs the fcn path.

The member is the config's first backbone with random weights (its input pooling, its crop length as the
window); windows are 0.5 s apart over 60 s clips (113 windows of 4 s), the model's inputs random dB values.
``exact`` formats score batches of windows; ``fcn`` scores whole clips (``B * window / clip`` clips per pass,
i.e. about the same input frames). Every format of one batch size is timed side by side (interleaved repeats,
medians). Windows/s and clips/s (= windows/s / windows per clip) are reported, ratios to eager.

With a trained run directory and its store (``rfcx bench --runs DIR --store PATH``) the real ensemble of the
latest complete round is also run end to end (``engine.batch.infer_clips``) on test clips in both modes, and
the LWLRAP of each against the store's test truth gives the fcn path's LWLRAP difference from exact.

Run alone: ``python -m benchmarks.engine_throughput [--quick] [--config cpu] [--threads N] [--batch-sizes 16 64]
[--seconds S] [--runs DIR --store PATH]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import for_seconds, goal, interleaved, row, section
from engine.export import export_program, export_torchscript, load_model
from engine.windows import n_windows, window_starts
from rfcx.train.config import get_config
from rfcx.train.models import build_classifier
from store import MelParams

CLIP_FRAMES = MelParams().n_frames(60 * 48_000)  # 5626
QUICK = {"config": "cpu", "batch_sizes": [16, 64], "seconds": 0.4, "repeats": 3, "real_clips": 8}
FULL = {"config": "cpu", "batch_sizes": [16, 64, 256], "seconds": 3.0, "repeats": 5, "real_clips": None}

EAGER, TS, PT2 = "eager", "TorchScript (.ts)", "torch.export (.pt2)"
FCN_TS, FCN_PT2 = "fcn, TorchScript (.ts)", "fcn, torch.export (.pt2)"


def _member(config: str, tmp: Path) -> tuple:
    cfg = get_config(config)
    spec = cfg.backbones[0]
    params = MelParams()
    torch.manual_seed(0)
    net = build_classifier(cfg, spec).eval()
    meta = {
        "config_name": cfg.name,
        "config": cfg.to_dict(),
        "backbone": spec.backbone,
        "crop_seconds": spec.crop_seconds,
        "hop_seconds": 0.5,
        "mel": params.to_dict(),
        "round": 0,
        "fold": 0,
    }
    timings = {}
    t0 = time.perf_counter()
    ts = export_torchscript(net, meta, tmp / "m.ts")
    timings["export_ts_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pt2 = export_program(net, meta, tmp / "m.pt2")
    timings["export_pt2_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts_model = load_model(ts)
    timings["load_ts_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pt2_model = load_model(pt2)
    timings["load_pt2_s"] = time.perf_counter() - t0
    return cfg, spec, params, net, ts_model, pt2_model, timings


def synthetic_sections(config: str, batch_sizes: list[int], seconds: float, repeats: int) -> tuple[list, dict]:
    """Per batch size: windows/s of each format (interleaved repeats); and the member's export/load timings."""
    with tempfile.TemporaryDirectory(prefix="rfcx-engine-") as tmp:
        cfg, spec, params, net, ts_model, pt2_model, timings = _member(config, Path(tmp))
    frames = ts_model.window_frames
    per_clip = n_windows(CLIP_FRAMES, params.frames_per_second, spec.crop_seconds, 0.5)
    starts = torch.from_numpy(window_starts(CLIP_FRAMES, params.frames_per_second, spec.crop_seconds, 0.5)).float()
    eager = torch.inference_mode()(net.forward)
    sections = []
    for b in batch_sizes:
        gen = torch.Generator().manual_seed(b)
        x = -60.0 + 15.0 * torch.randn(b, params.n_mels, frames, generator=gen)
        clips = max(1, b * frames // CLIP_FRAMES)
        whole = -60.0 + 15.0 * torch.randn(clips, params.n_mels, CLIP_FRAMES, generator=gen)
        candidates = {
            EAGER: for_seconds(lambda: eager(x), b, seconds),
            TS: for_seconds(lambda: ts_model(x), b, seconds),
            PT2: for_seconds(lambda: pt2_model(x), b, seconds),
            FCN_TS: for_seconds(lambda: ts_model.windows(whole, starts), clips * per_clip, seconds),
            FCN_PT2: for_seconds(lambda: pt2_model.windows(whole, starts), clips * per_clip, seconds),
        }
        for fn in candidates.values():  # TorchScript's profiling executor optimises on the first calls
            fn()
        rates = interleaved(candidates, repeats)
        rows = [
            row(
                name,
                r,
                clips_per_s=float(np.median(r)) / per_clip,
                per_pass=f"{clips} clip{'s' if clips > 1 else ''}" if name.startswith("fcn") else f"{b} windows",
            )
            for name, r in rates.items()
        ]
        med = {r["name"]: r["median"] for r in rows}
        for r in rows:
            exact = {FCN_TS: TS, FCN_PT2: PT2}.get(r["name"])
            r["fcn_vs_exact"] = med[r["name"]] / med[exact] if exact else None
        sections.append(
            section(
                f"batch_{b}",
                f"Inference, batch {b} (windows of {spec.crop_seconds:g} s)",
                "windows/s",
                rows,
                baseline=EAGER,
                columns=[
                    ("clips_per_s", "60 s clips/s", ".2f"),
                    ("per_pass", "per forward", ""),
                    ("fcn_vs_exact", "fcn / exact (same format)", ".2f"),
                ],
                note=f"{spec.backbone} (config {cfg.name}, random weights), {per_clip} windows per 60 s clip; "
                f"ratio = to eager.",
            )
        )
    info = {
        "backbone": spec.backbone,
        "config": cfg.name,
        "pool": list(cfg.input_pool),
        "window_s": spec.crop_seconds,
        "windows_per_clip": per_clip,
        **{k: round(v, 2) for k, v in timings.items()},
    }
    return sections, info


def real_section(
    runs: str | Path, store: str | Path, clips: int | None, repeats: int, batch_size: int = 64
) -> tuple[dict, dict]:
    """The trained ensemble of the latest complete round end to end on test clips, exact vs fcn: clips/s, LWLRAP.

    ``runs`` and ``store`` may be fsspec URLs (the run's models are fetched into its local cache)."""
    from engine.batch import infer_clips
    from rfcx.runs.directory import open_run
    from rfcx.scoring.metrics import lwlrap
    from store import FeatureStore

    run_dir = open_run(runs, pull="meta")
    k = run_dir.latest_complete()
    if k is None:
        raise FileNotFoundError(f"{runs}: no complete round (train with `rfcx train`)")
    run_dir.fetch(run_dir.models_dir(k), suffix=".ts")
    files = sorted(run_dir.models_dir(k).glob("*.ts"))
    if not files:
        raise FileNotFoundError(f"{run_dir.models_dir(k)}: no exported TorchScript models (rfcx export)")
    models = [load_model(f) for f in files]
    fs = FeatureStore.open(store)
    truth = fs.truth("test")
    ids = fs.ids("test")
    if truth is not None:
        ids = [rid for rid in ids if rid in truth.index]
    ids = ids[:clips] if clips else ids
    results: dict[str, np.ndarray] = {}

    def mode(m: str):
        def go() -> float:
            scores, _ = infer_clips(models, fs, ids, fs.params, mode=m, batch_size=batch_size, progress=False)
            results[m] = scores.drop(columns="recording_id").to_numpy()
            return len(ids)

        return go

    rates = interleaved({"exact": mode("exact"), "fcn": mode("fcn")}, repeats)
    rows = []
    lw: dict[str, Any] = {}  # LWLRAP by mode: None without truth
    for m, r in rates.items():
        lw[m] = float(lwlrap(truth.loc[ids].to_numpy(), results[m])) if truth is not None else None
        rows.append(row(f"{m} (engine.batch.infer_clips)", r, lwlrap=lw[m]))
    delta = lw["fcn"] - lw["exact"] if truth is not None else None
    for rec in rows:
        rec["delta_lwlrap"] = (rec["lwlrap"] - lw["exact"]) if truth is not None else None
    sec = section(
        "real",
        f"Inference end to end: trained ensemble of round {k}",
        "clips/s",
        rows,
        baseline="exact (engine.batch.infer_clips)",
        columns=[("lwlrap", "LWLRAP", ".4f"), ("delta_lwlrap", "LWLRAP - exact", "+.4f")],
        note=f"{len(models)} TorchScript models of {runs}/round{k}, {len(ids)} test clips of {store}, "
        f"batch {batch_size}; ratio = to exact."
        + ("" if truth is not None else " The store has no test truth: no LWLRAP."),
    )
    return sec, {"round": k, "models": len(models), "clips": len(ids), "delta_lwlrap": delta}


def run(
    quick: bool,
    workdir: Path,
    runs: str | Path | None = None,
    store: str | Path | None = None,
    sizes: dict | None = None,
) -> dict:
    size = {**(QUICK if quick else FULL), **(sizes or {})}
    sections, info = synthetic_sections(size["config"], size["batch_sizes"], size["seconds"], size["repeats"])
    goals, notes = [], []
    for sec in sections:
        b = sec["key"].split("_")[1]
        ts = next(r for r in sec["rows"] if r["name"] == TS)
        eager = next(r for r in sec["rows"] if r["name"] == EAGER)
        fcn = next(r for r in sec["rows"] if r["name"] == FCN_TS)
        goals.append(
            goal(
                f"batch {b}: TorchScript >= eager",
                ts["ratio"],
                1.0,
                f"{ts['median']:.0f} vs {eager['median']:.0f} windows/s",
            )
        )
        goals.append(
            goal(
                f"batch {b}: fcn >= 5x exact (TorchScript)",
                fcn["fcn_vs_exact"],
                5.0,
                f"{fcn['median']:.0f} vs {ts['median']:.0f} windows/s",
            )
        )
    real = None
    if runs is not None and store is not None:
        sec, real = real_section(runs, store, size["real_clips"], size["repeats"])
        sections.append(sec)
        d = real["delta_lwlrap"]
        goals.append(
            goal(
                "trained ensemble: |LWLRAP(fcn) - LWLRAP(exact)| <= 0.005",
                None if d is None else abs(d),
                0.005,
                "no test truth in the store" if d is None else f"delta {d:+.4f} on {real['clips']} clips",
                higher_is_better=False,
            )
        )
        fcn_row = next(r for r in sec["rows"] if r["name"].startswith("fcn"))
        goals.append(
            goal(
                "trained ensemble end to end: fcn >= 5x exact (clips/s)",
                fcn_row["ratio"],
                5.0,
                f"{fcn_row['median']:.2f} clips/s",
            )
        )
    else:
        notes.append("LWLRAP of fcn vs exact: not measured (give `--runs DIR --store PATH` of a trained run).")
    notes.append(
        f"export {info['export_ts_s']:.1f} s (.ts) / {info['export_pt2_s']:.1f} s (.pt2); "
        f"load {info['load_ts_s']:.2f} s (.ts) / {info['load_pt2_s']:.2f} s (.pt2)."
    )
    return {
        "name": "inference",
        "title": "4. Inference",
        "about": "Windows/s and 60 s clips/s of one ensemble member: eager PyTorch vs the exported TorchScript "
        "and torch.export programs (one forward per 4 s window) vs the fully convolutional `fcn` path "
        "(one forward per clip), over batch sizes.",
        "params": {**size, **info, "real": real},
        "sections": sections,
        "goals": goals,
        "notes": notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--config", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    ap.add_argument("--seconds", type=float, default=None, help="timing per measurement and repeat")
    ap.add_argument("--runs", default=None, help="a trained run directory or URL")
    ap.add_argument("--store", default=None, help="its feature store (path or URL)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {
        k: v for k, v in (("config", args.config), ("batch_sizes", args.batch_sizes), ("seconds", args.seconds)) if v
    }
    with tempfile.TemporaryDirectory(prefix="rfcx-engine-") as tmp:
        print(json.dumps(run(args.quick, Path(tmp), args.runs, args.store, sizes), indent=1))


if __name__ == "__main__":
    main()
