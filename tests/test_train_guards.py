"""A refused `rfcx train` leaves its run directory as it was: everything is checked before config.json and
folds.json are written; `--round -1` is refused; a run resumed on another store is refused naming both stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.synth.dataset import synthesize
from rfcx.train.config import get_config
from rfcx.train.rounds import train_rounds
from store import build_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    """Store a (8 train clips), store b (another data set), store sub (a without 2 of its train clips)."""
    root = tmp_path_factory.mktemp("guards")
    out = {}
    for name, seed in (("a", 1), ("b", 2)):
        synthesize(root / name, n_train=8, n_test=2, seconds=6.0, seed=seed, tp_fraction=1.0, progress=False)
        build_store(root / name, root / f"{name}.zarr", backend="torch", device="cpu", progress=False)
        out[name] = str(root / f"{name}.zarr")
    shutil.copytree(root / "a", root / "sub")
    for path in sorted((root / "sub" / "train").iterdir())[:2]:
        path.unlink()
    build_store(root / "sub", root / "sub.zarr", backend="torch", device="cpu", progress=False)
    out["sub"] = str(root / "sub.zarr")
    return out


def _train(store: str, runs: Path, *extra: str):
    return CliRunner().invoke(
        app,
        ["train", "--store", store, "--runs", str(runs), "--config", "tiny", "--set", "batches_per_epoch=1", *extra],
    )


def test_too_many_folds_writes_nothing_and_the_right_command_then_runs(stores, tmp_path) -> None:
    runs = tmp_path / "runs"
    res = _train(stores["a"], runs, "--folds", "50")
    assert res.exit_code == 1
    assert "8 train recordings cannot be split into 50 folds" in res.output and "--folds 8 or fewer" in res.output
    assert not runs.exists() or not any(runs.iterdir())
    res = _train(stores["a"], runs, "--folds", "2")
    assert res.exit_code == 0, res.output
    assert json.loads((runs / "config.json").read_text())["folds"] == 2
    assert json.loads((runs / "store.json").read_text())["store"] == str(Path(stores["a"]).resolve())


def test_a_run_directory_left_without_a_round_takes_the_new_config(stores, tmp_path) -> None:
    runs = tmp_path / "runs"  # as an older version left it: config.json and folds.json, no round
    runs.mkdir()
    (runs / "config.json").write_text(json.dumps(get_config("tiny").replace(folds=50, batches_per_epoch=1).to_dict()))
    (runs / "folds.json").write_text("{}")
    res = _train(stores["a"], runs)
    assert res.exit_code == 0, res.output
    assert json.loads((runs / "config.json").read_text())["folds"] == 2


def test_negative_round_is_refused(stores, tmp_path) -> None:
    runs = tmp_path / "runs"
    res = _train(stores["a"], runs, "--round", "-1")
    assert res.exit_code != 0 and "--round must be 0 or more" in res.output and "got -1" in res.output
    assert not runs.exists()
    with pytest.raises(ValueError, match="--round must be 0 or more"):
        train_rounds(stores["a"], runs, get_config("tiny"), until_round=-2, progress=False)


def test_resuming_on_another_store_names_both_stores(stores, tmp_path) -> None:
    runs = tmp_path / "runs"
    assert _train(stores["a"], runs).exit_code == 0
    config, folds = (runs / "config.json").read_bytes(), (runs / "folds.json").read_bytes()
    a = str(Path(stores["a"]).resolve())
    for other, lacks in (("b", "8 of its 8"), ("sub", "2 of its 8")):
        res = _train(stores[other], runs, "--round", "1")
        assert res.exit_code == 1, res.output
        assert (
            f"this run was trained on the store {a}, and {stores[other]} lacks {lacks} train recordings" in res.output
            and f"resume it with --store {a}" in res.output
        )
    assert (runs / "config.json").read_bytes() == config and (runs / "folds.json").read_bytes() == folds
    assert not (runs / "round1").exists()
    (runs / "store.json").unlink()  # a run made before store.json: still refused, without the name
    res = _train(stores["b"], runs, "--round", "1")
    assert res.exit_code == 1 and "trained on another store (the run does not record which)" in res.output
