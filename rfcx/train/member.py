"""One ensemble member on one fold: the optimiser and its schedule, the resumable epoch loop, checkpoints, the
member's out-of-fold and test predictions."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from engine.windows import DEFAULT_MODE
from rfcx.errors import InvalidInputError
from rfcx.process_group import SINGLE, DistributedError, ProcessGroup
from rfcx.runs.directory import member_name
from rfcx.runs.predictions import save_predictions
from rfcx.train.augment import Augmenter
from rfcx.train.checkpoint import Checkpoint, load_checkpoint_file, mark_complete, present, save_checkpoint_file
from rfcx.train.config import ModelSpec, TrainConfig
from rfcx.train.context import Context
from rfcx.train.loader import crop_loader
from rfcx.train.losses import masked_bce
from rfcx.train.models import build_classifier
from rfcx.train.pseudo import (
    predict_windows,
)
from rfcx.train.sampling import CropSampler, PseudoLabels

log = logging.getLogger(__name__)


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
    raise InvalidInputError(f"optimizer = {cfg.optimizer!r} is not one of ['adamw', 'sgd']")


def _save(obj: dict, path: Path) -> None:
    """Write a checkpoint dict atomically (every checkpoint write here goes through it; tests replace it)."""
    save_checkpoint_file(obj, path)


def uses_ddp(cfg: TrainConfig, group: ProcessGroup) -> bool:
    """``distribute = "ddp"`` under a launch of several processes (one process: no DDP wrapper, as "folds")."""
    return cfg.distribute == "ddp" and group.distributed


def check_ddp_batch(cfg: TrainConfig, group: ProcessGroup) -> None:
    """DDP keeps the global batch at ``batch_size``: it must split evenly over the ranks."""
    if uses_ddp(cfg, group) and cfg.batch_size % group.world:
        raise InvalidInputError(
            f"distribute = 'ddp' splits each batch of batch_size = {cfg.batch_size} crops over the "
            f"{group.world} ranks, which needs a batch_size divisible by {group.world} (e.g. "
            f"{max(group.world, cfg.batch_size // group.world * group.world)}; set it with --set "
            f"batch_size=N), or use distribute = 'folds'"
        )


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


def _wrap_ddp(net: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """``net`` in DistributedDataParallel (device_ids: the context's CUDA device, or the current one; none on CPU)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        net,
        device_ids=[ctx.device.index if ctx.device.index is not None else torch.cuda.current_device()]
        if ctx.device.type == "cuda"
        else None,
    )


def _finished(ckpt: Checkpoint, epochs: int) -> bool:
    """The member has trained its ``epochs`` (or been marked complete)."""
    return bool(ckpt.complete) or present(ckpt.epoch) >= epochs


def _resume(
    ctx: Context, spec: ModelSpec, path: Path, seed: int, epochs: int, ddp: ProcessGroup | None
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR, Checkpoint, dict]:
    """The member's net (seeded; pretrained weights only without a checkpoint file), optimiser and LR schedule,
    and its checkpoint: the file's (under DDP every rank must read the same) or a fresh one. Where epochs remain,
    the net, optimiser and schedule resume from it. Returns them, the checkpoint and the dict it was read from."""
    cfg = ctx.cfg
    torch.manual_seed(seed)
    net = build_classifier(cfg, spec, pretrained=not path.is_file()).to(ctx.device)  # resumed: the checkpoint's
    if cfg.channels_last:
        net.backbone.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, epochs * cfg.batches_per_epoch))
    saved = Checkpoint().to_dict()
    resumed = path.is_file()
    if resumed:
        saved = load_checkpoint_file(path, ctx.device)
    ckpt = Checkpoint.from_dict(saved)
    if ddp:  # every rank must start from the same checkpoint (the run directory at the same path everywhere)
        seen = ddp.all_gather_object((ckpt.epoch, bool(ckpt.complete)), f"{path}: resume point")
        if len(set(seen)) > 1:
            raise DistributedError(
                f"{ddp.label}: the ranks see different checkpoints of {path} (epoch, complete "
                f"by rank: {seen}): every rank must see the run directory at the same path"
            )
    if resumed and not _finished(ckpt, epochs):
        net.load_state_dict(present(ckpt.state_dict))
        opt.load_state_dict(present(ckpt.optimizer))
        sched.load_state_dict(present(ckpt.scheduler))
        log.info("resuming %s from epoch %d", path, ckpt.epoch)
        was = 1 if ckpt.ddp_world is None else ckpt.ddp_world
        if ddp and was != ddp.world:
            log.warning(
                "%s: epochs 1-%d ran on %d process(es), the rest run on %d: the same global batch, other random crops",
                path,
                ckpt.epoch,
                was,
                ddp.world,
            )
    return net, opt, sched, ckpt, saved


