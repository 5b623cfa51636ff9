"""The review page's outline: :func:`write_review` gathers a run's rounds, events, pseudo labels and species
(:mod:`.content`), draws them (:mod:`.figures`), cuts the snippets (:mod:`.snippets`) and writes the page
(:mod:`.page`) into a temporary folder that replaces OUT whole."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rfcx.errors import InvalidInputError, NotFoundError
from rfcx.runs.directory import RunDir
from store.atomic import replace_dir, temp_dir

from .content import (
    N_CLASSES,
    RoundScores,
    complete_rounds,
    merge_window_rows,
    per_class_table,
    round_scores,
    run_grid,
    select_rounds,
    top_events,
    train_examples,
    window_table,
)
from .page import GENERATOR, EventCard, Page, RoundSection, SpeciesView, TrainCard, render

SNIPPET_MARGIN_S = 0.5  # audio before and after an event
SNIPPET_MAX_S = 10.0


@dataclass(frozen=True)
class ReviewSummary:
    """What :func:`write_review` wrote: ``index`` (OUT/index.html) with ``images`` PNGs and ``snippets`` audio
    files, for ``rounds``, ``events`` events shown; ``notes``: what the page says is missing."""

    index: Path
    rounds: list[int]
    images: int
    snippets: int
    events: int
    notes: list[str]
    seconds: float


def check_out(out: Path) -> None:
    """Fail early where ``out`` cannot take the page: a file, or a folder holding something else than a page
    this command wrote (which is replaced)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InvalidInputError(f"{out}: is a file; --out takes a folder")
    index = out / "index.html"
    ours = index.is_file() and f'content="{GENERATOR}"' in index.read_text(errors="replace")[:4000]
    if not ours and any(out.iterdir()):
        raise InvalidInputError(
            f"{out}: a folder holding other files than a review page; give a new or empty folder "
            "(a page written before is replaced)"
        )


