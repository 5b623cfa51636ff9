"""What one round of training holds open: the store, the run directory, the config, the device, the lock."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from rfcx.errors import InvalidInputError, NotFoundError
from rfcx.runs.directory import RunDir, open_run
from rfcx.train.config import EXECUTION_FIELDS, ModelSpec, TrainConfig
from rfcx.train.folds import assign_folds
from store import FeatureStore, MelParams
from store.atomic import write_json_atomic
from store.device import resolve_device

log = logging.getLogger(__name__)


@dataclass
class Context:
    cfg: TrainConfig
    store_path: str
    fs: FeatureStore
    runs: RunDir
    boxes: pd.DataFrame  # tp and fp boxes of stored train clips, with is_tp
    folds: dict[str, int]
    device: torch.device
    progress: bool = True
    truth: pd.DataFrame | None = None  # every call of the train clips (the oracle's labels)

    @property
    def grid_window_s(self) -> float:
        """Pseudo-label windows are as long as the shortest training crop."""
        return min(s.crop_seconds for s in self.cfg.backbones)

    def member_seed(self, k: int, spec: ModelSpec, fold: int) -> int:
        i = self.cfg.backbones.index(spec)
        return (self.cfg.seed * 1_000_003 + k * 10_007 + fold * 101 + i) % 2**31


def open_context(
    store: str,
    runs: str | Path,
    cfg: TrainConfig,
    device: str | None = None,
    progress: bool = True,
    writer: bool = True,
) -> Context:
    """Check the store and the run directory, write/verify the run's config and folds (``writer=False``: only
    read them, as the ranks other than 0 of a launch do once rank 0 has written them)."""
    fs = FeatureStore.open(store, cache_mb=cfg.store_cache_mb)
    fs.require_complete()
    if "train" not in fs.splits:
        raise InvalidInputError(f"{store}: the store has no train split (was DIR/train/ given to build-store?)")
    try:
        tp, fp = fs.boxes("tp"), fs.boxes("fp")
    except KeyError as exc:
        raise InvalidInputError(f"{store}: {exc.args[0]}") from None
    if tp.empty and fp.empty:
        raise InvalidInputError(f"{store}: the store has no TP/FP boxes to learn from (train_tp.csv / train_fp.csv)")
    if tp.empty and not cfg.oracle:
        raise InvalidInputError(
            f"{store}: the store has no TP box ({len(fp)} FP): round 0 learns from the TP boxes, so "
            f"there is nothing to train on (was train_tp.csv empty, or were all its rows rejected? "
            f"`rfcx info --store {store}` lists the rejected rows)"
        )
    boxes = pd.concat([tp.assign(is_tp=True), fp.assign(is_tp=False)], ignore_index=True)
    run = open_run(runs, pull="active")  # a URL is mirrored in a local cache folder (rfcx.runs.mirror)
    # everything is checked before anything is written: a refused command leaves the run directory as it was
    fresh = _check_run_config(run, runs, cfg)
    folds_file = run.root / "folds.json"
    known = {} if fresh or not folds_file.is_file() else json.loads(folds_file.read_text())
    store_record = {"store": _store_text(store), "mel": fs.params.to_dict()}
    if not fresh:
        check_same_store(run, runs, store, fs, known)
    folds = assign_folds(fs.ids("train"), boxes, cfg.folds, cfg.seed)
    folds = {rid: known.get(rid, f) for rid, f in folds.items()}  # clips added later get a fold of their own
    dev = resolve_device(device or cfg.device)
    truth = None
    if cfg.oracle:
        truth = fs.calls("train")
        if truth is None or truth.empty:
            raise InvalidInputError(
                f"{store}: --oracle learns from every call's truth, and the store has none (build it "
                f"from a data folder with calls_truth.csv, as rfcx synth writes)"
            )
    if not writer:
        if not run.config_file.is_file():
            raise NotFoundError(f"{run.config_file}: missing (rank 0 writes it before the other ranks start)")
    else:
        if fresh:
            write_json_atomic(run.config_file, cfg.to_dict())
        if fresh or not run.store_file.is_file():
            write_json_atomic(run.store_file, store_record)
        write_json_atomic(folds_file, folds)
        run.sync()
    return Context(cfg, str(store), fs, run, boxes, folds, dev, progress, truth)


def _check_run_config(run: RunDir, runs: str | Path, cfg: TrainConfig) -> bool:
    """Whether the run directory is new (its config is to be written); a run made with another config is
    refused, naming the differences. A run directory that holds a config but no round yet (left by a refused
    command of an older version) takes the new config: nothing was trained with the old one."""
    if not run.config_file.is_file():
        return True
    stored = TrainConfig.from_dict(json.loads(run.config_file.read_text()))
    diff = {k: v for k, v in stored.diff(cfg).items() if k not in EXECUTION_FIELDS}
    if not diff:
        return False
    listed = ", ".join(f"{k}: {a!r} (run) vs {b!r} (asked)" for k, a, b in ((k, *v) for k, v in diff.items()))
    if not run.rounds():
        log.warning("%s: the run directory has no round yet: its config is replaced (%s)", runs, listed)
        return True
    raise InvalidInputError(
        f"{runs}: this run directory was made with another config ({listed}); "
        f"use a new --runs directory, or the run's own config"
    )


def _store_text(store: str | Path) -> str:
    """The store as a run records it: a local path made absolute, a URL as given."""
    text = str(store)
    return (
        text if "://" in text and not text.startswith("file://") else str(Path(text.removeprefix("file://")).resolve())
    )


def check_same_store(run: RunDir, runs: str | Path, store: str | Path, fs: FeatureStore, known: dict[str, int]) -> None:
    """A run resumes only on a store holding every train recording it has given a fold (``folds.json``; the
    store may hold more: clips added later) with the log-mel features it was trained on; else a ValueError
    names both stores (the run's own from its ``store.json``, where it has one)."""
    record = json.loads(run.store_file.read_text()) if run.store_file.is_file() else {}
    made_on = f"the store {record['store']}" if record.get("store") else "another store (the run does not record which)"
    hint = (
        f"resume it with --store {record['store']}"
        if record.get("store")
        else "resume it with the store it was trained on"
    ) + ", or use a new --runs directory"
    mel = record.get("mel")
    if mel is not None and MelParams.from_dict(mel) != fs.params:
        diff = {k: (v, fs.params.to_dict()[k]) for k, v in mel.items() if fs.params.to_dict().get(k) != v}
        raise InvalidInputError(
            f"{runs}: this run was trained on {made_on}, and {store} holds other log-mel features "
            f"({', '.join(f'{k}: {a} (run) vs {b}' for k, (a, b) in diff.items())}): {hint}"
        )
    ids = set(fs.ids("train"))
    missing = sorted(rid for rid in known if rid not in ids)
    if missing:
        raise InvalidInputError(
            f"{runs}: this run was trained on {made_on}, and {store} lacks {len(missing)} of its "
            f"{len(known)} train recordings (e.g. {', '.join(missing[:3])}): {hint}"
        )