def _crop_sampler(
    ctx: Context,
    k: int,
    train_ids: dict[str, int],
    crop: int,
    pseudo: PseudoLabels | None,
    epoch_seed: int,
    rank: int,
    worker: int,
) -> CropSampler:
    """Loader worker ``worker``'s crop sampler for an epoch (seeded by the epoch, the worker and the rank)."""
    cfg = ctx.cfg
    return CropSampler(
        ctx.boxes,
        train_ids,
        ctx.fs.params,
        crop,
        k,
        pseudo,
        cfg.tp_fp_sampling,
        cfg.tp_fp_p,
        seed=_rank_seed(epoch_seed * 31 + worker, rank),
        truth=ctx.truth,
        unlabelled_weight=cfg.unlabelled_weight,
        random_crop_p=cfg.random_crop_p,
        pseudo_negative_weight=cfg.pseudo_negative_weight,
        tp_box_share=cfg.tp_box_share,
    )


def _run_epoch(
    ctx: Context,
    k: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    augment: Augmenter,
    make_sampler: Callable[[int], CropSampler],
    batch: int,
    bar: tqdm,
    label: str,
    started: float,
) -> tuple[float, float, int]:
    """One epoch's ``batches_per_epoch`` steps of ``batch`` crops (the progress bar's postfix: ``label``, the
    recent loss, crops/s since ``started``); returns the mean loss, the seconds spent waiting for data and the
    number of batches."""
    cfg = ctx.cfg
    use_amp = ctx.device.type == "cuda"
    model.train()
    losses, wait = [], 0.0
    t_wait = time.perf_counter()
    for x, target, mask, bins, label_boxes in crop_loader(
        ctx.fs, make_sampler, batch, cfg.batches_per_epoch, cfg.num_workers
    ):
        wait += time.perf_counter() - t_wait
        k_aug = 1 if cfg.oracle else k  # the oracle's labels are whole (soft mixup, SpecAugment), as rounds >= 1
        # the augmentations run on the training device, after the copy (the box bins stay on the CPU)
        x = x.to(ctx.device, non_blocking=True)
        target, mask = target.to(ctx.device, non_blocking=True), mask.to(ctx.device, non_blocking=True)
        x, target, mask = augment(
            x, target, mask, k_aug, bins if k_aug == 0 else None, label_boxes if k_aug == 0 else None
        )
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        loss = masked_bce(logits.float(), target, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update(1)
        elapsed = time.perf_counter() - started
        bar.set_postfix(
            epoch=label, loss=f"{np.mean(losses[-20:]):.4f}", crops_s=f"{len(losses) * cfg.batch_size / elapsed:.0f}"
        )
        t_wait = time.perf_counter()
    return float(np.mean(losses)), wait, len(losses)


def _agree_epoch(net: torch.nn.Module, ddp: ProcessGroup, loss: float, label: str) -> tuple[float, dict]:
    """DDP, after an epoch: rank 0's buffers on every rank, the loss over every rank's crops, and a digest of each
    rank's weights (all equal; a warning if not); returns the loss and the history entry's ``ddp`` item."""
    _broadcast_buffers(net)
    seen = ddp.all_gather_object((loss, weights_digest(net.state_dict())), label)
    loss = float(np.mean([s[0] for s in seen]))
    if len({s[1] for s in seen}) > 1:  # DDP keeps them equal; say so if a rank drifted (rank 0's is kept)
        log.warning("%s: the ranks' weights differ (sha256 by rank: %s)", label, [s[1][:12] for s in seen])
    return loss, {"ddp": {"world": ddp.world, "weights_sha256": [s[1] for s in seen]}}


def _save_epoch(
    ctx: Context,
    k: int,
    spec: ModelSpec,
    fold: int,
    path: Path,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    history: list[dict],
    ddp: ProcessGroup | None,
) -> dict:
    """The checkpoint after epoch ``len(history)``'s entry was appended; rank 0 (or the one process) writes it to
    ``path`` and syncs the run directory. Returns the checkpoint dict."""
    ckpt = Checkpoint(
        state_dict=net.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        epoch=history[-1]["epoch"],
        history=history,
        complete=False,
        config=ctx.cfg.to_dict(),
        member={"backbone": spec.backbone, "crop_seconds": spec.crop_seconds},
        fold=fold,
        round=k,
        mel=ctx.fs.params.to_dict(),
        ddp_world=ddp.world if ddp else None,
    ).to_dict()
    if ddp is None or ddp.is_main:
        _save(ckpt, path)
        ctx.runs.sync()  # a run at a URL: the checkpoint reaches it, an interrupted fold resumes from there
    return ckpt


def train_member(
    ctx: Context, k: int, spec: ModelSpec, fold: int, pseudo: PseudoLabels | None, group: ProcessGroup = SINGLE
) -> dict:
    """Train (or resume, or skip) one member on one fold; returns its checkpoint dict.

    With ``distribute = "ddp"`` under a launch of several processes every rank calls this for the same member:
    the model is wrapped in DistributedDataParallel, each rank draws ``batch_size // world`` crops per step
    (sampler and augmentations seeded by the member, the epoch and the rank), and rank 0 alone writes the
    checkpoints (every rank resumes from the same one).
    """
    cfg = ctx.cfg
    ddp = group if uses_ddp(cfg, group) else None
    rank = ddp.rank if ddp else 0
    batch = cfg.batch_size // ddp.world if ddp else cfg.batch_size
    path = ctx.runs.checkpoint(k, spec, fold)
    seed = ctx.member_seed(k, spec, fold)
    epochs = cfg.epochs_of(k)
    net, opt, sched, ckpt, saved = _resume(ctx, spec, path, seed, epochs, ddp)
    if _finished(ckpt, epochs):
        return saved
    model = _wrap_ddp(net, ctx) if ddp else net

    train_ids = {rid: ctx.fs.n_frames(rid) for rid, f in ctx.folds.items() if f != fold}
    crop = ctx.fs.params.seconds_to_frames(spec.crop_seconds)
    augment = Augmenter(cfg.augment, cfg.mixup_alpha, torch.Generator().manual_seed(_rank_seed(seed, rank)))
    history = list(present(ckpt.history))
    name = f"round {k} {member_name(spec)} fold {fold}"
    bar = tqdm(
        total=epochs * cfg.batches_per_epoch,
        initial=present(ckpt.epoch) * cfg.batches_per_epoch,
        desc=name,
        unit="batch",
        disable=not ctx.progress,
        dynamic_ncols=True,
        leave=False,
    )
    for epoch in range(present(ckpt.epoch), epochs):
        epoch_seed = seed + 7919 * (epoch + 1)
        cast(torch.Generator, augment.generator).manual_seed(
            _rank_seed(epoch_seed, rank)
        )  # every epoch is seeded: a resumed fold
        torch.manual_seed(_rank_seed(epoch_seed, rank))  # repeats it exactly
        make_sampler = functools.partial(_crop_sampler, ctx, k, train_ids, crop, pseudo, epoch_seed, rank)
        started = time.perf_counter()
        loss, wait, n = _run_epoch(
            ctx, k, model, opt, sched, augment, make_sampler, batch, bar, f"{epoch + 1}/{epochs}", started
        )
        extra: dict = {}
        if ddp:  # the loss over every rank's crops; a digest of each rank's weights (all equal)
            loss, extra = _agree_epoch(net, ddp, loss, f"{name} epoch {epoch + 1}")
        seconds = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch + 1,
                "loss": loss,
                "lr": sched.get_last_lr()[0],
                "crops_per_s": n * cfg.batch_size / seconds,
                "data_wait_s": wait,
                "seconds": seconds,
                **extra,
            }
        )
        saved = _save_epoch(ctx, k, spec, fold, path, net, opt, sched, history, ddp)
    bar.close()
    return saved


