"""``rfcx review``: a static HTML page of a run, to look at rather than read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rfcx.cli import options
from rfcx.cli.core import app
from rfcx.cli.options import DEFAULT_RUNS, DEFAULT_STORE, local_output, round_number


@app.command()
def review(
    runs: options.LocalRuns = Path(DEFAULT_RUNS),
    store: Annotated[
        str,
        typer.Option("--store", help="The feature store the run was trained on (the spectrograms are cut from it)."),
    ] = DEFAULT_STORE,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder to write the page into: index.html, img/, audio/ (a page written there before is replaced).",
        ),
    ] = Path("demo/review"),
    round_: Annotated[
        str,
        typer.Option(
            "--round",
            help="'all' (every complete round) or a round K (the table "
            "shows rounds 0..K; events and pseudo labels of round K).",
        ),
    ] = "all",
    detections: Annotated[
        Path | None,
        typer.Option(
            "--detections",
            help="Events to show: a file or folder `rfcx infer --detections` wrote (csv, parquet, raven, "
            "audacity; events or windows); default: the round's ensemble on the store's test clips.",
            show_default=False,
        ),
    ] = None,
    detections_format: options.DetectionsFormat = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Data folder (train/, test/) to cut the audio snippets from; without it, no players.",
            show_default=False,
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Events shown per species (best peak score first).")] = 5,
    train_clips: Annotated[
        int, typer.Option("--train-clips", help="Train clips with boxes shown per species, above their pseudo labels.")
    ] = 2,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="Score threshold of the events made from the round's test scores (without --detections).",
        ),
    ] = 0.5,
    progress: options.Progress = True,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            "--screenshot",
            help="Also save a screenshot of the page here (PNG; needs Chromium, Debian's chromium package).",
            show_default=False,
        ),
    ] = None,
    screenshot_sections: Annotated[
        str | None,
        typer.Option(
            "--screenshot-sections",
            help="Sections the screenshot shows, comma-separated ids: rounds, round-K, "
            "species-S (default: the page from its top).",
            show_default=False,
        ),
    ] = None,
    screenshot_height: Annotated[
        int, typer.Option("--screenshot-height", help="Height of the screenshot in pixels (1280 wide).")
    ] = 2000,
) -> None:
    """A static HTML page of a run (one folder that opens offline): each round beside the yardsticks, its loss
    curves and per-class AP; per species the top events (spectrogram, audio snippet, score) and train clips with
    their TP/FP boxes above the pseudo labels they produced."""
    from rfcx.review import write_review

    local_output(out, "--out")
    summary = write_review(
        runs,
        store,
        out,
        round_number(round_, also=("all",)),
        detections,
        detections_format,
        data,
        top=top,
        train_clips=train_clips,
        threshold=threshold,
        progress=progress,
    )
    for note in summary.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"wrote {summary.index} (rounds {', '.join(map(str, summary.rounds))}: {summary.events} events, "
        f"{summary.images} images, {summary.snippets} audio snippets; {summary.seconds:.0f} s)"
    )
    if screenshot is not None:
        from rfcx.review.browser import BrowserError
        from rfcx.review.browser import screenshot as take_screenshot

        sections = [s.strip() for s in (screenshot_sections or "").split(",") if s.strip()]
        try:
            shot = take_screenshot(summary.index, screenshot, sections or None, height=screenshot_height)
        except BrowserError as exc:
            raise BrowserError(f"--screenshot: {exc} (the page itself is written)") from exc
        typer.echo(f"wrote {shot}")
