"""``rfcx train --round N``: the bootstrap round and the pseudo-label rounds, fold by fold, resumable.

Round k trains every ensemble member (backbone x crop length) on every fold from scratch, for a fixed number
of epochs (no checkpoint picking), then scores the held-out clips (out-of-fold) and the test clips with the
0.5 s sliding window. The out-of-fold windows, averaged over the round's members, are the soft labels of round
k+1. A checkpoint is written after every epoch; an interrupted fold resumes from it, a complete fold or round
is skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from rfcx import report, teachers, templates, yardsticks
from engine.postprocess import apply_prior
from rfcx.augment import Augmenter
from rfcx.calibration import class_priors
from rfcx.config import EXECUTION_FIELDS, ModelSpec, TrainConfig, get_config
from rfcx.folds import assign_folds
from rfcx.loader import crop_loader
from rfcx.losses import masked_bce
from rfcx.metrics import lwlrap
from rfcx.models import build_classifier, check_pretrained
from rfcx.process_group import SINGLE, DistributedError, ProcessGroup, run_local, thread_budget
from rfcx.pseudo import predict_windows, read_pseudo_labels, rescale, stack, tp_windows, unstack, write_pseudo_labels
from rfcx.runs import RunDir, member_name, open_run, write_json_atomic
from rfcx.sampling import N_CLASSES, CropSampler, PseudoLabels
from store import FeatureStore, MelParams
from store.lock import NoLock, writer_lock

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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available; ``gpu`` is an alias of ``cuda``."""
    name = "cuda" if name == "gpu" else name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but no CUDA GPU is visible")
    return torch.device(name)


def open_context(store: str, runs: str | Path, cfg: TrainConfig, device: str | None = None,
                 progress: bool = True, writer: bool = True) -> Context:
    """Check the store and the run directory, write/verify the run's config and folds (``writer=False``: only
    read them, as the ranks other than 0 of a launch do once rank 0 has written them)."""
    fs = FeatureStore.open(store, cache_mb=cfg.store_cache_mb)
    if "train" not in fs.splits:
        raise ValueError(f"{store}: the store has no train split (was DIR/train/ given to build-store?)")
    try:
        tp, fp = fs.boxes("tp"), fs.boxes("fp")
    except KeyError as exc:
        raise ValueError(f"{store}: {exc.args[0]}") from None
    if tp.empty and fp.empty:
        raise ValueError(f"{store}: the store has no TP/FP boxes to learn from (train_tp.csv / train_fp.csv)")
    if tp.empty and not cfg.oracle:
        raise ValueError(f"{store}: the store has no TP box ({len(fp)} FP): round 0 learns from the TP boxes, so "
                         f"there is nothing to train on (was train_tp.csv empty, or were all its rows rejected? "
                         f"`rfcx info --store {store}` lists the rejected rows)")
    boxes = pd.concat([tp.assign(is_tp=True), fp.assign(is_tp=False)], ignore_index=True)
    run = open_run(runs, pull="active")  # a URL is mirrored in a local cache folder (rfcx.run_mirror)
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
            raise ValueError(f"{store}: --oracle learns from every call's truth, and the store has none (build it "
                             f"from a data folder with calls_truth.csv, as rfcx synth writes)")
    if not writer:
        if not run.config_file.is_file():
            raise FileNotFoundError(f"{run.config_file}: missing (rank 0 writes it before the other ranks start)")
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
    raise ValueError(f"{runs}: this run directory was made with another config ({listed}); "
                     f"use a new --runs directory, or the run's own config")


def _store_text(store: str | Path) -> str:
    """The store as a run records it: a local path made absolute, a URL as given."""
    text = str(store)
    return text if "://" in text and not text.startswith("file://") else str(Path(text.removeprefix("file://")).resolve())


def check_same_store(run: RunDir, runs: str | Path, store: str | Path, fs: FeatureStore, known: dict[str, int]) -> None:
    """A run resumes only on a store holding every train recording it has given a fold (``folds.json``; the
    store may hold more: clips added later) with the log-mel features it was trained on; else a ValueError
    names both stores (the run's own from its ``store.json``, where it has one)."""
    record = json.loads(run.store_file.read_text()) if run.store_file.is_file() else {}
    made_on = f"the store {record['store']}" if record.get("store") else "another store (the run does not record which)"
    hint = (f"resume it with --store {record['store']}" if record.get("store") else
            "resume it with the store it was trained on") + ", or use a new --runs directory"
    mel = record.get("mel")
    if mel is not None and MelParams.from_dict(mel) != fs.params:
        diff = {k: (v, fs.params.to_dict()[k]) for k, v in mel.items() if fs.params.to_dict().get(k) != v}
        raise ValueError(f"{runs}: this run was trained on {made_on}, and {store} holds other log-mel features "
                         f"({', '.join(f'{k}: {a} (run) vs {b}' for k, (a, b) in diff.items())}): {hint}")
    ids = set(fs.ids("train"))
    missing = sorted(rid for rid in known if rid not in ids)
    if missing:
        raise ValueError(f"{runs}: this run was trained on {made_on}, and {store} lacks {len(missing)} of its "
                         f"{len(known)} train recordings (e.g. {', '.join(missing[:3])}): {hint}")


# -- one member on one fold ------------------------------------------------------------------------------------

