"""Building a store and reading it back: layout, reader API, resume, incremental runs, both backends."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from store import CropRequest, FeatureStore, build_store
from store.dali_pipeline import dali_available
from store.params import MelParams
from tests.conftest import write_clip

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_build_and_read(dataset, tmp_path, backend) -> None:
    path = tmp_path / "s.zarr"
    summary = build_store(dataset, path, backend=backend, device="cpu", progress=False)
    assert summary.stored == {"train": 4, "test": 2} and not summary.rejected
    assert summary.audio_seconds == pytest.approx(18.0)

    fs = FeatureStore.open(path)
    assert fs.params == MelParams()
    assert fs.ids("train") == ["t0", "t1", "t2", "t3"] and fs.ids("test") == ["u0", "u1"]
    assert fs.split_of("u1") == "test" and "t0" in fs and len(fs) == 6
    mel = fs.mel("t1")
    assert mel.dtype == np.float32 and mel.shape == (256, 1 + 3 * 48_000 // 512)
    assert fs.n_frames("t1") == mel.shape[1]
    # the 1.5 kHz tone of t1 is the loudest mel band
    from store.melbank import hz_to_mel_bin

    loud = int(np.argmax(mel[:, 100:200].mean(axis=1)))
    assert abs(loud - hz_to_mel_bin(1500.0, 256, 0, 24000)) <= 1.5

    np.testing.assert_array_equal(fs.crop("t1", 10, 50), mel[:, 10:60])
    edge = fs.crop("t1", mel.shape[1] - 5, 20)  # runs past the end: padded with the silence floor
    np.testing.assert_array_equal(edge[:, :5], mel[:, -5:])
    assert (edge[:, 5:] == fs.params.floor_db).all()
    assert (fs.crop("t1", -3, 5)[:, :3] == fs.params.floor_db).all()
    batch = fs.crops([("t0", 0, 40), CropRequest("u1", 7, 40), ("t3", 100, 40)])
    assert batch.shape == (3, 256, 40)
    np.testing.assert_array_equal(batch[1], fs.mel("u1")[:, 7:47])
    np.testing.assert_array_equal(fs.crops([("t0", 0, 40), ("t3", 100, 40)], workers=1)[1], batch[2])
    with pytest.raises(ValueError, match="same n_frames"):
        fs.crops([("t0", 0, 40), ("t0", 0, 41)])

    tp, fp = fs.boxes("tp"), fs.boxes("fp")
    assert len(tp) == 4 and len(fp) == 4
    assert list(tp.columns) == ["recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"]
    assert tp.recording_id.tolist() == ["t0", "t1", "t2", "t3"] and tp.species_id.tolist() == [0, 1, 2, 3]
    assert fs.submission_ids() == ["u1", "u0"]
    assert fs.rejected().empty
    with pytest.raises(KeyError, match="no split"):
        fs.ids("valid")
    with pytest.raises(KeyError, match="no recording"):
        fs.mel("nope")


def test_backends_agree(dataset, tmp_path) -> None:
    if not dali_available():
        pytest.skip("NVIDIA DALI not installed")
    a = build_store(dataset, tmp_path / "a.zarr", backend="dali", device="cpu", progress=False)
    b = build_store(dataset, tmp_path / "b.zarr", backend="torch", device="cpu", progress=False)
    assert a.stored == b.stored
    fa, fb = FeatureStore.open(tmp_path / "a.zarr"), FeatureStore.open(tmp_path / "b.zarr")
    for rid in fa.ids("train") + fa.ids("test"):
        assert np.abs(fa.mel(rid) - fb.mel(rid)).max() < 0.1


def test_torch_cpu_threads_give_the_same_store(dataset, tmp_path) -> None:
    """One clip per thread (threads=2) stores what one thread stores, and leaves torch's own threads as they were."""
    import torch

    before = torch.get_num_threads()
    build_store(dataset, tmp_path / "one.zarr", backend="torch", device="cpu", progress=False, threads=1)
    build_store(dataset, tmp_path / "two.zarr", backend="torch", device="cpu", progress=False, threads=2, batch_size=3)
    assert torch.get_num_threads() == before
    one, two = FeatureStore.open(tmp_path / "one.zarr"), FeatureStore.open(tmp_path / "two.zarr")
    assert one.ids("train") == two.ids("train") and one.ids("test") == two.ids("test")
    for rid in one.ids("train") + one.ids("test"):
        np.testing.assert_array_equal(one.mel(rid), two.mel(rid))


