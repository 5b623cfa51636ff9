"""What a finished round measures: box AUCs, out-of-fold clip LWLRAP, test LWLRAP beside the yardsticks, the best
round."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from engine.postprocess import apply_prior
from rfcx.runs import report
from rfcx.runs.directory import RunDir, member_name
from rfcx.runs.predictions import load_infold, load_predictions, stack
from rfcx.scoring import yardsticks
from rfcx.scoring.metrics import lwlrap
from rfcx.train import teachers
from rfcx.train.calibration import class_priors
from rfcx.train.checkpoint import Checkpoint, load_checkpoint_file, present
from rfcx.train.config import ModelSpec
from rfcx.train.context import Context
from rfcx.train.losses import masked_bce
from rfcx.train.models import build_classifier
from rfcx.train.pseudo import (
    tp_windows,
    write_pseudo_labels,
)
from rfcx.train.sampling import N_CLASSES, CropSampler, PseudoLabels
from store.atomic import write_json_atomic

log = logging.getLogger(__name__)


# -- the round ------------------------------------------------------------------------------------------------


def box_metrics(ctx: Context, oof: dict[str, np.ndarray]) -> dict:
    """Held-out signals from the out-of-fold windows: LWLRAP on the windows holding TP boxes (truth: their TP
    species; every class competes), and the AUC of the box's own species score, TP boxes vs FP boxes."""
    hop, win = ctx.cfg.pseudo_hop_seconds, ctx.grid_window_s
    rows: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    tp_scores: list[float] = []
    fp_scores: list[float] = []
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
    out = {
        "oof_lwlrap": float(lwlrap(np.array(truths), np.array(rows))) if rows else None,
        "oof_box_auc": teachers.auc(np.array(tp_scores), np.array(fp_scores)),
        "oof_clip_lwlrap": oof_clip_lwlrap(ctx.boxes, oof),
    }
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
    against the clips holding its TP boxes (rfcx.train.calibration.class_priors): the prior of
    ``--postprocess prior``."""
    ids = sorted(oof)
    clip = np.stack([oof[rid].max(axis=0) for rid in ids]) if ids else np.zeros((0, N_CLASSES))
    labelled = np.zeros(clip.shape, dtype=bool)
    row = {rid: i for i, rid in enumerate(ids)}
    tp = ctx.boxes[ctx.boxes.is_tp & ctx.boxes.recording_id.isin(row)]
    labelled[[row[r] for r in tp.recording_id], tp.species_id.to_numpy(dtype=np.int64)] = True
    prior, estimated = class_priors(clip, labelled)
    return {
        "prior": prior.tolist(),
        "estimated": estimated.tolist(),
        "clips": len(ids),
        "method": "out-of-fold clip scores against the TP-labelled clips (rfcx.train.calibration)",
    }


def freq_channel_check(ctx: Context, k: int, spec: ModelSpec) -> dict | None:
    """The seed discussion's check: masked BCE on held-out box crops, FreqConv channel as is vs zeros."""
    if not ctx.cfg.freq_channel:
        return None
    crop = ctx.fs.params.seconds_to_frames(spec.crop_seconds)
    losses: dict[str, list[float]] = {"loss": [], "loss_zeroed_freq_channel": []}
    for fold in range(ctx.cfg.folds):
        ckpt = Checkpoint.from_dict(load_checkpoint_file(ctx.runs.checkpoint(k, spec, fold), ctx.device))
        model = build_classifier(ctx.cfg, spec).to(ctx.device).eval()
        model.load_state_dict(present(ckpt.state_dict))
        held = {rid: ctx.fs.n_frames(rid) for rid, f in ctx.folds.items() if f == fold}
        try:
            sampler = CropSampler(ctx.boxes, held, ctx.fs.params, crop, 0, seed=fold)
        except ValueError:
            continue
        b = sampler.sample(min(128, 2 * len(sampler.boxes)))
        x = torch.from_numpy(ctx.fs.crops(list(zip(b.recording_ids, b.starts.tolist(), [crop] * len(b.starts)))))
        x, target, mask = (
            x.to(ctx.device),
            torch.from_numpy(b.target).to(ctx.device),
            torch.from_numpy(b.mask).to(ctx.device),
        )
        with torch.inference_mode():
            for zero, key in ((False, "loss"), (True, "loss_zeroed_freq_channel")):
                model.zero_freq_channel = zero
                losses[key].append(float(masked_bce(model(x).float(), target, mask)))
    if not losses["loss"]:
        return None
    return {key: float(np.mean(v)) for key, v in losses.items()}


