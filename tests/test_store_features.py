"""The log-mel features: filter bank and both backends against librosa on the real recording."""

from __future__ import annotations

import numpy as np
import pytest

from store.audio import decode
from store.dali_pipeline import DaliLogMel, dali_available
from store.melbank import hz_to_mel_bin, mel_band_edges, mel_filter_bank
from store.params import MelParams
from store.torch_mel import TorchLogMel
from tests.conftest import REAL_CLIP

librosa = pytest.importorskip("librosa")
P = MelParams()


def test_filter_bank_matches_librosa() -> None:
    ours = mel_filter_bank(P.sample_rate, P.n_fft, P.n_mels, P.f_min, P.f_max)
    ref = librosa.filters.mel(sr=P.sample_rate, n_fft=P.n_fft, n_mels=P.n_mels, fmin=P.f_min, fmax=P.f_max)
    assert ours.shape == (256, 2049)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_mel_bin_of_band_centres() -> None:
    edges = mel_band_edges(P.n_mels, P.f_min, P.f_max)
    bins = hz_to_mel_bin(edges[1:-1], P.n_mels, P.f_min, P.f_max)
    np.testing.assert_allclose(bins, np.arange(P.n_mels), atol=1e-6)


def test_params_validate_and_round_trip() -> None:
    assert MelParams.from_dict(P.to_dict()) == P
    assert P.n_frames(48_000 * 60) == 5626
    with pytest.raises(ValueError, match="f_max"):
        MelParams(f_max=30_000)
    with pytest.raises(ValueError, match="unknown mel parameter"):
        MelParams.from_dict({**P.to_dict(), "bogus": 1})


@pytest.fixture(scope="module")
def reference():
    if not REAL_CLIP.is_file():
        pytest.skip("real recording not available")
    y, _ = decode(REAL_CLIP, P.sample_rate)
    s = librosa.feature.melspectrogram(
        y=y, sr=P.sample_rate, n_fft=P.n_fft, hop_length=P.hop, n_mels=P.n_mels, power=2.0
    )
    return y, 10 * np.log10(np.maximum(s, P.amin))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_torch_backend_matches_librosa_on_real_clip(reference) -> None:
    y, ref = reference
    ours = TorchLogMel(P)([y])[0]
    assert ours.shape == ref.shape == (256, 5626)
    assert _corr(ours, ref) >= 0.99
    assert _corr(ours, ref) > 0.9999  # the CPU path's banded mel product (issue 12's bar)
    assert np.abs(ours - ref).max() < 0.1  # dB


@pytest.mark.parametrize("n_samples", [100, 4096, 48_000 * 3 + 77])
@pytest.mark.parametrize("power", [2.0, 1.0])
def test_cpu_banded_path_equals_the_dense_stft(n_samples: int, power: float) -> None:
    """The CPU path (frame blocks, float32 rfft, banded mel product) against torch.stft + the dense product."""
    import torch

    params = MelParams(power=power)
    y = np.random.default_rng(0).standard_normal(n_samples).astype(np.float32) * 0.1
    mel = TorchLogMel(params)
    banded = mel.logmel_cpu(y)
    dense = mel.logmel(torch.from_numpy(y)[None])[0].numpy()
    assert banded.shape == dense.shape == (params.n_mels, params.n_frames(n_samples)) and banded.dtype == np.float32
    assert np.abs(banded - dense).max() < 1e-3  # dB


def test_mel_band_groups_hold_every_weight() -> None:
    from store.melbank import mel_band_groups

    bank = mel_filter_bank(P.sample_rate, P.n_fft, P.n_mels, P.f_min, P.f_max)
    covered = np.zeros_like(bank, dtype=bool)
    for r0, r1, c0, c1 in mel_band_groups(bank, 16):
        covered[r0:r1, c0:c1] = True
    assert covered[bank != 0].all()
    assert covered.mean() < 0.1  # the blocks are a small part of the dense product


@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed")
def test_dali_backend_matches_librosa_on_real_clip(reference) -> None:
    y, ref = reference
    ((ours, n_samples),) = DaliLogMel(P, batch_size=1)([np.fromfile(REAL_CLIP, dtype=np.uint8)])
    assert n_samples == len(y)
    assert ours.shape == ref.shape
    assert _corr(ours, ref) >= 0.99
    assert np.abs(ours - ref).max() < 0.1
