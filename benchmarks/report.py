"""The benchmark report: ``bench.md`` (machine, goals, one table per comparison) and PNG bar plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CAVEATS = [
    "Timings come from one machine at one time; the machine may be shared with other jobs (see the load average "
    "at start and end). Candidates of a comparison are interleaved repeat by repeat so that load changes hit "
    "them alike; medians of the repeats are reported, with the range (min-max) beside them.",
    "The quick mode uses small sizes (a few clips, short timings): its numbers are indicative only; run the full "
    "mode (`rfcx bench`) for the figures to quote.",
    "Reads are warm: every file is in the page cache after the first pass, so disk speed is not measured.",
    "Threads: torch uses `torch_threads` (set OMP_NUM_THREADS or `--threads`); DALI uses as many threads as "
    "there are cores; the store's crop reader and the torch backend's decoder use small thread pools; "
    "librosa and the `.npy` / on-the-fly baselines run on one thread, as a simple hand-written loop would.",
    "The store-build baseline writes float16 `.npy` files, not a Zarr store; both include their writes.",
    "Inference on random weights measures speed only; agreement of fcn with exact needs a trained run "
    "(`--runs DIR --store PATH`), measured on the store's test clips.",
]


def _fmt(value, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if spec:
        return format(value, spec)
    v = abs(value)
    return f"{value:.0f}" if v >= 100 else f"{value:.1f}" if v >= 10 else f"{value:.2f}" if v >= 0.1 else f"{value:.4f}"


def _cell(text: str) -> str:
    """A markdown table cell: ``|`` escaped."""
    return str(text).replace("|", "\\|")


def _met(met) -> str:
    return {True: "**met**", False: "**not met**", None: "not measured"}[met]


def _table(sec: dict) -> list[str]:
    cols = sec.get("columns", [])
    if sec.get("unit"):
        head = [
            "candidate",
            f"{sec['unit']} (median)",
            "range (min-max)",
            f"x {sec['baseline']}" if sec.get("baseline") else "ratio",
            *[c[1] for c in cols],
        ]
    else:
        head = ["", *[c[1] for c in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sec["rows"]:
        name = f"**{r['name']}** (baseline)" if r["name"] == sec.get("baseline") else r["name"]
        if sec.get("unit"):
            cells = [name, _fmt(r["median"]), f"{_fmt(r['min'])}-{_fmt(r['max'])}", _fmt(r.get("ratio"), ".2f")]
        else:
            cells = [name]
        cells += [_fmt(r.get(c[0]), c[2]) for c in cols]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# rfcx benchmarks ({result['mode']} mode)",
        "",
        f"{m['date']}, {result['wall_s']:.0f} s in all. Written by `rfcx bench"
        f"{' --quick' if result['mode'] == 'quick' else ''}` (`benchmarks/run.py`); the raw numbers, every "
        "repeat included, are in `bench.json`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    labels = {
        "cpu_model": "CPU",
        "cpu_cores": "cores",
        "cpu_cores_usable": "cores usable",
        "memory_gb": "memory (GB)",
        "gpu": "GPU",
        "torch": "torch",
        "dali": "NVIDIA DALI",
        "torch_threads": "torch threads",
        "OMP_NUM_THREADS": "OMP_NUM_THREADS",
        "load_average_1m_at_start": "load average (1 min) at start",
        "load_average_1m_at_end": "load average (1 min) at end",
        "date": "date (UTC)",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {_fmt(m.get(key)) if m.get(key) is not None else 'none'} |")
    others = ", ".join(f"{k} {m[k]}" for k in ("python", "numpy", "zarr", "librosa", "soundfile", "timm") if m.get(k))
    lines += [f"| other | {others}; {m.get('platform')}; git {m.get('git') or '?'} |", ""]

    lines += ["## Goals", "", "| benchmark | goal | value | target | result | figures |", "|---|---|---|---|---|---|"]
    for g in result.get("goals", []):
        lines.append(
            f"| {g['benchmark']} | {_cell(g['goal'])} | {_fmt(g['value'], '.4f' if g['target'] < 0.1 else '.2f')} "
            f"| {g['target']:g} | {_met(g['met'])} | {_cell(g['detail'])} |"
        )
    failed = [b for b in result["benchmarks"] if b.get("error")]
    for b in failed:
        lines.append(f"| {b['name']} | (benchmark failed) | - | - | **error** | {_cell(b['error'])} |")
    lines.append("")

    for b in result["benchmarks"]:
        lines += [f"## {b.get('title', b['name'])}", ""]
        if b.get("error"):
            lines += [f"**Failed**: `{b['error']}` (traceback in bench.json).", ""]
            continue
        if b.get("about"):
            lines += [b["about"], ""]
        params = {k: v for k, v in b.get("params", {}).items() if not isinstance(v, (dict, list)) or k == "batch_sizes"}
        if params:
            lines += ["Sizes: " + ", ".join(f"{k} {v}" for k, v in params.items()) + f"; {b['wall_s']:.0f} s.", ""]
        for sec in b["sections"]:
            lines += [f"### {sec['title']}", ""] + _table(sec) + [""]
            if sec.get("note"):
                lines += [sec["note"], ""]
        if b.get("plot"):
            lines += [f"![{b['name']}]({b['plot']})", ""]
        if b.get("goals"):
            lines += ["Goals:", ""] + [f"- {g['goal']}: {_met(g['met'])} ({g['detail']})" for g in b["goals"]] + [""]
        for n in b.get("notes", []):
            lines += [f"- {n}"]
        if b.get("notes"):
            lines.append("")
        if b.get("commands"):
            lines += [
                "Training the variants (left to the user; hours on a CPU), then reading them:",
                "",
                "```bash",
                *b["commands"],
                "```",
                "",
            ]
    lines += ["## Caveats", ""] + [f"- {c}" for c in CAVEATS] + [""]
    return "\n".join(lines)


def _bars(ax, sec: dict) -> None:
    rows = sec["rows"]
    names = [r["name"] for r in rows][::-1]
    med = [r["median"] for r in rows][::-1]
    lo = [r["median"] - r["min"] for r in rows][::-1]
    hi = [r["max"] - r["median"] for r in rows][::-1]
    colors = ["#d62728" if n == sec.get("baseline") else "#1f77b4" for n in names]
    y = range(len(names))
    ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3, alpha=0.85)
    ax.set_yticks(list(y))
    ax.set_yticklabels([n if len(n) <= 64 else n[:62] + "..." for n in names], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"{sec['unit']} (median, log scale; bars: min-max)", fontsize=8)
    ax.set_title(sec["title"], fontsize=9)
    ratios = [r.get("ratio") for r in rows][::-1]
    tops = [r["max"] for r in rows][::-1]
    for i, (v, top, q) in enumerate(zip(med, tops, ratios)):
        ax.text(top, i, f"  {_fmt(v)}" + (f"  (x{q:.2f})" if q is not None else ""), va="center", fontsize=7)
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.margins(x=0.35)


def _quality_plot(b: dict, path: Path) -> bool:
    series = b.get("series") or {}
    if not any(series.values()):
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, rounds) in enumerate(series.items()):
        color = f"C{i}"
        for key, style, label in (("test_lwlrap", "-", "test LWLRAP"), ("oof_lwlrap", "--", "OOF LWLRAP")):
            pts = [(r["round"], r[key]) for r in rounds if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", color=color, label=f"{name}: {label}")
    # the yardsticks of the first variant (the one the goals check): random, prior-only, oracle, as level lines
    first = next(iter(series))
    rows = [r for sec in b.get("sections") or [] for r in sec.get("rows", []) if r.get("variant") == first]
    for suffix, style in (("random scores", ":"), ("prior-only", "-."), ("oracle (every call's truth)", "--")):
        value = next((r.get("test_lwlrap") for r in rows if r["name"].endswith(f": {suffix}")), None)
        if value is not None:
            ax.axhline(value, color="grey", linestyle=style, linewidth=1)
            ax.annotate(
                f"{suffix.split(' (')[0]} {value:.3f}",
                (0, value),
                xycoords=("axes fraction", "data"),
                xytext=(3, 2),
                textcoords="offset points",
                fontsize=7,
                color="dimgrey",
            )
    ax.set_xlabel("round")
    ax.set_xticks(sorted({r["round"] for rounds in series.values() for r in rounds}))
    ax.set_ylabel("LWLRAP")
    ax.set_title("LWLRAP by round per training variant, beside the yardsticks (test clips)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(result: dict, out: Path) -> list[str]:
    """One PNG per benchmark (a bar chart per comparison; LWLRAP by round for quality); sets ``b["plot"]``."""
    written = []
    for b in result["benchmarks"]:
        path = Path(out) / f"{b['name']}.png"
        if b["name"] == "quality":
            if _quality_plot(b, path):
                b["plot"] = path.name
                written.append(path.name)
            continue
        secs = [s for s in b.get("sections", []) if s.get("plot") and s["rows"]]
        if not secs:
            continue
        heights = [0.9 + 0.32 * len(s["rows"]) for s in secs]
        fig, axes = plt.subplots(
            len(secs), 1, figsize=(10, sum(heights) + 0.4), squeeze=False, gridspec_kw={"height_ratios": heights}
        )
        for ax, sec in zip(axes[:, 0], secs):
            _bars(ax, sec)
        fig.suptitle(f"{b.get('title', b['name'])} ({result['mode']}; {result['machine']['cpu_model']})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        b["plot"] = path.name
        written.append(path.name)
    return written
