"""A second teacher for the pseudo labels: the TP boxes as templates, matched over every training clip.

The bootstrap learns a species from its few TP boxes (about five per species on the benchmark set) and finds few of
its other calls: for short calls it ranks the clips holding them barely above chance, so its pseudo labels teach the
next round nothing about them. A box is a template of its species' call. Normalised cross-correlation (NCC) of the
box's patch of the log-mel spectrogram, over time and a few mel bins of pitch, against the same band of every clip
finds the species' other calls whatever their loudness (``pseudo_templates``; README "A detector that works").

Per species, the NCC of a window is the best over the species' templates; it becomes a label in [0, 1] by the
species' own figures: the windows of all clips (most hold no call of the species) give the background level, the
TP boxes matched by the templates of *other* clips (leave one clip out) the level of a call; linear in between.
FP boxes are matches a person rejected (on the real data, the RFCx template matcher's): the background is at least
their median NCC, and a species' label is 0 in the windows holding one of its FP boxes. The next round learns from
the larger of this label and the network teacher's.

The matching is FFT correlation (numerator) and summed-area tables (each patch's mean and energy), in chunks of
clips, on the training device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from rfcx.process_group import SINGLE, ProcessGroup
from rfcx.runs.predictions import stack
from rfcx.train.pseudo import tp_windows
from rfcx.train.sampling import PseudoLabels
from rfcx.train.teachers import auc
from store import FeatureStore
from store.melbank import hz_to_mel_bin
from store.tables import N_SPECIES as N_CLASSES

POOL = (2, 2)  # (mel bins, frames) pooled before matching: 4x less work, calls of 0.5 s still span ~23 frames
SHIFT = 1  # pooled mel bins of pitch a template may move (a call's pitch varies from one to the next)


@dataclass(frozen=True)
class Template:
    """One TP box as a zero-mean, unit-norm patch of the pooled spectrogram (``bins`` x ``frames``)."""

    species: int
    recording_id: str
    lo: int  # first pooled mel bin
    hi: int  # one past the last
    start: int  # first pooled frame
    patch: torch.Tensor


@dataclass(frozen=True)
class MatchResult:
    """Window NCC per clip: ``best`` over every template, ``other`` over the templates cut from other clips; and
    the ``other`` NCC inside each TP box (``tp``) and FP box (``fp``): ``(species, ncc)`` pairs."""

    best: dict[str, np.ndarray]  # rid -> (n_windows, 24), -1 where a species has no template
    other: dict[str, np.ndarray]
    tp: list[tuple[int, float]]
    fp: list[tuple[int, float]]


def normalise(mel: np.ndarray, pool: tuple[int, int]) -> torch.Tensor:
    """The clip's dB spectrogram less each mel bin's median over time (the stationary background), average-pooled
    by ``pool`` (mel bins, frames)."""
    x = torch.from_numpy(np.asarray(mel, dtype=np.float32))
    x = x - x.median(dim=1, keepdim=True).values
    if pool != (1, 1):
        x = F.avg_pool2d(x[None, None], pool)[0, 0]
    return x


def _box_bins(boxes: pd.DataFrame, fs: FeatureStore, pool: tuple[int, int], n_bins: int) -> np.ndarray:
    p = fs.params
    lo = np.floor(hz_to_mel_bin(boxes.f_min.to_numpy(), p.n_mels, p.f_min, p.f_max) / pool[0])
    hi = np.ceil(hz_to_mel_bin(boxes.f_max.to_numpy(), p.n_mels, p.f_min, p.f_max) / pool[0]) + 1
    return np.stack([np.clip(lo, 0, n_bins - 1), np.clip(hi, 1, n_bins)], 1).astype(np.int64)


def _box_frames(boxes: pd.DataFrame, fps: float, n_frames: int) -> np.ndarray:
    a = np.floor(boxes.t_min.to_numpy() * fps)
    e = np.ceil(boxes.t_max.to_numpy() * fps)
    return np.stack([np.clip(a, 0, n_frames - 1), np.clip(np.maximum(e, a + 2), 1, n_frames)], 1).astype(np.int64)


def cut_templates(
    fs: FeatureStore,
    tp: pd.DataFrame,
    pool: tuple[int, int],
    per_species: int,
    seed: int = 0,
    stretches: Sequence[float] = (1.0,),
) -> list[Template]:
    """A template per TP box, at most ``per_species`` of a species (drawn at random, one clip's boxes spread), and
    one per factor of ``stretches`` (the patch resampled in time to that factor of its length: a call sung faster
    or slower; 1.0 is the patch as cut)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for _, g in tp.groupby("species_id", sort=True):
        order = rng.permutation(len(g))[:per_species]
        chosen.append(g.iloc[np.sort(order)])
    if not chosen:
        return []
    boxes = pd.concat(chosen)
    out: list[Template] = []
    fps = fs.params.frames_per_second / pool[1]
    for rid, g in boxes.groupby("recording_id", sort=True):
        x = normalise(fs.mel(rid), pool)
        bins, frames = _box_bins(g, fs, pool, x.shape[0]), _box_frames(g, fps, x.shape[1])
        for (lo, hi), (a, e), species in zip(bins, frames, g.species_id.to_numpy()):
            cut = x[lo:hi, a:e]
            for factor in stretches:
                patch = _stretched(cut, factor).clone()
                patch -= patch.mean()
                norm = float(patch.norm())
                if norm <= 1e-6 or patch.shape[0] < 2:
                    continue  # a flat or one-bin patch matches nothing
                out.append(Template(int(species), str(rid), int(lo), int(hi), int(a), patch / norm))
    return out


def _stretched(patch: torch.Tensor, factor: float) -> torch.Tensor:
    """``patch`` (bins x frames) resampled in time to ``factor`` times its frames (at least 2)."""
    if factor == 1.0:
        return patch
    frames = max(2, int(round(patch.shape[1] * factor)))
    return F.interpolate(patch[None, None], size=(patch.shape[0], frames), mode="bilinear", align_corners=True)[0, 0]


def _window_max(
    trace: torch.Tensor, n_windows: Sequence[int], fps: float, window_s: float, hop_s: float
) -> list[np.ndarray]:
    """Per clip (rows of ``trace``: chunk x 24 x frames), the max of each window of the label grid."""
    frames = trace.shape[-1]
    width = min(frames, max(1, int(round(window_s * fps))))
    sliding = F.max_pool1d(trace.flatten(0, 1)[:, None], width, stride=1)[:, 0].unflatten(0, trace.shape[:2])
    out = []
    for i, n in enumerate(n_windows):
        starts = np.minimum(np.round(np.arange(n) * hop_s * fps).astype(np.int64), sliding.shape[-1] - 1)
        out.append(sliding[i][:, torch.from_numpy(starts)].T.cpu().numpy())
    return out


def match(
    fs: FeatureStore,
    ids: Sequence[str],
    templates: Sequence[Template],
    n_windows: dict[str, int],
    window_s: float,
    hop_s: float,
    boxes: pd.DataFrame,
    pool: tuple[int, int] = (2, 2),
    shift: int = 1,
    device: torch.device | str = "cpu",
    chunk: int = 32,
    progress: Callable[[int], None] | None = None,
) -> MatchResult:
    """NCC of every template (at ``-shift..shift`` pooled mel bins of pitch) over the clips ``ids``: the window
    maxima of each species' best match, and its matches inside the labelled boxes (``boxes``: ``is_tp``)."""
    device = torch.device(device)
    fps = fs.params.frames_per_second / pool[1]
    by_clip = boxes.groupby("recording_id").indices
    best: dict[str, np.ndarray] = {}
    other: dict[str, np.ndarray] = {}
    tp_hits: list[tuple[int, float]] = []
    fp_hits: list[tuple[int, float]] = []
    species = sorted({t.species for t in templates})
    for c0 in range(0, len(ids), chunk):
        part = list(ids[c0 : c0 + chunk])
        xs = [normalise(fs.mel(rid), pool) for rid in part]
        frames = max(x.shape[1] for x in xs)
        x = torch.zeros(len(xs), xs[0].shape[0], frames)
        for i, xi in enumerate(xs):
            x[i, :, : xi.shape[1]] = xi
        x = x.to(device)
        n, bins, _ = x.shape
        longest = max(t.patch.shape[1] for t in templates)
        nfft = 1 << int(np.ceil(np.log2(frames + longest)))
        spec = torch.fft.rfft(x, n=nfft)
        area = torch.zeros(n, bins + 1, frames + 1, device=device, dtype=torch.float64)
        area2 = torch.zeros_like(area)
        area[:, 1:, 1:] = x.double().cumsum(1).cumsum(2)
        area2[:, 1:, 1:] = (x.double() ** 2).cumsum(1).cumsum(2)
        trace_best = torch.full((n, N_CLASSES, frames), -1.0, device=device)
        trace_other = torch.full_like(trace_best, -1.0)
        for t in templates:
            rows, length = t.patch.shape
            if length > frames:
                continue
            kernel = torch.fft.rfft(t.patch.to(device).flip(-1), n=nfft)
            own = [i for i, rid in enumerate(part) if rid == t.recording_id]
            for d in range(-shift, shift + 1):
                lo, hi = t.lo + d, t.hi + d
                if lo < 0 or hi > bins:
                    continue
                num = torch.fft.irfft((spec[:, lo:hi] * kernel).sum(1), n=nfft)[:, length - 1 : frames]
                s1 = area[:, hi, length:] - area[:, lo, length:] - area[:, hi, :-length] + area[:, lo, :-length]
                s2 = area2[:, hi, length:] - area2[:, lo, length:] - area2[:, hi, :-length] + area2[:, lo, :-length]
                var = (s2 - s1 * s1 / (rows * length)).clamp_min(1e-6)
                r = (num / var.sqrt().float()).clamp(-1.0, 1.0)
                centre = slice(length // 2, length // 2 + r.shape[1])
                view = trace_best[:, t.species, centre]
                torch.maximum(view, r, out=view)
                if own:
                    r[own] = -1.0
                view = trace_other[:, t.species, centre]
                torch.maximum(view, r, out=view)
        counts = [n_windows[rid] for rid in part]
        for rid, wb, wo in zip(
            part,
            _window_max(trace_best, counts, fps, window_s, hop_s),
            _window_max(trace_other, counts, fps, window_s, hop_s),
        ):
            best[rid], other[rid] = wb, wo
        for i, rid in enumerate(part):
            idx = by_clip.get(rid)
            if idx is None:
                continue
            g = boxes.iloc[idx]
            g = g[g.species_id.isin(species)]
            for (a, e), s, is_tp in zip(_box_frames(g, fps, frames), g.species_id.to_numpy(), g.is_tp.to_numpy()):
                (tp_hits if is_tp else fp_hits).append((int(s), float(trace_other[i, int(s), a:e].max())))
        if progress is not None:
            progress(len(part))
    return MatchResult(best, other, tp_hits, fp_hits)


def calibration(result: MatchResult, background_q: float = 0.9) -> dict[int, tuple[float, float]]:
    """Per species with a call level, ``(background, call)``: the call level is the median NCC of its TP boxes
    matched by other clips' templates; the background the larger of the ``background_q`` quantile of its window NCC
    over every clip (from other clips' templates) and the median NCC of its FP boxes (a box a matcher proposed and a
    person rejected: where the templates match those as well as the calls, only the better matches count). A
    species whose TP boxes all lie in one clip, or whose calls match no better than that, has none."""
    windows = np.concatenate(list(result.other.values())) if result.other else np.zeros((0, N_CLASSES))
    levels: dict[int, tuple[float, float]] = {}
    tp = pd.DataFrame(result.tp, columns=["species", "ncc"])
    fp = pd.DataFrame(result.fp, columns=["species", "ncc"])
    for s, g in tp.groupby("species"):
        col = windows[:, int(s)]
        col = col[col > -1.0]
        if not len(col) or (g.ncc <= -1.0).all():
            continue
        lo = float(np.quantile(col, background_q))
        rejected = fp.ncc[(fp.species == s) & (fp.ncc > -1.0)]
        if len(rejected):
            lo = max(lo, float(np.median(rejected)))
        hi = float(np.median(g.ncc[g.ncc > -1.0]))
        if hi > lo + 1e-3:
            levels[int(s)] = (lo, hi)
    return levels


def tp_auc(
    result: MatchResult, species: Sequence[int], tp: pd.DataFrame, window_s: float, hop_s: float
) -> dict[int, float]:
    """Per species of ``species``, how well the templates find its calls in clips they were not cut from: the AUC of
    the window NCC from other clips' templates at its TP boxes (``tp``; the window nearest each box's centre, on the
    label grid of ``window_s`` every ``hop_s``) against the same NCC of every window (rfcx.train.teachers.tp_auc,
    positive vs unlabelled; the network teacher's figure is read the same way from its out-of-fold window scores)."""
    ids, offsets, flat = stack(result.other)
    rows = tp_windows(PseudoLabels(ids, offsets, flat, window_s, hop_s), tp)
    out = {}
    for s in species:
        col = flat[:, int(s)]
        known = col > -1.0  # -1: no template of the species (its only clip's own)
        value = auc(col[rows[int(s)]][known[rows[int(s)]]], col[known])
        if value is not None:
            out[int(s)] = value
    return out


def labels(
    result: MatchResult,
    levels: dict[int, tuple[float, float]],
    fp: pd.DataFrame | None = None,
    window_s: float = 0.0,
    hop_s: float = 1.0,
) -> dict[str, np.ndarray]:
    """Soft labels in [0, 1] per clip: each calibrated species' best window NCC, linear from its background (0) to
    its call level (1); 0 for the other species, and for a species in the windows holding one of its FP boxes
    (``fp``: the centre inside the window of ``window_s`` every ``hop_s``), which a person marked as not its call."""
    out: dict[str, np.ndarray] = {}
    for rid, ncc in result.best.items():
        lab = np.zeros_like(ncc, dtype=np.float32)
        for s, (lo, hi) in levels.items():
            lab[:, s] = np.clip((ncc[:, s] - lo) / (hi - lo), 0.0, 1.0)
        out[rid] = lab
    if fp is not None:
        for box in fp.itertuples():
            clip_lab = out.get(box.recording_id)
            if clip_lab is None:
                continue
            centre = (box.t_min + box.t_max) / 2
            starts = np.arange(len(clip_lab)) * hop_s
            clip_lab[(starts <= centre) & (starts + window_s >= centre), int(box.species_id)] = 0.0
    return out


def merge(parts: Sequence[MatchResult]) -> MatchResult:
    """One :class:`MatchResult` of the results of disjoint sets of clips."""
    return MatchResult(
        {rid: v for p in parts for rid, v in p.best.items()},
        {rid: v for p in parts for rid, v in p.other.items()},
        [hit for p in parts for hit in p.tp],
        [hit for p in parts for hit in p.fp],
    )


def teacher(
    fs: FeatureStore,
    boxes: pd.DataFrame,
    n_windows: dict[str, int],
    window_s: float,
    hop_s: float,
    device: torch.device | str = "cpu",
    progress: bool = False,
    per_species: int = 16,
    seed: int = 0,
    group: ProcessGroup = SINGLE,
    shift: int = SHIFT,
    stretches: Sequence[float] = (1.0,),
) -> tuple[dict[str, np.ndarray], dict]:
    """The template teacher's soft labels ``{rid: (n_windows, 24)}`` of the clips in ``n_windows`` (on the label grid
    of ``window_s`` every ``hop_s``), from the TP boxes of ``boxes`` (at most ``per_species`` templates a species),
    and a summary: the templates, seconds taken, each calibrated species' levels and TP AUC (:func:`tp_auc`).
    A template matches ``-shift..shift`` pooled mel bins of pitch away, and once per factor of ``stretches`` in time.

    With a ``group`` of many ranks each matches its share of the clips (every rank calls this); rank 0 gathers
    the matches and returns the labels, the other ranks ``({}, {})``. The labels are those of one process."""
    started = time.perf_counter()
    tp = boxes[boxes.is_tp]
    templates = cut_templates(fs, tp, POOL, per_species, seed, stretches)
    ids = group.shard(sorted(n_windows))
    with tqdm(total=len(ids), desc="template teacher", unit="clip", disable=not progress) as bar:
        result = match(fs, ids, templates, n_windows, window_s, hop_s, boxes, POOL, shift, device, progress=bar.update)
    if group.distributed:
        parts = group.gather_after_work(result, "template teacher: the ranks' matches")
        if not group.is_main:
            return {}, {}
        result = merge(parts)
    levels = calibration(result)
    summary = {
        "templates": len(templates),
        "shift": shift,
        "stretches": list(stretches),
        "species_calibrated": sorted(levels),
        "levels": {str(s): {"background": round(lo, 4), "call": round(hi, 4)} for s, (lo, hi) in levels.items()},
        "tp_auc": {str(s): round(v, 4) for s, v in tp_auc(result, sorted(levels), tp, window_s, hop_s).items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    return labels(result, levels, boxes[~boxes.is_tp], window_s, hop_s), summary
