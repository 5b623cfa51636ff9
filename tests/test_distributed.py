"""``torchrun --nproc-per-node 2 -m rfcx ...`` (gloo, 2 CPU processes) gives what one process gives:
build-store, infer --batch and train, each compared with a one-process run; and clear messages for bad launches."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.process_group import SINGLE, DistributedError, torchrun_launch
from store import FeatureStore, build_store
from tests.conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")
    }
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    return env


def rfcx(*args: str, nproc: int = 1, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m rfcx ARGS`` (nproc 1) or ``python -m torch.distributed.run --nproc-per-node N -m rfcx ARGS``."""
    launcher = (
        []
        if nproc == 1
        else ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(free_port())]
    )
    cmd = [sys.executable, *launcher, "-m", "rfcx", *map(str, args)]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


def assert_same_store(a: Path, b: Path) -> None:
    """Every group, array (values, dtype, chunks) and attribute of two stores is the same."""
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")

    def walk(g: zarr.Group, prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {prefix or "/": g}
        for name, member in g.members():
            path = f"{prefix}/{name}"
            out.update(walk(member, path) if isinstance(member, zarr.Group) else {path: member})
        return out

    na, nb = walk(ga), walk(gb)
    assert sorted(na) == sorted(nb)
    for path, x in na.items():
        y = nb[path]
        assert type(x) is type(y), path
        assert dict(x.attrs) == dict(y.attrs), path
        if isinstance(x, zarr.Array):
            assert (x.dtype, x.shape, x.chunks) == (y.dtype, y.shape, y.chunks), path
            assert np.array_equal(x[...], y[...]), path


# -- build-store ---------------------------------------------------------------------------------------------------


def test_build_store_on_two_ranks_equals_one_process(tmp_path) -> None:
    data = make_dataset(tmp_path / "data", n_train=7, n_test=4, seconds=2.0)
    # rejected by the rank that decodes them (files sorted: bad on rank 0, t2x and u0x on rank 1)
    (data / "train" / "bad.flac").write_bytes(b"fLaC but not really")
    whole = (data / "train" / "t0.flac").read_bytes()
    (data / "train" / "t2x.flac").write_bytes(whole[: len(whole) // 3])  # truncated
    (data / "test" / "u0x.flac").write_bytes(b"")
    with open(data / "train_tp.csv", "a") as f:  # a box of a rejected recording: rejected after the shards
        f.write("t2x,3,1,0.5,1000,1.5,2000\n")
    one = tmp_path / "one.zarr"
    build_store(data, one, backend="torch", device="cpu", progress=False)
    two = tmp_path / "two.zarr"
    out = rfcx("build-store", "--data", data, "--store", two, "--backend", "torch", "--device", "cpu", nproc=2)
    assert out.stdout.count("stored 11 new clips") == 1 and "4 rejected" in out.stdout  # rank 0 reports
    assert_same_store(one, two)
    rejected = FeatureStore.open(two).rejected()
    assert [Path(f).name for f in rejected.file] == ["bad.flac", "t2x.flac", "u0x.flac", "train_tp.csv"]

    again = rfcx("build-store", "--data", data, "--store", two, "--backend", "torch", "--device", "cpu", nproc=2)
    assert "stored 0 new clips" in again.stdout and "skipped 11 already stored" in again.stdout
    assert_same_store(one, two)


class ThreadGather:
    """``gather`` for ranks that are threads of this process."""

    def __init__(self, world: int) -> None:
        self.slots: list[object] = [None] * world
        self.barrier = threading.Barrier(world, timeout=60)

    def rank(self, r: int):  # noqa: ANN201
        def gather(obj: object) -> list[object]:
            self.slots[r] = obj
            self.barrier.wait()
            out = list(self.slots)
            self.barrier.wait()
            return out

        return gather


def test_sharded_build_extends_a_store_like_one_process(tmp_path) -> None:
    """Two ranks (threads here) extend a store that holds some of the clips: only the new ones are decoded,
    and the store equals a one-process build of all clips."""
    data = make_dataset(tmp_path / "data", n_train=6, n_test=3, seconds=2.0)
    one = tmp_path / "one.zarr"
    build_store(data, one, backend="torch", device="cpu", progress=False)
    some = tmp_path / "some"
    shutil.copytree(data, some)
    for name in ("t1", "t4", "t5"):
        (some / "train" / f"{name}.flac").unlink()
    (some / "test" / "u0.flac").unlink()
    grown = tmp_path / "grown.zarr"
    build_store(some, grown, backend="torch", device="cpu", progress=False)

    gather, out = ThreadGather(2), [None, None]

    def run(r: int) -> None:
        out[r] = build_store(
            data, grown, backend="torch", device="cpu", progress=False, shard=(r, 2), gather=gather.rank(r)
        )

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out[0] is not None and out[1] is not None
    assert out[0].stored == out[1].stored == {"train": 3, "test": 1}
    assert out[0].skipped == {"train": 3, "test": 2} and out[0].total == {"train": 6, "test": 3}
    assert_same_store(one, grown)


def test_build_store_checks_its_shard_arguments(tmp_path) -> None:
    data = make_dataset(tmp_path / "data", n_train=1, n_test=0, seconds=1.0)
    with pytest.raises(ValueError, match="needs gather"):
        build_store(data, tmp_path / "s.zarr", backend="torch", device="cpu", shard=(0, 2), progress=False)
    with pytest.raises(ValueError, match="0 <= rank < world"):
        build_store(data, tmp_path / "s.zarr", backend="torch", device="cpu", shard=(2, 2), gather=lambda o: [o, o])


# -- bad launches --------------------------------------------------------------------------------------------------


def test_torchrun_environment_is_checked() -> None:
    assert torchrun_launch({}) is None
    launch = torchrun_launch(
        {
            "WORLD_SIZE": "2",
            "RANK": "1",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500",
        }
    )
    assert (launch.rank, launch.world, launch.local_rank, launch.local_world) == (1, 2, 1, 2)
    with pytest.raises(DistributedError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT is not"):
        torchrun_launch({"WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="inconsistent"):
        torchrun_launch({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert SINGLE.is_main and not SINGLE.distributed and SINGLE.all_gather_object(3) == [3]
    SINGLE.barrier("nothing to wait for")


def test_commands_refuse_a_launch_they_cannot_use(tmp_path) -> None:
    runner = CliRunner()
    half = runner.invoke(app, ["info", "--store", str(tmp_path / "s.zarr")], env={"WORLD_SIZE": "2"})
    assert half.exit_code == 1 and "start the command with torchrun" in half.output
    full = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    synth = runner.invoke(app, ["synth", str(tmp_path / "d")], env=full)
    assert synth.exit_code == 1 and "runs as one process" in synth.output and not (tmp_path / "d").exists()
    files = runner.invoke(app, ["infer", str(tmp_path)], env=full)
    assert files.exit_code == 1 and "under torchrun use `rfcx infer --batch`" in files.output


PROBE = """
import sys, time
from rfcx.process_group import DistributedError, launched
with launched() as group:
    if group.rank == 1:
        time.sleep(float(sys.argv[1]))
    try:
        group.barrier("probe", work=True)
    except DistributedError as exc:
        print(exc)
        sys.exit(3)
    print(f"rank {group.rank} passed")
"""


def test_a_rank_that_does_not_come_is_named_after_the_timeout(tmp_path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        str(script),
    ]
    late = subprocess.run(
        [*cmd, "20"], env={**_env(), "RFCX_DIST_WORK_TIMEOUT_MIN": "0.05"}, capture_output=True, text=True, timeout=60
    )
    assert late.returncode != 0
    assert "rank 0/2: probe: rank(s) 1 did not arrive within 0:00:03" in late.stdout
    on_time = subprocess.run([*cmd, "0"], env=_env(), capture_output=True, text=True, timeout=60)
    assert on_time.returncode == 0 and "rank 0 passed" in on_time.stdout and "rank 1 passed" in on_time.stdout
    bad = subprocess.run(
        [*cmd, "0"], env={**_env(), "RFCX_DIST_TIMEOUT_MIN": "soon"}, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "RFCX_DIST_TIMEOUT_MIN must be a number of minutes, got 'soon'" in bad.stderr


def test_a_failing_rank_stops_the_launch(tmp_path) -> None:
    """--strict and a bad file in rank 1's shard: rank 1 stops with the file named, rank 0 does not hang."""
    data = make_dataset(tmp_path / "data", n_train=3, n_test=0, seconds=1.0)
    (data / "train" / "t1x.flac").write_bytes(b"not audio")  # position 2: rank 1
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "rfcx",
        "build-store",
        "--data",
        str(data),
        "--store",
        str(tmp_path / "s.zarr"),
        "--backend",
        "torch",
        "--strict",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "t1x.flac: not a readable audio file" in done.stderr and "--strict: stopped" in done.stderr


def _ranks_meet(group, value: int) -> tuple[int, int, list[int]]:  # noqa: ANN001 (a ProcessGroup)
    group.barrier("meeting")
    return group.rank, group.world, group.all_gather_object(value * (group.rank + 1))


def _rank_fails(group, _value: int) -> None:  # noqa: ANN001
    if group.rank == 1:
        raise ValueError("clip x.flac: rank 1's bad input")
    group.barrier("waiting for rank 1", work=True)  # rank 0 would wait a day: run_local stops it


def test_run_local_runs_a_function_on_local_ranks() -> None:
    import time

    from rfcx.process_group import run_local

    assert run_local(2, _ranks_meet, 5) == (0, 2, [5, 10])  # rank 0's value; both ranks took part
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        run_local(2, _rank_fails, 0)
    assert str(info.value) == "clip x.flac: rank 1's bad input"  # the rank's own exception, as the CLI prints it
    assert time.perf_counter() - start < 60
    assert any("rank 1/2 of `run_local`" in note for note in info.value.__notes__)
    with pytest.raises(ValueError, match="nproc >= 1"):
        run_local(0, _ranks_meet, 1)


def test_cpu_processes_split_the_threads() -> None:
    from rfcx.process_group import ProcessGroup, thread_budget
    from rfcx.train.config import get_config
    from rfcx.train.rounds import cpu_processes

    budget = thread_budget()
    cpu = get_config("cpu")
    assert cpu.cpu_processes == 0 and get_config("tiny").cpu_processes == 1
    assert cpu_processes(cpu, None) == (min(budget, 4), max(1, budget // min(budget, 4)))  # 0: one per thread
    assert cpu_processes(cpu.replace(cpu_processes=3, folds=2), None) == (2, max(1, budget // 2))  # <= members
    assert cpu_processes(get_config("tiny"), None) == (1, budget)
    assert cpu_processes(cpu.replace(cpu_processes=2, distribute="ddp"), None)[0] == 1
    assert cpu_processes(cpu.replace(cpu_processes=2), None, ProcessGroup(rank=0, world=2))[0] == 1  # torchrun
    with pytest.raises(ValueError, match="cpu_processes"):
        cpu.replace(cpu_processes=-1)


# -- infer --batch -------------------------------------------------------------------------------------------------


def test_infer_batch_on_two_ranks_writes_the_one_process_submission(tmp_path) -> None:
    from rfcx.train.models import build_classifier
    from tests.engine_fixtures import lively, make_run, threads, tiny

    data = make_dataset(tmp_path / "data", n_train=2, n_test=7, seconds=3.0)
    store = tmp_path / "s.zarr"
    build_store(data, store, backend="torch", device="cpu", progress=False)
    cfg, spec = tiny()
    with threads(1):
        nets = [lively(build_classifier(cfg, spec), seed=fold) for fold in range(2)]
        runs = make_run(
            tmp_path / "runs", FeatureStore.open(store).params.to_dict(), nets, formats=("torchscript",)
        ).root
    common = [
        "infer",
        "--batch",
        "--store",
        store,
        "--runs",
        runs,
        "--chunk-clips",
        "2",
        "--batch-size",
        "8",
        "--threshold",
        "0.3",
        "--no-progress",
    ]
    rfcx(*common, "--out", tmp_path / "one.csv", "--detections", tmp_path / "one_det.csv")
    out = rfcx(*common, "--out", tmp_path / "two.csv", "--detections", tmp_path / "two_det.csv", nproc=2)
    assert out.stdout.count("scored 7 clips") == 1  # rank 0 reports the whole split
    one, two = (tmp_path / "one.csv").read_text(), (tmp_path / "two.csv").read_text()
    assert one == two and len(one.splitlines()) == 8
    assert pd.read_csv(tmp_path / "one.csv").recording_id.tolist() == [f"u{i}" for i in reversed(range(7))]
    assert (tmp_path / "one_det.csv").read_text() == (tmp_path / "two_det.csv").read_text()
    assert not (tmp_path / ".two.csv.parts").exists()  # the ranks' part files are gone once written


def test_shards_of_ids_and_their_merge() -> None:
    from engine.batch import merge_shards, shard_ids

    ids = list("abcdefg")
    assert shard_ids(ids, 0, 2, chunk_clips=2) + shard_ids(ids, 1, 2, chunk_clips=2) == list("abefcdg")
    assert shard_ids(list("abc"), 1, 2) == []  # fewer clips than a chunk: rank 1 has none

    def part(names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        clip = pd.DataFrame({"recording_id": names, "s0": np.arange(len(names), dtype=np.float32)})
        clip.attrs = {
            "resumed_clips": 0,
            "computed_clips": len(names),
            "seconds": float(len(names)),
            "windows_scored": 3 * len(names),
        }
        rows = [(n, w, t, t + w, np.float32(t)) for w in (2.0, 4.0) for n in names for t in (0.0, 0.5)]
        return clip, pd.DataFrame(rows, columns=["recording_id", "window_s", "start_s", "end_s", "s0"])

    whole = part(ids)
    merged = merge_shards([part(shard_ids(ids, r, 3, 2)) for r in range(3)] + [part([])], ids)
    assert merged[0].recording_id.tolist() == ids and merged[0].s0.dtype == np.float32
    assert merged[0].attrs["computed_clips"] == 7 and merged[0].attrs["windows_scored"] == 21
    pd.testing.assert_frame_equal(merged[1], whole[1])
    assert merge_shards([(whole[0], None)], ids)[1] is None
    with pytest.raises(ValueError, match="not the 8 clips"):
        merge_shards([whole], ids + ["h"])


# -- train ---------------------------------------------------------------------------------------------------------


def _metrics(path: Path) -> dict:
    """metrics.json without what depends on the clock."""
    m = json.loads(path.read_text())
    m.pop("train_seconds")
    for history in m["members"].values():
        for epoch in history:
            for key in ("seconds", "crops_per_s", "data_wait_s"):
                epoch.pop(key)
    return m


def test_train_on_two_ranks_equals_one_process(tmp_path) -> None:
    from rfcx.synth.dataset import synthesize

    synthesize(tmp_path / "data", n_train=8, n_test=3, seconds=10.0, seed=1, tp_fraction=1.0, progress=False)
    store = tmp_path / "s.zarr"
    build_store(tmp_path / "data", store, backend="torch", device="cpu", progress=False)
    common = ["train", "--round", "1", "--store", store, "--config", "tiny", "--folds", "3"]
    rfcx(*common, "--runs", tmp_path / "one")
    out = rfcx(*common, "--runs", tmp_path / "two", nproc=2)
    assert out.stdout.count("round 1: OOF LWLRAP") == 1  # rank 0 reports
    assert_same_run(tmp_path / "one", tmp_path / "two", rounds=2, folds=3)


def test_train_on_cpu_processes_equals_one_process(tmp_path) -> None:
    """``cpu_processes`` 2 (no torchrun: rfcx.process_group.run_local) trains the members of one process."""
    from rfcx.synth.dataset import synthesize

    synthesize(tmp_path / "data", n_train=12, n_test=3, seconds=10.0, seed=1, tp_fraction=1.0, progress=False)
    store = tmp_path / "s.zarr"
    build_store(tmp_path / "data", store, backend="torch", device="cpu", progress=False)
    common = [
        "train",
        "--round",
        "1",
        "--store",
        store,
        "--config",
        "tiny",
        "--folds",
        "3",
        "--set",
        "pseudo_templates=true",
    ]  # the template teacher: each rank matches its share of the clips
    rfcx(*common, "--runs", tmp_path / "one")
    out = rfcx(*common, "--runs", tmp_path / "two", "--set", "cpu_processes=2")
    assert out.stdout.count("round 1: OOF LWLRAP") == 1  # rank 0 reports
    assert out.stdout.count("template teacher: ") == 1
    assert_same_run(tmp_path / "one", tmp_path / "two", rounds=2, folds=3)
    assert_same_store(tmp_path / "one" / "templates.zarr", tmp_path / "two" / "templates.zarr")
    summary = json.loads((tmp_path / "one" / "templates.json").read_text())
    assert summary["species_calibrated"]  # the labels compared are not all zero
    assert {
        k: v for k, v in json.loads((tmp_path / "two" / "templates.json").read_text()).items() if k != "seconds"
    } == {k: v for k, v in summary.items() if k != "seconds"}


def assert_same_run(one: Path, two: Path, rounds: int, folds: int) -> None:
    """Two run directories of the tiny config hold the same folds, metrics, labels, predictions and models."""
    assert (two / "folds.json").read_text() == (one / "folds.json").read_text()
    for k in range(rounds):
        assert (two / f"round{k}" / "complete.json").is_file()
        assert _metrics(two / f"round{k}" / "metrics.json") == _metrics(one / f"round{k}" / "metrics.json")
        assert_same_store(one / f"round{k}" / "pseudo.zarr", two / f"round{k}" / "pseudo.zarr")
        for fold in range(folds):  # 2 ranks: folds 0 and 2 on rank 0, fold 1 on rank 1
            name = f"round{k}/members/test_efficientnet-2s_fold{fold}"
            preds = sorted(p.name for p in (one / name).glob("*.npz"))
            assert preds and preds == sorted(p.name for p in (two / name).glob("*.npz"))
            for p in preds:
                with np.load(one / name / p) as a, np.load(two / name / p) as b:
                    assert sorted(a.files) == sorted(b.files)
                    for key in a.files:
                        assert np.array_equal(a[key], b[key]), (name, p, key)
        assert sorted(p.name for p in (two / f"round{k}" / "models").iterdir()) == sorted(
            p.name for p in (one / f"round{k}" / "models").iterdir()
        )
