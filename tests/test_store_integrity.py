"""Corrupt store chunks (issue 11, item 2): every chunk carries a checksum, a read of a damaged chunk names the
split, clip and chunk, `rfcx info --check` lists the damaged clips, `rfcx build-store --repair` decodes them again
and leaves the others as they are; stores written before the checksum still read. Also what a store tells up
front (issue 11, item 5): the submission rows without a clip, and one backend per store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from store import FeatureStore, build_store, layout
from store.errors import DamagedStoreError, StoreError
from tests.conftest import make_dataset, make_synth_store

HEALTHY: dict[str, Path] = {}


def _run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.output  # stdout and stderr, as a terminal shows them


@pytest.fixture
def built(tmp_path_factory, tmp_path) -> dict[str, Path]:
    """A store of 2 train clips and 1 test clip of 8 s (751 frames: chunks 0 and 1), built once and copied."""
    if not HEALTHY:
        base = tmp_path_factory.mktemp("integrity")
        data = make_dataset(base / "data", n_train=2, n_test=1, seconds=8.0)
        build_store(data, base / "s.zarr", backend="torch", device="cpu", progress=False)
        HEALTHY.update(data=data, store=base / "s.zarr")
    store = tmp_path / "s.zarr"
    shutil.copytree(HEALTHY["store"], store)
    return {"data": HEALTHY["data"], "store": store}


def _chunk(store: Path, split: str, rid: str, chunk: int) -> Path:
    return store / split / "mel" / rid / "c" / "0" / str(chunk)


def _flip(path: Path, at: float = 0.5) -> None:
    """Change one byte inside a chunk (its header stays valid: it still decompresses, to other values)."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_changed_byte_fails_its_read_naming_split_clip_and_chunk(built) -> None:
    store = built["store"]
    before = FeatureStore.open(store).mel("t1")
    assert "crc32c" in str(FeatureStore.open(store).array("t1").metadata.codecs).lower()
    _flip(_chunk(store, "train", "t1", 1))
    for cache_mb in (0, 64):
        fs = FeatureStore.open(store, cache_mb=cache_mb)
        with pytest.raises(DamagedStoreError) as caught:
            fs.mel("t1")
        message = str(caught.value)
        assert (
            f"{store}: damaged chunk 1 of clip t1 (split train, frames 512-750): checksum mismatch" in message
            and "rfcx build-store --repair" in message
            and "\n" not in message
        ), message
        assert isinstance(caught.value, StoreError) and caught.value.damage.chunk == 1
        with pytest.raises(DamagedStoreError, match="damaged chunk 1 of clip t1"):
            fs.crop("t1", 600, 100)
        with pytest.raises(DamagedStoreError, match="damaged chunk 1 of clip t1"):
            fs.crops([("t0", 0, 100), ("t1", 500, 100)])
    fs = FeatureStore.open(store)
    np.testing.assert_array_equal(fs.crop("t1", 0, 300), before[:, :300])  # chunk 0 is whole: still read
    np.testing.assert_array_equal(fs.mel("t0"), FeatureStore.open(HEALTHY["store"]).mel("t0"))


def test_info_check_lists_the_damaged_clips_and_repair_decodes_only_them(built) -> None:
    store, data = built["store"], built["data"]
    code, text = _run("info", "--store", store, "--check")
    assert code == 0 and "checked 3 clips (6 chunks): none damaged" in text, text

    _flip(_chunk(store, "train", "t1", 0), at=0.02)  # the compressed chunk's header
    _chunk(store, "test", "u0", 1).unlink()  # a chunk file gone: zarr would read zeros
    code, text = _run("info", "--store", store, "--check")
    assert code == 1, text
    assert "checked 3 clips (6 chunks): 2 damaged clip(s)" in text
    assert "damaged train/t1 chunk 0 (frames 0-511): checksum mismatch" in text
    assert "damaged test/u0 chunk 1 (frames 512-750): missing chunk file" in text
    assert f"error: {store}: 2 damaged clips; run `rfcx build-store --repair --data DIR --store {store}`" in text

    untouched = {p: p.read_bytes() for p in (store / "train" / "mel" / "t0").rglob("*") if p.is_file()}
    stamps = {p: p.stat().st_mtime_ns for p in untouched}
    code, text = _run(
        "build-store", "--data", data, "--store", store, "--backend", "torch", "--device", "cpu", "--repair"
    )
    assert code == 0, text
    assert "--repair: checked 3 clips (6 chunks): 2 damaged clip(s)" in text
    assert "repaired train/t1 chunk 0 (frames 0-511): checksum mismatch" in text and "repaired test/u0 chunk 1" in text
    assert "stored 0 new clips" in text and "repaired 2 damaged clips, skipped 1 already stored" in text
    assert {p: p.read_bytes() for p in untouched} == untouched  # the whole clip is left as it was
    assert {p: p.stat().st_mtime_ns for p in untouched} == stamps
    fs, healthy = FeatureStore.open(store), FeatureStore.open(HEALTHY["store"])
    for rid in ("t0", "t1", "u0"):
        np.testing.assert_array_equal(fs.mel(rid), healthy.mel(rid))
    code, text = _run("info", "--store", store, "--check")
    assert code == 0 and "none damaged" in text, text


