"""The GPU check: every GPU path of the project run once, timed, in one process (``bash benchmarks/gpu_check.sh``).

``python -m benchmarks.gpu_check [--dry-run] [--out DIR] [--clips N] [--budget-s S] [--work DIR]``

Stages (each timed; each catches its own failure, records it with the last lines of its traceback in
``bench.json`` and the run goes on; a stage whose input failed is skipped, and so is any stage once the time
budget is spent; ``bench.json`` and ``bench.md`` are rewritten after every stage, so a run killed half-way
still leaves what it measured):

1. ``wheels``: the packages ``gpu_check.sh`` installed from ``.whl/`` (its pip exit status) and where zarr,
   numcodecs, soundfile, ... were imported from;
2. ``env``: python, torch, CUDA, cuDNN, the GPU (name, memory, capability, bf16), timm, cores;
3. ``synth``: ``rfcx.synth.dataset.synthesize``, 48 train + 16 test clips of 60 s (``--clips``);
4. ``store_build``: ``store.build_store`` with the torch backend on the GPU and on the CPU of the same machine
   (clips/s, x real time), and the largest dB difference between the two stores;
5. ``train_model``: every ``seed`` backbone (rexnet_200 and efficientnet_b3 on 4 s crops, rexnet_150 and
   efficientnet_b1 on 8 s), forward + backward + AdamW under bf16 autocast on tensors already on the GPU,
   batch 16 and 64 (crops/s, peak memory), as ``rfcx.train.member.train_member`` steps;
6. ``train_input``: what the training input delivers (``rfcx.train.loader.crop_loader`` with 0 and the config's
   workers, + ``rfcx.train.augment.Augmenter`` on the CPU as training runs it, or on the GPU) against what the model
   consumes; then ``rfcx.train.member.train_member`` itself for one epoch per backbone (crops/s, time waiting for data);
7. ``train_rounds``: ``rfcx.train.rounds.train_rounds`` on the seed config cut to 1 epoch x 10 batches and 2 folds:
   round 0 end to end on the GPU (training, held-out and test scoring, metrics, TorchScript export);
8. ``export``: ``.pt2`` programs of the fold-0 members (``rfcx.train.export.export_checkpoint``), both formats
   loaded on the GPU (``engine.export.load_model``) and compared with the eager network on the CPU;
9. ``infer``: ``engine.batch.infer_clips`` (what ``rfcx infer --batch`` runs) with the 4-member ensemble (fold 0
   of each backbone) over the test clips, exact and fcn, TorchScript and ``.pt2``, batch 64 and 256
   (windows/s, clips/s), and the LWLRAP of exact and fcn against the synthetic truth; then the command itself,
   ``python -m rfcx infer --batch --device gpu --mode fcn`` with every TorchScript model of round 0.

``--dry-run`` runs the same stages on the CPU at toy sizes (6 clips of 5 s, timm's ``test_efficientnet`` on 2 s
and 3 s crops, a couple of steps, one ``.pt2``) in under a minute: the test suite runs it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("wheels", "env", "synth", "store_build", "train_model", "train_input", "train_rounds", "export", "infer")
NEEDS = {
    "store_build": ("synth",),
    "train_model": ("env",),
    "train_input": ("store_build",),
    "train_rounds": ("store_build",),
    "export": ("store_build",),
    "infer": ("export",),
}
# the time schedule: each stage's share of the budget. A stage may run until the end of its slot in the schedule
# (time the stages before it saved is its to use) or for half its share, whichever is later, and never past the
# budget; it stops between measurements (a measurement under way runs to its end). train_rounds cannot stop early.
SHARE = {
    "wheels": 0.01,
    "env": 0.04,
    "synth": 0.04,
    "store_build": 0.08,
    "train_model": 0.14,
    "train_input": 0.12,
    "train_rounds": 0.30,
    "export": 0.14,
    "infer": 0.13,
}
# seconds a stage needs at least: with less budget left it is skipped (full sizes; the dry run needs none)
MIN_LEFT = {"train_rounds": 60.0, "export": 15.0, "infer": 15.0}
WHEEL_MODULES = ("zarr", "numcodecs", "donfig", "google_crc32c", "soundfile", "cffi")

FULL = {
    "train": 48,
    "test": 16,
    "seconds": 60.0,
    "label_density": 6.0,
    "build_batch": 16,
    "model_batches": [16, 64],
    "model_steps": 20,
    "model_warmup": 3,
    "input_batches": 40,
    "loop_batches": 60,
    "round_batches": 10,
    "folds": 2,
    "infer_batches": [64, 256],
    "pt2_members": 4,
    "budget_s": 390.0,
}
DRY = {
    "train": 4,
    "test": 2,
    "seconds": 5.0,
    "label_density": 2.0,
    "build_batch": 4,
    "model_batches": [4],
    "model_steps": 2,
    "model_warmup": 1,
    "input_batches": 2,
    "loop_batches": 2,
    "round_batches": 2,
    "folds": 2,
    "infer_batches": [8, 32],
    "pt2_members": 1,
    "budget_s": 300.0,
}


# -- helpers ---------------------------------------------------------------------------------------------------


def tail(lines: int = 12) -> list[str]:
    """The last lines of the traceback being handled."""
    return traceback.format_exc().strip().splitlines()[-lines:]


def error_record(what: str, exc: BaseException) -> dict:
    text = f"{type(exc).__name__}: {exc}".strip()
    return {"what": what, "error": text[:2000], "traceback": tail()}


def attempt(errors: list[dict], what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a failure is appended to ``errors`` (with its traceback's tail) and gives None."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the check goes on
        errors.append(error_record(what, exc))
        say(f"  {what}: FAILED ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return None


def say(text: str) -> None:
    print(f"[gpu_check] {text}", flush=True)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def r3(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.4g}")


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


class Budget:
    """The run's time budget: stage deadlines are shares of it, never past its end."""

    def __init__(self, total_s: float) -> None:
        self.total = float(total_s)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()

    def deadline(self, stage: str) -> float:
        now = time.perf_counter()
        slot_end = self.t0 + self.total * sum(SHARE[s] for s in STAGES[: STAGES.index(stage) + 1])
        return min(self.t0 + self.total, max(slot_end, now + 0.5 * SHARE[stage] * self.total))


# -- the check -------------------------------------------------------------------------------------------------


