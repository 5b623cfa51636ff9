"""Training reports: loss by epoch (per round) and LWLRAP by round, as PNG files beside metrics.json."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rfcx.runs.directory import RunDir  # noqa: E402


def plot_round(runs: RunDir, k: int) -> None:
    """``round{k}/loss.png``: training loss by epoch of every member and fold."""
    metrics = json.loads(runs.metrics(k).read_text())
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, history in sorted(metrics["members"].items()):
        ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked BCE" if k == 0 else "BCE (soft labels)")
    ax.set_title(f"round {k}: training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(runs.round_dir(k) / "loss.png", dpi=110)
    plt.close(fig)


def plot_rounds(runs: RunDir) -> None:
    """``RUNS/lwlrap.png``: held-out LWLRAP (and test LWLRAP where known) by round."""
    rows = [json.loads(runs.metrics(k).read_text()) for k in runs.rounds() if runs.metrics(k).is_file()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (
        ("oof_lwlrap", "OOF LWLRAP (TP windows)"),
        ("oof_box_auc", "OOF TP-vs-FP AUC"),
        ("test_lwlrap", "test LWLRAP"),
    ):
        pts = [(m["round"], m[key]) for m in rows if m.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    from rfcx.scoring.yardsticks import round_table

    table = round_table(runs.root)
    sticks = table[-1]["yardsticks"] if table else {}
    for key, label, style in (
        ("random", "random scores", ":"),
        ("prior_only", "prior-only", "--"),
        ("oracle", "oracle (every call's truth)", "-."),
        ("equal_compute", "round 0 trained as long as the last round", (0, (5, 1, 1, 1))),
    ):
        if sticks.get(key) is not None:
            ax.axhline(sticks[key], color="grey", linestyle=style, linewidth=1)
            ax.annotate(
                f"{label} {sticks[key]:.3f}",
                (0.0, sticks[key]),
                textcoords="offset points",
                xytext=(2, 2),
                fontsize=7,
                color="dimgrey",
            )
    ax.set_xlabel("round")
    ax.set_xticks([m["round"] for m in rows])
    ax.set_ylim(0, 1)
    ax.set_title(f"held-out quality by round ({rows[-1].get('config', '')})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(runs.root / "lwlrap.png", dpi=110)
    plt.close(fig)


def format_round_table(rows: list[dict], best: int | None = None) -> str:
    """The text of ``rfcx report``: test LWLRAP by round beside random, prior-only, the oracle and, from round 1 on,
    round 0 trained as long as that round (the equal-compute bootstrap) with the pseudo-label gain over it."""

    def f(v):
        return "   n/a" if v is None else f"{v:.4f}"

    def signed(v):
        return "   n/a" if v is None else f"{v:+.4f}"

    if not rows:
        return "no complete round yet"
    sticks = rows[-1]["yardsticks"]
    lines = [
        f"yardsticks: random {f(sticks.get('random'))}, prior-only {f(sticks.get('prior_only'))}, "
        f"oracle {f(sticks.get('oracle'))}"
        + (
            "" if sticks.get("oracle") is not None else " (rfcx train --oracle trains it, where calls_truth.csv exists)"
        ),
        "round  test LWLRAP  vs prior-only  gap closed  OOF clip LWLRAP (best_round.json)  rounds 0..k together"
        "  round 0 as long  pseudo-label gain",
    ]
    for r in rows:
        margin = (
            None
            if r["test_lwlrap"] is None or sticks.get("prior_only") is None
            else r["test_lwlrap"] - sticks["prior_only"]
        )
        gap = "         -" if r["gap_closed"] is None else f"{100 * r['gap_closed']:9.0f}%"
        later = r["round"] > 0
        lines.append(
            f"{r['round']:>5}  {f(r['test_lwlrap']):>11}  {signed(margin):>12}  {gap:>10}  "
            f"{f(r.get('oof_clip_lwlrap')):>32}  {f(r.get('test_lwlrap_rounds')) if later else '':>20}  "
            f"{f(r.get('equal_compute')) if later else '':>15}  {signed(r.get('pseudo_gain')) if later else '':>17}"
        )
    if any(r["round"] > 0 and r.get("equal_compute") is None for r in rows):
        lines.append(
            "round 0 as long: n/a until `rfcx train --equal-compute` (same --config and --set) trains round 0 for as "
            "many epochs as the pseudo-label rounds, into RUNS/equal-compute"
        )
    if len(rows) > 1:
        lines.append(
            (
                f"rfcx infer uses round {best} by default (--round best: the best held-out signal, "
                f"RUNS/best_round.json); "
                if best is not None
                else ""
            )
            + f"--round all uses rounds {rows[0]['round']}-{rows[-1]['round']} together"
        )
    elif best is not None:
        lines.append(f"rfcx infer uses round {best} by default")
    return "\n".join(lines)
