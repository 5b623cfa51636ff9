"""`rfcx bench`: every benchmark runs (tiny sizes) and writes a well-formed bench.json, bench.md and PNG plots.

Only the shape of the output is checked, never a timing or a goal's outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks import engine_throughput, store_build, store_layout, store_reads, training_input
from benchmarks.run import BENCHMARKS, run_bench
from rfcx.cli import app
from tests.engine_fixtures import engine_base, one_thread, tiny_run, tiny_store  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the quick sizes: a few short clips, one batch, a few milliseconds per timing (3 repeats kept)."""
    for module, sizes in (
        (store_build, {"clips": 2, "seconds": 6.0}),
        (store_reads, {"clips": 2, "seconds": 10.0, "store_batches": 1}),
        (store_layout, {"clips": 2, "reads": 4, "layouts": [("float16", 512, "none"), store_layout.CHOSEN]}),
        (training_input, {"clips": 2, "seconds": 10.0, "batches": 2, "steps": 1, "config": "tiny"}),
        (engine_throughput, {"config": "tiny", "batch_sizes": [16], "seconds": 0.01, "real_clips": 2}),
    ):
        for key, value in sizes.items():
            monkeypatch.setitem(module.QUICK, key, value)


def quality_run(root: Path) -> Path:
    for k, lw in enumerate((0.5, 0.55, 0.6)):
        (root / f"round{k}").mkdir(parents=True)
        (root / f"round{k}" / "metrics.json").write_text(
            json.dumps(
                {
                    "round": k,
                    "config": "cpu",
                    "test_lwlrap": lw,
                    "oof_lwlrap": lw + 0.1,
                    "oof_box_auc": 0.7,
                    "train_seconds": 600.0 * (k + 1),
                }
            )
        )
    return root


def check_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000, path


