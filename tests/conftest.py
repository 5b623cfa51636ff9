"""Shared fixtures: the real files in ../shared/rfcx (skipped when absent) and tiny data sets made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SHARED = Path(__file__).resolve().parents[2] / "shared" / "rfcx"
REAL_CLIP = SHARED / "f97ababc1.flac"
BOX_HEADER = "recording_id,species_id,songtype_id,t_min,f_min,t_max,f_max\n"


def make_synth_store(root: Path, n_train: int, n_test: int, seconds: float) -> Path:
    """``rfcx synth`` data (seed 1, a TP box in every train clip) under ``root/data`` and its torch-built store
    ``root/s.zarr``: the small store the training, distributed and integrity tests share the shape of."""
    from rfcx.synth.dataset import synthesize
    from store import build_store

    synthesize(root / "data", n_train=n_train, n_test=n_test, seconds=seconds, seed=1, tp_fraction=1.0, progress=False)
    build_store(root / "data", root / "s.zarr", backend="torch", device="cpu", progress=False)
    return root / "s.zarr"


@pytest.fixture
def real_clip() -> Path:
    if not REAL_CLIP.is_file():
        pytest.skip(f"real recording not available at {REAL_CLIP}")
    return REAL_CLIP


def tone(seconds: float, hz: float, sr: int = 48_000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A tone burst in a little noise, (samples,) or (samples, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * hz * t) * (np.sin(np.pi * t / seconds) ** 2) + 0.01 * rng.standard_normal(len(t))
    y = y.astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


def write_clip(
    path: Path, seconds: float = 3.0, hz: float = 2000.0, sr: int = 48_000, channels: int = 1, seed: int = 0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, hz, sr, channels, seed), sr, subtype="PCM_16", format="FLAC")
    return path


def make_dataset(root: Path, n_train: int = 4, n_test: int = 2, seconds: float = 3.0) -> Path:
    """A tiny competition-layout folder: train/t0..., test/u0..., one TP and one FP box per train clip."""
    tp, fp = [BOX_HEADER], [BOX_HEADER]
    for i in range(n_train):
        write_clip(root / "train" / f"t{i}.flac", seconds, 1000 + 500 * i, seed=i)
        tp.append(f"t{i},{i % 24},1,0.5,{900 + 500 * i},1.5,{1100 + 500 * i}\n")
        fp.append(f"t{i},{(i + 5) % 24},1,1.0,500.0,2.0,3000.0\n")
    for i in range(n_test):
        write_clip(root / "test" / f"u{i}.flac", seconds, 3000 + 300 * i, seed=100 + i)
    (root / "train_tp.csv").write_text("".join(tp))
    (root / "train_fp.csv").write_text("".join(fp))
    (root / "sample_submission.csv").write_text(
        "recording_id,"
        + ",".join(f"s{k}" for k in range(24))
        + "\n"
        + "".join(f"u{i}," + ",".join("0" for _ in range(24)) + "\n" for i in reversed(range(n_test)))
    )
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data")