def test_a_damaged_clip_without_its_audio_stays_and_is_named(built, tmp_path) -> None:
    data = tmp_path / "data"
    shutil.copytree(built["data"], data)
    (data / "train" / "t1.flac").unlink()
    _flip(_chunk(built["store"], "train", "t1", 1))
    summary = build_store(data, built["store"], backend="torch", device="cpu", progress=False, repair=True)
    assert summary.repaired == [] and [str(d) for d in summary.checked.damaged] == [
        "train/t1 chunk 1 (frames 512-750): checksum mismatch (its bytes changed after it was written)"
    ]
    assert any("train/t1 chunk 1" in w and "has no audio file" in w for w in summary.warnings)


def test_a_store_written_before_checksums_still_reads_and_is_checked(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(layout, "mel_codecs", lambda: [layout.mel_codec()])  # what the store wrote before
    data = make_dataset(tmp_path / "data", n_train=2, n_test=0, seconds=8.0)
    store = tmp_path / "old.zarr"
    build_store(data, store, backend="torch", device="cpu", progress=False)
    monkeypatch.undo()
    fs = FeatureStore.open(store)
    assert "crc32c" not in str(fs.array("t0").metadata.codecs).lower()
    assert fs.mel("t0").shape == (256, 751)
    report = fs.verify(progress=False)
    assert report.ok and report.clips == 2 and report.without_checksum == 2
    path = _chunk(store, "train", "t0", 0)
    path.write_bytes(b"\xff" * 16 + path.read_bytes()[16:])  # a damaged header: does not decompress
    with pytest.raises(
        DamagedStoreError, match="damaged chunk 0 of clip t0 \\(split train, frames 0-511\\): does not decompress"
    ):
        FeatureStore.open(store).mel("t0")
    summary = build_store(data, store, backend="torch", device="cpu", progress=False, repair=True)
    assert [d.recording_id for d in summary.repaired] == ["t0"]
    report = FeatureStore.open(store).verify(progress=False)
    assert report.ok and report.without_checksum == 1  # the repaired clip is written with the checksum


def test_a_missing_chunk_file_fails_its_read_instead_of_reading_zeros(built) -> None:
    store = built["store"]
    before = FeatureStore.open(store).mel("t1")
    _chunk(store, "train", "t1", 1).unlink()
    for cache_mb in (0, 64):
        fs = FeatureStore.open(store, cache_mb=cache_mb)
        for read in (lambda: fs.mel("t1"), lambda: fs.crop("t1", 600, 100), lambda: fs.crops([("t1", 400, 200)])):
            with pytest.raises(DamagedStoreError) as caught:
                read()
            assert f"{store}: damaged chunk 1 of clip t1 (split train, frames 512-750): missing chunk file" in str(
                caught.value
            )
            assert caught.value.damage.chunk == 1
    np.testing.assert_array_equal(FeatureStore.open(store).crop("t1", 0, 300), before[:, :300])  # chunk 0 is there
    code, text = _run("info", "--check", "--store", store)
    assert code == 1 and "damaged train/t1 chunk 1" in text and "missing chunk file" in text


def test_a_lost_index_chunk_is_named_and_rebuilt_from_the_clips(built) -> None:
    store, data = built["store"], built["data"]
    (store / "test" / "ids" / "c" / "0").unlink()
    with pytest.raises(DamagedStoreError, match=r"the index of split 'test' is damaged: a chunk file of its ids"):
        FeatureStore.open(store)
    for args in (("info", "--check", "--store", store), ("train", "--store", store, "--runs", store.parent / "r")):
        code, text = _run(*args)
        assert code == 1 and "Traceback" not in text and "the index of split 'test' is damaged" in text, text
    for repair in ([], ["--repair"]):
        if repair:
            (store / "train" / "n_frames" / "c" / "0").unlink()
        code, text = _run("build-store", "--data", data, "--store", store, *repair)
        assert code == 0 and "was damaged" in text and "rebuilt from the clips" in text, text
        fs = FeatureStore.open(store)
        assert fs.ids("test") == ["u0"] and fs.ids("train") == ["t0", "t1"]  # no empty id added
        assert fs.n_frames("t1") == FeatureStore.open(HEALTHY["store"]).n_frames("t1")


def test_a_clip_whose_metadata_is_gone_is_named_in_one_line(built) -> None:
    store = built["store"]
    (store / "train" / "mel" / "t1" / "zarr.json").unlink()
    with pytest.raises(DamagedStoreError, match=r"damaged clip t1 \(split train\): its array does not open"):
        FeatureStore.open(store).mel("t1")
    code, text = _run("train", "--store", store, "--runs", store.parent / "r", "--config", "tiny")
    assert code == 1 and "Traceback" not in text and text.count("error: ") == 1, text
    assert "damaged clip t1 (split train): its array does not open" in text and "--repair" in text
    at = text.index("error: ")
    assert at == 0 or text[at - 1] in "\r\n"  # a line of its own, not the end of a progress bar's
    code, text = _run("build-store", "--data", built["data"], "--store", store.parent / "s.zarr" / "zarr.json")
    assert code == 1 and "is a file; --store takes a folder" in text and "Traceback" not in text


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory) -> Path:
    return make_synth_store(tmp_path_factory.mktemp("train_damage"), n_train=6, n_test=2, seconds=6.0)


