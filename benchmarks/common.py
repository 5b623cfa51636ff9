"""What every benchmark shares: interleaved timing (median of repeats), result rows with ratios, goals, test data.

A benchmark module exposes ``run(quick: bool, workdir: Path) -> dict`` returning::

    {"name": "store_build", "title": "...", "about": "what is compared and how",
     "params": {...sizes...},
     "sections": [section(...), ...],   # one table (and one bar plot) per comparison
     "goals": [goal(...), ...],
     "notes": ["...", ...]}

Candidates of one comparison are timed side by side in the same process: repeat ``r`` runs every candidate
once (in an order rotated from repeat to repeat), so a load change on the (shared) machine hits them alike.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "rfcx"
REAL_CLIP = SHARED / "f97ababc1.flac"
SAMPLE_RATE = 48_000


# -- timing --------------------------------------------------------------------------------------------------


def interleaved(
    candidates: dict[str, Callable[[], float]], repeats: int, warmup: bool = False
) -> dict[str, list[float]]:
    """Rate (work / second) of each candidate in each of ``repeats`` interleaved repeats.

    A candidate is a function doing one unit of measured work and returning how much work it did (clips,
    crops, windows...). With ``warmup`` each candidate runs once untimed first.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(candidates)
    if warmup:
        for name in names:
            candidates[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            work = candidates[name]()
            rates[name].append(float(work) / (time.perf_counter() - t0))
    return rates


def for_seconds(fn: Callable[[], Any], work_per_call: float, seconds: float, min_calls: int = 1) -> Callable[[], float]:
    """A candidate calling ``fn`` until ``seconds`` have passed (at least ``min_calls`` times)."""

    def go() -> float:
        calls, t0 = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - t0 < seconds:
            fn()
            calls += 1
        return calls * work_per_call

    return go


def row(name: str, rates: Iterable[float], **extra: Any) -> dict:
    """A result row: median, min and max of the repeats' rates (and any extra fields)."""
    rates = [float(r) for r in rates]
    return {
        "name": name,
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "repeats": rates,
        **extra,
    }


def section(
    key: str,
    title: str,
    unit: str,
    rows: list[dict],
    baseline: str | None,
    columns: list[tuple[str, str, str]] | None = None,
    note: str = "",
    plot: bool = True,
) -> dict:
    """One comparison: rows with ``ratio`` (median over the baseline row's median) filled in.

    ``columns``: extra ``(field, header, format)`` columns for the markdown table beyond name, median, min-max
    and ratio.
    """
    base = next((r for r in rows if r["name"] == baseline), None) if baseline else None
    for r in rows:
        if "median" in r:
            r["ratio"] = r["median"] / base["median"] if base and base["median"] else None
    return {
        "key": key,
        "title": title,
        "unit": unit,
        "baseline": baseline,
        "rows": rows,
        "columns": [list(c) for c in (columns or [])],
        "note": note,
        "plot": plot,
    }


def find(sec: dict, name: str) -> dict | None:
    return next((r for r in sec["rows"] if r["name"] == name), None)


def goal(text: str, value: float | None, target: float, detail: str = "", higher_is_better: bool = True) -> dict:
    """A goal check: ``met`` is None where the value could not be measured."""
    if value is None:
        met = None
    else:
        met = bool(value >= target) if higher_is_better else bool(value <= target)
    return {"goal": text, "value": value, "target": target, "met": met, "detail": detail}


# -- data ----------------------------------------------------------------------------------------------------


def write_clips(folder: Path, n: int, seconds: float | None = None, prefix: str = "clip") -> tuple[list[Path], str]:
    """``n`` FLAC clips in ``folder``: copies of the real recording (its first ``seconds`` when given), or
    synthetic clips (``rfcx.synth.render.make_clip``, 60 s unless ``seconds``) where the real one is absent.

    Returns the files and a description of the source.
    """
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{prefix}{i:04d}.flac" for i in range(n)]
    if REAL_CLIP.is_file():
        if seconds is None:
            for f in files:
                shutil.copy(REAL_CLIP, f)
            return files, f"copies of the real recording {REAL_CLIP.name}"
        audio, sr = sf.read(str(REAL_CLIP), dtype="int16", always_2d=False)
        part = audio[: int(round(seconds * sr))]
        for f in files:
            sf.write(str(f), part, sr, format="FLAC", subtype="PCM_16")
        return files, f"copies of the first {seconds:g} s of the real recording {REAL_CLIP.name}"
    from rfcx.synth.render import make_clip

    for i, f in enumerate(files):
        clip = make_clip("test", i, seed=0, seconds=seconds or 60.0)
        sf.write(str(f), clip.audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return files, f"synthetic clips of {seconds or 60:g} s (rfcx.synth.render.make_clip; {REAL_CLIP} is absent)"


def write_empty_tables(data: Path) -> None:
    """Header-only ``train_tp.csv`` / ``train_fp.csv`` (a data folder without boxes, as build-store expects)."""
    from store.tables import BOX_COLUMNS

    for kind in ("tp", "fp"):
        (data / f"train_{kind}.csv").write_text(",".join(BOX_COLUMNS) + "\n")


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def print_result(out: dict, json_path: Path | None = None) -> None:
    """What a module's command line prints: every section's rows (median, ratio), then the goals."""
    import json

    for sec in out["sections"]:
        print(sec["title"])
        for r in sec["rows"]:
            ratio = f"  x{r['ratio']:.2f}" if r.get("ratio") is not None else ""
            print(f"  {r['name']:<60} {r['median']:9.2f} {sec['unit']}{ratio}", flush=True)
    for g in out["goals"]:
        print(f"goal {g['goal']}: {'met' if g['met'] else 'NOT met'} ({g['value']:.2f}; {g['detail']})")
    if json_path:
        json_path.write_text(json.dumps(out, indent=1))


def module_main(run: Callable[[bool, Path], dict], description: str, prefix: str) -> None:
    """The command line of a benchmark module that takes only ``--quick`` and ``--json``: ``run`` in a temporary
    work directory, then :func:`print_result`."""
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        out = run(args.quick, Path(tmp))
    print_result(out, args.json)