def finish_round(
    ctx: Context, k: int, started: float, export_formats: tuple[str, ...] = ("torchscript", "export")
) -> dict:
    """Pseudo labels for round k+1, metrics, plots, exported models; then the round's complete marker."""
    cfg, runs = ctx.cfg, ctx.runs
    oof_sum: dict[str, np.ndarray] = {}
    oof_n: dict[str, int] = {}
    teach_sum: dict[str, np.ndarray] = {}  # pseudo_teacher "ensemble": the members that trained on the clip
    teach_n: dict[str, int] = {}
    test_clip: dict[str, list[np.ndarray]] = {}
    members: dict[str, list[dict] | None] = {}
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
            ckpt = Checkpoint.from_dict(load_checkpoint_file(runs.checkpoint(k, spec, fold), "cpu"))
            members[f"{member_name(spec)}_fold{fold}"] = ckpt.history
    oof = {rid: oof_sum[rid] / oof_n[rid] for rid in oof_sum}
    teacher = {rid: (oof_sum[rid] + teach_sum.get(rid, 0)) / (oof_n[rid] + teach_n.get(rid, 0)) for rid in oof_sum}
    write_pseudo_labels(runs.pseudo_labels(k), teacher, ctx.grid_window_s, cfg.pseudo_hop_seconds)

    metrics: dict = {
        "round": k,
        "config": cfg.name,
        "epochs": cfg.epochs_of(k),
        "steps": cfg.epochs_of(k) * cfg.batches_per_epoch,  # per member: what an equal-compute bootstrap matches
        **box_metrics(ctx, oof),
        "oof_tp_auc": oof_tp_auc(ctx, oof),
    }
    prior = oof_prior(ctx, oof)
    write_json_atomic(runs.round_dir(k) / "prior.json", prior)
    truth = ctx.fs.truth("test") if hasattr(ctx.fs, "truth") else None
    metrics["test_lwlrap"] = None
    if truth is not None and test_clip:
        ids = [rid for rid in truth.index if rid in test_clip]
        scores = np.stack([np.mean(test_clip[rid], axis=0) for rid in ids])
        metrics["test_lwlrap"] = float(lwlrap(truth.loc[ids].to_numpy(), scores))
        metrics["test_lwlrap_prior"] = float(
            lwlrap(truth.loc[ids].to_numpy(), apply_prior(scores, np.asarray(prior["prior"])))
        )
        oracle = None if cfg.oracle else yardsticks.oracle_metrics(runs.root)
        oracle_score = oracle.get("test_lwlrap") if oracle else None
        tp_prior = yardsticks.tp_prior(ctx.fs.boxes("tp"), ctx.fs.ids("train"))
        equal = yardsticks.equal_compute_metrics(runs.root, metrics["steps"]) if k > 0 else None
        equal_score = None if equal is None else equal.get("test_lwlrap")
        metrics["yardsticks"] = yardsticks.yardsticks(truth.loc[ids].to_numpy(), tp_prior, oracle_score, equal_score)
        if equal_score is not None:  # what the pseudo labels gave beyond the extra training
            metrics["pseudo_gain"] = metrics["test_lwlrap"] - equal_score
        if k > 0 and runs.metrics(0).is_file():
            bootstrap = json.loads(runs.metrics(0).read_text()).get("test_lwlrap")
            metrics["gap_closed"] = yardsticks.gap_closed(metrics["test_lwlrap"], bootstrap, oracle_score)
            together = rounds_test_clips(ctx, k, test_clip)  # what `rfcx infer --round all` scores
            if together is not None:
                metrics["test_lwlrap_rounds"] = float(
                    lwlrap(truth.loc[ids].to_numpy(), np.stack([together[rid] for rid in ids]))
                )
                metrics["gap_closed_rounds"] = yardsticks.gap_closed(
                    metrics["test_lwlrap_rounds"], bootstrap, oracle_score
                )
    metrics["freq_channel_check"] = freq_channel_check(ctx, k, cfg.backbones[0])
    metrics["members"] = members
    metrics["train_seconds"] = time.perf_counter() - started
    write_json_atomic(runs.metrics(k), metrics)
    report.plot_round(runs, k)
    if export_formats:
        from rfcx.train.export import export_round

        export_round(runs.root, k, export_formats)
    write_json_atomic(runs.complete_marker(k), {"round": k, "finished": time.time()})
    report.plot_rounds(runs)
    return metrics