def _lr_lambda(cfg: TrainConfig, total_steps: int):
    warm = cfg.warmup_epochs * cfg.batches_per_epoch

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:  # noqa: ANN001 (an iterable of parameters)
    """The config's ``optimizer`` with its ``lr`` and ``weight_decay``: ``adamw`` (AdamW), or ``sgd`` (SGD with
    momentum 0.9 and Nesterov; ``weight_decay`` as L2)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer = {cfg.optimizer!r} is not one of ['adamw', 'sgd']")


def _save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def uses_ddp(cfg: TrainConfig, group: ProcessGroup) -> bool:
    """``distribute = "ddp"`` under a launch of several processes (one process: no DDP wrapper, as "folds")."""
    return cfg.distribute == "ddp" and group.distributed


def check_ddp_batch(cfg: TrainConfig, group: ProcessGroup) -> None:
    """DDP keeps the global batch at ``batch_size``: it must split evenly over the ranks."""
    if uses_ddp(cfg, group) and cfg.batch_size % group.world:
        raise ValueError(f"distribute = 'ddp' splits each batch of batch_size = {cfg.batch_size} crops over the "
                         f"{group.world} ranks, which needs a batch_size divisible by {group.world} (e.g. "
                         f"{max(group.world, cfg.batch_size // group.world * group.world)}; set it with --set "
                         f"batch_size=N), or use distribute = 'folds'")


def _rank_seed(seed: int, rank: int) -> int:
    """Rank r's seed of a DDP member: rank 0 keeps ``seed`` (a launch of one process is unchanged)."""
    return seed if rank == 0 else (seed + 1_000_000_007 * rank) % 2**62


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, bytes): equal on every rank of a DDP member."""
    import hashlib

    h = hashlib.sha256()
    for name, t in state_dict.items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _broadcast_buffers(net: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: DDP syncs them before each forward, so
    after an epoch's last step each rank holds its own; the checkpoint (rank 0's) is what every rank keeps."""
    import torch.distributed as dist

    for buf in net.buffers():
        dist.broadcast(buf.data, src=0)


def train_member(ctx: Context, k: int, spec: ModelSpec, fold: int, pseudo: PseudoLabels | None,
                 group: ProcessGroup = SINGLE) -> dict:
    """Train (or resume, or skip) one member on one fold; returns its checkpoint dict.

    With ``distribute = "ddp"`` under a launch of several processes every rank calls this for the same member:
    the model is wrapped in DistributedDataParallel, each rank draws ``batch_size // world`` crops per step
    (sampler and augmentations seeded by the member, the epoch and the rank), and rank 0 alone writes the
    checkpoints (every rank resumes from the same one).
    """
    cfg, runs = ctx.cfg, ctx.runs
    ddp = uses_ddp(cfg, group)
    rank = group.rank if ddp else 0
    batch = cfg.batch_size // group.world if ddp else cfg.batch_size
    path = runs.checkpoint(k, spec, fold)
    seed = ctx.member_seed(k, spec, fold)
    torch.manual_seed(seed)
    net = build_classifier(cfg, spec, pretrained=not path.is_file()).to(ctx.device)  # resumed: the checkpoint's
    if cfg.channels_last:
        net.backbone.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, net.parameters())
    epochs = cfg.epochs_of(k)
    total = epochs * cfg.batches_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    ckpt = {"epoch": 0, "history": [], "complete": False}
    resumed = path.is_file()
    if resumed:
        ckpt = torch.load(path, map_location=ctx.device, weights_only=False)
    if ddp:  # every rank must start from the same checkpoint (the run directory at the same path everywhere)
        seen = group.all_gather_object((ckpt["epoch"], bool(ckpt.get("complete"))), f"{path}: resume point")
        if len(set(seen)) > 1:
            raise DistributedError(f"{group.label}: the ranks see different checkpoints of {path} (epoch, complete "
                                   f"by rank: {seen}): every rank must see the run directory at the same path")
    if ckpt.get("complete") or ckpt["epoch"] >= epochs:
        return ckpt
    if resumed:
        net.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        log.info("resuming %s from epoch %d", path, ckpt["epoch"])
        was = ckpt.get("ddp_world", 1)
        if ddp and was != group.world:
            log.warning("%s: epochs 1-%d ran on %d process(es), the rest run on %d: the same global batch, other "
                        "random crops", path, ckpt["epoch"], was, group.world)
    model: torch.nn.Module = net
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[ctx.device.index if ctx.device.index is not None else
                                                         torch.cuda.current_device()]
                                        if ctx.device.type == "cuda" else None)

    train_ids = {rid: ctx.fs.n_frames(rid) for rid, f in ctx.folds.items() if f != fold}
    crop = ctx.fs.params.seconds_to_frames(spec.crop_seconds)
    augment = Augmenter(cfg.augment, cfg.mixup_alpha, torch.Generator().manual_seed(_rank_seed(seed, rank)))
    use_amp = ctx.device.type == "cuda"
    history = list(ckpt["history"])
    name = f"round {k} {member_name(spec)} fold {fold}"
    bar = tqdm(total=total, initial=ckpt["epoch"] * cfg.batches_per_epoch, desc=name, unit="batch",
               disable=not ctx.progress, dynamic_ncols=True, leave=False)
    for epoch in range(ckpt["epoch"], epochs):
        epoch_seed = seed + 7919 * (epoch + 1)
        augment.generator.manual_seed(_rank_seed(epoch_seed, rank))  # every epoch is seeded: a resumed fold
        torch.manual_seed(_rank_seed(epoch_seed, rank))  # repeats it exactly

        def make_sampler(worker: int, epoch_seed: int = epoch_seed) -> CropSampler:
            return CropSampler(ctx.boxes, train_ids, ctx.fs.params, crop, k, pseudo, cfg.tp_fp_sampling, cfg.tp_fp_p,
                               seed=_rank_seed(epoch_seed * 31 + worker, rank), truth=ctx.truth,
                               unlabelled_weight=cfg.unlabelled_weight, random_crop_p=cfg.random_crop_p,
                               pseudo_negative_weight=cfg.pseudo_negative_weight, tp_box_share=cfg.tp_box_share)

        model.train()
        losses, wait, t_epoch = [], 0.0, time.perf_counter()
        t_wait = time.perf_counter()
        for x, target, mask, bins, label_boxes in crop_loader(ctx.fs, make_sampler, batch, cfg.batches_per_epoch,
                                                              cfg.num_workers):
            wait += time.perf_counter() - t_wait
            k_aug = 1 if cfg.oracle else k  # the oracle's labels are whole (soft mixup, SpecAugment), as rounds >= 1
            # the augmentations run on the training device, after the copy (the box bins stay on the CPU)
            x = x.to(ctx.device, non_blocking=True)
            target, mask = target.to(ctx.device, non_blocking=True), mask.to(ctx.device, non_blocking=True)
            x, target, mask = augment(x, target, mask, k_aug, bins if k_aug == 0 else None,
                                      label_boxes if k_aug == 0 else None)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
            loss = masked_bce(logits.float(), target, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            elapsed = time.perf_counter() - t_epoch
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{np.mean(losses[-20:]):.4f}",
                            crops_s=f"{len(losses) * cfg.batch_size / elapsed:.0f}")
            t_wait = time.perf_counter()
        loss = float(np.mean(losses))
        extra = {}
        if ddp:  # the loss over every rank's crops; a digest of each rank's weights (all equal)
            _broadcast_buffers(net)
            seen = group.all_gather_object((loss, weights_digest(net.state_dict())), f"{name} epoch {epoch + 1}")
            loss = float(np.mean([s[0] for s in seen]))
            if len({s[1] for s in seen}) > 1:  # DDP keeps them equal; say so if a rank drifted (rank 0's is kept)
                log.warning("%s epoch %d: the ranks' weights differ (sha256 by rank: %s)", name, epoch + 1,
                            [s[1][:12] for s in seen])
            extra = {"ddp": {"world": group.world, "weights_sha256": [s[1] for s in seen]}}
        seconds = time.perf_counter() - t_epoch
        history.append({"epoch": epoch + 1, "loss": loss, "lr": sched.get_last_lr()[0],
                        "crops_per_s": len(losses) * cfg.batch_size / seconds, "data_wait_s": wait,
                        "seconds": seconds, **extra})
        ckpt = {"state_dict": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch + 1, "history": history, "complete": False, "config": cfg.to_dict(),
                "member": {"backbone": spec.backbone, "crop_seconds": spec.crop_seconds}, "fold": fold, "round": k,
                "mel": ctx.fs.params.to_dict()}
        if ddp:
            ckpt["ddp_world"] = group.world
        if group.is_main or not ddp:
            _save(ckpt, path)
            runs.sync()  # a run at a URL: the checkpoint reaches it, an interrupted fold resumes from there
    bar.close()
    return ckpt


