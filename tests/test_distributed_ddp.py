"""``distribute = "ddp"``: every rank trains every member together (DistributedDataParallel, gloo, 2 CPU
processes): the round completes and is written once, the ranks hold the same weights, an odd batch is refused,
an interrupted launch resumes to the uninterrupted result; and one process with "ddp" is one process with "folds"."""

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

from rfcx.process_group import ProcessGroup
from rfcx.train.config import get_config
from rfcx.train.member import check_ddp_batch, weights_digest
from rfcx.train.rounds import train_rounds
from tests.conftest import make_synth_store
from tests.test_distributed import ROOT, _env, _metrics, assert_same_store, free_port, rfcx

MEMBERS = [f"test_efficientnet-2s_fold{f}" for f in (0, 1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_synth_store(tmp_path_factory.mktemp("ddp"), n_train=8, n_test=3, seconds=10.0)


def _train_cmd(store: Path, runs: Path, *sets: str, round_: int = 0) -> list[str]:
    return [
        "train",
        "--round",
        str(round_),
        "--store",
        str(store),
        "--runs",
        str(runs),
        "--config",
        "tiny",
        "--set",
        "distribute=ddp",
        *(x for s in sets for x in ("--set", s)),
    ]


def _same_predictions(a: Path, b: Path) -> None:
    for name in ("predictions.npz",):
        with np.load(a / name) as x, np.load(b / name) as y:
            assert sorted(x.files) == sorted(y.files)
            for key in x.files:
                assert np.array_equal(x[key], y[key]), (a, key)


def test_ddp_round_on_two_ranks(store, tmp_path) -> None:
    runs = tmp_path / "runs"
    out = rfcx(*_train_cmd(store, runs, round_=1), nproc=2)
    assert out.stdout.count("round 0: OOF LWLRAP") == 1 and out.stdout.count("round 1: OOF LWLRAP") == 1
    for k in (0, 1):
        rd = runs / f"round{k}"
        assert (rd / "complete.json").is_file() and (rd / "metrics.json").is_file() and (rd / "pseudo.zarr").is_dir()
        assert sorted(p.name for p in (rd / "models").iterdir()) == sorted(
            f"{m}.{ext}" for m in MEMBERS for ext in ("ts", "pt2")
        )
        assert not [p for p in rd.rglob("*") if ".tmp" in p.name]  # every file written whole, none left half-done
        members = _metrics(rd / "metrics.json")["members"]
        assert sorted(members) == MEMBERS
        for m in MEMBERS:
            member = rd / "members" / m
            assert sorted(p.name for p in member.iterdir()) == ["checkpoint.pt", "predictions.npz"]
            ckpt = torch.load(member / "checkpoint.pt", map_location="cpu", weights_only=False)
            assert ckpt["complete"] and ckpt["ddp_world"] == 2
            (epoch,) = members[m]  # tiny: one epoch
            ranks = epoch["ddp"]
            assert ranks["world"] == 2 and len(ranks["weights_sha256"]) == 2
            # rank 1's weights (gathered after the epoch) are rank 0's, which are the checkpoint's
            assert ranks["weights_sha256"] == [weights_digest(ckpt["state_dict"])] * 2
            assert ckpt["history"][-1]["ddp"] == ranks


def test_ddp_on_one_process_is_folds(store, tmp_path) -> None:
    """``distribute = "ddp"`` without torchrun (world 1): no DDP wrapper, the results of "folds"."""
    quiet = dict(until_round=0, progress=False, echo=lambda *_: None, export_formats=())
    a = train_rounds(str(store), tmp_path / "folds", get_config("tiny"), **quiet)[0]
    b = train_rounds(str(store), tmp_path / "ddp", get_config("tiny").replace(distribute="ddp"), **quiet)[0]
    for m in (a, b):
        m.pop("train_seconds")
        for history in m["members"].values():
            for epoch in history:
                assert "ddp" not in epoch
                for key in ("seconds", "crops_per_s", "data_wait_s"):
                    epoch.pop(key)
    assert a == b
    assert_same_store(tmp_path / "folds/round0/pseudo.zarr", tmp_path / "ddp/round0/pseudo.zarr")
    for m in MEMBERS:
        _same_predictions(tmp_path / "folds/round0/members" / m, tmp_path / "ddp/round0/members" / m)


def test_ddp_config_and_batch_checks() -> None:
    with pytest.raises(ValueError, match=r"distribute = 'dpp' is not one of \['folds', 'ddp'\]; did you mean 'ddp'"):
        get_config("tiny").replace(distribute="dpp")
    odd = get_config("tiny").replace(distribute="ddp", batch_size=3)
    check_ddp_batch(odd, ProcessGroup())  # one process: any batch
    check_ddp_batch(odd.replace(distribute="folds"), ProcessGroup(rank=0, world=2))
    with pytest.raises(ValueError, match="batch_size = 3 crops over the 2 ranks, which needs a batch_size divisible"):
        check_ddp_batch(odd, ProcessGroup(rank=1, world=2))


def test_ddp_refuses_a_batch_the_ranks_cannot_split(store, tmp_path) -> None:
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
        *_train_cmd(store, tmp_path / "runs", "batch_size=5"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "batch_size = 5 crops over the 2 ranks, which needs a batch_size divisible by 2" in done.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything is written


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it. torchrun starts each rank in a session of its own, so killing
    torchrun's process group leaves the ranks running (they went on writing the run beside its resume, until the
    run directory's writer lock refused the resume)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    for p in tree[1:]:  # torchrun itself is reaped by the caller's wait
        while time.monotonic() < deadline:
            try:
                if (Path(f"/proc/{p}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
                break  # gone
            time.sleep(0.05)


def test_ddp_resumes_after_a_kill_to_the_uninterrupted_result(store, tmp_path) -> None:
    sets = ("epochs=2", "batches_per_epoch=12")
    whole = tmp_path / "whole"
    rfcx(*_train_cmd(store, whole, *sets), nproc=2)

    cut = tmp_path / "cut"
    first = cut / "round0/members" / MEMBERS[0] / "checkpoint.pt"
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
        *_train_cmd(store, cut, *sets),
    ]
    launch = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while not first.is_file() and launch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.is_file(), "fold 0's first checkpoint never came"
    finally:
        if launch.poll() is None:
            _kill_tree(launch.pid)  # torchrun and both ranks, mid-training
        launch.wait(30)
    assert not (cut / "round0/complete.json").exists()
    stopped_at = torch.load(first, map_location="cpu", weights_only=False)
    assert not stopped_at["complete"]

    rfcx(*_train_cmd(store, cut, *sets), nproc=2)
    assert _metrics(cut / "round0/metrics.json") == _metrics(whole / "round0/metrics.json")
    assert_same_store(whole / "round0/pseudo.zarr", cut / "round0/pseudo.zarr")
    for m in MEMBERS:
        _same_predictions(whole / "round0/members" / m, cut / "round0/members" / m)
