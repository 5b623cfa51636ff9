"""Exported models (TorchScript .ts, torch.export .pt2) compute what the eager network computes, carry their
metadata, load with torch alone, and fail clearly on missing or corrupt files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from engine.export import Deployable, ModelFileError, export_torchscript, load_model, read_meta
from rfcx.runs.directory import RunDir
from rfcx.train.export import export_round
from store import FeatureStore
from tests.engine_fixtures import engine_base, one_thread, tiny, tiny_run, tiny_store, write_checkpoint  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def _models(run: dict, suffix: str) -> list[Path]:
    return sorted((Path(run["runs"]) / "round0" / "models").glob(f"*{suffix}"))


def _clip(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -60.0 + 15.0 * torch.randn(b, 256, t, generator=g)


@pytest.mark.parametrize("suffix", [".ts", ".pt2"])
def test_exported_equals_eager(tiny_run, suffix: str) -> None:
    files = _models(tiny_run, suffix)
    assert [f.name for f in files] == [f"{tiny_run['member']}_fold{k}{suffix}" for k in (0, 1)]
    for fold, path in enumerate(files):
        net = tiny_run["nets"][fold]
        model = load_model(path)
        deployable = Deployable(net, 256, model.window_frames).eval()
        for b, t in ((1, 188), (6, 188), (3, 517)):  # dynamic batch and time
            x = _clip(b, t, seed=b + t)
            with torch.no_grad():
                ref = net(x)
            assert ref.std() > 0.1, "weights should give a visible spread of logits"
            torch.testing.assert_close(model(x), ref, atol=1e-4, rtol=1e-4)
        x, starts = _clip(2, 900, seed=7), torch.tensor([0.0, 46.875, 94.0, 700.0])
        with torch.no_grad():
            ref = deployable.windows(x, starts)
        got = model.windows(x, starts)
        assert got.shape == (2, 4, 24)
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_plain_torch_export_load(tiny_run) -> None:
    """``torch.export.load`` of a .pt2 gives the per-window program (the fcn program rides along)."""
    path = _models(tiny_run, ".pt2")[0]
    extra = {"meta.json": ""}
    program = torch.export.load(path, extra_files=extra)
    x = _clip(2, 188)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), tiny_run["nets"][0](x), atol=1e-4, rtol=1e-4)
    assert json.loads(extra["meta.json"])["fold"] == 0


def test_windows_on_one_crop_is_forward(tiny_run) -> None:
    """A window that is the whole input pools exactly the positions the crop has: the fcn path equals forward."""
    model = load_model(_models(tiny_run, ".ts")[0])
    x = _clip(3, model.window_frames, seed=3)
    torch.testing.assert_close(model.windows(x, torch.zeros(1))[:, 0], model(x), atol=1e-4, rtol=1e-4)


def test_meta(tiny_run, tiny_store) -> None:
    params = FeatureStore.open(tiny_store["store"]).params
    for suffix in (".ts", ".pt2"):
        path = _models(tiny_run, suffix)[1]
        meta = read_meta(path)
        if suffix == ".ts":
            assert load_model(path).meta == meta
        assert meta["format_version"] == 1 and meta["format"] == {".ts": "torchscript", ".pt2": "export"}[suffix]
        assert meta["config_name"] == "tiny" and meta["config"]["name"] == "tiny"
        assert meta["backbone"] == "test_efficientnet" and meta["crop_seconds"] == 2.0
        assert meta["window_frames"] == 188 and meta["hop_seconds"] == 0.5
        assert meta["mel"] == params.to_dict() and meta["n_mels"] == 256 and meta["n_classes"] == 24
        assert meta["round"] == 0 and meta["fold"] == 1
        assert meta["freq_channel"] is True and meta["pool"] == [4, 4]
        assert meta["fcn"] == {"stride_frames": 128.0, "positions": 2.0, "reduction": 32.0, "local_se_blocks": 2.0}


def test_loads_with_torch_alone(tiny_run) -> None:
    """No timm and no rfcx at load time: both are blocked from importing in a fresh interpreter."""
    files = [str(_models(tiny_run, s)[0]) for s in (".ts", ".pt2")]
    code = (
        "import sys; sys.modules['timm'] = None; sys.modules['rfcx'] = None\n"
        "import torch\n"
        "from engine.export import load_model\n"
        f"for f in {files!r}:\n"
        "    m = load_model(f)\n"
        "    y = m(torch.full((2, 256, 188), -50.0))\n"
        "    w = m.windows(torch.full((1, 256, 400), -50.0), torch.tensor([0.0, 47.0]))\n"
        "    assert y.shape == (2, 24) and w.shape == (1, 2, 24)\n"
        "    assert 'timm' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_load_errors(tiny_run, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.ts: model file not found"):
        load_model(tmp_path / "nothere.ts")
    (tmp_path / "empty.ts").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.ts: empty file"):
        load_model(tmp_path / "empty.ts")
    for suffix in (".ts", ".pt2"):
        src = _models(tiny_run, suffix)[0].read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(src[: len(src) // 2])
        with pytest.raises(ModelFileError, match=f"cut\\{suffix}: .*(corrupt|not a)"):
            load_model(cut)
        noise = tmp_path / f"noise{suffix}"
        noise.write_bytes(b"\x00garbage" * 100)
        with pytest.raises(ModelFileError, match=f"noise\\{suffix}: not a"):
            load_model(noise)
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model file type"):
        load_model(tmp_path / "model.onnx")
    plain = tmp_path / "plain.ts"  # TorchScript, but not written by engine.export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(plain))
    with pytest.raises(ModelFileError, match="plain.ts: no meta.json inside"):
        load_model(plain)


def test_torchscript_warnings_stay_local(tiny_run, tmp_path: Path) -> None:
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = {k: v for k, v in load_model(_models(tiny_run, ".ts")[0]).meta.items()}
        export_torchscript(tiny_run["nets"][0], meta, tmp_path / "m.ts")
        load_model(tmp_path / "m.ts")
    assert not [w for w in caught if "torch.jit" in str(w.message)], [str(w.message) for w in caught]
    assert list(warnings.filters) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ts"]  # no temp file left behind


def test_export_round_files_and_errors(tiny_run, tmp_path: Path) -> None:
    cfg, spec = tiny()
    run = RunDir(tmp_path / "runs")
    mel = load_model(_models(tiny_run, ".ts")[0]).meta["mel"]
    with pytest.raises(ValueError, match="no such round"):
        export_round(run.root, 0)
    write_checkpoint(run, 0, cfg, spec, 0, tiny_run["nets"][0], mel)
    write_checkpoint(run, 0, cfg, spec, 1, tiny_run["nets"][1], mel, complete=False)
    with pytest.raises(ValueError, match="fold1/checkpoint.pt: the member has not finished training"):
        export_round(run.root, 0, formats=("torchscript",))
    write_checkpoint(run, 0, cfg, spec, 1, tiny_run["nets"][1], mel)
    written = export_round(run.root, 0, formats=("torchscript",))
    assert [p.name for p in written] == ["test_efficientnet-2s_fold0.ts", "test_efficientnet-2s_fold1.ts"]
    assert sorted(p.name for p in run.models_dir(0).iterdir()) == [p.name for p in written]
    stamps = [p.stat().st_mtime_ns for p in written]
    assert export_round(run.root, 0, formats=("torchscript",)) == written  # up to date: kept
    assert [p.stat().st_mtime_ns for p in written] == stamps
    export_round(run.root, 0, formats=("torchscript",), force=True)
    assert [p.stat().st_mtime_ns for p in written] != stamps
    with pytest.raises(ValueError, match="formats must be among"):
        export_round(run.root, 0, formats=("onnx",))
    bad = run.checkpoint(0, spec, 0)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="fold0/checkpoint.pt: unreadable checkpoint"):
        export_round(run.root, 0, formats=("torchscript",), force=True)
    json.loads((json.dumps(read_meta(written[1]))))


def _rewrite(src: Path, dst: Path, torch_version: str, corrupt: str) -> Path:
    """A copy of the archive ``src`` whose meta.json claims ``torch_version`` and whose entry ending in ``corrupt``
    is garbage: a file another torch wrote that this one cannot read."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/meta.json"):
                data = json.dumps({**json.loads(data), "torch": torch_version}).encode()
            elif info.filename.endswith(corrupt):
                data = b"\x80\x04 written by a torch from the future \xff" * 3
            zout.writestr(info.filename, data)
    return dst


