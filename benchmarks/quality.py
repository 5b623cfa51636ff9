"""Quality of the recipe's parts: LWLRAP by round for training variants beside the yardsticks (random scores,
prior-only, the oracle trained on every call's truth), read from finished runs (trains nothing).

The goals (issue 10) are checked on the first variant: every round beats prior-only by >= 0.15, the round
``rfcx infer`` uses by default (every complete round together; runs from before: the best by the held-out
signal) beats round 0 by >= 0.05 and closes >= 50 % of
the bootstrap -> oracle gap, the oracle reaches >= 0.85, and rounds 0 to that round train in <= 45 minutes (by the
runs' own clocks, ``train_seconds``: training, scoring, labels; not the process start nor the exports; on the
machine that trained them: the goal is for the ``cpu`` config on 2 cores).

The trainings are left to the user (hours on a CPU). With a store built by ``make demo`` (or ``rfcx synth`` +
``rfcx build-store``), one run directory per variant, the ``cpu`` config and rounds 0-2::

    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/full
    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-tpfp --set tp_fp_sampling=false
    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-freq --set freq_channel=false
    rfcx bench --only quality --quality-runs full=runs/full --quality-runs no-tpfp=runs/no-tpfp \
        --quality-runs no-freq=runs/no-freq

(``python -m benchmarks --only quality --quality-runs full=runs/full no-tpfp=runs/no-tpfp no-freq=runs/no-freq``
likewise.)
A run directory remembers its config, hence one directory per variant. ``tp_fp_sampling=false`` changes rounds
>= 1 only (round 0 always learns from the boxes), so compare the variants from round 1 on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

METRICS = (
    ("test_lwlrap", "test LWLRAP"),
    ("test_lwlrap_rounds", "rounds 0..k together"),
    ("oof_lwlrap", "OOF LWLRAP (TP windows)"),
    ("oof_box_auc", "OOF TP-vs-FP AUC"),
)

COMMANDS = [
    "rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/full",
    "rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-tpfp --set tp_fp_sampling=false",
    "rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-freq --set freq_channel=false",
    "rfcx bench --only quality --quality-runs full=runs/full --quality-runs no-tpfp=runs/no-tpfp "
    "--quality-runs no-freq=runs/no-freq",
]


def parse_runs(items: list[str] | None) -> dict[str, str]:
    """``["NAME=DIR", ...]`` -> ``{NAME: DIR}``; a bare ``DIR`` is named after its folder (DIR: a folder or an
    fsspec URL)."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        if not name or not path:
            raise ValueError(f"--quality-runs takes NAME=DIR, got {item!r}")
        out[name] = path
    return out


def read_rounds(run_dir: str | Path) -> list[dict]:
    """``round*/metrics.json`` of a run directory (a folder or an fsspec URL), by round."""
    from rfcx.runs.directory import open_run

    root = open_run(run_dir, pull="meta").root
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    rows = []
    found = [p for p in root.glob("round*/metrics.json") if p.parent.name[5:].isdigit()]
    for path in sorted(found, key=lambda p: int(p.parent.name[5:])):
        m = json.loads(path.read_text())
        fc = m.get("freq_channel_check") or {}
        rows.append(
            {
                "round": int(m.get("round", path.parent.name[5:])),
                "config": m.get("config"),
                **{k: m.get(k) for k, _ in METRICS},
                "gap_closed_rounds": m.get("gap_closed_rounds"),
                "train_minutes": None if m.get("train_seconds") is None else m["train_seconds"] / 60,
                "freq_channel_check": fc or None,
            }
        )
    return rows


def _yardstick_rows(name: str, root: Path) -> tuple[list[dict], dict]:
    from rfcx.scoring.yardsticks import round_table

    table = round_table(root)
    sticks = table[-1]["yardsticks"] if table else {}
    rows = [
        {"name": f"{name}: {label}", "variant": name, "test_lwlrap": sticks.get(key)}
        for key, label in (
            ("random", "random scores"),
            ("prior_only", "prior-only"),
            ("oracle", "oracle (every call's truth)"),
        )
        if sticks.get(key) is not None
    ]
    return rows, {"table": table, "yardsticks": sticks}


def _best_round(root: Path, rounds: list[dict]) -> int | None:
    best = root / "best_round.json"
    if best.is_file():
        return int(json.loads(best.read_text())["round"])
    return rounds[-1]["round"] if rounds else None


