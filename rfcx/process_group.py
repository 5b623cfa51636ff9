"""One process or many: the process group of a ``torchrun`` launch, and its single-process stand-in.

``torchrun --nproc-per-node N -m rfcx <command>`` starts N copies of a command with ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
:func:`launched` sees these, joins the process group (gloo on the CPU; NCCL when the command uses CUDA, with
each process on the GPU of its ``LOCAL_RANK``) and hands the command a :class:`ProcessGroup`; without them it
hands over :data:`SINGLE`, on which every collective is a no-op, so that a plain ``rfcx <command>`` runs as
one process.

Our own traffic (barriers and small Python objects) always goes through a gloo group, so that a barrier can
name the ranks that did not arrive and has a timeout of its own: ``timeout`` (default 30 min,
``RFCX_DIST_TIMEOUT_MIN``) bounds joining the group and every collective; ``work_timeout`` (default 24 h,
``RFCX_DIST_WORK_TIMEOUT_MIN``) bounds how long a rank that finished its share waits for the others to
finish theirs (a training fold can take hours). A rank that fails makes torchrun stop the others; the timeouts
cover what torchrun cannot see (a node that vanished).

:func:`run_local` is torchrun's small sibling for one machine without it: it starts N local processes (spawn),
each joining a gloo group with its share of the threads, runs a function on every rank and hands back rank 0's
result, or the first failing rank's exception (the others are stopped). ``rfcx train`` uses it on the CPU, where
two one-thread processes do 1.6x the work of one two-thread process (``TrainConfig.cpu_processes``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pickle
import queue as queue_lib
import re
import socket
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from store.errors import RfcxError

DEFAULT_TIMEOUT_MIN = 30.0
DEFAULT_WORK_TIMEOUT_MIN = 24 * 60.0
ENV_TIMEOUT = "RFCX_DIST_TIMEOUT_MIN"
ENV_WORK_TIMEOUT = "RFCX_DIST_WORK_TIMEOUT_MIN"
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RfcxError, RuntimeError):
    """A launch that cannot work, or a rank that did not take part in a collective in time."""


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch (from its environment)."""

    rank: int
    world: int
    local_rank: int
    local_world: int


def torchrun_launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch this process belongs to, or ``None`` when it was not started by torchrun (no ``WORLD_SIZE``).

    Raises :class:`DistributedError` naming what is missing or inconsistent.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    missing = [v for v in TORCHRUN_VARS if not env.get(v)]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start the command with "
            f"torchrun (e.g. `torchrun --nproc-per-node 2 -m rfcx ...`), which sets them all"
        )
    try:
        rank, world, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
        local_world = int(env.get("LOCAL_WORLD_SIZE") or world)
    except ValueError:
        raise DistributedError(
            "WORLD_SIZE, RANK, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers, got "
            + ", ".join(f"{v}={env.get(v)!r}" for v in (*TORCHRUN_VARS[:3], "LOCAL_WORLD_SIZE"))
        ) from None
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < local_world:
        raise DistributedError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}"
        )
    return Launch(rank, world, local_rank, local_world)


def _minutes(env_var: str, default: float) -> datetime.timedelta:
    text = os.environ.get(env_var)
    try:
        value = float(text) if text else default
    except ValueError:
        raise DistributedError(f"{env_var} must be a number of minutes, got {text!r}") from None
    if value <= 0:
        raise DistributedError(f"{env_var} must be > 0 minutes, got {text!r}")
    return datetime.timedelta(minutes=value)


