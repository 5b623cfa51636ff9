"""Commands of the data side: ``synth`` (a synthetic data set), ``build-store`` (the feature store), ``info``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from rfcx.cli import options
from rfcx.cli.core import app
from rfcx.cli.options import choice
from rfcx.cli.show import print_check, print_store
from rfcx.errors import StoppedAtBadInput, UsageError
from store.errors import DamagedStoreError


class SpeciesMix(StrEnum):
    """``--mix``: how the synthetic species are chosen (see `rfcx synth --help`)."""

    ZIPF = "zipf"  # a skewed mix shared by train and test, labels as sparse as the competition's
    LABELS = "labels"  # the species follow the labels


class CallKind(StrEnum):
    """``--calls``: how the synthetic calls vary (see `rfcx synth --help`)."""

    VARIABLE = "variable"  # song types, individuals, choruses, distance, unlabelled outsiders (rfcx.synth.variety)
    FIXED = "fixed"  # one call shape per species, small pitch and duration jitter


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the data set into (competition layout).")],
    train: Annotated[int, typer.Option("--train", help="Number of train clips.")] = 100,
    test: Annotated[int, typer.Option("--test", help="Number of test clips.")] = 40,
    seconds: Annotated[float, typer.Option("--seconds", help="Length of each clip in seconds.")] = 60.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
    background: Annotated[
        list[Path] | None,
        typer.Option(
            "--background",
            help="Real recordings (FLAC files or folders of them; "
            "repeat the option) to mix in as background, one per clip.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes generating clips.")] = 1,
    mix: Annotated[
        str,
        typer.Option(
            "--mix",
            help="zipf (default): a skewed species mix shared by train and test with labels "
            "as sparse as the competition's; labels: the species follow the labels (--tp-fraction, "
            "--label-density).",
        ),
    ] = "zipf",
    zipf_s: Annotated[
        float, typer.Option("--zipf", help="zipf mix: presence weight of the species of rank r is r^-S (0: uniform).")
    ] = 1.0,
    species_per_clip: Annotated[
        float, typer.Option("--species-per-clip", help="zipf mix: mean species per clip (Poisson).")
    ] = 1.5,
    tp_per_clip: Annotated[
        float, typer.Option("--tp-per-clip", help="zipf mix: TP boxes per train clip (competition: 0.26).")
    ] = 0.26,
    fp_per_clip: Annotated[
        float, typer.Option("--fp-per-clip", help="zipf mix: FP boxes per train clip (competition: 1.6).")
    ] = 1.6,
    tp_balance: Annotated[
        float,
        typer.Option(
            "--tp-balance",
            help="zipf mix: 1 spreads the TP boxes evenly over "
            "the species (as the competition's tables), 0 makes them follow "
            "presence.",
        ),
    ] = 1.0,
    tp_fraction: Annotated[
        float | None,
        typer.Option(
            "--tp-fraction", help="labels mix: share of train clips with TP boxes, in (0, 1] (default: real ~24 %)."
        ),
    ] = None,
    label_density: Annotated[
        float,
        typer.Option(
            "--label-density",
            help="labels mix: label more of each train clip, >= 1: up to round(D) calls "
            "per TP species and ~D times the FP rows (default 1: the real sparsity).",
        ),
    ] = 1.0,
    calls: Annotated[
        str,
        typer.Option(
            "--calls",
            help="variable (default): calls vary as real ones do: 1-4 song types per species, pitch +-12 %, "
            "duration +-35 %, bent contours, choruses, distant individuals, unlabelled species outside the 24; "
            "fixed: one call shape per species (pitch +-5 %, duration +-15 %).",
        ),
    ] = "variable",
    song_types: Annotated[
        int, typer.Option("--song-types", help="variable calls: the most song types a species sings (1-4).")
    ] = 4,
    outsiders: Annotated[
        float,
        typer.Option("--outsiders", help="variable calls: mean number of unlabelled species outside the 24 per clip."),
    ] = 1.0,
) -> None:
    """Write a synthetic data set in the competition's layout (train/, test/, train_tp.csv, ...)."""
    from rfcx.synth.dataset import synthesize
    from rfcx.synth.plan import Mix
    from rfcx.synth.variety import CallVariety

    species_mix = None
    if choice(mix, SpeciesMix, "--mix") == SpeciesMix.ZIPF:
        if tp_fraction is not None or label_density != 1.0:
            raise UsageError(
                "--tp-fraction and --label-density belong to --mix labels; --mix zipf sets the "
                "label density with --tp-per-clip and --fp-per-clip"
            )
        species_mix = Mix(
            zipf_s=zipf_s,
            species_per_clip=species_per_clip,
            tp_per_clip=tp_per_clip,
            fp_per_clip=fp_per_clip,
            tp_balance=tp_balance,
        )
    variety = None
    if choice(calls, CallKind, "--calls") == CallKind.VARIABLE:
        variety = CallVariety(song_types=song_types, outsiders=outsiders)
    elif (song_types, outsiders) != (4, 1.0):
        raise UsageError("--song-types and --outsiders belong to --calls variable")
    s = synthesize(
        out_dir,
        n_train=train,
        n_test=test,
        seconds=seconds,
        seed=seed,
        background=background or None,
        workers=workers,
        tp_fraction=tp_fraction,
        label_density=label_density,
        mix=species_mix,
        calls=variety,
    )
    typer.echo(
        f"wrote {s.n_train} train + {s.n_test} test clips of {s.seconds:g} s, {s.n_tp_rows} TP and {s.n_fp_rows} FP "
        f"boxes to {s.out_dir} in {s.elapsed_s:.1f} s"
    )