def write_review(
    runs: str | os.PathLike,
    store: str | os.PathLike,
    out: str | os.PathLike,
    round_: int | str | None = "all",
    detections: str | os.PathLike | None = None,
    detections_format: str | None = None,
    data: str | os.PathLike | None = None,
    top: int = 5,
    train_clips: int = 2,
    threshold: float = 0.5,
    progress: bool = True,
) -> ReviewSummary:
    """Write the review page of the run at ``runs`` (a local folder) trained on ``store`` into ``out``.

    ``round_``: ``all`` (every complete round) or a round K (the table shows rounds 0..K). The events are those of
    ``detections`` (a file or folder ``rfcx infer --detections`` wrote, any format and level) or else those of the
    last round's ensemble on the store's test clips above ``threshold``; the ``top`` best of each species are
    shown. ``data``: the data folder (``train/``, ``test/``) the snippets are cut from. ``train_clips``: the train
    clips shown per species with their boxes and pseudo labels."""
    from engine.events import species_bands
    from store import FeatureStore

    started = time.perf_counter()
    runs, out = Path(runs), Path(out)
    if not runs.is_dir():
        raise NotFoundError(f"{runs}: run directory not found (train with `rfcx train`, or give --runs)")
    if top < 0 or train_clips < 0:
        raise InvalidInputError(f"--top and --train-clips must be >= 0, got {top} and {train_clips}")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"--threshold must be in 0..1, got {threshold}")
    data = Path(data) if data is not None else None
    if data is not None and not data.is_dir():
        raise NotFoundError(f"{data}: data folder not found (--data: the folder with train/ and test/)")
    check_out(out)
    run = RunDir(runs)
    shown = select_rounds(run, round_)
    last = shown[-1]
    fs = FeatureStore.open(store)
    fs.require_complete()
    notes: list[str] = []
    boxes = _boxes(fs, notes)
    truth = fs.truth("test")
    if truth is None:
        notes.append(
            "the store has no test labels (test_labels.csv): no test AP, and no test LWLRAP unless training "
            "recorded one"
        )
    try:
        grid = run_grid(run)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InvalidInputError(f"{run.config_file}: cannot read the run's config ({exc})") from None
    nyquist = fs.params.sample_rate / 2
    bands = species_bands(boxes[boxes.is_tp], N_CLASSES, nyquist)
    if data is None:
        notes.append("no --data folder: the events have no audio players")

    tmp = temp_dir(out)
    (tmp / "img").mkdir()
    (tmp / "audio").mkdir()

    table, lwlrap_png, sections, scores, images = _rounds(run, shown, boxes, truth, grid, tmp)
    events, events_source = _events(detections, detections_format, fs, bands, scores[last], grid, threshold, notes)
    best = top_events(events, top)
    labels, pseudo_source = _pseudo_labels(run, last, notes)
    views, jobs = _species(fs, boxes, bands, best, labels, train_clips, detections is not None, threshold, data, tmp)

    from tqdm.auto import tqdm

    for job in tqdm(jobs, desc="review", unit="figure", disable=not progress or not jobs, dynamic_ncols=True):
        job()
    images += sum(len(v.events) + len(v.train) for v in views)
    snippets = sum(1 for v in views for c in v.events if c.audio)
    without = sum(1 for v in views for c in v.events if not c.audio)
    if data is not None and without:
        notes.append(
            f"{without} event(s) without audio: their recording is not in {data} (or does not read); each says why"
        )

    page = Page(
        title=f"rfcx review: {runs.resolve().name}" + (f" round {last}" if round_ not in (None, "all") else ""),
        facts=[
            ("run", str(runs)),
            ("store", str(store)),
            ("config", _config_name(run)),
            ("rounds", ", ".join(map(str, shown))),
            ("members", str(scores[last].members)),
            ("data", str(data) if data is not None else "none"),
            ("written", time.strftime("%Y-%m-%d %H:%M")),
        ],
        notes=notes,
        table=table,
        best_round=(run.best_round() or {}).get("round"),
        lwlrap_png=lwlrap_png,
        rounds=sections,
        species=views,
        events_source=events_source,
        pseudo_source=pseudo_source,
    )
    (tmp / "index.html").write_text(render(page), encoding="utf-8")
    replace_dir(tmp, out)
    return ReviewSummary(
        out / "index.html",
        shown,
        images,
        snippets,
        int(sum(len(v.events) for v in views)),
        notes,
        time.perf_counter() - started,
    )


def _rounds(
    run: RunDir, shown: list[int], boxes: pd.DataFrame, truth: pd.DataFrame | None, grid: Any, tmp: Path
) -> tuple[list[dict], str | None, list[RoundSection], dict[int, RoundScores], int]:
    """The rounds' table (beside the yardsticks), the LWLRAP plot, and one section per shown round (loss plot,
    per-class table); returns them with the rounds' scores and the images copied."""
    from rfcx.scoring.yardsticks import round_table

    from .figures import copy_png

    images = 0
    table = [r for r in round_table(run.root) if r["round"] <= shown[-1]]
    for row in table:
        row["oof_box_auc"] = _metrics(run, row["round"]).get("oof_box_auc")
    lwlrap_png = None
    if copy_png(run.root / "lwlrap.png", tmp / "img" / "lwlrap.png"):
        lwlrap_png, images = "img/lwlrap.png", images + 1
    scores: dict[int, RoundScores] = {}
    sections = []
    for k in shown:
        scores[k] = round_scores(run, k)
        section_notes = []
        if not scores[k].members:
            section_notes.append(f"round {k} has no members' predictions.npz: no per-class AP")
        loss: str | None
        loss = f"img/round{k}_loss.png"
        if copy_png(run.round_dir(k) / "loss.png", tmp / loss):
            images += 1
        else:
            loss = None
        sections.append(
            RoundSection(k, _metrics(run, k), loss, per_class_table(scores[k], boxes, truth, grid), section_notes)
        )
    return table, lwlrap_png, sections, scores, images


