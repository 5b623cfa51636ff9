"""``mode="fcn"`` (one backbone pass per clip, the classifier pooled per window) against ``mode="exact"`` (one
forward per window) on a briefly trained tiny model: how close they are, in scores and in LWLRAP."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from engine.batch import infer_split
from engine.export import load_model
from rfcx.scoring.metrics import lwlrap
from tests.engine_fixtures import engine_base, one_thread, tiny_run, trained  # noqa: F401

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


def test_squeeze_excitation_context_is_a_windows_length(tiny_run) -> None:
    """The fcn path's squeeze-excitation blocks take their context from a crop's span around each position, not the
    whole clip: audio far from a window no longer changes its score (a global context let every frame of the clip
    change every window), and a window that is the whole input is still the crop's own forward."""
    import torch

    from engine.export import crop_context

    s = torch.arange(10.0).view(1, 1, 1, 10)
    torch.testing.assert_close(
        crop_context(s, 4)[..., [0, 1, 2, 5, 8, 9]], torch.tensor([1.5, 1.5, 1.5, 4.5, 7.5, 7.5]).view(1, 1, 1, 6)
    )  # shifted inside
    torch.testing.assert_close(crop_context(s[..., :3], 4), torch.full((1, 1, 1, 3), 1.0))  # shorter: the mean
    torch.testing.assert_close(crop_context(s, 1), s)

    model = load_model(sorted((tiny_run["runs"] / "round0" / "models").glob("*.ts"))[0])
    assert model.meta["fcn"]["local_se_blocks"] == 2  # test_efficientnet's two squeeze-excitation blocks
    g = torch.Generator().manual_seed(0)
    clip = -60.0 + 15.0 * torch.randn(1, 256, 4000, generator=g)
    far = clip.clone()
    far[..., 2500:] += 30.0  # loud, far (> 2000 frames) from the first windows
    starts = torch.tensor([0.0, 47.0, 94.0])
    torch.testing.assert_close(model.windows(far, starts), model.windows(clip, starts), atol=1e-7, rtol=0)
    assert not torch.allclose(model.windows(far, torch.tensor([3000.0])), model.windows(clip, torch.tensor([3000.0])))