def predict_member(ctx: Context, k: int, spec: ModelSpec, fold: int, ckpt: dict) -> None:
    """Score the fold's held-out train clips and every test clip; then mark the checkpoint complete."""
    path = ctx.runs.predictions(k, spec, fold)
    if not (ckpt.get("complete") and path.is_file()):
        model = build_classifier(ctx.cfg, spec).to(ctx.device)
        model.load_state_dict(ckpt["state_dict"])
        held_out = sorted(rid for rid, f in ctx.folds.items() if f == fold)
        test = ctx.fs.ids("test") if "test" in ctx.fs.splits else []
        kw = dict(grid_window_s=ctx.grid_window_s, hop_s=ctx.cfg.pseudo_hop_seconds, crop_s=spec.crop_seconds,
                  device=ctx.device, mode=ctx.cfg.score_mode)
        oof_ids, oof_off, oof = stack(predict_windows(model, ctx.fs, held_out, **kw))
        test_ids, test_off, tst = stack(predict_windows(model, ctx.fs, test, **kw))
        extra = {}
        if ctx.cfg.pseudo_teacher == "ensemble":  # the clips it trained on too: the next round's teacher
            trained_on = sorted(rid for rid, f in ctx.folds.items() if f != fold)
            ids, off, scores = stack(predict_windows(model, ctx.fs, trained_on, **kw))
            extra = dict(infold_ids=np.array(ids), infold_offsets=off, infold_scores=scores)
        tmp = path.with_name(f".tmp.{path.name}")
        np.savez(tmp, oof_ids=np.array(oof_ids), oof_offsets=oof_off, oof_scores=oof, test_ids=np.array(test_ids),
                 test_offsets=test_off, test_scores=tst, **extra)
        os.replace(tmp, path)
        ckpt["complete"] = True
        _save(ckpt, ctx.runs.checkpoint(k, spec, fold))
        ctx.runs.sync()