def predict_member(ctx: Context, k: int, spec: ModelSpec, fold: int, ckpt: dict) -> None:
    """Score the fold's held-out train clips and every test clip; then mark the checkpoint complete."""
    path = ctx.runs.predictions(k, spec, fold)
    member = Checkpoint.from_dict(ckpt)
    if not (member.complete and path.is_file()):
        model = build_classifier(ctx.cfg, spec).to(ctx.device)
        model.load_state_dict(present(member.state_dict))
        held_out = sorted(rid for rid, f in ctx.folds.items() if f == fold)
        test = ctx.fs.ids("test") if "test" in ctx.fs.splits else []
        kw: dict[str, Any] = dict(
            grid_window_s=ctx.grid_window_s,
            hop_s=ctx.cfg.pseudo_hop_seconds,
            crop_s=spec.crop_seconds,
            device=ctx.device,
            mode=ctx.cfg.score_mode,
        )
        oof = predict_windows(model, ctx.fs, held_out, **kw)
        # the test clips as `rfcx infer` scores them by default (one forward per window), whatever the config's
        # score_mode: a round's test LWLRAP is then what a user of its models gets
        tst = predict_windows(model, ctx.fs, test, **{**kw, "mode": DEFAULT_MODE.value})
        infold = None
        if ctx.cfg.pseudo_teacher == "ensemble":  # the clips it trained on too: the next round's teacher
            trained_on = sorted(rid for rid, f in ctx.folds.items() if f != fold)
            infold = predict_windows(model, ctx.fs, trained_on, **kw)
        save_predictions(path, oof, tst, infold)
        _save(mark_complete(ckpt), ctx.runs.checkpoint(k, spec, fold))
        ctx.runs.sync()
