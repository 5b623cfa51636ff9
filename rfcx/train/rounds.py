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
import time
from pathlib import Path

import numpy as np

from rfcx.errors import InvalidInputError
from rfcx.process_group import SINGLE, DistributedError, ProcessGroup, run_local, thread_budget
from rfcx.runs.directory import check_run_folder, member_name
from rfcx.scoring.yardsticks import EQUAL_COMPUTE
from rfcx.train import member, teachers, templates
from rfcx.train.config import EXECUTION_FIELDS, TrainConfig, get_config
from rfcx.train.context import Context, open_context
from rfcx.train.models import check_pretrained
from rfcx.train.pseudo import (
    read_pseudo_labels,
    rescale,
    write_pseudo_labels,
)
from rfcx.train.round_metrics import (
    finish_round,
    network_tp_auc,
    record_best_round,
    round_signal,
    round_summary,
    signal_name,
    template_summary,
)
from rfcx.train.sampling import N_CLASSES, PseudoLabels
from store.atomic import write_json_atomic
from store.device import resolve_device
from store.lock import NoLock, writer_lock

log = logging.getLogger(__name__)


def train_rounds(
    store: str,
    runs: str | Path,
    config: str | TrainConfig = "cpu",
    until_round: int = 0,
    folds: int | None = None,
    device: str | None = None,
    progress: bool = True,
    until_converged: bool = False,
    echo=print,
    export_formats: tuple[str, ...] = ("torchscript", "export"),
    group: ProcessGroup = SINGLE,
    oracle: bool = False,
    equal_compute: bool = False,
) -> list[dict]:
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
    ``oracle``: the same config on every call's truth, into ``RUNS/oracle``; ``equal_compute``: round 0 alone for
    as many epochs as the pseudo-label rounds train, into ``RUNS/equal-compute`` (:func:`equal_compute_config`).
    """
    if until_round < 0:
        raise InvalidInputError(f"--round must be 0 or more (rounds 0..N are run), got {until_round}")
    cfg = get_config(config) if isinstance(config, str) else config
    if folds is not None:
        cfg = cfg.replace(folds=folds)
    if oracle and equal_compute:
        raise InvalidInputError("--oracle and --equal-compute train two different runs: give one of them")
    check_run_folder(runs)  # a file, or a folder of other things, before anything is written or locked
    if oracle:  # the ceiling: the same config on every call's truth, one round, in RUNS/oracle
        cfg, runs, until_round = cfg.replace(oracle=True), oracle_runs(runs), 0
    if equal_compute:  # the yardstick of the pseudo labels: round 0 trained as long as a later round
        longer = equal_compute_config(cfg, runs)
        if longer is None:
            echo(
                f"round 0 already trains as long as the pseudo-label rounds ({cfg.epochs} epochs): the run's own "
                f"round 0 is the equal-compute bootstrap; nothing to train"
            )
            return []
        cfg, runs, until_round = longer, sub_runs(runs, EQUAL_COMPUTE), 0
    if oracle or equal_compute:
        check_run_folder(runs)
    member.check_ddp_batch(cfg, group)
    check_pretrained(cfg)  # before any training: pretrained = "imagenet" offline, a missing or unfitting file
    nproc, threads = cpu_processes(cfg, device, group)
    if nproc > 1:  # members side by side on the CPU, a process each (rank 0 prints, writes and returns)
        return run_local(
            nproc,
            _train_rank,
            store,
            runs,
            cfg,
            until_round,
            device,
            progress,
            until_converged,
            _picklable_echo(echo),
            export_formats,
            threads=threads,
        )
    # one writer per run directory (a local one): rank 0 holds its lock to the end, a second run is refused
    with writer_lock(runs, "run directory") if group.is_main else NoLock():
        return _train_rounds(
            store, runs, cfg, until_round, device, progress, until_converged, echo, export_formats, group
        )


def cpu_processes(cfg: TrainConfig, device: str | None, group: ProcessGroup = SINGLE) -> tuple[int, int]:
    """(processes, threads each) that train a round's members on this machine: ``cfg.cpu_processes`` (0: one per
    thread torch has, :func:`thread_budget`) capped by the member count, when training on the CPU with
    ``distribute = "folds"`` outside torchrun; (1, threads) otherwise."""
    budget = thread_budget()
    members = len(cfg.backbones) * cfg.folds
    if (
        group.distributed
        or cfg.cpu_processes == 1
        or cfg.distribute != "folds"
        or resolve_device(device or cfg.device).type != "cpu"
    ):
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


def _train_rank(
    group: ProcessGroup,
    store: str,
    runs: str | Path,
    cfg: TrainConfig,
    until_round: int,
    device: str | None,
    progress: bool,
    until_converged: bool,
    echo,  # noqa: ANN001
    export_formats: tuple[str, ...],
) -> list[dict]:
    """One rank of :func:`train_rounds` under :func:`rfcx.process_group.run_local`."""
    return train_rounds(
        store,
        runs,
        cfg,
        until_round,
        device=device,
        progress=progress,
        until_converged=until_converged,
        echo=echo,
        export_formats=export_formats,
        group=group,
    )


def _train_rounds(
    store: str,
    runs: str | Path,
    cfg: TrainConfig,
    until_round: int,
    device: str | None,
    progress: bool,
    until_converged: bool,
    echo,
    export_formats: tuple[str, ...],
    group: ProcessGroup,
) -> list[dict]:
    ddp = member.uses_ddp(cfg, group)
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
            echo(f"round {k}: complete, skipped ({round_summary(metrics)})")
        else:
            started = time.perf_counter()
            pseudo = None
            if k > 0:
                ctx.runs.fetch(ctx.runs.pseudo_labels(k - 1))  # a run at a URL: the labels rank 0 wrote elsewhere
                pseudo = rescale(
                    read_pseudo_labels(ctx.runs.pseudo_labels(k - 1)),
                    ctx.cfg.pseudo_rescale,
                    ctx.cfg.pseudo_quantiles,
                    ctx.boxes,
                )
                if ctx.cfg.pseudo_templates:
                    pseudo = with_templates(ctx, k, pseudo, group, echo)
                unlabelled = [rid for rid in sorted(ctx.folds) if rid not in pseudo]
                if unlabelled:  # clips added to the store after round k-1: CropSampler leaves them out
                    echo(
                        f"round {k}: {len(unlabelled)} train clip(s) have no pseudo labels from round {k - 1} "
                        f"(added to the store after it: {', '.join(unlabelled[:5])}"
                        f"{', ...' if len(unlabelled) > 5 else ''}); they are left out of this round's "
                        f"training crops (they are still scored)"
                    )
            members = [(spec, fold) for spec in cfg.backbones for fold in range(cfg.folds)]
            for spec, fold in members if ddp else group.shard(members):  # folds: member i on rank i % world
                ckpt = member.train_member(ctx, k, spec, fold, pseudo, group)
                if not ddp:
                    member.predict_member(ctx, k, spec, fold, ckpt)
                    continue
                if group.is_main:  # ddp: rank 0 scores the member, the others wait
                    member.predict_member(ctx, k, spec, fold, ckpt)
                group.barrier(f"train round {k}: rank 0 scores {member_name(spec)} fold {fold}", work=True)
            group.barrier(f"train round {k}: waiting for the members of the other ranks", work=True)
            if group.is_main:
                ctx.runs.fetch(ctx.runs.round_dir(k) / "members")  # a URL run: members other machines trained
                metrics = finish_round(ctx, k, started, export_formats)
                ctx.runs.sync(strict=True)  # complete.json goes last
            group.barrier(f"train round {k}: waiting for rank 0 to finish the round", work=True)
            metrics = group.broadcast_object(metrics if group.is_main else None, f"train round {k}: metrics")
            echo(f"round {k}: {round_summary(metrics)}  ({metrics['train_seconds']:.0f} s)")
        results.append(metrics)
        best = None
        if group.is_main:  # the run's best round so far (best_round.json): the default of `rfcx infer` / `export`
            best = record_best_round(ctx.runs)
            ctx.runs.sync(strict=True)
        if until_converged and len(results) >= 2 and round_signal(results[-1]) <= round_signal(results[-2]):
            kept = (
                f"; best round: {best['round']} ({best['signal']} {best['value']:.4f}), the default round of "
                f"`rfcx infer` and `rfcx export` (best_round.json)"
                if best
                else ""
            )
            echo(
                f"round {k}: the held-out signal stopped improving ({signal_name(results[-1])} "
                f"{round_signal(results[-1]):.4f} <= {round_signal(results[-2]):.4f} in round {k - 1}); stopping "
                f"(--until-converged){kept}"
            )
            break
    return results


def with_templates(ctx: Context, k: int, pseudo: PseudoLabels, group: ProcessGroup, echo) -> PseudoLabels:
    """``pseudo`` (round k's labels from round k-1) combined window by window with the template teacher's labels
    (rfcx.train.templates; rfcx.train.teachers, ``pseudo_templates_combine``), computed once per run
    (``templates.zarr``; again where the clips or the label grid changed, or "select" needs a figure an older run
    did not record): every rank matches its share of the clips, rank 0 writes the labels."""
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
        made = template_summary(path)
        same = (
            made.get("shift", templates.SHIFT) == ctx.cfg.template_shift
            and made.get("stretches", [1.0]) == list(ctx.cfg.template_stretches)
            and cached.ids == pseudo.ids
            and np.array_equal(cached.offsets, pseudo.offsets)
            and cached.window_seconds == pseudo.window_seconds
            and cached.hop_seconds == pseudo.hop_seconds
        )
        return cached if same else None

    cached = usable() if group.is_main else None
    if group.broadcast_object(cached is None, "train: whether the template teacher's labels are to be computed"):
        labels, summary = templates.teacher(
            ctx.fs,
            ctx.boxes,
            n_windows,
            pseudo.window_seconds,
            pseudo.hop_seconds,
            ctx.device,
            ctx.progress,
            seed=ctx.cfg.seed,
            group=group,
            shift=ctx.cfg.template_shift,
            stretches=ctx.cfg.template_stretches,
        )
        if group.is_main:
            write_pseudo_labels(path, labels, pseudo.window_seconds, pseudo.hop_seconds)
            write_json_atomic(path.with_suffix(".json"), summary)
            ctx.runs.sync(strict=True)
            echo(
                f"template teacher: {summary['templates']} templates, {len(summary['species_calibrated'])} species "
                f"calibrated ({summary['seconds']:.0f} s)"
            )
    group.barrier("train: rank 0 writes the template teacher's labels", work=True)
    cached = cached or usable()
    if cached is None:
        raise DistributedError(f"{path}: the template teacher's labels are missing or stale after rank 0 wrote them")
    summary = template_summary(path)
    species = [int(s) for s in summary.get("species_calibrated", range(N_CLASSES))]
    network_auc = template_auc = None
    if how == "select":
        network_auc = dict(enumerate(network_tp_auc(ctx, k - 1)))
        template_auc = {int(s): float(v) for s, v in summary["tp_auc"].items()}
        only = teachers.template_only(species, network_auc, template_auc)
        echo(
            f"round {k}: template labels alone for species {only or 'none'} (their templates find the TP boxes "
            f"better than round {k - 1}'s network), the larger label for the others"
        )
    return PseudoLabels(
        pseudo.ids,
        pseudo.offsets,
        teachers.combine(pseudo.scores, cached.scores, how, species, network_auc, template_auc),
        pseudo.window_seconds,
        pseudo.hop_seconds,
    )


def oracle_runs(runs: str | Path) -> str | Path:
    """Where ``rfcx train --oracle`` keeps its run: ``RUNS/oracle`` (a URL likewise)."""
    return sub_runs(runs, "oracle")


def sub_runs(runs: str | Path, name: str) -> str | Path:
    """The run ``RUNS/name`` beside a run's rounds (a URL likewise): the oracle, the equal-compute bootstrap."""
    return f"{runs.rstrip('/')}/{name}" if isinstance(runs, str) and "://" in runs else Path(runs) / name


def equal_compute_config(cfg: TrainConfig, runs: str | Path) -> TrainConfig | None:
    """The config of the equal-compute bootstrap of a run: ``cfg`` with round 0 trained for the epochs of its
    pseudo-label rounds (``cfg.epochs_of(1)``); None where round 0 already trains that long (the run's own round 0
    is then the yardstick). Where the run at ``runs`` (a local folder) already holds a config, ``cfg`` must learn
    as that one does (execution fields aside): the yardstick is the same recipe, trained as long."""
    if cfg.epochs_of(1) == cfg.epochs:
        return None
    stored = Path(runs) / "config.json"
    if not (isinstance(runs, str) and "://" in runs) and stored.is_file():
        diff = {
            k: v
            for k, v in TrainConfig.from_dict(json.loads(stored.read_text())).diff(cfg).items()
            if k not in (*EXECUTION_FIELDS, "name", "device")
        }
        if diff:
            listed = ", ".join(f"{k}: {a!r} (run) vs {b!r} (asked)" for k, (a, b) in diff.items())
            raise InvalidInputError(
                f"{runs}: the run was trained with another config ({listed}); its equal-compute bootstrap is the "
                f"same recipe trained as long: give the run's own --config and --set"
            )
    return cfg.replace(epochs=cfg.epochs_of(1))


def _quiet(*_args, **_kwargs) -> None:
    """``echo`` of the ranks other than 0."""
