"""Quality of the recipe's parts: LWLRAP by round for training variants beside the yardsticks (random scores,
prior-only, the oracle trained on every call's truth, and round 0 trained as long as each pseudo-label round: the
equal-compute bootstrap), read from finished runs (trains nothing); over several data seeds of a variant, the mean
and spread.

A run is named ``NAME`` or ``VARIANT@SEED``: the runs of one variant on data sets of other seeds are summarised
together (mean, standard deviation, min, max over the seeds). The goals (issue 29) are checked on the first
variant, as means over its seeds: the round ``rfcx infer`` uses by default (``best_round.json``; runs without
it: the last round) beats prior-only by >= 0.25 and the equal-compute bootstrap by >= 0.05, it is never more than
0.02 below the run's best round on test, the oracle reaches >= 0.85, and the rounds train in <= 45 minutes (by the
runs' own clocks, ``train_seconds``: training, scoring, labels; not the process start nor the exports; on the
machine that trained them: the goal is for the ``cpu`` config on 2 cores).

The trainings are left to the user (hours on a CPU): ``benchmarks/quality_set.sh`` makes the data sets, trains
and calls this benchmark. With a store built by ``make demo`` (or ``rfcx synth`` + ``rfcx build-store``), one run
directory per variant, the ``cpu`` config and rounds 0-2::

    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/full
    rfcx train --equal-compute --store demo/features.zarr --config cpu --runs runs/full
    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-tpfp --set tp_fp_sampling=false
    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-freq --set freq_channel=false
    rfcx bench --only quality --quality-runs full=runs/full --quality-runs no-tpfp=runs/no-tpfp \\
        --quality-runs no-freq=runs/no-freq

(``python -m benchmarks --only quality --quality-runs full=runs/full no-tpfp=runs/no-tpfp no-freq=runs/no-freq``
likewise.)
A run directory remembers its config, hence one directory per variant. ``tp_fp_sampling=false`` changes rounds
>= 1 only (round 0 always learns from the boxes), so compare the variants from round 1 on.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

METRICS = (
    ("test_lwlrap", "test LWLRAP"),
    ("test_lwlrap_rounds", "rounds 0..k together"),
    ("equal_compute", "round 0 as long"),
    ("pseudo_gain", "pseudo-label gain"),
    ("oof_clip_lwlrap", "OOF clip LWLRAP"),
    ("oof_lwlrap", "OOF LWLRAP (TP windows)"),
    ("oof_box_auc", "OOF TP-vs-FP AUC"),
)
# a run's summary: what the goals and the table over seeds read (key, label)
SUMMARY = (
    ("default", "default round (rfcx infer)"),
    ("equal_compute", "round 0 trained as long"),
    ("vs_equal", "default - round 0 as long"),
    ("vs_prior", "default - prior-only"),
    ("drop", "best round - default"),
    ("random", "random scores"),
    ("prior_only", "prior-only"),
    ("oracle", "oracle (every call's truth)"),
    ("train_minutes", "train min"),
)

COMMANDS = [
    'bash benchmarks/quality_set.sh WORK 1  # SEEDS="..." for several data seeds',
    "rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/full",
    "rfcx train --equal-compute --store demo/features.zarr --config cpu --runs runs/full",
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


def variant_of(name: str) -> str:
    """The variant of a run named ``VARIANT@SEED`` (a name without ``@`` is its own variant)."""
    return name.partition("@")[0]


def read_rounds(run_dir: str | Path) -> list[dict]:
    """``round*/metrics.json`` of a run directory (a folder or an fsspec URL), by round, with the equal-compute
    bootstrap and the pseudo-label gain as the run holds them now (rfcx.scoring.yardsticks.round_table)."""
    from rfcx.runs.directory import open_run
    from rfcx.scoring.yardsticks import round_table

    root = open_run(run_dir, pull="meta").root
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    table = {r["round"]: r for r in round_table(root)}
    rows = []
    found = [p for p in root.glob("round*/metrics.json") if p.parent.name[5:].isdigit()]
    for path in sorted(found, key=lambda p: int(p.parent.name[5:])):
        m = json.loads(path.read_text())
        fc = m.get("freq_channel_check") or {}
        k = int(m.get("round", path.parent.name[5:]))
        known = table.get(k, {})
        rows.append(
            {
                "round": k,
                "config": m.get("config"),
                **{key: m.get(key) for key, _ in METRICS},
                "equal_compute": known.get("equal_compute"),
                "pseudo_gain": known.get("pseudo_gain"),
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


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def run_summary(name: str, rounds: list[dict], sticks: dict, best: int | None) -> dict:
    """One run's figures for the goals: the default round's test LWLRAP beside prior-only, the equal-compute
    bootstrap of the last round (round 0 trained as long as it), the best round on test, the training minutes."""
    scores = {r["round"]: r["test_lwlrap"] for r in rounds if r.get("test_lwlrap") is not None}
    default = scores.get(best) if best is not None else None
    later = [r for r in rounds if r["round"] > 0 and r.get("equal_compute") is not None]
    equal = later[-1]["equal_compute"] if later else None
    minutes = [r.get("train_minutes") for r in rounds]
    return {
        "name": name,
        "variant": variant_of(name),
        "default_round": best,
        "default": default,
        "best_round_test": max(scores, key=lambda k: scores[k]) if scores else None,
        "drop": None if default is None else max(scores.values()) - default,
        "equal_compute": equal,
        "vs_equal": _minus(default, equal),
        "vs_prior": _minus(default, sticks.get("prior_only")),
        "random": sticks.get("random"),
        "prior_only": sticks.get("prior_only"),
        "oracle": sticks.get("oracle"),
        "last_round": rounds[-1]["round"] if rounds else None,
        "train_minutes": sum(m for m in minutes if m is not None) if minutes and None not in minutes else None,
        "minutes": minutes,
    }


def over_seeds(summaries: list[dict]) -> list[dict]:
    """Per variant and figure of :data:`SUMMARY`: the mean, standard deviation, min and max over its runs
    (seeds), and how many runs had it."""
    rows = []
    for variant in dict.fromkeys(s["variant"] for s in summaries):
        runs = [s for s in summaries if s["variant"] == variant]
        for key, label in SUMMARY:
            values = [s[key] for s in runs if s.get(key) is not None]
            if not values:
                continue
            rows.append(
                {
                    "name": f"{variant}: {label}",
                    "variant": variant,
                    "key": key,
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else None,
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
            )
    return rows


def quality_goals(summaries: list[dict], means: list[dict]) -> list[dict]:
    """The issue-29 goals on the first variant's runs: means over its seeds (every seed for the default's
    distance to the best round and for the training time)."""
    from benchmarks.common import goal

    if not summaries:
        return []
    variant = summaries[0]["variant"]
    runs = [s for s in summaries if s["variant"] == variant]
    stat = {r["key"]: r for r in means if r["variant"] == variant}
    seeds = f"mean over {len(runs)} seed{'s' if len(runs) > 1 else ''}"

    def mean(key: str) -> float | None:
        return stat[key]["mean"] if key in stat else None

    def spread(key: str) -> str:
        r = stat.get(key)
        if r is None:
            return "not measured"
        text = f"{seeds}: {r['mean']:+.4f}"
        return text + (f" (sd {r['sd']:.4f}, {r['min']:+.4f}..{r['max']:+.4f})" if r["sd"] else "")

    goals = [
        goal(
            f"{variant}: the default round beats prior-only by >= 0.25 LWLRAP",
            mean("vs_prior"),
            0.25,
            spread("vs_prior"),
        ),
        goal(
            f"{variant}: the default round beats round 0 trained as long (equal compute) by >= 0.05",
            mean("vs_equal"),
            0.05,
            spread("vs_equal")
            if "vs_equal" in stat
            else "no equal-compute bootstrap: rfcx train --equal-compute trains it",
        ),
    ]
    drops = [s["drop"] for s in runs if s.get("drop") is not None]
    if drops:
        goals.append(
            goal(
                f"{variant}: the default round is never more than 0.02 below the best round on test",
                max(drops),
                0.02,
                "worst seed; per seed: "
                + ", ".join(
                    f"{s['name']} default round {s['default_round']} vs best {s['best_round_test']}"
                    for s in runs
                    if s.get("drop") is not None
                ),
                higher_is_better=False,
            )
        )
    oracle = mean("oracle")
    goals.append(
        goal(
            f"{variant}: the oracle reaches >= 0.85",
            oracle,
            0.85,
            "rfcx train --oracle" if oracle is None else f"same config on every call's truth, {seeds}",
        )
    )
    slowest = max(
        (s for s in runs if s.get("train_minutes") is not None), key=lambda s: s["train_minutes"], default=None
    )
    if slowest is not None:
        label = slowest["name"] if len(runs) == 1 else f"{variant} (slowest seed, {slowest['name']})"
        goals.append(
            goal(
                f"{label}: rounds 0-{slowest['last_round']} train in <= 45 minutes",
                slowest["train_minutes"],
                45.0,
                " + ".join(f"{m:.1f}" for m in slowest["minutes"]) + " min by the runs' clocks (training, scoring, "
                "labels; not process start or exports)",
                higher_is_better=False,
            )
        )
    return goals


def run(quick: bool, workdir: Path, runs: dict[str, str | Path] | list[str] | None = None) -> dict:
    """LWLRAP (test, OOF) and TP-vs-FP AUC by round of each variant's run directory, beside the yardsticks; with
    several seeds of a variant, the mean and spread over them."""
    from rfcx.runs.directory import open_run

    variants = parse_runs(runs) if isinstance(runs, list) else dict(runs or {})
    series = {name: read_rounds(path) for name, path in variants.items()}
    table_rows, summaries = [], []
    for name, rounds in series.items():
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
        summaries.append(run_summary(name, rounds, extra["yardsticks"], _best_round(root, rounds)))
    means = over_seeds(summaries)
    sections = []
    if table_rows:
        sections.append(
            {
                "key": "quality",
                "title": "Quality by round and variant",
                "unit": "",
                "baseline": None,
                "rows": table_rows,
                "plot": False,
                "note": "",
                "columns": [[k, label, ".4f" if k != "pseudo_gain" else "+.4f"] for k, label in METRICS]
                + [
                    ["vs_prior", "test - prior-only", "+.4f"],
                    ["gap_closed", "gap closed %", ".0f"],
                    ["train_minutes", "train min", ".1f"],
                ],
            }
        )
    if len(summaries) > len({s["variant"] for s in summaries}):  # some variant has several seeds
        sections.append(
            {
                "key": "seeds",
                "title": "Over the data seeds of each variant",
                "unit": "",
                "baseline": None,
                "rows": means,
                "plot": False,
                "note": "mean, standard deviation, min and max over the runs of a variant (one per data seed)",
                "columns": [["mean", "mean", ".4f"], ["sd", "sd", ".4f"], ["min", "min", ".4f"], ["max", "max", ".4f"]]
                + [["n", "seeds", ""]],
            }
        )
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
        "scores, the oracle (`rfcx train --oracle`) and round 0 trained as long as each pseudo-label round "
        "(`rfcx train --equal-compute`), the margin over prior-only, the pseudo-label gain over the equal-compute "
        "bootstrap and the share of the round-0 -> oracle gap closed, read from finished run directories "
        "(`round*/metrics.json`, `RUNS/oracle`, `RUNS/equal-compute`, `best_round.json`); runs named "
        "`VARIANT@SEED` are summarised over their seeds; the goals are checked on the first variant.",
        "params": {"runs": {k: str(v) for k, v in variants.items()}},
        "series": series,
        "summaries": summaries,
        "sections": sections,
        "goals": quality_goals(summaries, means),
        "notes": notes,
        "commands": COMMANDS,
    }
