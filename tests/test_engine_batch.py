"""The batch engine: the 0.5 s window grid, max over windows and mean over models, agreement with the eager
network, batching across clips, and resuming a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.batch import infer_clips, infer_split
from engine.export import LoadedModel, load_model
from engine.windows import n_windows, window_starts
from store import FeatureStore, MelParams
from tests.engine_fixtures import NoiseClips, engine_base, one_thread, tiny_run  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PARAMS = MelParams()
COLS = [f"s{c}" for c in range(24)]


def _toy(scale: float, crop_seconds: float = 4.0, name: str = "toy") -> LoadedModel:
    """logit[c] = scale * sign[c] * (mean of mel row 0 over the window - 2.8): row 0 holds time, so even classes
    peak in the last window and odd classes in the first."""
    sign = torch.tensor([1.0 if c % 2 == 0 else -1.0 for c in range(24)])

    def forward(x: torch.Tensor) -> torch.Tensor:
        return scale * sign * (x[:, 0, :].mean(dim=1, keepdim=True) - 2.8)

    frames = PARAMS.seconds_to_frames(crop_seconds)
    meta = {
        "mel": PARAMS.to_dict(),
        "n_classes": 24,
        "window_frames": frames,
        "crop_seconds": crop_seconds,
        "hop_seconds": 0.5,
        "fcn": None,
    }
    return LoadedModel(Path(f"{name}.ts"), "toy", meta, forward, None, torch.device("cpu"))


class _RampClip:
    """One 60 s clip (5626 frames) whose mel row 0 is frame / 1000."""

    frames = PARAMS.n_frames(60 * PARAMS.sample_rate)

    def mel(self, recording_id: str) -> np.ndarray:
        mel = np.zeros((PARAMS.n_mels, self.frames), dtype=np.float32)
        mel[0] = np.arange(self.frames) / 1000.0
        return mel


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + np.exp(-v))


def test_window_grid() -> None:
    fps = PARAMS.frames_per_second
    assert _RampClip.frames == 5626
    assert n_windows(5626, fps, 4.0, 0.5) == 113
    starts = window_starts(5626, fps, 4.0, 0.5)
    assert starts[0] == 0 and starts[-1] == 5250 and starts[-1] + 375 <= 5626
    assert n_windows(5626, fps, 8.0, 0.5) == 105
    assert n_windows(100, fps, 4.0, 0.5) == 1  # a clip shorter than a window: one padded window


def test_max_over_windows_mean_over_models() -> None:
    models = [_toy(1.0, name="a"), _toy(2.0, name="b"), _toy(1.0, crop_seconds=8.0, name="c")]
    clip_scores, windows = infer_clips(models, _RampClip(), ["r"], PARAMS, batch_size=50, progress=False)
    assert list(clip_scores.columns) == ["recording_id", *COLS]

    # per model: the last window (even classes) or the first (odd classes) wins
    def best(m: LoadedModel, last: bool) -> float:
        n = m.window_frames
        s = 5250 if n == 375 else window_starts(5626, PARAMS.frames_per_second, 8.0, 0.5)[-1]
        start = s if last else 0
        mean_t = (start + (n - 1) / 2) / 1000.0
        scale = 2.0 if m.path.name == "b.ts" else 1.0
        return _sigmoid(scale * (mean_t - 2.8) * (1 if last else -1))

    even = np.mean([best(m, True) for m in models])
    odd = np.mean([best(m, False) for m in models])
    np.testing.assert_allclose(clip_scores.loc[0, "s0"], even, rtol=1e-5)
    np.testing.assert_allclose(clip_scores.loc[0, "s1"], odd, rtol=1e-5)
    # window scores: one row per window and window length, averaged over the models of that length
    assert windows.groupby("window_s").size().to_dict() == {4.0: 113, 8.0: 105}
    four = windows[windows.window_s == 4.0]
    np.testing.assert_allclose(four.start_s.iloc[-1], 56.0, atol=1e-9)
    np.testing.assert_allclose(four.end_s.iloc[-1] - four.start_s.iloc[-1], 375 / PARAMS.frames_per_second)
    expect_first = np.mean([_sigmoid(s * (((375 - 1) / 2) / 1000.0 - 2.8)) for s in (1.0, 2.0)])
    np.testing.assert_allclose(four.s0.iloc[0], expect_first, rtol=1e-5)


def _eager_clip_scores(nets: list[torch.nn.Module], fs: FeatureStore, rid: str) -> np.ndarray:
    mel = fs.mel(rid)
    per_model = []
    for net in nets:
        starts = window_starts(mel.shape[1], PARAMS.frames_per_second, 2.0, 0.5)
        padded = np.concatenate([mel, np.full((256, 188), PARAMS.floor_db, np.float32)], axis=1)
        x = torch.from_numpy(np.stack([padded[:, s : s + 188] for s in starts]))
        with torch.no_grad():
            per_model.append(torch.sigmoid(net(x)).numpy().max(axis=0))
    return np.mean(per_model, axis=0)


@pytest.mark.parametrize("suffix", [".ts", ".pt2"])
def test_infer_split_equals_eager(tiny_run, suffix: str) -> None:
    fs = FeatureStore.open(tiny_run["store"])
    models = [load_model(f) for f in sorted((tiny_run["runs"] / "round0" / "models").glob(f"*{suffix}"))]
    for batch_size in (3, 64):  # windows of several clips share a batch, or a clip spans batches
        clip_scores, windows = infer_split(models, fs, "test", batch_size=batch_size, device="cpu", progress=False)
        assert clip_scores.recording_id.tolist() == fs.ids("test")
        for i, rid in enumerate(fs.ids("test")):
            np.testing.assert_allclose(
                clip_scores.loc[i, COLS].to_numpy(float), _eager_clip_scores(tiny_run["nets"], fs, rid), atol=1e-4
            )
        per_clip = windows.groupby("recording_id").size()
        assert (per_clip == n_windows(fs.n_frames("u0"), PARAMS.frames_per_second, 2.0, 0.5)).all()
    assert clip_scores.attrs["computed_clips"] == 3 and clip_scores.attrs["resumed_clips"] == 0


def test_bad_requests(tiny_run) -> None:
    fs = FeatureStore.open(tiny_run["store"])
    files = sorted((tiny_run["runs"] / "round0" / "models").glob("*.ts"))
    with pytest.raises(KeyError, match="no split 'valid'"):
        infer_split(files, fs, "valid", device="cpu", progress=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        infer_split(files, fs, mode="fast", device="cpu", progress=False)
    other = MelParams(f_max=12000.0)
    with pytest.raises(
        ValueError,
        match=r"fold0.ts: the model was trained on other log-mel features .*"
        r"f_max: 24000.0 \(model\) vs 12000.0 \(the clips\)",
    ):
        infer_clips([load_model(files[0])], NoiseClips(1), ["c0"], other, progress=False, source="the clips")
    with pytest.raises(ValueError, match="mode 'fcn' needs the fully convolutional entry point"):
        infer_clips([_toy(1.0)], _RampClip(), ["r"], PARAMS, mode="fcn", progress=False)


@pytest.mark.parametrize("mode", ["exact", "fcn"])
def test_clips_of_mixed_lengths(tiny_run, mode: str) -> None:
    """Clips of different lengths share chunks and batches; each scores as it would alone."""
    models = [load_model(p) for p in sorted((tiny_run["runs"] / "round0" / "models").glob("*.ts"))]
    clips = NoiseClips(6, frames=[600, 150, 600, 940, 188, 600])
    together, windows = infer_clips(models, clips, clips.ids, PARAMS, mode=mode, batch_size=16, progress=False)
    for i, rid in enumerate(clips.ids):
        alone, _ = infer_clips(models, clips, [rid], PARAMS, mode=mode, batch_size=1, progress=False)
        np.testing.assert_allclose(
            together.loc[i, COLS].to_numpy(float), alone.loc[0, COLS].to_numpy(float), atol=1e-4
        )  # float reductions differ with the batch size and threads
        assert (windows.recording_id == rid).sum() == n_windows(clips.frames[rid], PARAMS.frames_per_second, 2.0, 0.5)


def _parts(d: Path) -> list[Path]:
    return sorted(d.glob("part-*.npz"))


def test_resume_after_kill(tiny_run, tmp_path: Path) -> None:
    files = [str(p) for p in sorted((tiny_run["runs"] / "round0" / "models").glob("*.ts"))]
    work = tmp_path / "parts"
    code = (
        "import sys, torch\n"
        "from engine.batch import infer_clips\nfrom engine.export import load_model\nfrom store import MelParams\n"
        "from tests.engine_fixtures import NoiseClips\n"
        "models = [load_model(p) for p in sys.argv[2:]]\n"
        "clips = NoiseClips(12, delay_s=0.25)\n"
        "infer_clips(models, clips, clips.ids, MelParams(), chunk_clips=1, prefetch=1, read_workers=1,\n"
        "            progress=False, checkpoint_dir=sys.argv[1], source='noise')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(work), *files],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 90
    while len(_parts(work)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    done = len(_parts(work))
    assert 3 <= done < 12, f"the run should have been killed half-way ({done} parts); {err.decode()[-1000:]}"

    models = [load_model(p) for p in files]
    clips = NoiseClips(12)
    resumed, resumed_windows = infer_clips(
        models, clips, clips.ids, PARAMS, chunk_clips=1, progress=False, checkpoint_dir=work, source="noise"
    )
    assert resumed.attrs["resumed_clips"] == done and resumed.attrs["computed_clips"] == 12 - done
    fresh, fresh_windows = infer_clips(models, clips, clips.ids, PARAMS, progress=False)
    assert resumed.recording_id.tolist() == clips.ids
    np.testing.assert_allclose(resumed[COLS].to_numpy(float), fresh[COLS].to_numpy(float), atol=1e-6)
    np.testing.assert_allclose(resumed_windows[COLS].to_numpy(float), fresh_windows[COLS].to_numpy(float), atol=1e-6)

    again, _ = infer_clips(models, clips, clips.ids, PARAMS, progress=False, checkpoint_dir=work, source="noise")
    assert again.attrs["computed_clips"] == 0 and again.attrs["resumed_clips"] == 12
    with pytest.raises(ValueError, match="holds partial results of another inference run .*mode"):
        infer_clips(models, clips, clips.ids, PARAMS, mode="fcn", progress=False, checkpoint_dir=work, source="noise")
    other, _ = infer_clips(
        models[:1],
        clips,
        clips.ids[:2],
        PARAMS,
        progress=False,
        checkpoint_dir=work,
        source="noise",
        restart_other=True,
    )  # what the CLI does with its own default folder
    assert other.attrs["computed_clips"] == 2 and len(_parts(work)) == 1
