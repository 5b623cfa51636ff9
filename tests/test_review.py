"""``rfcx review`` (issue 14): the static page of a tiny trained run, its links, what it says when parts are missing,
the detections it reads in every format, and (where Debian's chromium is installed) the page in a real browser:
every picture decodes, every audio snippet loads, the console stays quiet."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rfcx.cli import app
from rfcx.review import write_review
from rfcx.review.browser import check_page, find_browser, screenshot
from rfcx.runs.directory import RunDir
from rfcx.train.config import get_config
from rfcx.train.rounds import train_rounds
from tests.conftest import make_synth_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Rounds 0 and 1 of the tiny config on 8 train and 3 test clips of 10 s (no exported models: not needed)."""
    root = tmp_path_factory.mktemp("review")
    store = make_synth_store(root, n_train=8, n_test=3, seconds=10.0)
    train_rounds(
        str(store),
        root / "runs",
        get_config("tiny"),
        until_round=1,
        progress=False,
        echo=lambda *_: None,
        export_formats=(),
    )
    return {"root": root, "store": store, "runs": root / "runs", "data": root / "data"}


@pytest.fixture(scope="module")
def page(tiny, tmp_path_factory):  # noqa: ANN201 (rfcx.review.ReviewSummary)
    """The page of both rounds with every species' best event (threshold 0) and a snippet of each."""
    return write_review(
        tiny["runs"],
        tiny["store"],
        tmp_path_factory.mktemp("page") / "review",
        data=tiny["data"],
        top=1,
        train_clips=1,
        threshold=0.0,
        progress=False,
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if a.get(key):
                self.links.append((tag, a[key]))


def _links(index: Path) -> _Links:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser


def _check_self_contained(index: Path) -> _Links:
    """Every link is relative and resolves inside the folder (or is an anchor of the page); nothing is fetched."""
    html = index.read_text(encoding="utf-8")
    assert not re.search(r"https?:|(src|href)=\"//", html), "the page must not reference the network"
    parsed = _links(index)
    for tag, link in parsed.links:
        if link.startswith("#"):
            assert link[1:] in parsed.ids, link
            continue
        assert not link.startswith("/") and ".." not in link, link
        target = index.parent / link
        assert target.is_file() and target.stat().st_size > 100, f"<{tag}> {link} does not resolve"
    return parsed


def test_review_page_of_a_run(tiny, page, tmp_path) -> None:
    summary = page
    assert summary.index.name == "index.html" and summary.rounds == [0, 1]
    parsed = _check_self_contained(summary.index)
    html = summary.index.read_text()
    for section in ("rounds", "round-0", "round-1", *(f"species-{s}" for s in range(24))):
        assert section in parsed.ids
    imgs = [link for tag, link in parsed.links if tag == "img"]
    audio = [link for tag, link in parsed.links if tag == "audio"]
    assert "img/round0_loss.png" in imgs and "img/round1_loss.png" in imgs and "img/lwlrap.png" in imgs
    assert any(link.startswith("img/event_") for link in imgs) and any(link.startswith("img/train_") for link in imgs)
    # threshold 0: every species has events; each one has a snippet of the test clip cut from the data folder
    assert len(audio) == summary.snippets == summary.events > 0 and all(a.endswith(".flac") for a in audio)
    assert "<script" not in html and "Per-class average precision" in html and "round 1" in html
    assert len(imgs) == summary.images
    # written again over a page: replaced, not refused
    out = Path(shutil.copytree(summary.index.parent, tmp_path / "again"))
    again = write_review(tiny["runs"], tiny["store"], out, round_=0, top=1, train_clips=0, progress=False)
    assert again.rounds == [0] and "round-1" not in _check_self_contained(again.index).ids
    assert "no --data folder" in again.index.read_text()


def test_missing_parts_become_notes(tiny, tmp_path, monkeypatch) -> None:
    """Round 0 only, no pseudo labels, no test labels, audio missing: a page with notes, never a crash."""
    from store import FeatureStore

    runs = Path(shutil.copytree(tiny["runs"], tmp_path / "runs"))
    shutil.rmtree(runs / "round1")
    shutil.rmtree(RunDir(runs).pseudo_labels(0))
    (runs / "lwlrap.png").unlink()
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)  # an empty data folder: no recording to cut a snippet from
    monkeypatch.setattr(FeatureStore, "truth", lambda self, split="test": None)
    summary = write_review(
        runs, tiny["store"], tmp_path / "out", data=data, top=1, train_clips=1, threshold=0.0, progress=False
    )
    _check_self_contained(summary.index)
    html = summary.index.read_text()
    assert summary.rounds == [0] and summary.snippets == 0
    assert "no test labels" in html and "no pseudo labels" in html and "without audio" in html
    assert "no audio:" in html and "is not in" in html
    joined = " ".join(summary.notes)
    assert "no test labels" in joined and "no pseudo labels" in joined


def _window_scores(run: Path) -> pd.DataFrame:
    from rfcx.review.content import round_scores, run_grid, window_table

    return window_table(round_scores(RunDir(run), 1).test, run_grid(RunDir(run)))