@app.command("build-store")
def build_store_cmd(
    data: Annotated[Path, typer.Option("--data", help="Data folder: train/, test/, train_tp.csv, train_fp.csv.")],
    store: Annotated[
        str,
        typer.Option(
            "--store",
            help="Feature store to create or extend (a .zarr folder or an fsspec URL: s3://bucket/features.zarr).",
        ),
    ],
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="auto (default: DALI on a GPU, torch on the CPU, where "
            "each measured fastest; an existing store keeps its own), dali or torch.",
        ),
    ] = "auto",
    device: options.Device = "auto",
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad input (exit code 2).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Clips decoded per pipeline run.")] = 8,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="First read every stored chunk, and decode the damaged "
            "clips again from their audio (the others are left as they are).",
        ),
    ] = False,
) -> None:
    """Decode every clip and store its log-mel spectrogram in a chunked Zarr store (resumable)."""
    import os

    from tqdm.auto import tqdm

    from rfcx.process_group import launched
    from store import BadInputError, FeatureStore, build_store
    from store.backends import Backend
    from store.device import resolve_device
    from store.rejections import is_grouped

    choice(backend, Backend, "--backend")
    try:
        with launched(resolve_device(device).type == "cuda") as group:
            summary = build_store(
                data,
                store,
                backend=backend,
                device=device,
                strict=strict,
                batch_size=batch_size,
                # defects one line each as found; the causes many rows share are grouped at the end (_print_store)
                on_reject=lambda r: None if is_grouped(r) else tqdm.write(f"rejected {r}"),
                progress=group.is_main,
                shard=(group.rank, group.world),
                gather=lambda obj: group.gather_after_work(obj, "build-store"),
                threads=max(1, (os.cpu_count() or 1) // group.local_world),
                repair=repair,
            )
    except BadInputError as exc:  # --strict: the first bad input ends the build
        raise StoppedAtBadInput(
            f"{exc} (--strict: stopped at the first bad input; what was stored before stays stored)"
        ) from exc
    if not group.is_main:
        return
    for message in summary.warnings:
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    repaired = len({(d.split, d.recording_id) for d in summary.repaired})
    typer.echo(
        f"backend {summary.backend} on {summary.device}: stored {sum(summary.stored.values()) - repaired} new clips "
        f"({summary.clips_per_s:.2f} clips/s, {summary.x_realtime:.0f}x real time), "
        + (f"repaired {repaired} damaged clip{'s' if repaired != 1 else ''}, " if summary.checked is not None else "")
        + f"skipped {sum(summary.skipped.values())} already stored, {len(summary.rejected)} rejected"
        + (f", {summary.resampled} resampled to 48 kHz" if summary.resampled else "")
    )
    if summary.checked is not None:
        print_check(summary.checked, "--repair: ")
        for damage in summary.repaired:
            typer.echo(f"  repaired {damage} (decoded again from its audio)")
    print_store(FeatureStore.open(store))


@app.command()
def info(
    store: Annotated[str, typer.Option("--store", help="Feature store to describe.")],
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Also read every chunk of every clip (a progress bar) and "
            "list the damaged clips (exit code 1 when any).",
        ),
    ] = False,
) -> None:
    """Describe a feature store: clips and hours per split, boxes, rejected inputs, submission rows without a clip;
    with --check, whether every stored chunk reads back as written."""
    from store import FeatureStore

    fs = FeatureStore.open(store)
    print_store(fs)
    fs.require_complete()  # after what is there: one error line naming the clips so far and how to finish
    if check:
        report = fs.verify()
        print_check(report)
        if not report.ok:
            n = len(report.damaged_clips)
            raise DamagedStoreError(
                f"{store}: {n} damaged clip{'s' if n != 1 else ''}; run `rfcx build-store --repair --data DIR "
                f"--store {store}` to decode {'them' if n != 1 else 'it'} again from the audio"
            )
