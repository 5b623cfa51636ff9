"""Shared material of the engine tests: a tiny store, a run directory with tiny checkpoints and their exports,
and a briefly trained tiny model. Built once per session (the cache below also holds across test modules)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from rfcx.runs.directory import RunDir, member_name
from rfcx.train.config import ModelSpec, TrainConfig, get_config
from rfcx.train.models import build_classifier
from store import FeatureStore, build_store
from store.atomic import write_json_atomic
from tests.conftest import make_dataset

_CACHE: dict[str, Any] = {}


def cached(key: str, make: Callable[[], Any]) -> Any:
    """``make()`` once per session (on one torch thread, see :func:`one_thread`)."""
    if key not in _CACHE:
        with threads(1):
            _CACHE[key] = make()
    return _CACHE[key]


def tiny() -> tuple[TrainConfig, ModelSpec]:
    cfg = get_config("tiny")
    return cfg, cfg.backbones[0]


def lively(net: torch.nn.Module, seed: int, scale: float = 0.5) -> torch.nn.Module:
    """Random weights with a visible spread of logits: perturbed weights, batch-norm statistics calibrated on
    spectrogram-like noise, and a classifier scaled up (timm initialises it near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g) * (p.std() if p.numel() > 1 else 1.0))
        norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        net.train()
        for _ in range(3):
            net(-60.0 + 15.0 * torch.randn(8, 256, 188, generator=g))
        for m in norms:
            m.momentum = 0.1
        head = net.backbone.get_classifier()
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 3.0 / head.weight.shape[1] ** 0.5)
    return net.eval()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads here (2 OpenMP threads on a busy 2-core machine spin-wait badly)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_checkpoint(
    run: RunDir,
    k: int,
    cfg: TrainConfig,
    spec: ModelSpec,
    fold: int,
    net: torch.nn.Module,
    mel: dict,
    complete: bool = True,
) -> Path:
    path = run.checkpoint(k, spec, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": net.state_dict(),
            "config": cfg.to_dict(),
            "member": {"backbone": spec.backbone, "crop_seconds": spec.crop_seconds},
            "fold": fold,
            "round": k,
            "epoch": cfg.epochs,
            "complete": complete,
            "mel": mel,
        },
        path,
    )
    return path


def make_run(
    root: Path,
    mel: dict,
    nets: list[torch.nn.Module],
    k: int = 0,
    formats=("torchscript", "export"),
    complete: bool = True,
) -> RunDir:
    """A run directory whose round ``k`` holds one tiny member on ``len(nets)`` folds, exported."""
    from rfcx.train.export import export_round

    cfg, spec = tiny()
    run = RunDir(root)
    write_json_atomic(run.config_file, cfg.to_dict())
    for fold, net in enumerate(nets):
        write_checkpoint(run, k, cfg, spec, fold, net, mel)
    if formats:
        export_round(root, k, formats)
    if complete:
        write_json_atomic(run.complete_marker(k), {"round": k})
    return run


def store_fixture(base: Path) -> dict[str, Path]:
    """make_dataset (4 train, 3 test clips of 3 s; the sample submission lists the test ids in reverse order)."""

    def make() -> dict[str, Path]:
        data = make_dataset(base / "data", n_train=4, n_test=3, seconds=3.0)
        store = base / "store.zarr"
        build_store(data, store, backend="torch", device="cpu", progress=False)
        return {"data": data, "store": store}

    return cached("store", make)


def run_fixture(base: Path) -> dict[str, Any]:
    """Round 0 (complete) of two folds of the tiny model, exported as .ts and .pt2."""

    def make() -> dict[str, Any]:
        paths = store_fixture(base)
        mel = FeatureStore.open(paths["store"]).params.to_dict()
        cfg, spec = tiny()
        nets = [lively(build_classifier(cfg, spec), seed=fold) for fold in range(2)]
        run = make_run(base / "runs", mel, nets)
        return {**paths, "runs": run.root, "nets": nets, "member": member_name(spec)}

    return cached("run", make)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- a briefly trained tiny model -------------------------------------------------------------------------------