@pytest.mark.parametrize(
    "fmt, level, target",
    [
        ("csv", "events", "d.csv"),
        ("csv", "windows", "w.csv"),
        ("parquet", "events", "d.parquet"),
        ("raven", "events", "raven"),
        ("raven", "events", "all.txt"),
        ("audacity", "events", "labels"),
    ],
)
def test_detections_of_every_format_read_back(tiny, tmp_path, fmt, level, target) -> None:
    """What `rfcx infer --detections` writes, in each format and level, reads back as the same events (the
    formats that keep less, as much as they keep) and is guessed from the file where no format is given."""
    from engine.detection_formats import guess_format, read_detections
    from engine.events import merge_events
    from engine.outputs import write_detections

    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    windows = _window_scores(tiny["runs"])
    path = tmp_path / target
    write_detections(windows, path, 0.3, level=level, fmt=fmt)
    assert guess_format(path) == fmt
    back = read_detections(path)
    if level == "windows":
        expected = windows.melt(id_vars=["recording_id", "start_s", "end_s"], value_vars=[f"s{c}" for c in range(24)])
        assert len(back) == int((expected.value > 0.3).sum()) and (back.n_windows == 1).all()
        return
    events = merge_events(windows, 0.3)
    key = ["recording_id", "species_id", "start_s"]
    back, events = back.sort_values(key).reset_index(drop=True), events.sort_values(key).reset_index(drop=True)
    assert back.recording_id.tolist() == events.recording_id.tolist()
    assert back.species_id.tolist() == events.species_id.tolist()
    np.testing.assert_allclose(back[["start_s", "end_s"]], events[["start_s", "end_s"]], atol=1e-5)
    np.testing.assert_allclose(back.peak_score, events.peak_score, atol=1e-3)


def test_review_shows_a_detections_file(tiny, tmp_path) -> None:
    from engine.outputs import write_detections

    write_detections(_window_scores(tiny["runs"]), tmp_path / "raven", 0.0, fmt="raven")
    summary = write_review(
        tiny["runs"],
        tiny["store"],
        tmp_path / "out",
        detections=tmp_path / "raven",
        data=tiny["data"],
        top=1,
        train_clips=0,
        progress=False,
    )
    _check_self_contained(summary.index)
    assert summary.events > 0 and "raven, by peak score" in summary.index.read_text()
    # a windows-level table: its overlapping windows are merged into events before the best are picked
    write_detections(_window_scores(tiny["runs"]), tmp_path / "w.csv", 0.0, level="windows")
    summary = write_review(
        tiny["runs"],
        tiny["store"],
        tmp_path / "out2",
        detections=tmp_path / "w.csv",
        top=1,
        train_clips=0,
        progress=False,
    )
    html = summary.index.read_text()
    assert "its overlapping windows merged" in html
    assert re.search(r"\(mean [0-9.]+, (?:[2-9]|[1-9][0-9]+) windows\)", html)


def test_cli_review_and_its_errors(tiny, tmp_path) -> None:
    runner = CliRunner()
    base = ["review", "--store", str(tiny["store"]), "--no-progress", "--top", "1", "--train-clips", "1"]
    res = runner.invoke(
        app,
        [
            *base,
            "--runs",
            str(tiny["runs"]),
            "--out",
            str(tmp_path / "page"),
            "--round",
            "1",
            "--data",
            str(tiny["data"]),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and (tmp_path / "page" / "index.html").is_file()
    res = runner.invoke(app, [*base, "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "p2")])
    assert res.exit_code == 1 and "run directory not found" in res.output
    res = runner.invoke(
        app,
        ["review", "--runs", str(tiny["runs"]), "--store", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "p3")],
    )
    assert res.exit_code == 1 and "feature store not found" in res.output
    res = runner.invoke(app, [*base, "--runs", str(tiny["runs"]), "--out", str(tmp_path / "p4"), "--round", "7"])
    assert res.exit_code == 1 and "round 7 is not complete" in res.output
    res = runner.invoke(app, [*base, "--runs", str(tiny["runs"]), "--out", str(tmp_path / "p5"), "--round", "x"])
    assert res.exit_code == 1 and "give a round number" in res.output
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    res = runner.invoke(app, [*base, "--runs", str(tiny["runs"]), "--out", str(tmp_path / "mine")])
    assert res.exit_code == 1 and "other files than a review page" in res.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    res = runner.invoke(
        app, [*base, "--runs", str(tiny["runs"]), "--out", str(tmp_path / "p6"), "--data", str(tmp_path / "nodata")]
    )
    assert res.exit_code == 1 and "data folder not found" in res.output


def test_page_in_a_headless_browser(page, tmp_path) -> None:
    """Debian's chromium loads the page: every image decodes, every snippet loads, no console message; and it
    takes a screenshot. Skipped where no Chromium is installed (`make test` installs it where apt can)."""
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium on the PATH (apt-get install chromium): the page's browser check is skipped")
    summary = page
    check = check_page(summary.index, browser)
    assert len(check.images) == summary.images and len(check.audio) == summary.snippets > 0
    assert [src for src, ok in check.images if not ok] == [] and [src for src, ok in check.audio if not ok] == []
    assert check.console == [], check.console
    assert check.ok and "hromium" in check.version
    png = screenshot(summary.index, tmp_path / "shot.png", sections=["rounds", "species-0"], height=1200)
    assert not list(summary.index.parent.glob(".*.html"))  # the browser's copies are removed
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1280, 1200)
        assert len(image.convert("RGB").getcolors(1 << 16) or []) > 20  # not a blank page
    # a broken link is seen: an image and a snippet removed after writing
    broken = Path(shutil.copytree(summary.index.parent, tmp_path / "broken"))
    next(broken.glob("img/event_*.png")).unlink()
    next(broken.glob("audio/*.flac")).unlink()
    check = check_page(broken / "index.html", browser)
    assert [ok for _, ok in check.images].count(False) == 1 and [ok for _, ok in check.audio].count(False) == 1