@dataclass
class ProcessGroup:
    """The ranks running one command. The default (:data:`SINGLE`) is one process: every collective is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None  # gloo or nccl; None: one process, no process group
    timeout: datetime.timedelta = datetime.timedelta(minutes=DEFAULT_TIMEOUT_MIN)
    work_timeout: datetime.timedelta = datetime.timedelta(minutes=DEFAULT_WORK_TIMEOUT_MIN)
    _objects: Any = field(default=None, repr=False)  # the gloo group of barriers and object collectives

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes what a run writes once and prints summaries."""
        return self.rank == 0

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.world}"

    def shard(self, items: list) -> list:
        """This rank's share of ``items``: ``items[rank::world]``."""
        return items[self.rank :: self.world]

    def barrier(self, what: str, work: bool = False) -> None:
        """Wait until every rank gets here. ``work``: the others may still be busy with their share of the work
        (waits up to ``work_timeout`` instead of ``timeout``). ``what`` names the wait in the timeout's message."""
        if not self.distributed:
            return
        import torch.distributed as dist

        timeout = self.work_timeout if work else self.timeout
        try:
            dist.monitored_barrier(group=self._objects, timeout=timeout, wait_all_ranks=True)
        except RuntimeError as exc:
            raise self._lost(what, exc, timeout) from None

    def all_gather_object(self, obj: Any, what: str = "exchanging results") -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, obj, group=self._objects)
        except RuntimeError as exc:
            raise self._lost(what, exc, self.timeout) from None
        return out

    def _lost(self, what: str, exc: RuntimeError, timeout: datetime.timedelta) -> DistributedError:
        """A clear error for a collective that failed: a rank that stopped, or one that did not come in time."""
        text = str(exc)
        if "failed to pass monitoredBarrier" in text or "imed out" in text:
            late = ", ".join(sorted(set(re.findall(r"[Rr]anks? ([\d, ]+) failed", text)))) or "some"
            return DistributedError(
                f"{self.label}: {what}: rank(s) {late.strip(', ')} did not arrive within "
                f"{timeout} (stuck, or slower than the timeout: set {ENV_WORK_TIMEOUT} / "
                f"{ENV_TIMEOUT} in minutes)"
            )
        return DistributedError(
            f"{self.label}: {what}: another rank stopped (its output says why; {_first_line(exc)[:160]})"
        )

    def gather_after_work(self, obj: Any, what: str) -> list[Any]:
        """:meth:`all_gather_object` once every rank has finished its share (``work`` barrier first)."""
        self.barrier(what, work=True)
        return self.all_gather_object(obj, what)

    def broadcast_object(self, obj: Any, what: str = "sharing rank 0's result") -> Any:
        """Rank 0's ``obj`` on every rank."""
        return self.all_gather_object(obj if self.is_main else None, what)[0]


SINGLE = ProcessGroup()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def init(
    launch: Launch,
    use_cuda: bool = False,
    timeout: datetime.timedelta | None = None,
    work_timeout: datetime.timedelta | None = None,
) -> ProcessGroup:
    """Join the process group of ``launch``: NCCL when ``use_cuda`` (this process on GPU ``LOCAL_RANK``), gloo
    otherwise; object collectives and barriers go through a gloo group in both cases."""
    import torch
    import torch.distributed as dist

    timeout = timeout or _minutes(ENV_TIMEOUT, DEFAULT_TIMEOUT_MIN)
    work_timeout = work_timeout or _minutes(ENV_WORK_TIMEOUT, DEFAULT_WORK_TIMEOUT_MIN)
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run without torchrun")
    device_id = None
    if use_cuda:
        n = torch.cuda.device_count()
        if launch.local_rank >= n:
            raise DistributedError(
                f"LOCAL_RANK {launch.local_rank} but this node has {n} visible GPU(s): start at "
                f"most {n} processes per node (--nproc-per-node), or run on the CPU"
            )
        torch.cuda.set_device(launch.local_rank)
        device_id = torch.device("cuda", launch.local_rank)
    backend = "nccl" if use_cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=timeout, device_id=device_id)
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"rank {launch.rank}/{launch.world}: could not join the {backend} process group ({_first_line(exc)})"
        ) from None
    objects = dist.new_group(backend="gloo", timeout=max(timeout, work_timeout)) if backend != "gloo" else None
    return ProcessGroup(
        launch.rank, launch.world, launch.local_rank, launch.local_world, backend, timeout, work_timeout, objects
    )


def teardown(group: ProcessGroup) -> None:
    """Leave the process group (no-op for one process)."""
    if group.backend is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def launched(use_cuda: bool = False) -> Iterator[ProcessGroup]:
    """The process group of this torchrun launch for the duration of a command, or :data:`SINGLE` without one.

    A launch of one process (``--nproc-per-node 1``) runs as a single process, with no process group.
    """
    launch = torchrun_launch()
    if launch is None or launch.world == 1:
        if launch is not None and use_cuda:
            import torch

            torch.cuda.set_device(launch.local_rank)
        yield SINGLE
        return
    group = init(launch, use_cuda)
    try:
        yield group
    finally:
        teardown(group)


