"""Synthetic RFCX-like data set: FLAC clips plus label tables in the competition's layout.

Each clip is made from its own RNG, seeded by (seed, split, index), so a data set is
reproducible and clips can be made in any order or in parallel. Train clips carry
sparse labels like the real ones: about one TP box per TP recording although its
species calls several times, and FP boxes that mark a call of a band-similar species
under the wrong species id. ``test_labels.csv`` holds the clip-level truth for the
test clips and ``calls_truth.csv`` every call placed in every clip. ``tp_fraction`` raises
(or lowers) the share of train recordings that carry TP boxes above the real ~24 %, and
``label_density`` labels more of what is in each train clip (more TP calls per TP species,
more FP rows per recording) while keeping the structure of the real labels.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from rfcx.errors import InvalidInputError
from rfcx.synth.calls import SR
from rfcx.synth.plan import TEST, TRAIN, Mix, _check_label_density, _check_tp_fraction, recording_ids
from rfcx.synth.render import _load_background, make_clip
from rfcx.synth.species import N_SPECIES
from rfcx.synth.variety import VARIABLE, CallVariety

LABEL_COLUMNS = ["recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"]
SUBMISSION_COLUMNS = ["recording_id"] + [f"s{i}" for i in range(N_SPECIES)]
TRUTH_COLUMNS = ["split", "recording_id", "species_id", "t_min", "f_min", "t_max", "f_max", "snr_db", "songtype_id"]
MIN_SECONDS = 0.1


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    n_train: int
    n_test: int
    n_tp_rows: int
    n_fp_rows: int
    seconds: float
    elapsed_s: float


# Per-process job context (set in the parent for workers=1, by the pool initializer otherwise).
_JOB: dict = {}


def _init_job(ctx: dict) -> None:
    _JOB.clear()
    _JOB.update(ctx)


def _make_and_write(task: tuple[str, int, str]) -> tuple[list, list, tuple[int, ...], list]:
    """Make one clip, write its FLAC and return its label rows (without the audio)."""
    split, index, rid = task
    clip = make_clip(
        split,
        index,
        _JOB["seed"],
        _JOB["seconds"],
        _JOB["background"],
        _JOB["tp_fraction"],
        _JOB["label_density"],
        _JOB.get("mix"),
        _JOB.get("calls"),
    )
    sf.write(str(_JOB["out_dir"] / split / f"{rid}.flac"), clip.audio, SR, format="FLAC", subtype="PCM_16")
    truth = [
        (split, rid, c.species_id, c.t_min, c.call.f_min, c.t_max, c.call.f_max, c.snr_db, c.songtype_id)
        for c in clip.calls
    ]
    return [(rid, *b) for b in clip.tp], [(rid, *b) for b in clip.fp], clip.species, truth


def _validate(
    out_dir: Path,
    n_train: int,
    n_test: int,
    seconds: float,
    workers: int,
    background: Path | Sequence[Path] | None,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
) -> None:
    for name, value, low in (("n_train", n_train, 1), ("n_test", n_test, 0), ("workers", workers, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seconds, numbers.Real) or not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise InvalidInputError(f"seconds must be a number >= {MIN_SECONDS}, got {seconds!r}")
    _check_tp_fraction(tp_fraction)
    _check_label_density(label_density)
    background_files(background)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(f"out_dir {out_dir} exists and is not a directory")


def background_files(background: Path | str | Sequence[Path | str] | None) -> list[Path]:
    """The recordings named by ``background``: a file, a folder (its ``*.flac``, sorted), or a list of either."""
    if background is None:
        return []
    items = [background] if isinstance(background, (str, Path)) else list(background)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(item.glob("*.flac"))
            if not found:
                raise InvalidInputError(f"background folder {item} holds no .flac file")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise InvalidInputError(f"background file {item} does not exist or is not a file")
    return files


def synthesize(
    out_dir: Path,
    n_train: int = 100,
    n_test: int = 40,
    seconds: float = 60.0,
    seed: int = 0,
    background: Path | Sequence[Path] | None = None,
    progress: bool = True,
    workers: int = 1,
    tp_fraction: float | None = None,
    label_density: float = 1.0,
    mix: Mix | None = None,
    calls: CallVariety | None = VARIABLE,
) -> SynthSummary:
    """Write a synthetic RFCX-layout data set into ``out_dir`` (see the module docstring).

    ``tp_fraction``: the share of train recordings that carry TP boxes, in (0, 1]; those are
    split between TP only and TP + FP in the real ratio, the rest carry FP boxes only.
    ``None`` keeps the real tables' shares (~24 % with TP boxes).
    ``label_density`` D >= 1: 1 gives the real sparsity (one labelled call per TP species,
    ~2 FP rows per FP recording). D > 1 labels more of what each train clip holds: up to
    round(D) calls of each TP species, about D times as many FP rows per FP recording, and
    TP-only recordings get FP rows too with probability (D - 1) / D. Test clips do not change.
    ``mix``: a :class:`Mix` (skewed species mix, competition-sparse labels) instead of species that follow the
    labels; ``tp_fraction`` and ``label_density`` then do not apply. ``background``: a recording, a folder of
    them or a list; each clip mixes in one, drawn by its own seed. ``calls``: how the calls vary
    (:class:`rfcx.synth.variety.CallVariety`: song types, individuals, choruses, distance, unlabelled outsiders),
    or None for one call shape per species."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    _validate(out_dir, n_train, n_test, seconds, workers, background, tp_fraction, label_density)
    if mix is not None and (tp_fraction is not None or label_density != 1.0):
        raise InvalidInputError(
            "tp_fraction and label_density shape the labels-first species plan; a Mix sets its own "
            "label density (tp_per_clip, fp_per_clip)"
        )
    files = background_files(background)
    real = [_load_background(f) for f in files] if len(files) > 1 else (_load_background(files[0]) if files else None)
    train_ids, test_ids = recording_ids(seed, n_train, n_test)
    for split, ids in ((TRAIN, train_ids), (TEST, test_ids)):
        folder = out_dir / split
        stale = sorted(p.name for p in folder.glob("*.flac") if p.stem not in set(ids)) if folder.is_dir() else []
        if stale:
            raise InvalidInputError(f"{folder} already holds other recordings ({stale[0]}, ...); use an empty out_dir")
        folder.mkdir(parents=True, exist_ok=True)

    tasks = [(TRAIN, i, r) for i, r in enumerate(train_ids)] + [(TEST, i, r) for i, r in enumerate(test_ids)]
    ctx = {
        "seed": int(seed),
        "seconds": float(seconds),
        "background": real,
        "out_dir": out_dir,
        "tp_fraction": None if tp_fraction is None else float(tp_fraction),
        "label_density": float(label_density),
        "mix": mix,
        "calls": calls,
    }
    if workers == 1:
        _init_job(ctx)
    with ProcessPoolExecutor(workers, initializer=_init_job, initargs=(ctx,)) if workers > 1 else nullcontext() as pool:
        made = pool.map(_make_and_write, tasks, chunksize=2) if pool else map(_make_and_write, tasks)
        results = list(tqdm(made, total=len(tasks), desc="synth", unit="clip", disable=not progress))

    tp_rows, fp_rows, truth, test_rows = [], [], [], []
    for (split, _, rid), (tp, fp, species, clip_calls) in zip(tasks, results):
        tp_rows += tp
        fp_rows += fp
        truth += clip_calls
        if split == TEST:
            test_rows.append([rid] + [int(s in species) for s in range(N_SPECIES)])

    def table(rows: list, columns: list[str]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=columns)
        rounding = {c: 4 for c in ("t_min", "t_max")} | {c: 2 for c in ("f_min", "f_max", "snr_db")}
        return df.round({c: r for c, r in rounding.items() if c in df.columns})

    by_id = dict(by="recording_id", kind="stable")
    table(tp_rows, LABEL_COLUMNS).sort_values(**by_id).to_csv(out_dir / "train_tp.csv", index=False)
    table(fp_rows, LABEL_COLUMNS).sort_values(**by_id).to_csv(out_dir / "train_fp.csv", index=False)
    table(truth, TRUTH_COLUMNS).to_csv(out_dir / "calls_truth.csv", index=False)
    labels = pd.DataFrame(test_rows, columns=SUBMISSION_COLUMNS).sort_values(**by_id)
    labels.to_csv(out_dir / "test_labels.csv", index=False)
    labels.assign(**{c: 0 for c in SUBMISSION_COLUMNS[1:]}).to_csv(out_dir / "sample_submission.csv", index=False)
    return SynthSummary(
        out_dir, n_train, n_test, len(tp_rows), len(fp_rows), float(seconds), time.perf_counter() - t_start
    )
