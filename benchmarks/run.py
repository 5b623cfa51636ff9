"""``rfcx bench``: every stage against what a user would pick instead; writes bench.json, bench.md and PNG plots.

Benchmarks (one module each, ``run(quick, workdir) -> dict``; see :mod:`benchmarks.common` for the result's
shape), in this order:

1. ``store_build``: DALI / torch backends vs the librosa loop vs decode-only (:mod:`benchmarks.store_build`);
2. ``store_reads``: store crops vs per-clip ``.npy`` vs on-the-fly log-mel, plus the layout table
   (:mod:`benchmarks.store_reads`, :mod:`benchmarks.store_layout`);
3. ``training_input``: loader delivery vs model consumption (:mod:`benchmarks.training_input`);
4. ``inference``: eager vs TorchScript vs .pt2 vs fcn, and fcn's LWLRAP difference on a trained run
   (:mod:`benchmarks.engine_throughput`);
5. ``quality``: LWLRAP by round of training variants, read from run directories (:mod:`benchmarks.quality`).

``quick`` uses small sizes (minutes on 2 cores); the full mode uses the sizes in each module's ``FULL``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from rfcx.errors import UsageError

BENCHMARKS = ("store_build", "store_reads", "training_input", "inference", "quality")
REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module, fromlist=["__version__"])
        return str(getattr(mod, "__version__", "?"))
    except Exception:
        return None


def _git() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """The machine the numbers come from: CPU, cores, memory, GPU, library versions, threads, date, load."""
    import torch

    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "memory_gb": mem_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "dali": _version("nvidia.dali"),
        "numpy": _version("numpy"),
        "zarr": _version("zarr"),
        "librosa": _version("librosa"),
        "soundfile": _version("soundfile"),
        "timm": _version("timm"),
        "git": _git(),
    }


def _runner(
    name: str, quick: bool, runs: str | Path | None, store: str | Path | None, quality_runs: list[str] | None
) -> Callable[[Path], dict]:
    if name == "store_build":
        from benchmarks import store_build

        return lambda w: store_build.run(quick, w)
    if name == "store_reads":
        from benchmarks import store_reads

        return lambda w: store_reads.run(quick, w)
    if name == "training_input":
        from benchmarks import training_input

        return lambda w: training_input.run(quick, w)
    if name == "inference":
        from benchmarks import engine_throughput

        return lambda w: engine_throughput.run(quick, w, runs=runs, store=store)
    if name == "quality":
        from benchmarks import quality

        return lambda w: quality.run(quick, w, runs=quality_runs)
    raise UsageError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")


def run_bench(
    out: Path,
    quick: bool = False,
    runs: str | Path | None = None,
    store: str | Path | None = None,
    quality_runs: list[str] | None = None,
    only: list[str] | None = None,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the benchmarks (``only`` some of them), write ``out/bench.json``, ``out/bench.md`` and the plots.

    A benchmark that fails is recorded with its error (``"error"``) and the others still run. Returns the
    result written to bench.json (plus ``"files"``: what was written).
    """
    import torch

    from benchmarks import report

    unknown = [b for b in (only or []) if b not in BENCHMARKS]
    if unknown:
        raise UsageError(f"unknown benchmark(s) {unknown} (known: {', '.join(BENCHMARKS)})")
    if (runs is None) != (store is None):
        raise UsageError("--runs and --store go together (the trained run and the store it was trained on)")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict = {
        "format": "rfcx-bench",
        "version": 1,
        "mode": "quick" if quick else "full",
        "machine": machine_info(),
        "benchmarks": [],
    }
    for name in BENCHMARKS:
        if only and name not in only:
            continue
        echo(f"bench: {name} ({'quick' if quick else 'full'}) ...")
        t0 = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=f"rfcx-bench-{name}-"))
        try:
            res = _runner(name, quick, runs, store, quality_runs)(work)
        except Exception as exc:
            res = {
                "name": name,
                "title": name,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
                "sections": [],
                "goals": [],
                "notes": [],
            }
            echo(f"bench: {name} FAILED: {res['error']}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res["wall_s"] = time.perf_counter() - t0
        result["benchmarks"].append(res)
        for g in res.get("goals", []):
            state = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
            echo(f"  goal: {g['goal']}: {state} ({g['detail']})")
        echo(f"bench: {name} done in {res['wall_s']:.0f} s")
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = time.perf_counter() - started
    result["goals"] = [{"benchmark": b["name"], **g} for b in result["benchmarks"] for g in b.get("goals", [])]
    files = report.write_plots(result, out)
    result["files"] = ["bench.json", "bench.md", *files]
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "bench.md").write_text(report.markdown(result))
    return result
