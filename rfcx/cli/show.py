"""How the command line prints a feature store and an integrity check."""

from __future__ import annotations

import typer


def print_check(report, prefix: str = "") -> None:  # noqa: ANN001 (store.integrity.VerifyReport)
    unchecked = (
        f"; {report.without_checksum} clip(s) written before checksums: only decompression checked"
        if report.without_checksum
        else ""
    )
    found = f"{len(report.damaged_clips)} damaged clip(s)" if report.damaged else "none damaged"
    typer.echo(f"{prefix}checked {report.clips} clips ({report.chunks} chunks): {found}{unchecked}")
    for damage in report.damaged:
        typer.echo(f"  damaged {damage}")


def print_store(fs) -> None:  # noqa: ANN001 (store.FeatureStore)
    from store.rejections import defects, rejected_csv_path, summarize

    s = fs.summary()
    p = fs.params
    typer.echo(
        f"store {s['path']}  (log-mel: {p.n_mels} mels, n_fft {p.n_fft}, hop {p.hop}, {p.sample_rate} Hz, "
        f"{p.f_min:g}-{p.f_max:g} Hz; built with {s['backend']})"
    )
    for split, d in s["splits"].items():
        typer.echo(f"  {split:<5} {d['clips']:>6} clips  {d['hours']:8.2f} h")
    if not fs.complete:
        return
    typer.echo(f"  boxes: {s['tp_boxes']} TP, {s['fp_boxes']} FP;  rejected inputs: {s['rejected']}")
    rejections = fs.rejections()
    shown = defects(rejections)  # each defect on its own line; the causes many rows share, grouped
    for r in shown[:20]:
        typer.echo(f"    rejected {r}")
    if len(shown) > 20:
        typer.echo(f"    ... and {len(shown) - 20} more (FeatureStore.rejected())")
    for line in summarize(rejections):
        typer.echo(f"    rejected {line}")
    listed = rejected_csv_path(fs.location) if rejections else None
    if listed is not None and listed.is_file():
        typer.echo(f"    every rejected input: {listed}")
    order, missing = fs.submission_ids(), fs.missing_submission_ids()
    if missing:
        more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
        typer.echo(
            f"  sample submission: {len(missing)} of its {len(order)} recordings have no stored test clip "
            f"(e.g. {', '.join(missing[:3])}{more}): no audio file, or rejected above; `rfcx infer --batch` "
            f"refuses to write a submission without them"
        )
