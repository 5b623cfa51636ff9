"""Training input: crops/s the data loader delivers vs crops/s the model consumes.

Delivery: ``rfcx.train.loader.crop_loader`` iterated alone (round-0 ``CropSampler`` around TP/FP boxes, one batched
``FeatureStore.crops`` per batch of 16) with ``num_workers`` 0 and 1 (a fresh loader per repeat: worker start-up
counts, as it does every epoch in training), reading the chunks for every crop or, as training does, through a
store handle with a clip cache (``FeatureStore.open(..., cache_mb=...)``: warm after the first pass), and the
cached loader followed by the round-0 ``Augmenter`` (which training runs on its device after the copy: here
the CPU, in the main process). Consumption: forward + backward + AdamW step of the ``cpu`` config's model on
pre-made tensors, batch 16 (the baseline). Goal: delivery >= 10x consumption, i.e. the model never waits.
The store is small and synthetic (``rfcx.synth.dataset.synthesize`` + ``build_store(backend="torch")``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks.common import fresh_dir, goal, interleaved, module_main, row, section
from rfcx.process_group import run_local, thread_budget
from rfcx.synth.dataset import synthesize
from rfcx.train.augment import Augmenter
from rfcx.train.config import get_config
from rfcx.train.loader import crop_loader
from rfcx.train.losses import masked_bce
from rfcx.train.models import build_classifier
from rfcx.train.sampling import N_CLASSES, CropSampler
from store import FeatureStore, build_store

QUICK = {"clips": 4, "seconds": 30.0, "repeats": 3, "batches": 8, "steps": 3, "config": "cpu"}
FULL = {"clips": 16, "seconds": 60.0, "repeats": 5, "batches": 40, "steps": 10, "config": "cpu"}

MODEL = "model consumes: forward + backward + AdamW"
PROCESSES = "{n} processes x 1 thread side by side (cpu_processes), crops/s of all together"


def loader_name(workers: int, augment: bool = False, cache: bool = False) -> str:
    return (
        f"crop_loader, num_workers={workers}"
        + (", clip cache (as in training)" if cache else "")
        + (" + Augmenter" if augment else "")
    )


def make_store(workdir: Path, clips: int, seconds: float) -> str:
    data = fresh_dir(workdir / "synth")
    synthesize(data, n_train=clips, n_test=0, seconds=seconds, seed=0, progress=False, tp_fraction=1.0)
    store = workdir / "train.zarr"
    build_store(data, store, backend="torch", device="cpu", progress=False)
    return str(store)


def _model(cfg_name: str):  # noqa: ANN202
    cfg = get_config(cfg_name)
    torch.manual_seed(0)
    model = build_classifier(cfg, cfg.backbones[0])
    if cfg.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    model.train()
    return cfg, model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _step_batch(b: int, n_mels: int, crop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return (
        -60.0 + 15.0 * torch.randn(b, 1, n_mels, crop, generator=gen),
        (torch.rand(b, N_CLASSES, generator=gen) < 0.1).float(),
        torch.ones(b, N_CLASSES),
    )


def _steps(model, opt, batch, steps: int) -> None:  # noqa: ANN001
    x, target, mask = batch
    for _ in range(steps):
        loss = masked_bce(model(x).float(), target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def consume_on_rank(
    group,
    cfg_name: str,
    n_mels: int,
    crop: int,
    steps: int,  # noqa: ANN001 (a ProcessGroup)
    repeats: int,
) -> list[float]:
    """One rank of the side-by-side measure (``rfcx.process_group.run_local``): the model's training steps, the ranks
    starting each repeat together; returns (rank 0) each repeat's crops/s summed over the ranks."""
    cfg, model, opt = _model(cfg_name)
    batch = _step_batch(cfg.batch_size, n_mels, crop)
    _steps(model, opt, batch, 1)  # warm-up
    totals = []
    for _ in range(repeats):
        group.barrier("benchmark: the ranks start a repeat together")
        t0 = time.perf_counter()
        _steps(model, opt, batch, steps)
        rates = group.all_gather_object(steps * cfg.batch_size / (time.perf_counter() - t0), "benchmark: rates")
        totals.append(float(sum(rates)))
    return totals