def load_predictions(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A member's (out-of-fold, test) window scores."""
    with np.load(path) as z:
        return (unstack(z["oof_ids"].tolist(), z["oof_offsets"], z["oof_scores"]),
                unstack(z["test_ids"].tolist(), z["test_offsets"], z["test_scores"]))


def load_infold(path: Path) -> dict[str, np.ndarray]:
    """A member's window scores of the clips it trained on (``pseudo_teacher = "ensemble"``; {} otherwise)."""
    with np.load(path) as z:
        if "infold_ids" not in z.files:
            return {}
        return unstack(z["infold_ids"].tolist(), z["infold_offsets"], z["infold_scores"])


# -- the round ------------------------------------------------------------------------------------------------

def box_metrics(ctx: Context, oof: dict[str, np.ndarray]) -> dict:
    """Held-out signals from the out-of-fold windows: LWLRAP on the windows holding TP boxes (truth: their TP
    species; every class competes), and the AUC of the box's own species score, TP boxes vs FP boxes."""
    hop, win = ctx.cfg.pseudo_hop_seconds, ctx.grid_window_s
    rows, truths, tp_scores, fp_scores = [], [], [], []
    for rid, g in ctx.boxes.groupby("recording_id"):
        if rid not in oof:
            continue
        windows = oof[rid]
        centres = np.arange(len(windows)) * hop + win / 2
        for box in g.itertuples():
            w = int(np.argmin(np.abs(centres - (box.t_min + box.t_max) / 2)))
            (tp_scores if box.is_tp else fp_scores).append(windows[w, box.species_id])
            if box.is_tp:
                truth = np.zeros(N_CLASSES, dtype=np.float32)
                c0, c1 = centres[w] - win / 2, centres[w] + win / 2
                inside = g[g.is_tp & (np.minimum(g.t_max, c1) - np.maximum(g.t_min, c0) > 0)]
                truth[inside.species_id.to_numpy()] = 1
                rows.append(windows[w])
                truths.append(truth)
    out = {"oof_lwlrap": float(lwlrap(np.array(truths), np.array(rows))) if rows else None,
           "oof_box_auc": teachers.auc(np.array(tp_scores), np.array(fp_scores)),
           "oof_clip_lwlrap": oof_clip_lwlrap(ctx.boxes, oof)}
    return out


def oof_clip_lwlrap(boxes: pd.DataFrame, oof: dict[str, np.ndarray]) -> float | None:
    """LWLRAP of the out-of-fold clip scores (best window) of the train clips holding TP boxes, their TP species
    as the positives: whole-clip ranking, as the test metric scores it, from the labels alone (species that call
    unlabelled count against a round as the test set's absent ones do, the same for every round)."""
    tp = boxes[boxes.is_tp & boxes.recording_id.isin(oof)]
    ids = sorted(tp.recording_id.unique())
    if not ids:
        return None
    row = {rid: i for i, rid in enumerate(ids)}
    truth = np.zeros((len(ids), N_CLASSES), dtype=np.float32)
    truth[[row[r] for r in tp.recording_id], tp.species_id.to_numpy(dtype=np.int64)] = 1
    return float(lwlrap(truth, np.stack([oof[rid].max(axis=0) for rid in ids])))


def oof_prior(ctx: Context, oof: dict[str, np.ndarray]) -> dict:
    """Each species' share of clips, estimated from the round's out-of-fold clip scores (best window) read
    against the clips holding its TP boxes (rfcx.calibration.class_priors): the prior of ``--postprocess prior``."""
    ids = sorted(oof)
    clip = np.stack([oof[rid].max(axis=0) for rid in ids]) if ids else np.zeros((0, N_CLASSES))
    labelled = np.zeros(clip.shape, dtype=bool)
    row = {rid: i for i, rid in enumerate(ids)}
    tp = ctx.boxes[ctx.boxes.is_tp & ctx.boxes.recording_id.isin(row)]
    labelled[[row[r] for r in tp.recording_id], tp.species_id.to_numpy(dtype=np.int64)] = True
    prior, estimated = class_priors(clip, labelled)
    return {"prior": prior.tolist(), "estimated": estimated.tolist(), "clips": len(ids),
            "method": "out-of-fold clip scores against the TP-labelled clips (rfcx.calibration)"}


def freq_channel_check(ctx: Context, k: int, spec: ModelSpec) -> dict | None:
    """The seed discussion's check: masked BCE on held-out box crops, FreqConv channel as is vs zeros."""
    if not ctx.cfg.freq_channel:
        return None
    crop = ctx.fs.params.seconds_to_frames(spec.crop_seconds)
    losses = {"loss": [], "loss_zeroed_freq_channel": []}
    for fold in range(ctx.cfg.folds):
        ckpt = torch.load(ctx.runs.checkpoint(k, spec, fold), map_location=ctx.device, weights_only=False)
        model = build_classifier(ctx.cfg, spec).to(ctx.device).eval()
        model.load_state_dict(ckpt["state_dict"])
        held = {rid: ctx.fs.n_frames(rid) for rid, f in ctx.folds.items() if f == fold}
        try:
            sampler = CropSampler(ctx.boxes, held, ctx.fs.params, crop, 0, seed=fold)
        except ValueError:
            continue
        b = sampler.sample(min(128, 2 * len(sampler.boxes)))
        x = torch.from_numpy(ctx.fs.crops(list(zip(b.recording_ids, b.starts.tolist(), [crop] * len(b.starts)))))
        x, target, mask = x.to(ctx.device), torch.from_numpy(b.target).to(ctx.device), torch.from_numpy(b.mask).to(ctx.device)
        with torch.inference_mode():
            for zero, key in ((False, "loss"), (True, "loss_zeroed_freq_channel")):
                model.zero_freq_channel = zero
                losses[key].append(float(masked_bce(model(x).float(), target, mask)))
    if not losses["loss"]:
        return None
    return {key: float(np.mean(v)) for key, v in losses.items()}


def finish_round(ctx: Context, k: int, started: float, export_formats: tuple[str, ...] = ("torchscript", "export")) -> dict:
    """Pseudo labels for round k+1, metrics, plots, exported models; then the round's complete marker."""
    cfg, runs = ctx.cfg, ctx.runs
    oof_sum: dict[str, np.ndarray] = {}
    oof_n: dict[str, int] = {}
    teach_sum: dict[str, np.ndarray] = {}  # pseudo_teacher "ensemble": the members that trained on the clip
    teach_n: dict[str, int] = {}
    test_clip: dict[str, list[np.ndarray]] = {}
    members: dict[str, list[dict]] = {}
    for spec in cfg.backbones:
        for fold in range(cfg.folds):
            oof, test = load_predictions(runs.predictions(k, spec, fold))
            for rid, s in oof.items():
                oof_sum[rid] = oof_sum.get(rid, 0) + s
                oof_n[rid] = oof_n.get(rid, 0) + 1
            if cfg.pseudo_teacher == "ensemble":
                for rid, s in load_infold(runs.predictions(k, spec, fold)).items():
                    teach_sum[rid] = teach_sum.get(rid, 0) + s
                    teach_n[rid] = teach_n.get(rid, 0) + 1
            for rid, s in test.items():
                test_clip.setdefault(rid, []).append(s.max(axis=0))
            ckpt = torch.load(runs.checkpoint(k, spec, fold), map_location="cpu", weights_only=False)
            members[f"{member_name(spec)}_fold{fold}"] = ckpt["history"]
    oof = {rid: oof_sum[rid] / oof_n[rid] for rid in oof_sum}
    teacher = {rid: (oof_sum[rid] + teach_sum.get(rid, 0)) / (oof_n[rid] + teach_n.get(rid, 0)) for rid in oof_sum}
    write_pseudo_labels(runs.pseudo_labels(k), teacher, ctx.grid_window_s, cfg.pseudo_hop_seconds)

    metrics: dict = {"round": k, "config": cfg.name, **box_metrics(ctx, oof), "oof_tp_auc": oof_tp_auc(ctx, oof)}
    prior = oof_prior(ctx, oof)
    write_json_atomic(runs.round_dir(k) / "prior.json", prior)
    truth = ctx.fs.truth("test") if hasattr(ctx.fs, "truth") else None
    metrics["test_lwlrap"] = None
    if truth is not None and test_clip:
        ids = [rid for rid in truth.index if rid in test_clip]
        scores = np.stack([np.mean(test_clip[rid], axis=0) for rid in ids])
        metrics["test_lwlrap"] = float(lwlrap(truth.loc[ids].to_numpy(), scores))
        metrics["test_lwlrap_prior"] = float(lwlrap(truth.loc[ids].to_numpy(),
                                                    apply_prior(scores, np.asarray(prior["prior"]))))
        oracle = None if cfg.oracle else yardsticks.oracle_metrics(runs.root)
        oracle_score = oracle.get("test_lwlrap") if oracle else None
        prior = yardsticks.tp_prior(ctx.fs.boxes("tp"), ctx.fs.ids("train"))
        metrics["yardsticks"] = yardsticks.yardsticks(truth.loc[ids].to_numpy(), prior, oracle_score)
        if k > 0 and runs.metrics(0).is_file():
            bootstrap = json.loads(runs.metrics(0).read_text()).get("test_lwlrap")
            metrics["gap_closed"] = yardsticks.gap_closed(metrics["test_lwlrap"], bootstrap, oracle_score)
            together = rounds_test_clips(ctx, k, test_clip)  # what `rfcx infer --round all` scores
            if together is not None:
                metrics["test_lwlrap_rounds"] = float(lwlrap(truth.loc[ids].to_numpy(),
                                                             np.stack([together[rid] for rid in ids])))
                metrics["gap_closed_rounds"] = yardsticks.gap_closed(metrics["test_lwlrap_rounds"], bootstrap,
                                                                     oracle_score)
    metrics["freq_channel_check"] = freq_channel_check(ctx, k, cfg.backbones[0])
    metrics["members"] = members
    metrics["train_seconds"] = time.perf_counter() - started
    write_json_atomic(runs.metrics(k), metrics)
    report.plot_round(runs, k)
    if export_formats:
        from rfcx.exporting import export_round

        export_round(runs.root, k, export_formats)
    write_json_atomic(runs.complete_marker(k), {"round": k, "finished": time.time()})
    report.plot_rounds(runs)
    return metrics


def train_rounds(store: str, runs: str | Path, config: str | TrainConfig = "cpu", until_round: int = 0,
                 folds: int | None = None, device: str | None = None, progress: bool = True,
                 until_converged: bool = False, echo=print,
                 export_formats: tuple[str, ...] = ("torchscript", "export"),
                 group: ProcessGroup = SINGLE, oracle: bool = False) -> list[dict]:
    """Run rounds 0..``until_round`` (skipping complete ones); returns each round's metrics.

    Each finished round's models are exported in ``export_formats`` for the inference engine.
    With a ``group`` of many ranks (torchrun) and ``distribute = "folds"``, member i of a round (backbones x
    folds, in that order) is trained and scored by rank i % world; once all are, rank 0 writes the round's
    pseudo labels, metrics, plots, exports and complete marker, and every rank goes on to the next round with
    the same metrics. Each member is seeded by itself (:meth:`Context.member_seed`), so the results are those
    of one process. With ``distribute = "ddp"`` every rank trains every member together (DistributedDataParallel,
    :func:`train_member`) and rank 0 scores it while the others wait.
    Outside torchrun, on the CPU, ``cfg.cpu_processes`` local processes share the members the same way
    (:func:`cpu_processes`, :func:`rfcx.process_group.run_local`); ``echo`` must then pickle (else ``print``).
    """
    if until_round < 0:
        raise ValueError(f"--round must be 0 or more (rounds 0..N are run), got {until_round}")
    cfg = get_config(config) if isinstance(config, str) else config
    if folds is not None:
        cfg = cfg.replace(folds=folds)
    if oracle:  # the ceiling: the same config on every call's truth, one round, in RUNS/oracle
        cfg, runs, until_round = cfg.replace(oracle=True), oracle_runs(runs), 0
    check_ddp_batch(cfg, group)
    check_pretrained(cfg)  # before any training: pretrained = "imagenet" offline, a missing or unfitting file
    nproc, threads = cpu_processes(cfg, device, group)
    if nproc > 1:  # members side by side on the CPU, a process each (rank 0 prints, writes and returns)
        return run_local(nproc, _train_rank, store, runs, cfg, until_round, device, progress, until_converged,
                         _picklable_echo(echo), export_formats, threads=threads)
    # one writer per run directory (a local one): rank 0 holds its lock to the end, a second run is refused
    with writer_lock(runs, "run directory") if group.is_main else NoLock():
        return _train_rounds(store, runs, cfg, until_round, device, progress, until_converged, echo, export_formats,
                             group)


def cpu_processes(cfg: TrainConfig, device: str | None, group: ProcessGroup = SINGLE) -> tuple[int, int]:
    """(processes, threads each) that train a round's members on this machine: ``cfg.cpu_processes`` (0: one per
    thread torch has, :func:`thread_budget`) capped by the member count, when training on the CPU with
    ``distribute = "folds"`` outside torchrun; (1, threads) otherwise."""
    budget = thread_budget()
    members = len(cfg.backbones) * cfg.folds
    if (group.distributed or cfg.cpu_processes == 1 or cfg.distribute != "folds"
            or resolve_device(device or cfg.device).type != "cpu"):
        return 1, budget
    nproc = max(1, min(cfg.cpu_processes or budget, members))
    return nproc, max(1, budget // nproc)


def _picklable_echo(echo):  # noqa: ANN001, ANN202 (a print-like callable)
    """``echo`` where it can travel to a spawned process (a module-level function), else ``print``."""
    import pickle

    try:
        pickle.dumps(echo)
        return echo
    except Exception:  # noqa: BLE001 (lambdas, closures, bound methods of unpicklable objects)
        return print


def _train_rank(group: ProcessGroup, store: str, runs: str | Path, cfg: TrainConfig, until_round: int,
                device: str | None, progress: bool, until_converged: bool, echo,  # noqa: ANN001
                export_formats: tuple[str, ...]) -> list[dict]:
    """One rank of :func:`train_rounds` under :func:`rfcx.process_group.run_local`."""
    return train_rounds(store, runs, cfg, until_round, device=device, progress=progress,
                        until_converged=until_converged, echo=echo, export_formats=export_formats, group=group)


def _train_rounds(store: str, runs: str | Path, cfg: TrainConfig, until_round: int, device: str | None,
                  progress: bool, until_converged: bool, echo, export_formats: tuple[str, ...],
                  group: ProcessGroup) -> list[dict]:
    ddp = uses_ddp(cfg, group)
    if not group.is_main:
        echo = _quiet
    ctx = open_context(store, runs, cfg, device, progress and group.is_main) if group.is_main else None
    group.barrier("train: rank 0 checks the run directory and writes its config and folds")
    if ctx is None:
        ctx = open_context(store, runs, cfg, device, False, writer=False)
    results: list[dict] = []

    for k in range(until_round + 1):
        if ctx.runs.is_complete(k):
            metrics = json.loads(ctx.runs.metrics(k).read_text())
            echo(f"round {k}: complete, skipped ({_summary(metrics)})")
        else:
            started = time.perf_counter()
            pseudo = None
            if k > 0:
                ctx.runs.fetch(ctx.runs.pseudo_labels(k - 1))  # a run at a URL: the labels rank 0 wrote elsewhere
                pseudo = rescale(read_pseudo_labels(ctx.runs.pseudo_labels(k - 1)), ctx.cfg.pseudo_rescale,
                                 ctx.cfg.pseudo_quantiles, ctx.boxes)
                if ctx.cfg.pseudo_templates:
                    pseudo = with_templates(ctx, k, pseudo, group, echo)
                unlabelled = [rid for rid in sorted(ctx.folds) if rid not in pseudo]
                if unlabelled:  # clips added to the store after round k-1: CropSampler leaves them out
                    echo(f"round {k}: {len(unlabelled)} train clip(s) have no pseudo labels from round {k - 1} "
                         f"(added to the store after it: {', '.join(unlabelled[:5])}"
                         f"{', ...' if len(unlabelled) > 5 else ''}); they are left out of this round's "
                         f"training crops (they are still scored)")
            members = [(spec, fold) for spec in cfg.backbones for fold in range(cfg.folds)]
            for spec, fold in (members if ddp else group.shard(members)):  # folds: member i on rank i % world
                ckpt = train_member(ctx, k, spec, fold, pseudo, group)
                if not ddp:
                    predict_member(ctx, k, spec, fold, ckpt)
                    continue
                if group.is_main:  # ddp: rank 0 scores the member, the others wait
                    predict_member(ctx, k, spec, fold, ckpt)
                group.barrier(f"train round {k}: rank 0 scores {member_name(spec)} fold {fold}", work=True)
            group.barrier(f"train round {k}: waiting for the members of the other ranks", work=True)
            if group.is_main:
                ctx.runs.fetch(ctx.runs.round_dir(k) / "members")  # a URL run: members other machines trained
                metrics = finish_round(ctx, k, started, export_formats)
                ctx.runs.sync(strict=True)  # complete.json goes last
            group.barrier(f"train round {k}: waiting for rank 0 to finish the round", work=True)
            metrics = group.broadcast_object(metrics if group.is_main else None, f"train round {k}: metrics")
            echo(f"round {k}: {_summary(metrics)}  ({metrics['train_seconds']:.0f} s)")
        results.append(metrics)
        best = None
        if group.is_main:  # the run's best round so far (best_round.json): the default of `rfcx infer` / `export`
            best = record_best_round(ctx.runs)
            ctx.runs.sync(strict=True)
        if until_converged and len(results) >= 2 and _signal(results[-1]) <= _signal(results[-2]):
            kept = f"; best round: {best['round']} ({best['signal']} {best['value']:.4f}), the default round of " \
                   f"`rfcx infer` and `rfcx export` (best_round.json)" if best else ""
            echo(f"round {k}: the held-out signal stopped improving ({_signal_name(results[-1])} "
                 f"{_signal(results[-1]):.4f} <= {_signal(results[-2]):.4f} in round {k - 1}); stopping "
                 f"(--until-converged){kept}")
            break
    return results


def with_templates(ctx: Context, k: int, pseudo: PseudoLabels, group: ProcessGroup, echo) -> PseudoLabels:
    """``pseudo`` (round k's labels from round k-1) combined window by window with the template teacher's labels
    (rfcx.templates; rfcx.teachers, ``pseudo_templates_combine``), computed once per run (``templates.zarr``; again
    where the clips or the label grid changed, or "select" needs a figure an older run did not record): every rank
    matches its share of the clips, rank 0 writes the labels."""
    path = ctx.runs.template_labels
    n_windows = {rid: int(pseudo.offsets[i + 1] - pseudo.offsets[i]) for i, rid in enumerate(pseudo.ids)}
    how = ctx.cfg.pseudo_templates_combine

    def usable() -> PseudoLabels | None:
        ctx.runs.fetch(path)
        ctx.runs.fetch(path.with_suffix(".json"))
        if not path.is_dir():
            return None
        if how == "select" and "tp_auc" not in template_summary(path):
            return None
        cached = read_pseudo_labels(path)
        same = (cached.ids == pseudo.ids and np.array_equal(cached.offsets, pseudo.offsets)
                and cached.window_seconds == pseudo.window_seconds and cached.hop_seconds == pseudo.hop_seconds)
        return cached if same else None

    cached = usable() if group.is_main else None
    if group.broadcast_object(cached is None, "train: whether the template teacher's labels are to be computed"):
        labels, summary = templates.teacher(ctx.fs, ctx.boxes, n_windows, pseudo.window_seconds, pseudo.hop_seconds,
                                            ctx.device, ctx.progress, seed=ctx.cfg.seed, group=group)
        if group.is_main:
            write_pseudo_labels(path, labels, pseudo.window_seconds, pseudo.hop_seconds)
            write_json_atomic(path.with_suffix(".json"), summary)
            ctx.runs.sync(strict=True)
            echo(f"template teacher: {summary['templates']} templates, {len(summary['species_calibrated'])} species "
                 f"calibrated ({summary['seconds']:.0f} s)")
    group.barrier("train: rank 0 writes the template teacher's labels", work=True)
    cached = cached or usable()
    if cached is None:
        raise RuntimeError(f"{path}: the template teacher's labels are missing or stale after rank 0 wrote them")
    summary = template_summary(path)
    species = [int(s) for s in summary.get("species_calibrated", range(N_CLASSES))]
    network_auc = template_auc = None
    if how == "select":
        network_auc = dict(enumerate(network_tp_auc(ctx, k - 1)))
        template_auc = {int(s): float(v) for s, v in summary["tp_auc"].items()}
        only = teachers.template_only(species, network_auc, template_auc)
        echo(f"round {k}: template labels alone for species {only or 'none'} (their templates find the TP boxes "
             f"better than round {k - 1}'s network), the larger label for the others")
    return PseudoLabels(pseudo.ids, pseudo.offsets,
                        teachers.combine(pseudo.scores, cached.scores, how, species, network_auc, template_auc),
                        pseudo.window_seconds, pseudo.hop_seconds)


def template_summary(path: Path) -> dict:
    """The template teacher's ``templates.json`` beside ``path`` ({} where a run of an older version has none)."""
    summary = path.with_suffix(".json")
    return json.loads(summary.read_text()) if summary.is_file() else {}


def oof_tp_auc(ctx: Context, oof: dict[str, np.ndarray]) -> list[float | None]:
    """Per species, the TP AUC (rfcx.teachers.tp_auc) of the out-of-fold window scores ``oof`` (on the label grid):
    the window nearest each TP box against every window; None for a species without a TP box among them."""
    ids, offsets, flat = stack(oof)
    grid = PseudoLabels(ids, offsets, flat, ctx.grid_window_s, ctx.cfg.pseudo_hop_seconds)
    return [teachers.tp_auc(flat[:, c], rows) for c, rows in enumerate(tp_windows(grid, ctx.boxes))]


def network_tp_auc(ctx: Context, k: int) -> list[float | None]:
    """Round k's ``oof_tp_auc`` from its metrics, or from its members' predictions (runs made before it existed)."""
    metrics = json.loads(ctx.runs.metrics(k).read_text()) if ctx.runs.metrics(k).is_file() else {}
    if metrics.get("oof_tp_auc") is not None:
        return metrics["oof_tp_auc"]
    return oof_tp_auc(ctx, round_oof(ctx, k))


def round_oof(ctx: Context, k: int) -> dict[str, np.ndarray]:
    """Round k's out-of-fold window scores of the train clips: the mean over the members that held a clip out."""
    total: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for spec in ctx.cfg.backbones:
        for fold in range(ctx.cfg.folds):
            ctx.runs.fetch(ctx.runs.predictions(k, spec, fold))
            for rid, s in load_predictions(ctx.runs.predictions(k, spec, fold))[0].items():
                total[rid] = total.get(rid, 0) + s
                count[rid] = count.get(rid, 0) + 1
    return {rid: total[rid] / count[rid] for rid in total}


def rounds_test_clips(ctx: Context, k: int, test_clip: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray] | None:
    """Test clip scores of rounds 0..k together (the mean over every member of every round: what ``rfcx infer
    --round all`` scores), from the members' stored predictions; None where an earlier round's are missing."""
    clips = {rid: list(v) for rid, v in test_clip.items()}
    for j in range(k):
        for spec in ctx.cfg.backbones:
            for fold in range(ctx.cfg.folds):
                path = ctx.runs.predictions(j, spec, fold)
                if not path.is_file():
                    return None
                for rid, s in load_predictions(path)[1].items():
                    if rid in clips:
                        clips[rid].append(s.max(axis=0))
    return {rid: np.mean(v, axis=0) for rid, v in clips.items()}


def record_best_round(runs: RunDir) -> dict | None:
    """Write ``best_round.json``: the complete round whose held-out signal (:func:`_signal`) is highest (a tie
    keeps the earlier round, as ``--until-converged`` does), with the signal of every complete round. Written
    atomically, and only when it changed; returns its content (None before any round is complete)."""
    values, names = {}, {}
    for k in runs.rounds():
        if runs.is_complete(k) and runs.metrics(k).is_file():
            metrics = json.loads(runs.metrics(k).read_text())
            values[k], names[k] = _signal(metrics), _signal_name(metrics)
    if not values:
        return None
    best = max(values, key=lambda k: (values[k], -k))
    data = {"round": best, "signal": names[best], "value": values[best],
            "rounds": {str(k): v for k, v in sorted(values.items())}}
    if runs.best_round() != data:
        write_json_atomic(runs.best_round_file, data)
    return data


def oracle_runs(runs: str | Path) -> str | Path:
    """Where ``rfcx train --oracle`` keeps its run: ``RUNS/oracle`` (a URL likewise)."""
    return f"{runs.rstrip('/')}/oracle" if isinstance(runs, str) and "://" in runs else Path(runs) / "oracle"


def _quiet(*_args, **_kwargs) -> None:
    """``echo`` of the ranks other than 0."""


SIGNAL_NAME = "oof_clip_lwlrap"  # what _signal measures, as best_round.json names it


def _signal(metrics: dict) -> float:
    """The held-out signal rounds are compared by (``--until-converged``, ``best_round.json``): higher is better.
    Whole-clip LWLRAP of the out-of-fold train clips with TP boxes (``oof_clip_lwlrap``); runs made before it
    existed: the TP windows' ``oof_lwlrap``."""
    v = metrics.get(_signal_name(metrics))
    return -1.0 if v is None else float(v)


def _signal_name(metrics: dict) -> str:
    """The metric :func:`_signal` reads: ``SIGNAL_NAME``, or ``oof_lwlrap`` in rounds made before it existed."""
    return SIGNAL_NAME if SIGNAL_NAME in metrics else "oof_lwlrap"


def _summary(m: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    parts = [f"OOF LWLRAP {f(m.get('oof_lwlrap'))} (clips {f(m.get('oof_clip_lwlrap'))})",
             f"OOF TP-vs-FP AUC {f(m.get('oof_box_auc'))}",
             f"test LWLRAP {f(m.get('test_lwlrap'))}"]
    y = m.get("yardsticks")
    if y:
        parts.append(f"[random {f(y.get('random'))}, prior-only {f(y.get('prior_only'))}, "
                     f"oracle {f(y.get('oracle'))}]")
    if m.get("gap_closed") is not None:
        parts.append(f"gap closed {100 * m['gap_closed']:.0f} %")
    if m.get("test_lwlrap_rounds") is not None:
        parts.append(f"rounds 0-{m['round']} together {f(m['test_lwlrap_rounds'])}"
                     + (f" ({100 * m['gap_closed_rounds']:.0f} %)" if m.get("gap_closed_rounds") is not None else ""))
    return ", ".join(parts)