def template_summary(path: Path) -> dict:
    """The template teacher's ``templates.json`` beside ``path`` ({} where a run of an older version has none)."""
    summary = path.with_suffix(".json")
    return json.loads(summary.read_text()) if summary.is_file() else {}


def oof_tp_auc(ctx: Context, oof: dict[str, np.ndarray]) -> list[float | None]:
    """Per species, the TP AUC (rfcx.train.teachers.tp_auc) of the out-of-fold window scores ``oof`` (on the label
    grid): the window nearest each TP box against every window; None for a species without a TP box among them."""
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
    """Write ``best_round.json``: the complete round whose held-out signal (:func:`round_signal`) is highest (a tie
    keeps the earlier round, as ``--until-converged`` does), with the signal of every complete round. Written
    atomically, and only when it changed; returns its content (None before any round is complete)."""
    values, names = {}, {}
    for k in runs.rounds():
        if runs.is_complete(k) and runs.metrics(k).is_file():
            metrics = json.loads(runs.metrics(k).read_text())
            values[k], names[k] = round_signal(metrics), signal_name(metrics)
    if not values:
        return None
    best = max(values, key=lambda k: (values[k], -k))
    data = {
        "round": best,
        "signal": names[best],
        "value": values[best],
        "rounds": {str(k): v for k, v in sorted(values.items())},
    }
    if runs.best_round() != data:
        write_json_atomic(runs.best_round_file, data)
    return data


SIGNAL_NAME = "oof_clip_lwlrap"  # what round_signal measures, as best_round.json names it


def round_signal(metrics: dict) -> float:
    """The held-out signal rounds are compared by (``--until-converged``, ``best_round.json``): higher is better.
    Whole-clip LWLRAP of the out-of-fold train clips with TP boxes (``oof_clip_lwlrap``); runs made before it
    existed: the TP windows' ``oof_lwlrap``."""
    v = metrics.get(signal_name(metrics))
    return -1.0 if v is None else float(v)


def signal_name(metrics: dict) -> str:
    """The metric :func:`round_signal` reads: ``SIGNAL_NAME``, or ``oof_lwlrap`` in rounds made before it existed."""
    return SIGNAL_NAME if SIGNAL_NAME in metrics else "oof_lwlrap"


def round_summary(m: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    parts = [
        f"OOF LWLRAP {f(m.get('oof_lwlrap'))} (clips {f(m.get('oof_clip_lwlrap'))})",
        f"OOF TP-vs-FP AUC {f(m.get('oof_box_auc'))}",
        f"test LWLRAP {f(m.get('test_lwlrap'))}",
    ]
    y = m.get("yardsticks")
    if y:
        parts.append(f"[random {f(y.get('random'))}, prior-only {f(y.get('prior_only'))}, oracle {f(y.get('oracle'))}]")
    if m.get("gap_closed") is not None:
        parts.append(f"gap closed {100 * m['gap_closed']:.0f} %")
    if m.get("test_lwlrap_rounds") is not None:
        parts.append(
            f"rounds 0-{m['round']} together {f(m['test_lwlrap_rounds'])}"
            + (f" ({100 * m['gap_closed_rounds']:.0f} %)" if m.get("gap_closed_rounds") is not None else "")
        )
    if m.get("pseudo_gain") is not None:
        parts.append(
            f"pseudo-label gain {m['pseudo_gain']:+.4f} over round 0 trained as long "
            f"({f((y or {}).get('equal_compute'))})"
        )
    return ", ".join(parts)