def thread_budget() -> int:
    """The threads one process of this machine would use: torch's intra-op count (``OMP_NUM_THREADS`` when set,
    else the cores it may run on)."""
    import torch

    return max(1, torch.get_num_threads())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` when it survives pickling (to reach the parent as itself), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 (any exception type may refuse to pickle)
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _local_rank_main(rank: int, world: int, port: int, threads: int, fn: Callable, args: tuple, outcomes) -> None:  # noqa: ANN001 (a multiprocessing queue)
    """One rank of :func:`run_local`: join the group, run ``fn(group, *args)``, report (rank, ok, value)."""
    import torch

    torch.set_num_threads(threads)
    os.environ.update(
        OMP_NUM_THREADS=str(threads),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
    )
    group = None
    try:
        group = init(Launch(rank, world, rank, world))
        value = fn(group, *args)
        outcomes.put((rank, True, value if rank == 0 else None))
    except BaseException as exc:  # noqa: BLE001 (passed on to the parent, which raises it)
        outcomes.put((rank, False, (_picklable(exc), traceback.format_exc())))
        raise SystemExit(1) from None
    finally:
        if group is not None:
            teardown(group)


@contextlib.contextmanager
def _main_module_importable() -> Iterator[None]:
    """A spawned process re-imports the parent's ``__main__`` from its file; a main read from stdin (``python -``)
    has no such file, so for the start it is treated as an interactive one (no file), which spawn skips."""
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    hide = main is not None and path is not None and not os.path.isfile(path)
    if hide:
        assert main is not None  # hide: there is a main
        del main.__file__
    try:
        yield
    finally:
        if hide:
            assert main is not None
            main.__file__ = path


def run_local(nproc: int, fn: Callable, *args: Any, threads: int = 1) -> Any:
    """``fn(group, *args)`` on ``nproc`` local processes (rank 0..nproc-1 of a gloo group, ``threads`` torch threads
    each); returns rank 0's value. ``fn`` and ``args`` must pickle (a module-level function).

    The first rank to fail has its exception raised here (its traceback is the exception's ``__notes__``), and the
    other ranks are stopped at once rather than left waiting for it at a barrier. A rank that dies without a word
    (killed, out of memory) raises :class:`DistributedError` with its exit code.
    """
    import multiprocessing

    if nproc < 1 or threads < 1:
        raise ValueError(f"run_local needs nproc >= 1 and threads >= 1, got {nproc} and {threads}")
    ctx = multiprocessing.get_context("spawn")
    outcomes = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(
            target=_local_rank_main, args=(rank, nproc, port, threads, fn, args, outcomes), name=f"rfcx-rank{rank}"
        )
        for rank in range(nproc)
    ]
    with _main_module_importable():
        for p in procs:
            p.start()
    done: dict[int, tuple[bool, Any]] = {}
    failure: tuple[int, Any] | None = None
    try:
        while len(done) < nproc and failure is None:
            try:
                rank, ok, value = outcomes.get(timeout=0.5)
                done[rank] = (ok, value)
                if not ok:
                    failure = (rank, value)
            except queue_lib.Empty:
                dead = [r for r, p in enumerate(procs) if r not in done and p.exitcode not in (None, 0)]
                if dead:  # gone without reporting (a report may still be in flight: one more look)
                    try:
                        rank, ok, value = outcomes.get(timeout=2.0)
                        done[rank] = (ok, value)
                        failure = None if ok else (rank, value)
                        continue
                    except queue_lib.Empty:
                        r = dead[0]
                        raise DistributedError(
                            f"rank {r}/{nproc} (a local process) died with exit code "
                            f"{procs[r].exitcode} before reporting (its output above says why; "
                            f"killed? out of memory?)"
                        ) from None
    finally:
        if failure is not None or len(done) < nproc:
            for p in procs:
                if p.is_alive():
                    p.terminate()
        for p in procs:
            p.join()
        outcomes.close()
    if failure is not None:
        rank, (exc, text) = failure
        exc.add_note(f"(rank {rank}/{nproc} of `run_local`)\n{text}")
        raise exc
    return done[0][1]


__all__ = [
    "DistributedError",
    "Launch",
    "ProcessGroup",
    "SINGLE",
    "init",
    "launched",
    "run_local",
    "teardown",
    "thread_budget",
    "torchrun_launch",
]
