"""One writer per feature store, run directory and inference output, checked with real processes: a second
writer is refused at once naming the holder (host, pid, start time); a holder killed with SIGKILL leaves no lock
that blocks the next run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from store import FeatureStore, LockedError, build_store
from store.lock import LOCK_NAME, NoLock, WriterLock, read_holder, writer_lock
from tests.conftest import make_dataset

ROOT = Path(__file__).resolve().parents[1]
HOLD = (
    "import sys, time\n"
    "from store.lock import WriterLock\n"
    "WriterLock(sys.argv[1], 'x', command='the holder', beside=sys.argv[2] == '1').acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(300)\n"
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


class Holder:
    """Another process that takes the writer lock of ``folder`` and sleeps (as a long build or training does)."""

    def __init__(self, folder: Path, beside: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder), "1" if beside else "0"],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line == "held", self.proc.stderr.read()

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: nothing of the holder runs again
        self.proc.wait(timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid


@pytest.fixture
def holders():
    made: list[Holder] = []
    yield lambda folder, beside=False: made.append(Holder(folder, beside)) or made[-1]
    for h in made:
        if h.proc.poll() is None:
            h.kill9()


def _names_holder(text: str, holder: Holder) -> bool:
    return f"pid {holder.pid} on {socket.gethostname()}, started 20" in text and "(the holder)" in text


def test_the_lock_itself(tmp_path, holders) -> None:
    folder = tmp_path / "out" / "work"
    lock = WriterLock(folder, "test folder").acquire()
    holder = read_holder(folder / LOCK_NAME)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
    with pytest.raises(LockedError, match=f"another process is writing this test folder: pid {os.getpid()}"):
        WriterLock(folder, "test folder").acquire()  # another open file description: refused as well
    lock.release()
    assert not folder.exists()  # the lock made the folder and nothing else was written: nothing is left
    with WriterLock(folder, "test folder"):
        pass

    h = holders(folder)
    with pytest.raises(LockedError) as err:
        WriterLock(folder, "test folder").acquire()
    assert _names_holder(str(err.value), h) and err.value.holder["pid"] == h.pid
    h.kill9()
    assert (folder / LOCK_NAME).is_file()  # the killed holder's file stays; its lock does not
    with WriterLock(folder, "test folder"):
        assert read_holder(folder / LOCK_NAME)["pid"] == os.getpid()
    assert isinstance(writer_lock("memory://somewhere/store.zarr", "feature store"), NoLock)  # URLs: no lock


def test_a_symbolic_link_takes_the_lock_of_the_folder_it_names(tmp_path, holders) -> None:
    store, run = tmp_path / "s.zarr", tmp_path / "runs"
    store.mkdir()
    run.mkdir()
    (tmp_path / "link.zarr").symlink_to(store)
    (tmp_path / "run-link").symlink_to(run)
    (tmp_path / "above").symlink_to(tmp_path, target_is_directory=True)
    h = holders(store, True)  # a store's lock lies beside it (.s.zarr.lock)
    for other in (tmp_path / "link.zarr", tmp_path / "above" / "s.zarr"):
        with pytest.raises(LockedError) as err:
            WriterLock(other, "feature store", beside=True).acquire()
        assert _names_holder(str(err.value), h) and str(other) in str(err.value)  # named as the user gave it
    assert not (tmp_path / ".link.zarr.lock").exists()
    h = holders(run)
    with pytest.raises(LockedError):
        WriterLock(tmp_path / "run-link", "run directory").acquire()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_hold_the_lock(tmp_path) -> None:
    """A process forked by the holder (a DataLoader worker, say) lets go of its copy at once: once the holder
    releases, the lock is free while the child still runs; and the child's own copy counts as not held."""
    folder = tmp_path / "work"
    lock = WriterLock(folder, "test folder").acquire()
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then wait until told to end
        try:
            os.write(from_child_w, b"1" if not lock.held else b"0")
            os.read(to_child_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(from_child_r, 1) == b"1", "the child's copy of the lock still counted as held"
        assert lock.held
        lock.release()
        with WriterLock(folder, "test folder"):  # free, though the child (forked while it was held) still runs
            assert read_holder(folder / LOCK_NAME)["pid"] == os.getpid()
    finally:
        os.write(to_child_w, b"x")
        os.waitpid(pid, 0)
        for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
            os.close(fd)


def test_build_store_is_refused_while_another_writes_and_runs_after_a_kill(tmp_path, holders) -> None:
    data, store = make_dataset(tmp_path / "data"), tmp_path / "s.zarr"
    h = holders(store, beside=True)
    cmd = [
        sys.executable,
        "-m",
        "rfcx",
        "build-store",
        "--data",
        str(data),
        "--store",
        str(store),
        "--backend",
        "torch",
        "--device",
        "cpu",
    ]
    second = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 1
    assert f"error: {store}: another process is writing this feature store" in second.stderr
    assert _names_holder(second.stderr, h)
    assert not store.exists()  # refused before anything was written
    with pytest.raises(LockedError):
        build_store(data, store, backend="torch", device="cpu", progress=False)

    h.kill9()
    summary = build_store(data, store, backend="torch", device="cpu", progress=False)
    assert summary.total == {"train": 4, "test": 2}
    assert FeatureStore.open(store).ids("test") == ["u0", "u1"]
    assert not (tmp_path / ".s.zarr.lock").exists() and os.listdir(store).count(LOCK_NAME) == 0


def test_train_and_infer_are_refused_while_another_writes(tmp_path, holders) -> None:
    data, store, runs = make_dataset(tmp_path / "data", n_train=4), tmp_path / "s.zarr", tmp_path / "runs"
    build_store(data, store, backend="torch", device="cpu", progress=False)
    train = ["train", "--store", str(store), "--runs", str(runs), "--config", "tiny", "--set", "batches_per_epoch=1"]
    h = holders(runs)
    res = CliRunner().invoke(app, train)
    assert res.exit_code == 1 and f"{runs}: another process is writing this run directory" in res.output
    assert _names_holder(res.output, h)
    assert sorted(os.listdir(runs)) == [LOCK_NAME]  # nothing written
    h.kill9()
    res = CliRunner().invoke(app, train)
    assert res.exit_code == 0, res.output
    assert not (runs / LOCK_NAME).exists() and (runs / "round0" / "complete.json").is_file()

    out = tmp_path / "sub.csv"
    infer = ["infer", "--batch", "--store", str(store), "--runs", str(runs), "--out", str(out), "--no-progress"]
    h = holders(tmp_path / ".sub.csv.parts")
    res = CliRunner().invoke(app, infer)
    assert res.exit_code == 1 and "another process is writing this inference output" in res.output
    assert _names_holder(res.output, h) and not out.exists()
    h.kill9()
    res = CliRunner().invoke(app, infer)
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 3 and not (tmp_path / ".sub.csv.parts").exists()
    assert json.loads((runs / "store.json").read_text())["store"] == str(store.resolve())
