"""The GPU check (benchmarks/gpu_check.py, benchmarks/gpu_check.sh): its dry run on the CPU runs every stage and
writes bench.json and bench.md; the shell script parses; a stage that fails is recorded and the rest go on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("gpu-check")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "GPU_CHECK_INSTALL_RC": "0",
        "GPU_CHECK_WHEELS": ".whl/zarr-3.1.6-py3-none-any.whl",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--dry-run",
            "--out",
            str(tmp / "out"),
            "--work",
            str(tmp / "work"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return {"proc": proc, "out": tmp / "out"}


def test_dry_run_every_stage_ok(dry_run: dict) -> None:
    proc = dry_run["proc"]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((dry_run["out"] / "bench.json").read_text())
    assert result["dry_run"] is True and result["failures"] == []
    assert list(result["stages"]) == list(gpu_check.STAGES)
    for name, stage in result["stages"].items():
        assert stage["status"] == "ok", (name, stage)
        assert stage["seconds"] >= 0
    st = {name: stage["result"] for name, stage in result["stages"].items()}
    assert st["wheels"]["pip_exit_status"] == 0 and st["wheels"]["modules"]["rfcx"]["from_this_checkout"]
    assert st["env"]["device"] == "cpu" and st["env"]["torch"]
    assert {b["clips"] for b in st["store_build"]["builds"]} == {6}
    assert st["store_build"]["max_abs_db_difference_gpu_vs_cpu"] < 0.01
    assert {r["backbone"] for r in st["train_model"]["rows"]} == {"test_efficientnet"}
    assert all(r["crops_per_s"] > 0 for r in st["train_model"]["rows"] + st["train_input"]["rows"])
    assert len(st["train_input"]["train_member"]) == 2
    assert st["train_rounds"]["complete"] and len(st["train_rounds"]["exported_torchscript"]) == 4
    members = ["test_efficientnet-2s_fold0", "test_efficientnet-3s_fold0"]
    assert st["export"]["ensemble"] == {
        "torchscript": [f"{m}.ts" for m in members],
        "export": [f"{members[0]}.pt2"],
    }  # the dry run: one .pt2
    for row in st["export"]["rows"]:  # exported on the CPU, run on the CPU: what eager computes
        assert row["ts_max_abs_logit_diff"] < 1e-4 and row["ts_windows_max_abs_logit_diff"] < 1e-4
        assert row["ts_meta_torch"] == st["env"]["torch"]
    first = st["export"]["rows"][0]
    assert first["pt2_max_abs_logit_diff"] < 1e-4 and first["pt2_windows_max_abs_logit_diff"] < 1e-4
    assert first["pt2_meta_torch"] == st["env"]["torch"]
    runs = {(r["format"], r["mode"], r["batch"]): r["models"] for r in st["infer"]["rows"]}
    assert runs == {
        (f, m, b): {"torchscript": 2, "export": 1}[f]
        for f in ("torchscript", "export")
        for m in ("exact", "fcn")
        for b in (8, 32)
    }
    assert all(r["windows_per_s"] > 0 for r in st["infer"]["rows"])
    cli = st["infer"]["cli"]  # `python -m rfcx infer --batch` itself: every .ts of round 0 (2 members x 2 folds)
    assert cli["submission_rows"] == 2 and "4 torchscript model(s), mode fcn on cpu" in cli["said"][-1]
    for fmt in ("torchscript", "export"):
        assert abs(st["infer"]["agreement"][fmt]["delta_lwlrap"]) <= 1.0
    md = (dry_run["out"] / "bench.md").read_text()
    assert md.startswith("# GPU check (dry run on the CPU)")
    for name in gpu_check.STAGES:
        assert f"| {name} | ok |" in md


def test_failed_stage_is_recorded_and_the_rest_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that raises is recorded with its traceback's tail; the stages that need it are skipped, the others
    run; pip's failure (reported by gpu_check.sh) makes stage wheels partial."""
    monkeypatch.setenv("GPU_CHECK_INSTALL_RC", "1")
    log = tmp_path / "pip.log"
    log.write_text("ERROR: x.whl is not a supported wheel on this platform.\n")
    monkeypatch.setenv("GPU_CHECK_INSTALL_LOG", str(log))
    check = gpu_check.Check(tmp_path / "out", tmp_path / "work", True, dict(gpu_check.DRY), gpu_check.Budget(60.0))
    ran: list[str] = []

    def boom(deadline: float, errors: list) -> dict:
        raise ValueError("synthetic data: no disk left")

    def fine(name: str):
        def stage(deadline: float, errors: list) -> dict:
            ran.append(name)
            return {"ran": name}

        return stage

    for name in gpu_check.STAGES[1:]:
        monkeypatch.setattr(check, f"stage_{name}", fine(name))
    monkeypatch.setattr(check, "stage_synth", boom)
    assert check.run() == 1
    result = json.loads((tmp_path / "out" / "bench.json").read_text())
    status = {name: s["status"] for name, s in result["stages"].items()}
    assert status == {
        "wheels": "partial",
        "env": "ok",
        "synth": "failed",
        "store_build": "skipped",
        "train_model": "ok",
        "train_input": "skipped",
        "train_rounds": "skipped",
        "export": "skipped",
        "infer": "skipped",
    }
    assert ran == ["env", "train_model"]
    synth = result["stages"]["synth"]
    assert synth["error"] == "ValueError: synthetic data: no disk left"
    assert any("no disk left" in line for line in synth["traceback"])
    assert "needs stage synth" in result["stages"]["store_build"]["reason"]
    assert [f["stage"] for f in result["failures"]] == ["wheels", "synth"]
    assert "not a supported wheel" in result["failures"][0]["traceback"][0]
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| synth | failed |" in md and "ValueError: synthetic data: no disk left" in md


def test_shell_script_parses() -> None:
    for script in ("benchmarks/gpu_check.sh", "benchmarks/gpu_check_wheels.sh"):
        proc = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_wheel_list_names_one_version_each() -> None:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "benchmarks" / "gpu_check_wheels.txt").read_text().splitlines()]
    pins = [ln for ln in lines if ln]
    names = [p.split("==")[0] for p in pins]
    assert all("==" in p for p in pins) and len(set(names)) == len(names)
    assert {"zarr", "numcodecs", "donfig", "google-crc32c", "soundfile"} <= set(names)
