"""``mode="fcn"`` (one backbone pass per clip, the classifier pooled per window) against ``mode="exact"`` (one
forward per window) on a briefly trained tiny model: how close they are, in scores and in LWLRAP."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.batch import infer_split
from engine.export import load_model
from rfcx.metrics import lwlrap
from tests.engine_fixtures import engine_base, one_thread, trained  # noqa: F401

COLS = [f"s{c}" for c in range(24)]


def test_fcn_vs_exact(trained, capsys) -> None:
    models = [load_model(p) for p in sorted((trained["runs"] / "round0" / "models").glob("*.ts"))]
    truth = pd.read_csv(trained["data"] / "test_labels.csv").set_index("recording_id")
    out = {}
    for mode in ("exact", "fcn"):
        clips, windows = infer_split(models, trained["store"], "test", mode=mode, device="cpu", progress=False)
        out[mode] = (clips.set_index("recording_id").loc[truth.index, COLS].to_numpy(float), windows)
    (exact, w_exact), (fcn, w_fcn) = out["exact"], out["fcn"]
    assert w_exact[["recording_id", "start_s"]].equals(w_fcn[["recording_id", "start_s"]])
    windows_diff = np.abs(w_exact[COLS].to_numpy() - w_fcn[COLS].to_numpy())
    report = {
        "final_train_loss": round(trained["final_loss"], 4),
        "clip_max_abs_diff": float(np.abs(exact - fcn).max()),
        "clip_mean_abs_diff": float(np.abs(exact - fcn).mean()),
        "window_max_abs_diff": float(windows_diff.max()),
        "window_mean_abs_diff": float(windows_diff.mean()),
        "clip_score_correlation": float(np.corrcoef(exact.ravel(), fcn.ravel())[0, 1]),
        "lwlrap_exact": lwlrap(truth.to_numpy(), exact),
        "lwlrap_fcn": lwlrap(truth.to_numpy(), fcn),
    }
    report["lwlrap_delta"] = report["lwlrap_fcn"] - report["lwlrap_exact"]
    with capsys.disabled():
        print("\nfcn vs exact (tiny model, 2 s windows = 2 feature positions):", json.dumps(report, indent=1))
    assert report["lwlrap_exact"] > 0.3, "the briefly trained model should have learnt something"
    assert np.isfinite(fcn).all() and (0 <= fcn).all() and (fcn <= 1).all()
    # the two modes rank clips and classes alike; they differ in what the backbone sees beyond a window
    assert report["clip_score_correlation"] > 0.7
    assert abs(report["lwlrap_delta"]) < 0.2