def test_auto_backend(dataset, tmp_path) -> None:
    from store.backends import choose_backend

    assert build_store(dataset, tmp_path / "a.zarr", device="cpu", progress=False).backend == "torch"
    assert choose_backend("auto", "gpu") == ("dali" if dali_available() else "torch")
    assert choose_backend("dali", "cpu") == "dali"
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("numpy", "cpu")
    if dali_available():  # a store keeps the backend it was built with
        build_store(dataset, tmp_path / "d.zarr", backend="dali", device="cpu", progress=False)
        assert choose_backend("auto", "cpu", tmp_path / "d.zarr") == "dali"
        again = build_store(dataset, tmp_path / "d.zarr", device="cpu", progress=False)
        assert again.backend == "dali"


def test_store_is_plain_zarr(dataset, tmp_path) -> None:
    build_store(dataset, tmp_path / "s.zarr", backend="torch", device="cpu", progress=False)
    root = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert root.attrs["format"] == "rfcx-feature-store" and root.attrs["mel"]["n_mels"] == 256
    arr = root["train/mel/t2"]
    assert arr.dtype == np.float16 and arr.attrs["complete"] is True
    assert arr.chunks == (256, min(512, arr.shape[1]))
    assert root["train/ids"][:].tolist() == ["t0", "t1", "t2", "t3"]
    assert root["tables/tp/species_id"][:].tolist() == [0, 1, 2, 3]


def test_second_run_skips_and_new_clips_are_added(dataset, tmp_path) -> None:
    path = tmp_path / "s.zarr"
    build_store(dataset, path, backend="torch", device="cpu", progress=False)
    before = FeatureStore.open(path).mel("t0")
    again = build_store(dataset, path, backend="torch", device="cpu", progress=False)
    assert again.stored == {"train": 0, "test": 0} and again.skipped == {"train": 4, "test": 2}

    write_clip(dataset / "test" / "u9.flac", 2.0, 700.0)
    more = build_store(dataset, path, backend="torch", device="cpu", progress=False)
    assert more.stored == {"train": 0, "test": 1} and more.total == {"train": 4, "test": 3}
    fs = FeatureStore.open(path)
    assert fs.ids("test") == ["u0", "u1", "u9"] and fs.n_frames("u9") == 1 + 2 * 48_000 // 512
    np.testing.assert_array_equal(fs.mel("t0"), before)


def test_half_written_clip_is_not_taken_for_whole(dataset, tmp_path) -> None:
    path = tmp_path / "s.zarr"
    build_store(dataset, path, backend="torch", device="cpu", progress=False)
    root = zarr.open_group(path, mode="r+")
    # what a kill between the first and the last chunk leaves: an array whose `complete` flag is still false
    root["train/mel"].create_array(
        "t1", shape=(256, 282), dtype="float16", chunks=(256, 64), attributes={"complete": False}, overwrite=True
    )
    del root["train/ids"]  # ... and an index that was never written
    again = build_store(dataset, path, backend="torch", device="cpu", progress=False)
    assert again.stored == {"train": 1, "test": 0}
    fs = FeatureStore.open(path)
    assert fs.ids("train") == ["t0", "t1", "t2", "t3"]
    assert np.isfinite(fs.mel("t1")).all() and fs.mel("t1").max() > -50


def test_other_mel_params_refused(dataset, tmp_path) -> None:
    path = tmp_path / "s.zarr"
    build_store(dataset, path, backend="torch", device="cpu", progress=False)
    with pytest.raises(ValueError, match="other mel parameters.*n_mels"):
        build_store(dataset, path, backend="torch", device="cpu", progress=False, params=MelParams(n_mels=128))


def test_open_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="feature store not found"):
        FeatureStore.open(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(ValueError, match="not an rfcx feature store"):
        FeatureStore.open(tmp_path / "other.zarr")
