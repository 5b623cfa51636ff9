"""What a training crop is: where it starts and which labels (and label mask) it carries.

Round 0 (bootstrap) learns from the TP/FP boxes only: every crop is around a box centre, its targets and
mask come from the boxes it covers (TP: target 1, FP: target 0, mask 1 on those species, 0 elsewhere).
Rounds k >= 1 learn from soft pseudo labels: with probability ``tp_fp_p`` a crop is around a box (labels
of the nearest pseudo-label windows, fixed by the boxes), otherwise a random window of a random clip with its
pseudo labels, corrected where it overlaps boxes; the mask is ``w + (1 - w) * label`` (``pseudo_negative_weight``
``w``: 1, the seed's, weighs every label fully; below 1 a window the previous round scored low counts as a weak
negative, as round 0's unlabelled classes do), 1 on the boxes' own species.
The oracle (``rfcx train --oracle``, synthetic data) learns from every call's truth instead: half the crops
around a random call, half anywhere; a species is 1 where one of its calls lies (half) inside the crop, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from rfcx.errors import InvalidInputError
from store.melbank import hz_to_mel_bin
from store.params import MelParams
from store.tables import N_SPECIES as N_CLASSES

COVER = 0.5  # a box counts for a crop when at least this share of it lies inside


@dataclass
class PseudoLabels:
    """Soft labels on a sliding-window grid: ``scores[offsets[i]:offsets[i+1]]`` are clip ``ids[i]``'s windows."""

    ids: list[str]
    offsets: np.ndarray
    scores: np.ndarray  # (total_windows, 24) float32 in [0, 1]
    window_seconds: float
    hop_seconds: float

    def __post_init__(self) -> None:
        self._row = {rid: i for i, rid in enumerate(self.ids)}

    def row(self, recording_id: str) -> int:
        """The clip's position in ``ids``."""
        return self._row[recording_id]

    def clip(self, recording_id: str) -> np.ndarray:
        i = self._row[recording_id]
        return self.scores[self.offsets[i] : self.offsets[i + 1]]

    def __contains__(self, recording_id: object) -> bool:
        return recording_id in self._row

    def for_crop(self, recording_id: str, start_s: float, length_s: float) -> np.ndarray:
        """Labels of a crop: max over the windows lying inside it (at least the window nearest its centre)."""
        windows = self.clip(recording_id)
        starts = np.arange(len(windows)) * self.hop_seconds
        inside = (starts >= start_s - 1e-6) & (starts + self.window_seconds <= start_s + length_s + 1e-6)
        if not inside.any():
            centre = start_s + length_s / 2
            inside = np.zeros(len(windows), dtype=bool)
            inside[int(np.argmin(np.abs(starts + self.window_seconds / 2 - centre)))] = True
        return windows[inside].max(axis=0)


@dataclass
class CropBatch:
    """Descriptors of a batch of crops (the store is read afterwards)."""

    recording_ids: list[str]
    starts: np.ndarray  # (B,) start frame
    target: np.ndarray  # (B, 24) float32
    mask: np.ndarray  # (B, 24) float32
    box_bins: np.ndarray  # (B, 2) int64 mel bins [lo, hi] of the crop's box, -1 where none
    # round 0: (B, K, 3) int64 rows [species, lo, hi] (mel bins) of the TP boxes whose labels the crop carries (the
    # frequency masking around the crop's box drops a label whose bands it erased: rfcx.train.augment); rows of -1 pad
    label_boxes: np.ndarray | None = None