def _events(
    detections: str | os.PathLike | None,
    detections_format: str | None,
    fs: Any,
    bands: pd.DataFrame,
    last: RoundScores,
    grid: Any,
    threshold: float,
    notes: list[str],
) -> tuple[pd.DataFrame, str]:
    """The events to show: those of ``detections`` (windows merged into events), or else the last round's ensemble
    on the store's test clips above ``threshold``; with the line that says where they came from."""
    from engine.detection_formats import read_detections
    from engine.events import merge_events

    if detections is not None:
        events = read_detections(detections, detections_format)
        unknown = sorted({rid for rid in events.recording_id if rid not in fs})
        if unknown:
            notes.append(
                f"{len(unknown)} recording(s) of {Path(detections).name} are not in the store, their events "
                f"left out (e.g. {', '.join(unknown[:3])})"
            )
            events = events[~events.recording_id.isin(unknown)]
        if len(events) and (events.n_windows == 1).all():  # windows: merged into events, as infer's default
            return merge_window_rows(
                events, bands
            ), f"{Path(detections).name}, its overlapping windows merged; by peak score"
        return _with_bands(events, bands), f"{Path(detections).name}, by peak score"
    k = last.round
    windows = window_table(last.test, grid)
    if windows.empty:
        notes.append(
            f"round {k} scored no test clip (the store has no test split?): no events to show; "
            "give --detections FILE of `rfcx infer`"
        )
    source = (
        f"round {k}'s ensemble on the store's test clips: {grid.window_s:g} s windows every "
        f"{grid.hop_s:g} s above {threshold:g}, merged; by peak score"
    )
    return merge_events(windows, threshold, bands), source


def _pseudo_labels(run: RunDir, last: int, notes: list[str]) -> tuple[dict[int, Any], str]:
    """The pseudo labels of the complete rounds 0..``last`` (shown beneath the train clips), with the line that
    says which."""
    from rfcx.train.pseudo import read_pseudo_labels

    labels = {}
    for k in [r for r in complete_rounds(run) if r <= last]:
        if run.pseudo_labels(k).is_dir():
            labels[k] = read_pseudo_labels(run.pseudo_labels(k))
    if not labels:
        notes.append(
            f"no pseudo labels ({run.pseudo_labels(last).relative_to(run.root)}) in rounds 0..{last}: the train "
            "clips show their boxes only"
        )
    source = (
        "beneath each clip: the species' pseudo labels of "
        + (", ".join(f"round {k}" for k in labels) if labels else "no round")
        + " (RUNS/round{k}/pseudo.zarr: round k's scores, what round k+1 learns from), by window centre"
    )
    return labels, source


def _species(
    fs: Any,
    boxes: pd.DataFrame,
    bands: pd.DataFrame,
    best: dict[int, pd.DataFrame],
    labels: dict[int, Any],
    train_clips: int,
    given_events: bool,
    threshold: float,
    data: Path | None,
    tmp: Path,
) -> tuple[list[SpeciesView], list[Callable[[], None]]]:
    """One view per species (its band, top events, train clips with their boxes above the pseudo labels), and the
    jobs that draw their figures and cut their snippets into ``tmp`` (the long part, run after)."""
    from .figures import train_clip_png

    views = []
    jobs: list[Callable[[], None]] = []
    for sid in range(N_CLASSES):
        mine = boxes[boxes.species_id == sid]
        view = SpeciesView(
            sid, float(bands.low_hz[sid]), float(bands.high_hz[sid]), int(mine.is_tp.sum()), int((~mine.is_tp).sum())
        )
        views.append(view)
        ev = best.get(sid)
        if ev is None or ev.empty:
            view.events_note = "no event of this species" + ("" if given_events else f" above {threshold:g}")
        else:
            for i, e in enumerate(ev.itertuples(index=False)):
                card = EventCard(
                    str(e.recording_id),
                    fs.split_of(e.recording_id),
                    float(e.start_s),
                    float(e.end_s),
                    float(e.peak_score),
                    float(e.mean_score),
                    int(e.n_windows),
                    f"img/event_s{sid}_{i}.png",
                )
                view.events.append(card)
                jobs.append(_event_job(fs, e, card, tmp, data, f"audio/event_s{sid}_{i}.flac"))
        picks = train_examples(boxes, sid, train_clips)
        if not picks:
            view.train_note = "no TP or FP box of this species in the train set"
        for i, (rid, kind) in enumerate(picks):
            clip_boxes = boxes[boxes.recording_id == rid]
            mine_here = clip_boxes[clip_boxes.species_id == sid]
            curves = [
                (
                    f"round {k}",
                    lab.window_seconds / 2 + lab.hop_seconds * np.arange(len(lab.clip(rid))),
                    lab.clip(rid)[:, sid],
                )
                for k, lab in labels.items()
                if rid in lab
            ]
            missing = [k for k, lab in labels.items() if rid not in lab]
            caption = (
                f"{rid}: {int(mine_here.is_tp.sum())} TP / {int((~mine_here.is_tp).sum())} FP box(es) of "
                f"species {sid} (thick; other species' boxes thin); beneath, its pseudo labels"
                + (f" (none in round {', '.join(map(str, missing))})" if missing else "")
            )
            train_card = TrainCard(rid, kind, f"img/train_s{sid}_{i}.png", caption)
            view.train.append(train_card)
            # a lambda binding the loop's values as defaults: mypy cannot infer it as a Callable[[], None]
            jobs.append(
                lambda rid=rid, sid=sid, cb=clip_boxes, curves=curves, card=train_card: (  # type: ignore[misc]
                    train_clip_png(fs, rid, sid, cb, curves, tmp / card.img)
                )
            )

    return views, jobs


