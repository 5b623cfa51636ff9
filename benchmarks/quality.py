"""Quality of the recipe's parts: LWLRAP by round for training variants (reads finished runs; trains nothing).

The trainings are left to the user (hours on a CPU). With a store built by ``make demo`` (or ``rfcx synth`` +
``rfcx build-store``), one run directory per variant, the ``cpu`` config and rounds 0-2::

    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/full
    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-tpfp --set tp_fp_sampling=false
    rfcx train --round 2 --store demo/features.zarr --config cpu --runs runs/no-freq --set freq_channel=false
    rfcx bench --only quality --quality-runs full=runs/full --quality-runs no-tpfp=runs/no-tpfp --quality-runs no-freq=runs/no-freq

(``python -m benchmarks --only quality --quality-runs full=runs/full no-tpfp=runs/no-tpfp no-freq=runs/no-freq`` likewise.)
A run directory remembers its config, hence one directory per variant. ``tp_fp_sampling=false`` changes rounds
>= 1 only (round 0 always learns from the boxes), so compare the variants from round 1 on.
"""

from __future__ import annotations

import json
from pathlib import Path

METRICS = (("test_lwlrap", "test LWLRAP"), ("oof_lwlrap", "OOF LWLRAP (TP windows)"), ("oof_box_auc", "OOF TP-vs-FP AUC"))

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
    from rfcx.runs import open_run

    root = open_run(run_dir, pull="meta").root
    if not root.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    rows = []
    found = [p for p in root.glob("round*/metrics.json") if p.parent.name[5:].isdigit()]
    for path in sorted(found, key=lambda p: int(p.parent.name[5:])):
        m = json.loads(path.read_text())
        fc = m.get("freq_channel_check") or {}
        rows.append({"round": int(m.get("round", path.parent.name[5:])), "config": m.get("config"),
                     **{k: m.get(k) for k, _ in METRICS}, "freq_channel_check": fc or None})
    return rows


def run(quick: bool, workdir: Path, runs: dict[str, str | Path] | list[str] | None = None) -> dict:
    """LWLRAP (test, OOF) and TP-vs-FP AUC by round of each variant's run directory."""
    variants = parse_runs(runs) if isinstance(runs, list) else dict(runs or {})
    series = {name: read_rounds(path) for name, path in variants.items()}
    table_rows = []
    for name, rounds in series.items():
        for r in rounds:
            table_rows.append({"name": f"{name} round {r['round']}", "variant": name, **r})
    sec = {"key": "quality", "title": "Quality by round and variant", "unit": "", "baseline": None,
           "rows": table_rows, "plot": False, "note": "",
           "columns": [[k, label, ".4f"] for k, label in METRICS]}
    notes = [] if variants else ["No run directories given (`--quality-runs NAME=DIR ...`): nothing measured. "
                                 "The trainings are left to the user; commands below."]
    return {"name": "quality", "title": "5. Quality (training variants)",
            "about": "LWLRAP by round of the full recipe vs the recipe without TP/FP box sampling in rounds >= 1 "
                     "(`--set tp_fp_sampling=false`) vs without the FreqConv channel (`--set freq_channel=false`), "
                     "read from finished run directories (`round*/metrics.json`).",
            "params": {"runs": {k: str(v) for k, v in variants.items()}}, "series": series,
            "sections": [sec] if table_rows else [], "goals": [], "notes": notes, "commands": COMMANDS}