class Check:
    """Runs the stages in order, keeping ``bench.json`` / ``bench.md`` in ``out`` up to date."""

    def __init__(self, out: Path, work: Path, dry_run: bool, sizes: dict, budget: Budget) -> None:
        self.out, self.work, self.dry_run, self.size, self.budget = out, work, dry_run, sizes, budget
        self.state: dict[str, Any] = {}  # what later stages use (paths, device, config)
        self.current: dict[str, Any] = {}  # the result of the stage under way, as far as it got
        self.result: dict[str, Any] = {
            "check": "benchmarks.gpu_check",
            "version": 1,
            "dry_run": dry_run,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sizes": sizes,
            "budget_s": budget.total,
            "argv": sys.argv[1:],
            "stages": {},
            "failures": [],
            "wall_s": None,
        }

    # running -----------------------------------------------------------------------------------------------
    def run(self) -> int:
        interrupted = False
        for name in STAGES:
            if interrupted:
                self._record(name, {"status": "skipped", "reason": "the run was interrupted (time limit)"})
                continue
            interrupted = self._stage(name)
        self.result["wall_s"] = round(self.budget.elapsed(), 1)
        self.write()
        bad = [n for n, s in self.result["stages"].items() if s["status"] not in ("ok",)]
        say(
            f"done in {self.result['wall_s']:.0f} s; stages not ok: {', '.join(bad) or 'none'}; "
            f"wrote {self.out / 'bench.json'} and {self.out / 'bench.md'}"
        )
        return 130 if interrupted else (1 if bad else 0)

    def _stage(self, name: str) -> bool:
        """Run one stage; True when the run was interrupted."""
        stages = self.result["stages"]
        missing = [n for n in NEEDS.get(name, ()) if stages.get(n, {}).get("status") not in ("ok", "partial")]
        if missing:
            self._record(
                name, {"status": "skipped", "reason": f"needs stage {', '.join(missing)}, which did not succeed"}
            )
            return False
        need = 0.0 if self.dry_run else MIN_LEFT.get(name, 5.0)
        if self.budget.left() < need:
            self._record(
                name,
                {
                    "status": "skipped",
                    "reason": f"time budget spent ({self.budget.left():.0f} s left "
                    f"of {self.budget.total:.0f} s, the stage needs "
                    f"{need:.0f} s)",
                },
            )
            return False
        say(f"stage {name} ({self.budget.elapsed():.0f} s into the run)")
        deadline = self.budget.deadline(name)
        errors: list[dict] = []
        self.current = {}  # a stage keeps its rows here as it goes: an interrupted stage keeps what it measured
        t0 = time.perf_counter()
        record: dict[str, Any]
        try:
            result = getattr(self, f"stage_{name}")(deadline, errors)
            record = {"status": "partial" if errors else "ok", "result": result}
        except KeyboardInterrupt:
            record = {
                "status": "interrupted",
                "reason": "interrupted (SIGINT/SIGTERM: the time limit of gpu_check.sh?)",
                "traceback": tail(),
                "result": self.current,
            }
            record["seconds"] = round(time.perf_counter() - t0, 2)
            self._record(name, record, errors)
            return True
        except Exception as exc:  # noqa: BLE001 - recorded, the next stage runs
            record = {"status": "failed", **error_record(name, exc), "result": self.current or None}
        record["seconds"] = round(time.perf_counter() - t0, 2)
        self._record(name, record, errors)
        say(
            f"stage {name}: {record['status']} ({record['seconds']:.1f} s)"
            + (f": {record.get('error', '').splitlines()[0][:300]}" if record["status"] == "failed" else "")
        )
        return False

    def _record(self, name: str, record: dict, errors: list[dict] | None = None) -> None:
        if errors:
            record["errors"] = errors
        self.result["stages"][name] = record
        if record["status"] == "failed":
            self.result["failures"].append(
                {"stage": name, "error": record.get("error"), "traceback": record.get("traceback")}
            )
        for e in errors or []:
            self.result["failures"].append({"stage": name, **e})
        if record["status"] in ("skipped", "interrupted"):
            say(f"stage {name}: {record['status']} ({record.get('reason')})")
        self.write()

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / ".bench.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.out / "bench.json")
        try:
            text = render_markdown(self.result)
        except Exception as exc:  # noqa: BLE001 - the JSON holds everything; say why the table is missing
            text = f"# GPU check\n\nbench.md could not be rendered ({type(exc).__name__}: {exc}); see bench.json.\n"
        (self.out / "bench.md").write_text(text)

    # what the stages share ---------------------------------------------------------------------------------
    @property
    def device(self):  # noqa: ANN201 - torch.device
        import torch

        if "device" not in self.state:
            if self.dry_run:
                self.state["device"] = torch.device("cpu")
            elif torch.cuda.is_available():
                self.state["device"] = torch.device("cuda", torch.cuda.current_device())
            else:
                raise RuntimeError(
                    "no CUDA GPU is visible (torch.cuda.is_available() is False); run with --dry-run for the CPU check"
                )
        return self.state["device"]

    def config(self):  # noqa: ANN201 - TrainConfig
        """The ``seed`` config (the dry run: timm's test_efficientnet on 2 s and 3 s crops, CPU, no loader workers)."""
        from rfcx.train.config import get_config

        cfg = get_config("seed")
        if self.dry_run:
            cfg = cfg.replace(
                backbones=[
                    {"backbone": "test_efficientnet", "crop_seconds": 2.0},
                    {"backbone": "test_efficientnet", "crop_seconds": 3.0},
                ],
                input_pool=[4, 4],
                batch_size=4,
                num_workers=0,
                store_cache_mb=64,
                device="cpu",
            )
        return cfg

    # 1. wheels ---------------------------------------------------------------------------------------------
    def stage_wheels(self, deadline: float, errors: list[dict]) -> dict:
        import importlib

        rc = os.environ.get("GPU_CHECK_INSTALL_RC")
        log_path = os.environ.get("GPU_CHECK_INSTALL_LOG")
        out: dict[str, Any] = {
            "installed_by_gpu_check_sh": rc is not None,
            "pip_exit_status": None,
            "site": os.environ.get("GPU_CHECK_SITE"),
            "modules": {},
        }
        if rc is not None:
            out["pip_exit_status"] = int(rc) if rc.lstrip("-").isdigit() else rc
            out["wheels"] = os.environ.get("GPU_CHECK_WHEELS", "").split()
            if log_path and Path(log_path).is_file():
                out["pip_log_tail"] = Path(log_path).read_text(errors="replace").strip().splitlines()[-15:]
            if str(rc) != "0":
                errors.append(
                    {
                        "what": "pip install of .whl/*.whl",
                        "error": f"pip exited with {rc}",
                        "traceback": out.get("pip_log_tail", []),
                    }
                )
        for name in WHEEL_MODULES:
            try:
                mod = importlib.import_module(name)
                out["modules"][name] = {
                    "version": getattr(mod, "__version__", None),
                    "file": str(getattr(mod, "__file__", "")),
                }
            except Exception as exc:  # noqa: BLE001
                out["modules"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                errors.append(error_record(f"import {name}", exc))
        for name in ("rfcx", "store", "engine", "benchmarks"):
            try:
                mod = importlib.import_module(name)
                where = Path(cast(str, mod.__file__)).resolve().parent.parent  # None: a TypeError, caught below
                out["modules"][name] = {"file": str(mod.__file__), "from_this_checkout": where == ROOT}
            except Exception as exc:  # noqa: BLE001
                errors.append(error_record(f"import {name}", exc))
        return out

    # 2. env ------------------------------------------------------------------------------------------------
    def stage_env(self, deadline: float, errors: list[dict]) -> dict:
        import subprocess
        from importlib import metadata

        import torch

        out: dict[str, Any] = {
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "torch_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "packages": {},
        }
        for pkg in (
            "timm",
            "torchvision",
            "numpy",
            "pandas",
            "scipy",
            "zarr",
            "numcodecs",
            "soundfile",
            "fsspec",
            "matplotlib",
            "nvidia-dali-cuda120",
            "nvidia-dali-cuda130",
        ):
            try:
                out["packages"][pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                out["packages"][pkg] = None
        import timm

        out["timm"] = timm.__version__
        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(i)
            out["gpu"] = {
                "index": i,
                "count": torch.cuda.device_count(),
                "name": props.name,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "bf16": torch.cuda.is_bf16_supported(),
            }
            t0 = time.perf_counter()
            a = torch.randn(4096, 4096, device="cuda")
            (a @ a).sum().item()
            out["gpu"]["first_matmul_s"] = round(time.perf_counter() - t0, 3)
            try:
                smi = subprocess.run(
                    ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
                out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
            except (OSError, subprocess.SubprocessError) as exc:
                out["nvidia_smi"] = f"not available ({type(exc).__name__})"
        elif not self.dry_run:
            raise RuntimeError("no CUDA GPU is visible (torch.cuda.is_available() is False)")
        out["device"] = str(self.device)
        self.result["device"] = out.get("gpu", {}).get("name") or "cpu"
        return out

    # 3. synth ----------------------------------------------------------------------------------------------
    def stage_synth(self, deadline: float, errors: list[dict]) -> dict:
        from rfcx.synth.dataset import synthesize

        s = self.size
        data = self.work / "data"
        workers = max(1, min(16, os.cpu_count() or 1))
        summary = synthesize(
            data,
            n_train=s["train"],
            n_test=s["test"],
            seconds=s["seconds"],
            seed=0,
            progress=False,
            workers=workers,
            tp_fraction=1.0,
            label_density=s["label_density"],
        )
        self.state["data"] = data
        return {
            "train": s["train"],
            "test": s["test"],
            "seconds": s["seconds"],
            "workers": workers,
            "tp_boxes": summary.n_tp_rows,
            "fp_boxes": summary.n_fp_rows,
            "elapsed_s": round(summary.elapsed_s, 2),
            "clips_per_s": r3((s["train"] + s["test"]) / summary.elapsed_s),
        }

    # 4. store ----------------------------------------------------------------------------------------------
    def stage_store_build(self, deadline: float, errors: list[dict]) -> dict:
        import numpy as np

        from store import FeatureStore, build_store

        data = self.state["data"]
        main = self.work / "features.zarr"
        out: dict[str, Any] = self.current
        out["builds"] = []
        gpu = "cpu" if self.dry_run else "gpu"
        batch = self.size["build_batch"]

        def build(device: str, path: Path) -> dict:
            summary = build_store(data, path, backend="torch", device=device, progress=False, batch_size=batch)
            clips = sum(summary.stored.values())
            role = "the main build" if path == main else "the same clips on the CPU"
            row = {
                "name": f"torch backend on {summary.device} ({role})",
                "backend": summary.backend,
                "device": summary.device,
                "clips": clips,
                "elapsed_s": round(summary.elapsed_s, 2),
                "clips_per_s": r3(summary.clips_per_s),
                "x_realtime": r3(summary.x_realtime),
                "rejected": len(summary.rejected),
                "batch_size": batch,
            }
            out["builds"].append(row)
            say(
                f"  build-store on {summary.device}: {clips} clips, {summary.clips_per_s:.2f} clips/s, "
                f"{summary.x_realtime:.0f}x real time"
            )
            if summary.rejected:
                errors.append(
                    {
                        "what": f"build-store on {device}",
                        "error": f"{len(summary.rejected)} clips rejected",
                        "traceback": [f"{r.file}: {r.reason}" for r in summary.rejected[:10]],
                    }
                )
            return row

        first = attempt(errors, f"build-store on {gpu}", build, gpu, main)
        cpu_store = self.work / "features_cpu.zarr"
        second = None
        if first is None or time.perf_counter() < deadline:
            second = attempt(errors, "build-store on the CPU", build, "cpu", cpu_store)
        else:
            out["cut"] = "the CPU build was skipped: the stage's time was spent"
        if first is not None and second is not None:
            a, b = FeatureStore.open(main), FeatureStore.open(cpu_store)
            diffs = [float(np.abs(a.mel(rid) - b.mel(rid)).max()) for rid in a.ids("train")[:4]]
            out["max_abs_db_difference_gpu_vs_cpu"] = r3(max(diffs))
        if first is None and second is None:
            raise RuntimeError("neither build worked (see errors)")
        self.state["store"] = str(main if first is not None else cpu_store)
        out["store_used_later"] = "gpu build" if first is not None else "cpu build (the GPU build failed)"
        rows = {r["device"]: r for r in out["builds"]}
        if "gpu" in rows and "cpu" in rows and rows["cpu"]["clips_per_s"]:
            out["gpu_over_cpu"] = r3(rows["gpu"]["clips_per_s"] / rows["cpu"]["clips_per_s"])
        try:
            from store.dali_pipeline import dali_available

            out["dali_available"] = dali_available()
        except Exception:  # noqa: BLE001
            out["dali_available"] = False
        return out

    # 5. the model alone ------------------------------------------------------------------------------------
    def stage_train_model(self, deadline: float, errors: list[dict]) -> dict:
        import torch

        from rfcx.train.losses import masked_bce
        from rfcx.train.models import build_classifier
        from rfcx.train.sampling import N_CLASSES
        from store import MelParams

        cfg, dev, s = self.config(), self.device, self.size
        params = MelParams()
        use_amp = dev.type == "cuda"
        rows: list[dict] = self.current.setdefault("rows", [])
        cut: list[str] = self.current.setdefault("cut_for_time", [])

        def measure(spec, batch: int, benchmark: bool) -> dict:  # noqa: ANN001
            torch.backends.cudnn.benchmark = benchmark
            torch.manual_seed(0)
            net = build_classifier(cfg, spec).to(dev)
            if cfg.channels_last:
                net.backbone.to(memory_format=torch.channels_last)
            net.train()
            opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            crop = params.seconds_to_frames(spec.crop_seconds)
            x = (-60.0 + 15.0 * torch.randn(batch, 1, params.n_mels, crop)).to(dev)
            target = (torch.rand(batch, N_CLASSES) < 0.1).float().to(dev)
            mask = torch.ones(batch, N_CLASSES, device=dev)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)

            def step() -> torch.Tensor:
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = net(x)
                loss = masked_bce(logits.float(), target, mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss.detach()

            for _ in range(s["model_warmup"]):
                step()
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(s["model_steps"]):
                loss = step()
            sync(dev)
            dt = time.perf_counter() - t0
            row = {
                "backbone": spec.backbone,
                "crop_seconds": spec.crop_seconds,
                "batch": batch,
                "cudnn_benchmark": benchmark,
                "bf16_autocast": use_amp,
                "channels_last": cfg.channels_last,
                "steps": s["model_steps"],
                "crops_per_s": r3(s["model_steps"] * batch / dt),
                "step_ms": r3(1000 * dt / s["model_steps"]),
                "loss": r3(float(loss)),
                "params_m": r3(sum(p.numel() for p in net.parameters()) / 1e6),
            }
            if dev.type == "cuda":
                row["peak_memory_gib"] = r3(torch.cuda.max_memory_allocated(dev) / 2**30)
            say(
                f"  {spec.backbone} {spec.crop_seconds:g} s, batch {batch}, cudnn.benchmark={benchmark}: "
                f"{row['crops_per_s']} crops/s"
            )
            return row

        before = torch.backends.cudnn.benchmark
        try:
            for benchmark in (False, True) if dev.type == "cuda" else (False,):
                for spec in cfg.backbones:
                    for batch in s["model_batches"]:
                        if time.perf_counter() > deadline:
                            cut.append(
                                f"{spec.backbone} {spec.crop_seconds:g} s batch {batch} cudnn.benchmark={benchmark}"
                            )
                            continue
                        row = attempt(errors, f"{spec.backbone} batch {batch}", measure, spec, batch, benchmark)
                        if row:
                            rows.append(row)
                        if dev.type == "cuda":  # the model and its optimizer are gone: hand their memory back
                            torch.cuda.empty_cache()
        finally:
            torch.backends.cudnn.benchmark = before
        self.state["model_rates"] = {
            (r["backbone"], r["crop_seconds"], r["batch"]): r["crops_per_s"] for r in rows if not r["cudnn_benchmark"]
        }
        return {
            "config": cfg.name,
            "device": str(dev),
            "rows": rows,
            "cut_for_time": cut,
            "about": "forward + backward + AdamW of the model alone on random dB crops already on the device, "
            "as rfcx.train.member.train_member steps (bf16 autocast on CUDA, channels_last as the config says)",
        }

    # 6. training input -------------------------------------------------------------------------------------
    def stage_train_input(self, deadline: float, errors: list[dict]) -> dict:
        import pandas as pd
        import torch

        from rfcx.train.augment import Augmenter
        from rfcx.train.loader import crop_loader
        from rfcx.train.sampling import CropSampler
        from store import FeatureStore

        cfg, dev, s = self.config(), self.device, self.size
        store = self.state["store"]
        fs = FeatureStore.open(store, cache_mb=cfg.store_cache_mb)  # training's handle: the clip cache
        boxes = pd.concat([fs.boxes("tp").assign(is_tp=True), fs.boxes("fp").assign(is_tp=False)], ignore_index=True)
        n_frames = {rid: fs.n_frames(rid) for rid in fs.ids("train")}
        b, n_batches = cfg.batch_size, s["input_batches"]
        rows: list[dict] = self.current.setdefault("rows", [])
        cut: list[str] = self.current.setdefault("cut_for_time", [])
        crops_seen = sorted({spec.crop_seconds for spec in cfg.backbones})
        workers_options = sorted({0, cfg.num_workers})

        def deliver(crop_s: float, workers: int, augment: str | None) -> dict:
            crop = fs.params.seconds_to_frames(crop_s)

            def make_sampler(worker: int) -> CropSampler:
                return CropSampler(boxes, n_frames, fs.params, crop, 0, seed=worker)

            aug = Augmenter(cfg.augment, cfg.mixup_alpha, torch.Generator().manual_seed(0)) if augment else None
            crops, t0 = 0, time.perf_counter()
            for x, target, mask, bins, label_boxes in crop_loader(fs, make_sampler, b, n_batches, workers):
                if augment == "device":
                    x, target, mask = x.to(dev), target.to(dev), mask.to(dev)
                if aug is not None:
                    x, target, mask = aug(x, target, mask, 0, bins, label_boxes)
                if augment != "device":
                    x = x.to(dev)
                crops += x.shape[0]
            sync(dev)
            dt = time.perf_counter() - t0
            name = (
                f"crop_loader, num_workers={workers}"
                + {None: "", "cpu": " + Augmenter on the CPU (as training)", "device": f" + Augmenter on {dev.type}"}[
                    augment
                ]
            )
            row = {
                "name": name,
                "crop_seconds": crop_s,
                "workers": workers,
                "augment": augment,
                "batch": b,
                "batches": n_batches,
                "crops_per_s": r3(crops / dt),
                "seconds": r3(dt),
            }
            say(f"  {name}, {crop_s:g} s crops: {row['crops_per_s']} crops/s")
            return row

        deliver(crops_seen[0], 0, None)  # warm the clip cache (training's is warm after its first pass)
        for crop_s in crops_seen:
            for workers in workers_options:
                for augment in (None, "cpu") + (
                    ("device",) if dev.type == "cuda" and workers == max(workers_options) else ()
                ):
                    if time.perf_counter() > deadline:
                        cut.append(f"{crop_s:g} s, workers {workers}, augment {augment}")
                        continue
                    row = attempt(
                        errors,
                        f"loader {crop_s:g} s workers {workers} augment {augment}",
                        deliver,
                        crop_s,
                        workers,
                        augment,
                    )
                    if row:
                        rows.append(row)
        rates = self.state.get("model_rates", {})
        for row in rows:
            consumed = [v for (_, c, batch), v in rates.items() if c == row["crop_seconds"] and batch == b and v]
            if consumed:  # the fastest model at this crop length and batch: the one the input must keep up with
                row["model_consumes_crops_per_s"] = r3(max(consumed))
                row["delivered_over_consumed"] = r3(row["crops_per_s"] / max(consumed))

        # the training loop itself: rfcx.train.member.train_member for one epoch of each backbone (round 0, fold 0)
        from rfcx.train.checkpoint import Checkpoint, present
        from rfcx.train.context import open_context
        from rfcx.train.member import train_member

        loop_cfg = cfg.replace(epochs=1, batches_per_epoch=s["loop_batches"], folds=s["folds"], warmup_epochs=0)
        ctx = open_context(store, self.work / "loop_runs", loop_cfg, str(dev), progress=False)
        loop: list[dict] = self.current.setdefault("train_member", [])
        for spec in loop_cfg.backbones:
            if time.perf_counter() > deadline:
                cut.append(f"train_member {spec.backbone} {spec.crop_seconds:g} s")
                continue
            t0 = time.perf_counter()
            ckpt = attempt(errors, f"train_member {spec.backbone}", train_member, ctx, 0, spec, 0, None)
            if ckpt:
                ckpt = Checkpoint.from_dict(ckpt)
                h = present(ckpt.history)[-1]
                loop.append(
                    {
                        "backbone": spec.backbone,
                        "crop_seconds": spec.crop_seconds,
                        "batch": loop_cfg.batch_size,
                        "batches": loop_cfg.batches_per_epoch,
                        "num_workers": loop_cfg.num_workers,
                        "crops_per_s": r3(h["crops_per_s"]),
                        "data_wait_s": r3(h["data_wait_s"]),
                        "epoch_s": r3(h["seconds"]),
                        "data_wait_share": r3(h["data_wait_s"] / h["seconds"]),
                        "wall_s": r3(time.perf_counter() - t0),
                        "loss": r3(h["loss"]),
                        "checkpoint_device": str(next(iter(present(ckpt.state_dict).values())).device),
                    }
                )
                say(
                    f"  train_member {spec.backbone} {spec.crop_seconds:g} s: {loop[-1]['crops_per_s']} crops/s, "
                    f"waiting for data {100 * loop[-1]['data_wait_share']:.0f} % of the epoch"
                )
        return {
            "device": str(dev),
            "batch": b,
            "num_workers_config": cfg.num_workers,
            "rows": rows,
            "train_member": loop,
            "cut_for_time": cut,
            "about": "crops/s rfcx.train.loader.crop_loader delivers (round-0 box crops from the store built on the "
            "GPU, through training's clip cache, warm), with rfcx.train.augment.Augmenter after it on the CPU (as "
            "training runs it) or on the device, against what the fastest model alone consumes at the "
            "same batch (stage train_model); then rfcx.train.member.train_member (one epoch, loader + "
            "augmentation + step, worker start-up included) for each backbone",
        }

    # 7. train_rounds ---------------------------------------------------------------------------------------
    def stage_train_rounds(self, deadline: float, errors: list[dict]) -> dict:
        from rfcx.runs.directory import RunDir
        from rfcx.train.checkpoint import Checkpoint, load_checkpoint_file
        from rfcx.train.rounds import train_rounds

        cfg, dev, s = self.config(), self.device, self.size
        cfg = cfg.replace(epochs=1, batches_per_epoch=s["round_batches"], folds=s["folds"], warmup_epochs=0)
        runs = self.work / "runs"
        self.state.update(runs=runs, cfg=cfg)  # stage export works from the checkpoints, even if the round fails later
        t0 = time.perf_counter()
        metrics = train_rounds(
            self.state["store"],
            runs,
            cfg,
            until_round=0,
            device=str(dev),
            progress=False,
            echo=lambda *a, **k: say("  " + " ".join(map(str, a))),
            export_formats=("torchscript",),
        )[0]
        wall = time.perf_counter() - t0
        run = RunDir(runs)
        models = sorted(run.models_dir(0).glob("*.ts"))
        members = {
            name: {
                "crops_per_s": r3(h[-1]["crops_per_s"]),
                "data_wait_s": r3(h[-1]["data_wait_s"]),
                "seconds": r3(h[-1]["seconds"]),
                "loss": r3(h[-1]["loss"]),
            }
            for name, h in metrics.get("members", {}).items()
        }
        first = sorted(run.round_dir(0).glob("members/*/checkpoint.pt"))[0]
        ckpt = Checkpoint.from_dict(load_checkpoint_file(first, "cpu"))
        return {
            "config": cfg.name,
            "device": str(dev),
            "epochs": cfg.epochs,
            "batches_per_epoch": cfg.batches_per_epoch,
            "folds": cfg.folds,
            "members": members,
            "wall_s": r3(wall),
            "train_seconds": r3(metrics.get("train_seconds")),
            "test_lwlrap": r3(metrics.get("test_lwlrap")),
            "oof_lwlrap": r3(metrics.get("oof_lwlrap")),
            "oof_box_auc": r3(metrics.get("oof_box_auc")),
            "freq_channel_check": metrics.get("freq_channel_check"),
            "complete": run.is_complete(0),
            "exported_torchscript": [m.name for m in models],
            "checkpoint_complete": bool(ckpt.complete),
            "about": "rfcx.train.rounds.train_rounds round 0 on the device: every member trained, its held-out and "
            "test clips scored, metrics, plots, TorchScript export, complete.json (.pt2 programs: stage "
            "export)",
        }

    # 8. export ---------------------------------------------------------------------------------------------
    def stage_export(self, deadline: float, errors: list[dict]) -> dict:
        import torch

        from engine.export import load_model, read_meta
        from rfcx.runs.directory import RunDir, member_name
        from rfcx.train.checkpoint import Checkpoint, present
        from rfcx.train.export import export_checkpoint, load_checkpoint
        from rfcx.train.models import build_classifier

        if "runs" not in self.state:
            raise RuntimeError("stage train_rounds did not run: there are no checkpoints to export")
        cfg, dev = self.state["cfg"], self.device
        run = RunDir(self.state["runs"])
        rows: list[dict] = self.current.setdefault("rows", [])
        ensemble: dict[str, list[Path]] = {"torchscript": [], "export": []}
        loaded: dict[str, list] = {"torchscript": [], "export": []}  # on the device, for stage infer
        for i, spec in enumerate(cfg.backbones):
            name = f"{member_name(spec)}_fold0"
            path = run.checkpoint(0, spec, 0)
            row: dict[str, Any] = {"member": name}
            ts = run.models_dir(0) / f"{name}.ts"
            if not ts.is_file():  # train_rounds failed before its export: export here
                errors.append({"what": f"{name}.ts", "error": "not exported by train_rounds", "traceback": []})
                attempt(errors, f"export {name}.ts", export_checkpoint, path, run.models_dir(0), 0, ["torchscript"])
            if ts.is_file():
                ensemble["torchscript"].append(ts)
                row["ts_bytes"] = ts.stat().st_size
            if time.perf_counter() > deadline:
                row["pt2"] = "skipped: the stage's time was spent"
            elif i >= self.size["pt2_members"]:
                row["pt2"] = f"skipped: .pt2 of the first {self.size['pt2_members']} member(s) only"
            else:
                t0 = time.perf_counter()
                written = attempt(
                    errors, f"export {name}.pt2", export_checkpoint, path, run.models_dir(0), 0, ["export"]
                )
                if written:
                    row["pt2_export_s"] = r3(time.perf_counter() - t0)
                    row["pt2_bytes"] = written[0].stat().st_size
                    ensemble["export"].append(written[0])
            # load on the device, compare with the eager network on the CPU (float32)
            ckpt = attempt(errors, f"read {path.name} of {name}", load_checkpoint, path)
            if ckpt is None:
                rows.append(row)
                continue
            net = build_classifier(cfg, spec)
            net.load_state_dict(present(Checkpoint.from_dict(ckpt).state_dict))
            net.eval()
            g = torch.Generator().manual_seed(0)
            window = None
            for kind, fmt, file in (("torchscript", "ts", ts), ("export", "pt2", run.models_dir(0) / f"{name}.pt2")):
                if not file.is_file():
                    continue
                t0 = time.perf_counter()
                model = attempt(errors, f"load {file.name} on {dev}", load_model, file, dev)
                if model is None:
                    continue
                row[f"{fmt}_load_s"] = r3(time.perf_counter() - t0)
                loaded[kind].append(model)
                row[f"{fmt}_meta_torch"] = read_meta(file).get("torch")
                window, n_mels = model.window_frames, int(model.meta["n_mels"])
                x = -60.0 + 15.0 * torch.randn(4, n_mels, window, generator=g)
                clip = -60.0 + 15.0 * torch.randn(2, n_mels, 3 * window, generator=g)
                starts = torch.tensor([0.0, window / 2, float(window)])
                with torch.inference_mode():
                    ref = net(x)
                    ref_w = None
                    if model.has_windows:
                        from engine.export import Deployable

                        ref_w = Deployable(net, n_mels, window).eval().windows(clip, starts)

                def compare() -> None:
                    got = model(x).float().cpu()
                    row[f"{fmt}_max_abs_logit_diff"] = r3(float((got - ref).abs().max()))
                    if ref_w is not None:
                        got_w = model.windows(clip, starts).float().cpu()
                        row[f"{fmt}_windows_max_abs_logit_diff"] = r3(float((got_w - ref_w).abs().max()))

                attempt(errors, f"run {file.name} on {dev}", compare)
            row["logit_scale"] = r3(float(ref.abs().max())) if window is not None else None
            rows.append(row)
            say(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "member"))
        self.state["ensemble"] = {k: v for k, v in ensemble.items() if v}
        self.state["loaded"] = loaded
        if not any(loaded.values()):
            raise RuntimeError(f"no exported member loaded on {dev} (see errors)")
        return {
            "device": str(dev),
            "rows": rows,
            "ensemble": {k: [p.name for p in v] for k, v in ensemble.items()},
            "running_torch": torch.__version__,
            "about": ".pt2 (torch.export) programs of the fold-0 members exported on the CPU "
            "(rfcx.train.export.export_checkpoint); each .ts and .pt2 loaded on the device "
            "(engine.export.load_model) and its forward / fcn windows compared with the eager float32 "
            "network on the CPU (TF32 on the GPU allows differences of ~1e-3 x the logit scale)",
        }

    # 9. infer ----------------------------------------------------------------------------------------------
    def stage_infer(self, deadline: float, errors: list[dict]) -> dict:
        import numpy as np

        from engine.batch import infer_clips
        from engine.export import load_model
        from rfcx.scoring.metrics import lwlrap
        from store import FeatureStore

        dev, s = self.device, self.size
        fs = FeatureStore.open(self.state["store"])
        ids = fs.ids("test")
        truth = fs.truth("test")
        rows: list[dict] = self.current.setdefault("rows", [])
        cut: list[str] = self.current.setdefault("cut_for_time", [])
        agreement: dict[str, Any] = self.current.setdefault("agreement", {})
        for fmt, files in self.state["ensemble"].items():
            if time.perf_counter() > deadline:
                cut.append(f"{fmt}: every run")
                continue
            models = self.state.get("loaded", {}).get(fmt)  # loaded on the device by stage export
            if not models or len(models) != len(files):
                models = attempt(
                    errors, f"load the {fmt} ensemble on {dev}", lambda fs_=files: [load_model(f, dev) for f in fs_]
                )
            if not models:
                continue
            scores: dict[str, np.ndarray] = {}
            for mode in ("exact", "fcn"):
                if mode == "fcn" and not all(m.has_windows for m in models):
                    cut.append(f"{fmt} fcn: a member has no fcn path")
                    continue
                warm = attempt(
                    errors,
                    f"{fmt} {mode} warm-up",
                    infer_clips,
                    models,
                    fs,
                    ids[:2],
                    fs.params,
                    mode=mode,
                    batch_size=s["infer_batches"][0],
                    progress=False,
                )
                if warm is None:
                    continue
                for batch in s["infer_batches"]:
                    if time.perf_counter() > deadline:
                        cut.append(f"{fmt} {mode} batch {batch}")
                        continue
                    t0 = time.perf_counter()
                    got = attempt(
                        errors,
                        f"{fmt} {mode} batch {batch}",
                        infer_clips,
                        models,
                        fs,
                        ids,
                        fs.params,
                        mode=mode,
                        batch_size=batch,
                        progress=False,
                    )
                    if got is None:
                        continue
                    wall = time.perf_counter() - t0
                    clip_scores = got[0]
                    attrs = clip_scores.attrs
                    sc = clip_scores.drop(columns="recording_id").to_numpy()
                    scores[mode] = sc
                    row = {
                        "format": fmt,
                        "mode": mode,
                        "batch": batch,
                        "models": len(models),
                        "clips": len(ids),
                        "windows": int(attrs.get("windows_scored", 0)),
                        "seconds": r3(attrs.get("seconds")),
                        "windows_per_s": r3(attrs["windows_scored"] / attrs["seconds"]),
                        "clips_per_s": r3(len(ids) / attrs["seconds"]),
                        "wall_s": r3(wall),
                    }
                    if truth is not None:
                        row["lwlrap"] = r3(float(lwlrap(truth.loc[clip_scores["recording_id"]].to_numpy(), sc)))
                    rows.append(row)
                    say(
                        f"  infer {fmt} {mode} batch {batch}: {row['windows_per_s']} windows/s, "
                        f"{row['clips_per_s']} clips/s, LWLRAP {row.get('lwlrap')}"
                    )
            if "exact" in scores and "fcn" in scores:
                a, b = scores["exact"], scores["fcn"]
                agree = {
                    "mean_abs_clip_score_diff": r3(float(np.abs(a - b).mean())),
                    "max_abs_clip_score_diff": r3(float(np.abs(a - b).max())),
                }
                if truth is not None:
                    la = float(lwlrap(truth.loc[ids].to_numpy(), a))
                    lb = float(lwlrap(truth.loc[ids].to_numpy(), b))
                    agree.update(lwlrap_exact=r3(la), lwlrap_fcn=r3(lb), delta_lwlrap=r3(lb - la))
                agreement[fmt] = agree
        exact = {(r["format"], r["batch"]): r["windows_per_s"] for r in rows if r["mode"] == "exact"}
        for r in rows:
            if r["mode"] == "fcn" and exact.get((r["format"], r["batch"])):
                r["fcn_over_exact"] = r3(r["windows_per_s"] / exact[(r["format"], r["batch"])])
        cli = None
        if time.perf_counter() < deadline:
            cli = self.current["cli"] = attempt(errors, "rfcx infer --batch", self._infer_command, len(ids))
        else:
            cut.append("the `rfcx infer --batch` command")
        return {
            "device": str(dev),
            "rows": rows,
            "agreement": agreement,
            "cut_for_time": cut,
            "cli": cli,
            "ensemble": {k: [p.name for p in v] for k, v in self.state["ensemble"].items()},
            "about": "engine.batch.infer_clips (what `rfcx infer --batch` runs) over the test clips of the store "
            "with the fold-0 member of each backbone (models briefly trained in stage train_rounds: "
            "the LWLRAP values show agreement, not quality); windows/s count every model's windows; "
            "after a 2-clip warm-up per format and mode",
        }

    def _infer_command(self, n_clips: int) -> dict:
        """``python -m rfcx infer --batch`` itself (its own process) with every TorchScript model of round 0, fcn mode
        on the device: the command line a user runs, submission included."""
        import subprocess

        import pandas as pd

        out = self.work / "submission.csv"
        cmd = [
            sys.executable,
            "-m",
            "rfcx",
            "infer",
            "--batch",
            "--store",
            self.state["store"],
            "--runs",
            str(self.state["runs"]),
            "--round",
            "0",
            "--out",
            str(out),
            "--mode",
            "fcn",
            "--format",
            "torchscript",
            "--device",
            "cpu" if self.dry_run else "gpu",
            "--no-progress",
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t0
        said = (proc.stdout + proc.stderr).strip().splitlines()
        if proc.returncode != 0:
            raise RuntimeError(f"exit status {proc.returncode}: " + " | ".join(said[-5:]))
        rows = len(pd.read_csv(out))
        if rows != n_clips:
            raise RuntimeError(f"{out}: {rows} rows, not one per test clip ({n_clips})")
        say(f"  rfcx infer --batch (fcn, every .ts of round 0): {wall:.1f} s, {said[-1] if said else ''}")
        return {"command": " ".join(cmd[1:]), "wall_s": r3(wall), "submission_rows": rows, "said": said[-3:]}


# -- bench.md --------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
    return str(v)


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    if not rows:
        return ["(no rows)", ""]
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |")
    return lines + [""]


def render_markdown(result: dict) -> str:
    st = result.get("stages", {})
    env = (st.get("env") or {}).get("result") or {}
    gpu = env.get("gpu") or {}
    title = "GPU check (dry run on the CPU)" if result.get("dry_run") else f"GPU check: {gpu.get('name', 'no GPU')}"
    out = [
        f"# {title}",
        "",
        f"`bash benchmarks/gpu_check.sh` (`python -m benchmarks.gpu_check`), started {result.get('started')}, "
        f"{_fmt(result.get('wall_s'))} s in all (budget {_fmt(result.get('budget_s'))} s). Every figure is in "
        "`bench.json`.",
        "",
    ]
    if env:
        out += [
            f"python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN "
            f"{env.get('cudnn')}), timm {env.get('timm')}, {env.get('cpu_count')} cores; GPU: "
            + (
                f"{gpu.get('name')}, {gpu.get('memory_gib')} GiB, capability {gpu.get('capability')}, bf16 "
                f"{_fmt(gpu.get('bf16'))}"
                if gpu
                else "none"
            )
            + (f" ({env.get('nvidia_smi')})" if env.get("nvidia_smi") else ""),
            "",
        ]
    out += ["## Stages", ""]
    out += _table(
        [
            {
                "stage": n,
                "status": s.get("status"),
                "seconds": s.get("seconds"),
                "note": (
                    s.get("reason") or (s.get("error") or "").splitlines()[0][:160]
                    if s.get("reason") or s.get("error")
                    else f"{len(s.get('errors', []))} sub-measurement(s) failed"
                    if s.get("errors")
                    else ""
                ),
            }
            for n, s in st.items()
        ],
        [("stage", "stage"), ("status", "status"), ("seconds", "s"), ("note", "note")],
    )

    def res(name: str) -> dict:
        return (st.get(name) or {}).get("result") or {}

    if res("synth"):
        r = res("synth")
        out += [
            "## Synthetic data",
            "",
            f"{r['train']} train + {r['test']} test clips of {r['seconds']:g} s, "
            f"{r['tp_boxes']} TP and {r['fp_boxes']} FP boxes, {r['elapsed_s']} s on {r['workers']} workers.",
            "",
        ]
    if res("store_build"):
        r = res("store_build")
        out += ["## Store build (`build_store`, torch backend)", ""]
        out += _table(
            r.get("builds", []),
            [
                ("name", "backend / device"),
                ("clips", "clips"),
                ("batch_size", "batch"),
                ("clips_per_s", "clips/s"),
                ("x_realtime", "x real time"),
                ("elapsed_s", "s"),
            ],
        )
        out += [
            f"GPU / CPU: {_fmt(r.get('gpu_over_cpu'))}x; largest dB difference between the two stores: "
            f"{_fmt(r.get('max_abs_db_difference_gpu_vs_cpu'))}; DALI installed: "
            f"{_fmt(r.get('dali_available'))}.",
            "",
        ]
    if res("train_model"):
        r = res("train_model")
        out += ["## Training: the model alone", "", r.get("about", ""), ""]
        out += _table(
            r.get("rows", []),
            [
                ("backbone", "backbone"),
                ("crop_seconds", "crop s"),
                ("batch", "batch"),
                ("cudnn_benchmark", "cudnn.benchmark"),
                ("crops_per_s", "crops/s"),
                ("step_ms", "ms/step"),
                ("peak_memory_gib", "peak GiB"),
                ("params_m", "params M"),
            ],
        )
    if res("train_input"):
        r = res("train_input")
        out += ["## Training input", "", r.get("about", ""), ""]
        out += _table(
            r.get("rows", []),
            [
                ("name", "input"),
                ("crop_seconds", "crop s"),
                ("crops_per_s", "crops/s"),
                ("model_consumes_crops_per_s", "fastest model consumes"),
                ("delivered_over_consumed", "delivered / consumed"),
            ],
        )
        out += _table(
            r.get("train_member", []),
            [
                ("backbone", "train_member"),
                ("crop_seconds", "crop s"),
                ("batches", "batches"),
                ("num_workers", "workers"),
                ("crops_per_s", "crops/s"),
                ("data_wait_share", "waiting for data"),
                ("epoch_s", "epoch s"),
                ("checkpoint_device", "checkpoint on"),
            ],
        )
    if res("train_rounds"):
        r = res("train_rounds")
        out += [
            "## `train_rounds`, round 0",
            "",
            f"{r.get('about')}. Config {r.get('config')} cut to {r.get('epochs')} epoch x "
            f"{r.get('batches_per_epoch')} batches, {r.get('folds')} folds: {_fmt(r.get('wall_s'))} s in all; "
            f"complete: {_fmt(r.get('complete'))}; test LWLRAP {_fmt(r.get('test_lwlrap'))} (a few steps: not a "
            f"quality figure); TorchScript files: {len(r.get('exported_torchscript', []))}.",
            "",
        ]
        out += _table(
            [{"member": k, **v} for k, v in r.get("members", {}).items()],
            [
                ("member", "member"),
                ("crops_per_s", "crops/s"),
                ("data_wait_s", "data wait s"),
                ("seconds", "epoch s"),
                ("loss", "loss"),
            ],
        )
    if res("export"):
        r = res("export")
        out += ["## Export and loading on the device", "", r.get("about", ""), ""]
        out += _table(
            r.get("rows", []),
            [
                ("member", "member"),
                ("pt2_export_s", ".pt2 export s"),
                ("ts_load_s", ".ts load s"),
                ("pt2_load_s", ".pt2 load s"),
                ("ts_max_abs_logit_diff", ".ts diff"),
                ("ts_windows_max_abs_logit_diff", ".ts fcn diff"),
                ("pt2_max_abs_logit_diff", ".pt2 diff"),
                ("pt2_windows_max_abs_logit_diff", ".pt2 fcn diff"),
                ("logit_scale", "max logit"),
                ("ts_meta_torch", "written by torch"),
            ],
        )
    if res("infer"):
        r = res("infer")
        out += ["## Inference (`infer_clips`, what `rfcx infer --batch` runs)", "", r.get("about", ""), ""]
        out += _table(
            r.get("rows", []),
            [
                ("format", "format"),
                ("mode", "mode"),
                ("batch", "batch"),
                ("models", "models"),
                ("windows_per_s", "windows/s"),
                ("clips_per_s", "60 s clips/s"),
                ("fcn_over_exact", "fcn / exact"),
                ("lwlrap", "LWLRAP"),
            ],
        )
        if r.get("cli"):
            out.append(
                f"`{r['cli']['command']}`: {_fmt(r['cli']['wall_s'])} s in all, process start and model loading "
                f"included ({r['cli']['said'][-1] if r['cli']['said'] else ''})."
            )
            out.append("")
        for fmt, a in r.get("agreement", {}).items():
            out.append(
                f"- {fmt}: exact vs fcn LWLRAP {_fmt(a.get('lwlrap_exact'))} vs {_fmt(a.get('lwlrap_fcn'))} "
                f"(delta {_fmt(a.get('delta_lwlrap'))}), clip scores differ by "
                f"{_fmt(a.get('mean_abs_clip_score_diff'))} on average, "
                f"{_fmt(a.get('max_abs_clip_score_diff'))} at most"
            )
        out.append("")
    if result.get("failures"):
        out += ["## Failures", ""]
        for f in result["failures"]:
            out += [
                f"### {f.get('stage')}: {f.get('what', f.get('stage'))}",
                "",
                "```",
                (f.get("error") or "")[:1500],
                *(f.get("traceback") or [])[-12:],
                "```",
                "",
            ]
    return "\n".join(out) + "\n"


# -- command line ----------------------------------------------------------------------------------------------


def _default_out(dry_run: bool) -> Path:
    name = "cpu-dry-run"
    if not dry_run:
        try:
            import torch

            name = slug(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "no-gpu"
        except Exception:  # noqa: BLE001
            name = "unknown-device"
    return ROOT / "benchmarks" / "results" / name


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (the test suite runs this)")
    ap.add_argument(
        "--out",
        type=Path,
        help="where bench.json and bench.md go (default: "
        "benchmarks/results/<gpu-name>/, or cpu-dry-run/ with --dry-run)",
    )
    ap.add_argument("--clips", type=int, help="synthetic clips in all, 3/4 train and 1/4 test (default 64; dry run 6)")
    ap.add_argument(
        "--budget-s",
        type=float,
        help="time budget of the whole run in seconds (default 390): each "
        "stage gets a share, stages past it are skipped",
    )
    ap.add_argument(
        "--work",
        type=Path,
        help="work folder for data, stores and runs (default: a temporary folder, removed at the end)",
    )
    args = ap.parse_args(argv)
    sizes: dict[str, Any] = dict(DRY if args.dry_run else FULL)
    if args.clips is not None:
        if args.clips < 4:
            ap.error("--clips must be >= 4")
        sizes["test"] = max(1, args.clips // 4)
        sizes["train"] = args.clips - sizes["test"]
    if args.budget_s is not None:
        sizes["budget_s"] = args.budget_s
    signal.signal(signal.SIGTERM, _interrupt)
    if args.dry_run:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    out = args.out or _default_out(args.dry_run)
    with tempfile.TemporaryDirectory(prefix="rfcx-gpu-check-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        check = Check(out, work, args.dry_run, sizes, Budget(sizes["budget_s"]))
        say(
            f"{'dry run (CPU, toy sizes)' if args.dry_run else 'GPU check'}: results in {out}, work in {work}, "
            f"budget {sizes['budget_s']:.0f} s"
        )
        try:
            return check.run()
        except KeyboardInterrupt:  # between stages
            check.result["wall_s"] = round(check.budget.elapsed(), 1)
            check.write()
            return 130


if __name__ == "__main__":
    sys.exit(main())