def _boxes(fs, notes: list[str]) -> pd.DataFrame:  # noqa: ANN001 (store.FeatureStore)
    """The store's TP and FP boxes with ``is_tp`` (empty where it has none: a note)."""
    from store.tables import empty_boxes

    parts = []
    for kind in ("tp", "fp"):
        try:
            parts.append(fs.boxes(kind).assign(is_tp=kind == "tp"))
        except KeyError:
            notes.append(f"the store has no {kind.upper()} table (train_{kind}.csv)")
    boxes = pd.concat(parts, ignore_index=True) if parts else empty_boxes().assign(is_tp=False)
    boxes["is_tp"] = boxes["is_tp"].astype(bool)
    return boxes[boxes.recording_id.isin([rid for rid in boxes.recording_id.unique() if rid in fs])]


def _with_bands(events: pd.DataFrame, bands: pd.DataFrame) -> pd.DataFrame:
    """Events with an unknown band (windows-level tables) take their species' band from the TP boxes."""
    events = events.copy()
    sid = events.species_id.clip(0, N_CLASSES - 1)
    for col in ("low_hz", "high_hz"):
        events[col] = (
            events[col].astype(np.float64).fillna(pd.Series(bands[col].reindex(sid).to_numpy(), index=events.index))
        )
    return events


def _metrics(run: RunDir, k: int) -> dict:
    try:
        return json.loads(run.metrics(k).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _config_name(run: RunDir) -> str:
    try:
        return str(json.loads(run.config_file.read_text()).get("name", "?"))
    except (FileNotFoundError, ValueError):
        return "?"


def _event_job(
    fs,
    event,
    card: EventCard,
    tmp: Path,
    data: Path | None,  # noqa: ANN001
    audio: str,
) -> Callable[[], None]:
    from .figures import event_png
    from .snippets import find_recording, write_snippet

    def job() -> None:
        event_png(fs, event, tmp / card.img)
        if data is None:
            card.audio_note = "no audio: no --data folder"
            return
        src = find_recording(data, card.split, card.recording_id)
        if src is None:
            card.audio_note = f"no audio: {card.recording_id} is not in {data / card.split}"
            return
        start = max(0.0, card.start_s - SNIPPET_MARGIN_S)
        why = write_snippet(src, start, min(card.end_s + SNIPPET_MARGIN_S, start + SNIPPET_MAX_S), tmp / audio)
        if why is None:
            card.audio = audio
        else:
            card.audio_note = f"no audio: {why}"

    return job


__all__ = ["ReviewSummary", "check_out", "write_review"]