@pytest.mark.parametrize("suffix, corrupt", [(".ts", "/data.pkl"), (".pt2", "/models/model.json")])
def test_load_failure_names_both_torch_versions(tiny_run, tmp_path: Path, suffix: str, corrupt: str) -> None:
    """Exported files record the torch that wrote them; a file that does not load says which torch wrote it and
    which one is running."""
    from engine.export import torch_note, written_by

    good = _models(tiny_run, suffix)[0]
    assert read_meta(good)["torch"] == torch.__version__ == written_by(good)
    assert torch_note(good) == f"written by torch {torch.__version__}, the running version"
    other = _rewrite(good, tmp_path / f"other{suffix}", "1.99.0+future", corrupt)
    assert written_by(other) == "1.99.0+future"
    with pytest.raises(ModelFileError) as caught:
        load_model(other)
    message = str(caught.value)
    assert message.startswith(f"{other}: cannot load this ")
    assert f"written by torch 1.99.0+future, running torch {torch.__version__}" in message, message
    assert "corrupt, or not readable by this torch" in message
    # a damaged file without readable metadata says that it cannot tell
    bare = tmp_path / f"bare{suffix}"
    _rewrite(good, bare, "x", corrupt)
    import zipfile

    with zipfile.ZipFile(bare) as zin, zipfile.ZipFile(tmp_path / f"nometa{suffix}", "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/meta.json"):
                zout.writestr(info.filename, zin.read(info.filename))
    unknown = rf"which torch wrote it is unknown .*running torch {re.escape(torch.__version__)}"
    with pytest.raises(ModelFileError, match=unknown):
        load_model(tmp_path / f"nometa{suffix}")