def run(quick: bool, workdir: Path, sizes: dict | None = None) -> dict:
    size = {**(QUICK if quick else FULL), **(sizes or {})}
    workdir = Path(workdir)
    store = make_store(workdir, size["clips"], size["seconds"])
    fs = FeatureStore.open(store)
    cfg = get_config(size["config"])
    spec = cfg.backbones[0]
    params = fs.params
    boxes = pd.concat([fs.boxes("tp").assign(is_tp=True), fs.boxes("fp").assign(is_tp=False)], ignore_index=True)
    n_frames = {rid: fs.n_frames(rid) for rid in fs.ids("train")}
    crop = params.seconds_to_frames(spec.crop_seconds)
    b, n_batches = cfg.batch_size, size["batches"]

    def make_sampler(worker: int) -> CropSampler:
        return CropSampler(boxes, n_frames, params, crop, 0, seed=worker)

    cached = FeatureStore.open(store, cache_mb=cfg.store_cache_mb)  # training's store handle, warm after one pass

    def deliver(workers: int, augment: bool = False, cache: bool = False):
        aug = Augmenter(cfg.augment, cfg.mixup_alpha, torch.Generator().manual_seed(0)) if augment else None

        def go() -> float:
            crops = 0
            for x, target, mask, bins, label_boxes in crop_loader(
                cached if cache else store, make_sampler, b, n_batches, workers
            ):
                if aug is not None:
                    x, target, mask = aug(x, target, mask, 0, bins, label_boxes)
                crops += x.shape[0]
            return crops

        return go

    _, model, opt = _model(cfg.name)
    batch = _step_batch(b, params.n_mels, crop)

    def consume() -> float:
        _steps(model, opt, batch, size["steps"])
        return size["steps"] * b

    candidates = {
        loader_name(0): deliver(0),
        loader_name(1): deliver(1),
        loader_name(0, cache=True): deliver(0, cache=True),
        loader_name(0, True, True): deliver(0, True, True),
        MODEL: consume,
    }
    rates = interleaved(candidates, size["repeats"], warmup=True)
    rows = [row(name, r) for name, r in rates.items()]
    sec = section(
        "input",
        "Training input: crops delivered vs crops consumed",
        "crops/s",
        rows,
        baseline=MODEL,
        note=f"{len(n_frames)} synthetic clips of {size['seconds']:g} s, {len(boxes)} TP/FP boxes; "
        f"{spec.crop_seconds:g} s crops, batch {b}, {n_batches} batches per repeat; model "
        f"{spec.backbone} (config {cfg.name}, input pool {tuple(cfg.input_pool)}), "
        f"{size['steps']} steps per repeat; ratio = to what the model consumes.",
    )
    base = next(r for r in rows if r["name"] == MODEL)
    goals = []
    for name in (loader_name(0), loader_name(1), loader_name(0, cache=True), loader_name(0, True, True)):
        r = next(x for x in rows if x["name"] == name)
        goals.append(
            goal(
                f"{name} delivers >= 10x what the model consumes",
                r["ratio"],
                10.0,
                f"{r['median']:.0f} vs {base['median']:.1f} crops/s",
            )
        )
    sections = [sec]
    threads = thread_budget()
    if threads >= 2:  # the model's steps on one process with every thread vs one process per thread (cpu_processes)
        together = run_local(
            threads, consume_on_rank, cfg.name, params.n_mels, crop, size["steps"], size["repeats"], threads=1
        )
        one = row(f"1 process x {threads} threads", rates[MODEL])
        procs = row(PROCESSES.format(n=threads), together)
        sections.append(
            section(
                "processes",
                "Training steps on the CPU: one process vs one process per thread",
                "crops/s",
                [one, procs],
                baseline=one["name"],
                note=f"the `{cfg.name}` config's model, batch {b}, {size['steps']} steps per repeat "
                f"on pre-made tensors; the processes start each repeat together "
                f"(rfcx.process_group.run_local, gloo), their rates summed. `rfcx train` on "
                f"the CPU trains a round's members this way (cpu_processes).",
            )
        )
        goals.append(
            goal(
                f"{threads} one-thread processes train >= 1.2x the crops/s of one {threads}-thread process",
                procs["ratio"],
                1.2,
                f"{procs['median']:.0f} vs {one['median']:.0f} crops/s",
            )
        )
    return {
        "name": "training_input",
        "title": "3. Training input",
        "about": "Whether the data loader keeps the model fed: crops/s `rfcx.train.loader.crop_loader` delivers "
        "(round-0 sampling, num_workers 0 and 1, reading chunks or through the clip cache training uses, alone and "
        "with the augmentations) vs crops/s the "
        f"`{cfg.name}` config's model consumes (forward + backward + AdamW on pre-made tensors).",
        "params": {**size, "boxes": len(boxes), "backbone": spec.backbone},
        "sections": sections,
        "goals": goals,
        "notes": [],
    }


def main() -> None:
    module_main(run, __doc__.splitlines()[0], "rfcx-input-")


if __name__ == "__main__":
    main()