def quality_goals(name: str, rounds: list[dict], table: list[dict], sticks: dict, best: int | None) -> list[dict]:
    """The issue-10 goals on one variant's run."""
    from benchmarks.common import goal

    goals = []
    prior, oracle = sticks.get("prior_only"), sticks.get("oracle")
    scores = {r["round"]: r["test_lwlrap"] for r in rounds if r.get("test_lwlrap") is not None}
    if prior is not None and scores:
        worst = min(scores, key=scores.get)  # type: ignore[arg-type]  # mypy cannot pick dict.get's overload
        goals.append(
            goal(
                f"{name}: every round beats prior-only by >= 0.15 LWLRAP",
                scores[worst] - prior,
                0.15,
                f"weakest round {worst}: {scores[worst]:.4f} vs prior-only {prior:.4f}",
            )
        )
    if best is not None and best in scores and 0 in scores:  # rfcx infer's default: the run's best round
        goals.append(
            goal(
                f"{name}: the default round ({best}) beats round 0 by >= 0.05",
                scores[best] - scores[0],
                0.05,
                f"{scores[best]:.4f} vs {scores[0]:.4f}",
            )
        )
        gap = (
            0.0
            if best == 0 and oracle is not None
            else next((r["gap_closed"] for r in table if r["round"] == best), None)
        )
        goals.append(
            goal(
                f"{name}: the default round closes >= 50 % of the bootstrap -> oracle gap",
                None if gap is None else 100 * gap,
                50.0,
                "no oracle run" if gap is None else f"oracle {oracle:.4f}",
            )
        )
    goals.append(
        goal(
            f"{name}: the oracle reaches >= 0.85",
            oracle,
            0.85,
            "rfcx train --oracle" if oracle is None else "same config on every call's truth",
        )
    )
    if best is not None:
        minutes = [r.get("train_minutes") for r in rounds if r["round"] <= best]
        total = sum(cast(list[float], minutes)) if minutes and None not in minutes else None
        goals.append(
            goal(
                f"{name}: rounds 0-{best} train in <= 45 minutes",
                total,
                45.0,
                "a round's metrics.json has no train_seconds"
                if total is None
                else " + ".join(f"{m:.1f}" for m in minutes) + " min by the runs' clocks (training, scoring, "
                "labels; not process start or exports)",
                higher_is_better=False,
            )
        )
    return goals


def run(quick: bool, workdir: Path, runs: dict[str, str | Path] | list[str] | None = None) -> dict:
    """LWLRAP (test, OOF) and TP-vs-FP AUC by round of each variant's run directory, beside the yardsticks."""
    from rfcx.runs.directory import open_run

    variants = parse_runs(runs) if isinstance(runs, list) else dict(runs or {})
    series = {name: read_rounds(path) for name, path in variants.items()}
    table_rows, goals = [], []
    for i, (name, rounds) in enumerate(series.items()):
        root = open_run(variants[name], pull="meta").root
        sticks_rows, extra = _yardstick_rows(name, root)
        gaps = {r["round"]: r["gap_closed"] for r in extra["table"]}
        prior = extra["yardsticks"].get("prior_only")
        for r in rounds:
            table_rows.append(
                {
                    "name": f"{name} round {r['round']}",
                    "variant": name,
                    **r,
                    "vs_prior": None if prior is None or r.get("test_lwlrap") is None else r["test_lwlrap"] - prior,
                    "gap_closed": None if gaps.get(r["round"]) is None else 100 * gaps[r["round"]],
                }
            )
        table_rows += sticks_rows
        if i == 0:
            goals = quality_goals(name, rounds, extra["table"], extra["yardsticks"], _best_round(root, rounds))
    sec = {
        "key": "quality",
        "title": "Quality by round and variant",
        "unit": "",
        "baseline": None,
        "rows": table_rows,
        "plot": False,
        "note": "",
        "columns": [[k, label, ".4f"] for k, label in METRICS]
        + [
            ["vs_prior", "test - prior-only", "+.4f"],
            ["gap_closed", "gap closed %", ".0f"],
            ["train_minutes", "train min", ".1f"],
        ],
    }
    notes = (
        []
        if variants
        else [
            "No run directories given (`--quality-runs NAME=DIR ...`): nothing measured. "
            "The trainings are left to the user; commands below."
        ]
    )
    return {
        "name": "quality",
        "title": "5. Quality (training variants)",
        "about": "Test LWLRAP by round of each training variant (run directory) beside random scores, prior-only "
        "scores and the oracle (`rfcx train --oracle`), the margin over prior-only and the share of the "
        "round-0 -> oracle gap closed, read from finished run directories (`round*/metrics.json`, "
        "`RUNS/oracle`, `best_round.json`); the goals are checked on the first variant.",
        "params": {"runs": {k: str(v) for k, v in variants.items()}},
        "series": series,
        "sections": [sec] if table_rows else [],
        "goals": goals,
        "notes": notes,
        "commands": COMMANDS,
    }
