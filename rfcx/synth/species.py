"""Per-species figures and label-layout statistics derived from the RFCX label tables.

The shipped tables in ``rfcx/data`` hold derived figures only (medians, counts,
fractions), never rows of the competition CSVs. Regenerate them with::

    python -m rfcx.synth.species /path/to/train_tp.csv /path/to/train_fp.csv
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from rfcx.errors import InvalidInputError
from store.tables import N_SPECIES

SPECIES_CSV = "species.csv"
LAYOUT_CSV = "layout.csv"
SPECIES_COLUMNS = [
    "species_id",
    "songtype_id",
    "n_songtypes",
    "f_min",
    "f_max",
    "duration",
    "duration_q10",
    "duration_q90",
    "n_tp",
    "n_fp",
]


def _read_labels(path: Path | str) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = {"recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"} - set(df.columns)
    if missing:
        raise InvalidInputError(f"{path}: missing columns {sorted(missing)}")
    return df.assign(duration=df.t_max - df.t_min)


def derive_species_table(tp_csv: Path | str, fp_csv: Path | str) -> pd.DataFrame:
    """Per species: main songtype, median box band and duration (from TP boxes), row counts."""
    tp, fp = _read_labels(tp_csv), _read_labels(fp_csv)
    rows = []
    for sid in range(N_SPECIES):
        boxes = tp[tp.species_id == sid]
        if boxes.empty:  # fall back on the FP boxes (same templates)
            boxes = fp[fp.species_id == sid]
        if boxes.empty:
            raise InvalidInputError(f"species {sid} has no boxes in {tp_csv} or {fp_csv}")
        songtypes = boxes.songtype_id.value_counts()
        main_songtype = int(songtypes[songtypes == songtypes.max()].index.min())
        rows.append(
            {
                "species_id": sid,
                "songtype_id": main_songtype,
                "n_songtypes": int(songtypes.size),
                "f_min": round(float(boxes.f_min.median()), 2),
                "f_max": round(float(boxes.f_max.median()), 2),
                "duration": round(float(boxes.duration.median()), 4),
                "duration_q10": round(float(boxes.duration.quantile(0.1)), 4),
                "duration_q90": round(float(boxes.duration.quantile(0.9)), 4),
                "n_tp": int((tp.species_id == sid).sum()),
                "n_fp": int((fp.species_id == sid).sum()),
            }
        )
    table = pd.DataFrame(rows, columns=SPECIES_COLUMNS)
    if not ((table.f_min < table.f_max) & (table.duration > 0)).all():
        raise InvalidInputError("derived species table has an empty band or duration")
    return table


def derive_layout_stats(tp_csv: Path | str, fp_csv: Path | str) -> dict[str, float]:
    """How labels spread over train recordings: TP-only / FP-only / both, rows per recording."""
    tp, fp = _read_labels(tp_csv), _read_labels(fp_csv)
    tp_ids, fp_ids = set(tp.recording_id), set(fp.recording_id)
    n = len(tp_ids | fp_ids)
    tp_rows, fp_rows = tp.groupby("recording_id").size(), fp.groupby("recording_id").size()
    stats = {
        "n_recordings": n,
        "frac_tp_only": len(tp_ids - fp_ids) / n,
        "frac_fp_only": len(fp_ids - tp_ids) / n,
        "frac_both": len(tp_ids & fp_ids) / n,
        "mean_tp_rows": float(tp_rows.mean()),
        "mean_fp_rows": float(fp_rows.mean()),
        "max_tp_rows": int(tp_rows.max()),
        "max_fp_rows": int(fp_rows.max()),
        "mean_tp_species": float(tp.groupby("recording_id").species_id.nunique().mean()),
        "mean_fp_species": float(fp.groupby("recording_id").species_id.nunique().mean()),
    }
    return {k: round(float(v), 4) for k, v in stats.items()}


def _data_file(name: str):
    return resources.files("rfcx").joinpath("data", name)


def load_species_table() -> pd.DataFrame:
    """The shipped derived table (24 rows, columns ``SPECIES_COLUMNS``)."""
    with _data_file(SPECIES_CSV).open("r") as f:
        table = pd.read_csv(f)
    if len(table) != N_SPECIES or list(table.species_id) != list(range(N_SPECIES)):
        raise InvalidInputError(f"rfcx/data/{SPECIES_CSV} must list species 0..{N_SPECIES - 1} in order")
    return table


def load_layout_stats() -> dict[str, float]:
    """The shipped layout statistics as ``{name: value}``."""
    with _data_file(LAYOUT_CSV).open("r") as f:
        df = pd.read_csv(f)
    return dict(zip(df.name, df.value.astype(float)))


def band_similarity(table: pd.DataFrame) -> np.ndarray:
    """Pairwise intersection-over-union of the species' frequency bands (diagonal 0)."""
    lo, hi = table.f_min.to_numpy(float), table.f_max.to_numpy(float)
    inter = np.clip(np.minimum(hi[:, None], hi[None, :]) - np.maximum(lo[:, None], lo[None, :]), 0, None)
    union = np.maximum(hi[:, None], hi[None, :]) - np.minimum(lo[:, None], lo[None, :])
    iou = inter / union
    np.fill_diagonal(iou, 0.0)
    return iou


def write_tables(tp_csv: Path | str, fp_csv: Path | str, out_dir: Path | str | None = None) -> tuple[Path, Path]:
    """Derive both tables and write them (by default into the package's data folder)."""
    out = Path(out_dir) if out_dir is not None else Path(__file__).resolve().parent / "data"
    out.mkdir(parents=True, exist_ok=True)
    species_path, layout_path = out / SPECIES_CSV, out / LAYOUT_CSV
    derive_species_table(tp_csv, fp_csv).to_csv(species_path, index=False)
    stats = derive_layout_stats(tp_csv, fp_csv)
    pd.DataFrame({"name": list(stats), "value": list(stats.values())}).to_csv(layout_path, index=False)
    return species_path, layout_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate rfcx/data/species.csv and layout.csv")
    parser.add_argument("tp_csv", type=Path)
    parser.add_argument("fp_csv", type=Path)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    for path in write_tables(args.tp_csv, args.fp_csv, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