def _train(
    net: torch.nn.Module,
    mels: dict[str, np.ndarray],
    calls: pd.DataFrame,
    crop: int,
    fps: float,
    steps: int,
    seed: int = 0,
) -> float:
    """Crops (mostly around calls) with multi-hot labels of the calls they hold; AdamW; returns the last loss."""
    by_clip = {rid: g for rid, g in calls.groupby("recording_id")}
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    ids = list(mels)
    net.train()
    loss = torch.zeros(())
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(16):
            rid = ids[rng.integers(len(ids))]
            g = by_clip.get(rid)
            frames = mels[rid].shape[1]
            if g is not None and rng.random() < 0.8:
                c = g.iloc[rng.integers(len(g))]
                centre = rng.uniform(c.t_min, c.t_max) * fps
                start = int(np.clip(centre - rng.uniform(0.2, 0.8) * crop, 0, frames - crop))
            else:
                start = int(rng.integers(0, frames - crop))
            xs.append(mels[rid][:, start : start + crop])
            y = np.zeros(24, np.float32)
            if g is not None:
                t0, t1 = start / fps, (start + crop) / fps
                inside = g[(np.minimum(g.t_max, t1) - np.maximum(g.t_min, t0)) > 0.5 * (g.t_max - g.t_min)]
                y[inside.species_id.to_numpy()] = 1
            ys.append(y)
        logits = net(torch.from_numpy(np.stack(xs)))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(np.stack(ys)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def trained_fixture(base: Path, steps: int = 120) -> dict[str, Any]:
    """A synthetic data set (16 train, 8 test clips of 10 s), its store, and a tiny model trained for ``steps``
    steps on 2 s crops labelled from the synthetic call truth (every call, not only the sparse boxes)."""

    def make() -> dict[str, Any]:
        from rfcx.synth.dataset import synthesize

        data = base / "synth"
        synthesize(data, n_train=16, n_test=8, seconds=10.0, seed=3, progress=False)
        store = base / "synth.zarr"
        build_store(data, store, backend="torch", device="cpu", progress=False)
        fs = FeatureStore.open(store)
        cfg, spec = tiny()
        torch.manual_seed(0)
        net = build_classifier(cfg, spec)
        calls = pd.read_csv(data / "calls_truth.csv")
        mels = {rid: fs.mel(rid) for rid in fs.ids("train")}
        loss = _train(
            net,
            mels,
            calls[calls.split == "train"],
            fs.params.seconds_to_frames(spec.crop_seconds),
            fs.params.frames_per_second,
            steps,
        )
        net.eval()
        run = make_run(base / "trained_runs", fs.params.to_dict(), [net], formats=("torchscript",))
        return {"data": data, "store": store, "net": net, "runs": run.root, "final_loss": loss}

    return cached("trained", make)


@pytest.fixture(scope="session")
def engine_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached("base", lambda: tmp_path_factory.mktemp("engine"))


@pytest.fixture(scope="session")
def tiny_store(engine_base: Path) -> dict[str, Path]:
    return store_fixture(engine_base)


@pytest.fixture(scope="session")
def tiny_run(engine_base: Path) -> dict[str, Any]:
    return run_fixture(engine_base)


@pytest.fixture(scope="session")
def trained(engine_base: Path) -> dict[str, Any]:
    return trained_fixture(engine_base)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Engine tests run torch on one thread: fast and steady even when the 2 cores are shared with other work
    (two OpenMP threads on a busy 2-core machine are slower than one by more than 10x)."""
    with threads(1):
        yield


# -- clips without a store ----------------------------------------------------------------------------------------


class NoiseClips:
    """In-memory clips ``c0, c1, ...``: spectrogram-like noise seeded by the id, optionally slow to read."""

    def __init__(self, n: int, frames: int | Sequence[int] = 600, delay_s: float = 0.0) -> None:
        self.ids = [f"c{i}" for i in range(n)]
        lengths = [frames] * n if isinstance(frames, int) else list(frames)
        self.frames = dict(zip(self.ids, lengths))
        self.delay_s = delay_s

    def mel(self, recording_id: str) -> np.ndarray:
        import time

        time.sleep(self.delay_s)
        rng = np.random.default_rng(int(recording_id[1:]))
        return (-60.0 + 15.0 * rng.standard_normal((256, self.frames[recording_id]))).astype(np.float32)