def test_bench_quick_writes_json_markdown_and_plots(tiny_sizes, tiny_run, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "bench"
    quality = quality_run(tmp_path / "runs-full")
    result = run_bench(
        out,
        quick=True,
        runs=tiny_run["runs"],
        store=tiny_run["store"],
        quality_runs=[f"full={quality}"],
        echo=lambda _: None,
    )

    data = json.loads((out / "bench.json").read_text())
    assert data["mode"] == "quick" and data["files"] == result["files"]
    for key in ("cpu_model", "cpu_cores", "torch", "dali", "date", "torch_threads"):
        assert key in data["machine"]
    assert [b["name"] for b in data["benchmarks"]] == list(BENCHMARKS)
    for b in data["benchmarks"]:
        assert not b.get("error"), (b["name"], b.get("traceback"))
        for goal in b["goals"]:
            assert goal["met"] in (True, False, None) and goal["goal"] and goal["detail"]
        for sec in b["sections"]:
            assert sec["rows"], sec["key"]
            if sec["unit"]:  # a timed comparison: medians of >= 3 repeats, ratios to its baseline
                assert any(r["name"] == sec["baseline"] for r in sec["rows"])
                for r in sec["rows"]:
                    assert len(r["repeats"]) >= 3 and r["min"] <= r["median"] <= r["max"] and r["median"] > 0
                    assert r["ratio"] is not None
    by_name = {b["name"]: b for b in data["benchmarks"]}
    assert {s["key"] for s in by_name["store_reads"]["sections"]} == {"crops_4s", "crops_8s", "layout"}
    assert "real" in {s["key"] for s in by_name["inference"]["sections"]}  # --runs/--store: the trained ensemble
    assert len(by_name["quality"]["series"]["full"]) == 3

    md = (out / "bench.md").read_text()
    for heading in ("## Machine", "## Goals", "## Caveats", *(f"## {b['title']}" for b in data["benchmarks"])):
        assert heading in md
    for b in data["benchmarks"]:
        for sec in b["sections"]:
            assert f"### {sec['title']}" in md
    assert "tp_fp_sampling=false" in md and "freq_channel=false" in md
    pngs = [f for f in data["files"] if f.endswith(".png")]
    assert sorted(pngs) == sorted(f"{name}.png" for name in BENCHMARKS)
    for f in pngs:
        check_png(out / f)
        assert f"]({f})" in md


def test_bench_command(tmp_path: Path) -> None:
    out = tmp_path / "b"
    quality = quality_run(tmp_path / "runs")
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "--quick",
            "--only",
            "quality",
            "--out",
            str(out),
            "--quality-runs",
            f"full={quality}",
            "--quality-runs",
            f"again={quality}",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads((out / "bench.json").read_text())
    assert [b["name"] for b in data["benchmarks"]] == ["quality"]
    assert set(data["benchmarks"][0]["series"]) == {"full", "again"}
    timed = {g["goal"]: g for g in data["benchmarks"][0]["goals"]}["full: rounds 0-2 train in <= 45 minutes"]
    assert timed["value"] == 60.0 and timed["met"] is False and "10.0 + 20.0 + 30.0 min" in timed["detail"]
    check_png(out / "quality.png")
    assert (out / "bench.md").read_text().startswith("# rfcx benchmarks (quick mode)")

    res = CliRunner().invoke(app, ["bench", "--quick", "--only", "nonsense", "--out", str(out)])
    assert res.exit_code == 1 and "unknown benchmark" in res.output
    res = CliRunner().invoke(app, ["bench", "--quick", "--runs", str(tmp_path), "--out", str(out)])
    assert res.exit_code == 1 and "--store" in res.output


def test_quality_over_seeds_with_the_equal_compute_bootstrap(tmp_path: Path) -> None:
    from benchmarks import quality

    names = []
    for seed, shift in ((1, 0.0), (2, 0.1)):
        root = tmp_path / f"seed{seed}"
        for k, (score, steps) in enumerate(((0.5 + shift, 640), (0.7 + shift, 3840))):
            d = root / f"round{k}"
            d.mkdir(parents=True)
            sticks = {"random": 0.2, "prior_only": 0.3 + shift}
            metrics = {"round": k, "test_lwlrap": score, "steps": steps, "train_seconds": 600.0, "yardsticks": sticks}
            (d / "metrics.json").write_text(json.dumps(metrics))
            (d / "complete.json").write_text("{}")
        eq = root / "equal-compute" / "round0"
        eq.mkdir(parents=True)
        (eq / "metrics.json").write_text(json.dumps({"round": 0, "test_lwlrap": 0.6 + 2 * shift, "steps": 3840}))
        (eq / "complete.json").write_text("{}")
        names.append(f"cpu@{seed}={root}")
    result = quality.run(True, tmp_path, names)
    assert [s["key"] for s in result["sections"]] == ["quality", "seeds"]
    means = {r["key"]: r for r in result["sections"][1]["rows"]}
    assert means["default"]["mean"] == pytest.approx(0.75) and means["default"]["n"] == 2
    assert means["vs_equal"]["mean"] == pytest.approx(0.05) and means["vs_equal"]["sd"] == pytest.approx(
        0.0707, abs=1e-3
    )
    assert means["vs_prior"]["mean"] == pytest.approx(0.4)
    goals = {g["goal"]: g for g in result["goals"]}
    equal = goals["cpu: the default round beats round 0 trained as long (equal compute) by >= 0.05"]
    assert equal["value"] == pytest.approx(0.05) and "mean over 2 seeds" in equal["detail"]
    assert goals["cpu: the default round beats prior-only by >= 0.25 LWLRAP"]["met"] is True
    assert goals["cpu: the default round is never more than 0.02 below the best round on test"]["value"] == 0.0
    timed = goals["cpu (slowest seed, cpu@1): rounds 0-1 train in <= 45 minutes"]
    assert timed["value"] == 20.0 and timed["met"] is True
    rows = {r["name"]: r for r in result["sections"][0]["rows"]}
    assert rows["cpu@2 round 1"]["pseudo_gain"] == pytest.approx(0.0) and rows["cpu@2 round 1"]["equal_compute"] == 0.8


def test_clips_without_the_real_recording(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import soundfile as sf

    from benchmarks import common

    monkeypatch.setattr(common, "REAL_CLIP", tmp_path / "absent.flac")
    files, source = common.write_clips(tmp_path / "clips", 2, seconds=1.5)
    assert "synthetic" in source and len(files) == 2
    for f in files:
        info = sf.info(str(f))
        assert info.samplerate == 48_000 and abs(info.duration - 1.5) < 0.01