class CropSampler:
    """Draws crop descriptors for one fold's training recordings."""

    def __init__(
        self,
        boxes: pd.DataFrame,
        n_frames: dict[str, int],
        params: MelParams,
        crop_frames: int,
        round_idx: int,
        pseudo: PseudoLabels | None = None,
        tp_fp_sampling: bool = True,
        tp_fp_p: float = 0.5,
        seed: int = 0,
        truth: pd.DataFrame | None = None,
        unlabelled_weight: float = 0.0,
        random_crop_p: float = 0.0,
        pseudo_negative_weight: float = 1.0,
        tp_box_share: float = 0.0,
    ) -> None:
        if round_idx > 0 and pseudo is None and truth is None:
            raise InvalidInputError("rounds >= 1 need the previous round's pseudo labels")
        # rounds >= 1: clips without pseudo labels (added to the store after the previous round) are left out of
        # the draws, random and box crops alike (rfcx.train.rounds says how many, once per round)
        # (checked above; the oracle's truth may stand in for the pseudo labels)
        labelled = pseudo if round_idx > 0 and pseudo is not None else None
        self.unlabelled = sorted(r for r in n_frames if r not in labelled) if labelled is not None else []
        if labelled is not None and self.unlabelled:
            n_frames = {r: n for r, n in n_frames.items() if r in labelled}
            if not n_frames:
                raise InvalidInputError(
                    f"none of the {len(self.unlabelled)} training clips has pseudo labels from the "
                    f"previous round (e.g. {', '.join(self.unlabelled[:3])})"
                )
        self.ids = sorted(n_frames)
        self.boxes = boxes[boxes.recording_id.isin(n_frames)].reset_index(drop=True)
        self.truth = None
        if truth is not None:  # the oracle: every call of the training clips
            calls = truth[truth.recording_id.isin(n_frames)].reset_index(drop=True)
            if calls.empty:
                raise InvalidInputError(
                    "the oracle needs the calls' truth (calls_truth.csv) of the training recordings"
                )
            self.truth = (
                calls.recording_id.to_numpy(dtype=object),
                calls[["t_min", "t_max"]].to_numpy(np.float64),
                {
                    rid: (calls.t_min.to_numpy()[idx], calls.t_max.to_numpy()[idx], calls.species_id.to_numpy()[idx])
                    for rid, idx in calls.groupby("recording_id").indices.items()
                },
            )
        if round_idx == 0 and self.boxes.empty and truth is None:
            raise InvalidInputError("round 0 needs TP/FP boxes, and none of the training recordings has any")
        self.n_frames, self.params, self.crop = n_frames, params, crop_frames
        self.round, self.pseudo = round_idx, pseudo
        self.tp_fp_sampling, self.tp_fp_p = tp_fp_sampling, tp_fp_p
        self.unlabelled_weight, self.random_crop_p = unlabelled_weight, random_crop_p
        self.pseudo_negative_weight = pseudo_negative_weight
        self.rng = np.random.default_rng(seed)
        self.fps = params.frames_per_second
        # plain arrays: the per-crop lookups below run thousands of times per epoch (pandas is ~10x slower here)
        self._rid = self.boxes.recording_id.to_numpy(dtype=object)
        self._t = self.boxes[["t_min", "t_max"]].to_numpy(dtype=np.float64)
        self._by_rid = {
            rid: (
                self._t[idx, 0],
                self._t[idx, 1],
                self.boxes.species_id.to_numpy()[idx],
                self.boxes.is_tp.to_numpy(dtype=bool)[idx],
            )
            for rid, idx in self.boxes.groupby("recording_id").indices.items()
        }
        # the box pools crops are drawn from: every box alike (the seed's: ~1 TP box in 7 on the real data), or with
        # tp_box_share > 0 the TP boxes with that probability, else the FP boxes; each pool is walked (round 0) or
        # drawn from (later rounds) on its own
        is_tp = self.boxes.is_tp.to_numpy(dtype=bool)
        self._pools = {"all": np.arange(len(self.boxes)), "tp": np.flatnonzero(is_tp), "fp": np.flatnonzero(~is_tp)}
        self.tp_box_share = tp_box_share if is_tp.any() and not is_tp.all() else 0.0
        self._walks = {name: np.zeros(0, dtype=np.int64) for name in self._pools}
        lo = np.floor(hz_to_mel_bin(self.boxes.f_min.to_numpy(), params.n_mels, params.f_min, params.f_max))
        hi = np.ceil(hz_to_mel_bin(self.boxes.f_max.to_numpy(), params.n_mels, params.f_min, params.f_max))
        self._bins = np.stack([np.clip(lo, 0, params.n_mels - 1), np.clip(hi, 0, params.n_mels - 1)], 1).astype(
            np.int64
        )
        self._box_idx = self.boxes.groupby("recording_id").indices  # box rows of each clip
        self._species_tp = (self.boxes.species_id.to_numpy(dtype=np.int64), self.boxes.is_tp.to_numpy(dtype=bool))

    def _tp_bands(self, rid: str, start: int) -> list[tuple[int, int, int]]:
        """(species, lo, hi) of the TP boxes that label the crop (those covering it as in :meth:`_box_labels`)."""
        idx = self._box_idx.get(rid)
        if idx is None:
            return []
        t_min, t_max = self._t[idx, 0], self._t[idx, 1]
        c0, c1 = start / self.fps, (start + self.crop) / self.fps
        covered = np.minimum(t_max, c1) - np.maximum(t_min, c0) >= COVER * (t_max - t_min)
        species, is_tp = self._species_tp
        rows = idx[covered & is_tp[idx]]
        return [(int(c), int(lo), int(hi)) for c, (lo, hi) in zip(species[rows], self._bins[rows])]

    def _next_box(self) -> int:
        """Round 0 walks through its pool's boxes in a fresh random order, pass after pass; later rounds draw one.
        The pool: every box, or with ``tp_box_share`` the TP boxes with that probability, else the FP boxes."""
        name = "all" if not self.tp_box_share else "tp" if self.rng.random() < self.tp_box_share else "fp"
        pool = self._pools[name]
        if self.round > 0:
            return int(pool[self.rng.integers(len(pool))])
        if not len(self._walks[name]):
            self._walks[name] = pool[self.rng.permutation(len(pool))]
        i, self._walks[name] = self._walks[name][0], self._walks[name][1:]
        return int(i)

    def _box_start(self, i: int) -> int:
        """A random start that keeps the box centre inside the crop (the whole box, where it fits)."""
        t0, t1 = self._t[i] * self.fps
        centre, half = (t0 + t1) / 2, (t1 - t0) / 2
        slack = max(0.0, self.crop / 2 - half)
        start = centre - self.crop / 2 + self.rng.uniform(-slack, slack)
        return int(np.clip(round(start), 0, max(0, self.n_frames[self._rid[i]] - self.crop)))

    def _box_labels(self, rid: str, start: int, target: np.ndarray, mask: np.ndarray) -> None:
        """Boxes covering the crop set their species: FP -> 0 first, then TP -> 1 (a TP wins)."""
        group = self._by_rid.get(rid)
        if group is None:
            return
        t_min, t_max, species, is_tp = group
        c0, c1 = start / self.fps, (start + self.crop) / self.fps
        covered = np.minimum(t_max, c1) - np.maximum(t_min, c0) >= COVER * (t_max - t_min)
        for tp in (False, True):
            hit = species[covered & (is_tp == tp)]
            target[hit] = 1.0 if tp else 0.0
            mask[hit] = 1.0

    def _truth_labels(self, rid: str, start: int, target: np.ndarray) -> None:
        """The oracle's labels: 1 for a species with a call at least half inside the crop (or filling half of it)."""
        assert self.truth is not None  # called by _sample_truth alone
        group = self.truth[2].get(rid)
        if group is None:
            return
        t_min, t_max, species = group
        c0, c1 = start / self.fps, (start + self.crop) / self.fps
        overlap = np.minimum(t_max, c1) - np.maximum(t_min, c0)
        target[species[overlap >= COVER * np.minimum(t_max - t_min, c1 - c0)]] = 1.0

    def _sample_truth(self, batch_size: int) -> CropBatch:
        rids, starts = [], np.zeros(batch_size, dtype=np.int64)
        target = np.zeros((batch_size, N_CLASSES), dtype=np.float32)
        assert self.truth is not None  # called by sample alone, where there is truth
        call_rid, call_t, _ = self.truth
        for j in range(batch_size):
            if self.rng.random() < 0.5:
                i = int(self.rng.integers(len(call_rid)))
                rid = call_rid[i]
                t0, t1 = call_t[i] * self.fps
                slack = max(0.0, self.crop / 2 - (t1 - t0) / 2)
                start = (t0 + t1) / 2 - self.crop / 2 + self.rng.uniform(-slack, slack)
                start = int(np.clip(round(start), 0, max(0, self.n_frames[rid] - self.crop)))
            else:
                rid = self.ids[int(self.rng.integers(len(self.ids)))]
                start = int(self.rng.integers(0, max(1, self.n_frames[rid] - self.crop + 1)))
            self._truth_labels(rid, start, target[j])
            rids.append(rid)
            starts[j] = start
        return CropBatch(rids, starts, target, np.ones_like(target), np.full((batch_size, 2), -1, dtype=np.int64))

    def sample(self, batch_size: int) -> CropBatch:
        if self.truth is not None:
            return self._sample_truth(batch_size)
        rids, starts = [], np.zeros(batch_size, dtype=np.int64)
        target = np.zeros((batch_size, N_CLASSES), dtype=np.float32)
        mask = np.zeros((batch_size, N_CLASSES), dtype=np.float32)
        bins = np.full((batch_size, 2), -1, dtype=np.int64)
        bands: list[list[tuple[int, int, int]]] = []
        for j in range(batch_size):
            if self.round == 0:
                from_box: bool | int = not (self.random_crop_p and self.rng.random() < self.random_crop_p)
            else:
                from_box = self.tp_fp_sampling and len(self.boxes) and self.rng.random() < self.tp_fp_p
            if from_box:
                i = self._next_box()
                rid, start = self._rid[i], self._box_start(i)
                if self.round == 0:
                    bins[j] = self._bins[i]
                    bands.append(self._tp_bands(rid, start))
            else:
                rid = self.ids[int(self.rng.integers(len(self.ids)))]
                start = int(self.rng.integers(0, max(1, self.n_frames[rid] - self.crop + 1)))
                if self.round == 0:
                    bands.append([])  # no box: no frequency masking, nothing it could erase
            if self.round > 0:  # soft labels; a low one (a window the previous round found empty) weighs less
                pseudo = cast(PseudoLabels, self.pseudo)  # rounds >= 1 have pseudo labels
                target[j] = pseudo.for_crop(rid, start / self.fps, self.crop / self.fps)
                mask[j] = self.pseudo_negative_weight + (1.0 - self.pseudo_negative_weight) * target[j]
            elif self.unlabelled_weight:
                mask[j] = self.unlabelled_weight  # target 0: most windows hold no call of a given species
            self._box_labels(rid, start, target[j], mask[j])  # a box's own species: its label, full weight
            rids.append(rid)
            starts[j] = start
        label_boxes = None
        if self.round == 0:
            label_boxes = np.full((batch_size, max(1, max(map(len, bands), default=0)), 3), -1, dtype=np.int64)
            for j, rows in enumerate(bands):
                if rows:
                    label_boxes[j, : len(rows)] = rows
        return CropBatch(rids, starts, target, mask, bins, label_boxes)