@pytest.mark.parametrize("workers", [0, 1])
def test_train_on_a_damaged_store_prints_one_line(synth_store, tmp_path, workers) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(synth_store, store)
    for chunk in (store / "train" / "mel").glob("*/c/0/*"):
        _flip(chunk)
    code, text = _run(
        "train",
        "--store",
        store,
        "--runs",
        tmp_path / "runs",
        "--config",
        "tiny",
        "--set",
        "batches_per_epoch=1",
        "--set",
        f"num_workers={workers}",
    )
    assert code == 1, text
    errors = ["error: " + part.split("\n")[0] for part in text.split("error: ")[1:]]  # (after a progress bar)
    assert len(errors) == 1 and "Traceback" not in text and text.strip().endswith(errors[0]), text
    assert f"error: {store}: damaged chunk 0 of clip " in errors[0] and "(split train, frames 0-" in errors[0]
    assert "checksum mismatch" in errors[0] and "rfcx build-store --repair" in errors[0]


def test_one_backend_per_store(built) -> None:
    """A DALI-built store resumed with --backend torch is refused (the issue's case: it was accepted and the store
    still said `built with dali`). The store here is marked as DALI-built, so the test needs no DALI."""
    import zarr

    from store.dali_pipeline import dali_available

    store, data = built["store"], built["data"]
    zarr.open_group(store, mode="r+").attrs["backend"] = "dali"
    code, text = _run("build-store", "--data", data, "--store", store, "--backend", "torch", "--device", "cpu")
    assert code == 1, text
    assert (
        f"{store}: built with the dali backend, and this run decodes with torch: one store keeps the features "
        f"of one backend (the two differ by up to 0.1 dB); " in text
    ), text
    assert (
        "resume it with --backend dali, or use a new --store"
        if dali_available()
        else "NVIDIA DALI is not installed here: resume it where DALI is, or use a new --store"
    ) in text
    assert FeatureStore.open(store).backend == "dali"

    from store.params import MelParams
    from store.writer import open_or_create

    empty = store.parent / "empty.zarr"  # a store without a clip takes the backend of the run
    open_or_create(empty, MelParams(), "dali")
    open_or_create(empty, MelParams(), "torch")
    assert FeatureStore.open(empty).backend == "torch"


def test_info_shows_the_submission_rows_without_a_stored_clip(tmp_path) -> None:
    data = make_dataset(tmp_path / "data", n_train=1, n_test=2, seconds=2.0)
    with open(data / "sample_submission.csv", "a") as fh:
        for rid in ("gone1", "gone2", "gone3", "gone4"):
            fh.write(rid + "," + ",".join("0" for _ in range(24)) + "\n")
    (data / "test" / "u0.flac").write_bytes(b"not audio")  # rejected: no stored clip either
    store = tmp_path / "s.zarr"
    build_store(data, store, backend="torch", device="cpu", progress=False)
    assert FeatureStore.open(store).missing_submission_ids() == ["u0", "gone1", "gone2", "gone3", "gone4"]
    code, text = _run("info", "--store", store)
    assert code == 0, text
    assert (
        "sample submission: 5 of its 6 recordings have no stored test clip (e.g. u0, gone1, gone2; and 2 more)" in text
    ), text
