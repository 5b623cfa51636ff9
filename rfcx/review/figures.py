"""The review page's pictures: spectrograms cut from the feature store, as small PNG files.

- an event: its time span (with a margin) of the recording's log-mel spectrogram, the event's span and the
  species' band drawn as a box;
- a train clip: the whole clip with its TP (solid) and FP (dashed) boxes, the reviewed species' thick and the
  others thin, and beneath it the species' pseudo labels of each round on the same time axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from store import FeatureStore, MelParams  # noqa: E402
from store.melbank import hz_to_mel_bin  # noqa: E402

CMAP = "magma"
DPI = 80
TICKS_HZ = (500, 1000, 2000, 4000, 8000, 16000)
TP_COLOUR, FP_COLOUR, EVENT_COLOUR = "#3ddc84", "#ff5a5a", "#35d0ff"


def save_png(fig, path: Path) -> None:  # noqa: ANN001 (Figure)
    """The figure as a palette PNG (128 colours): a noisy spectrogram takes about a third of the bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def mel_bin(hz: float | np.ndarray, params: MelParams) -> np.ndarray:
    """Fractional mel bin of a frequency, inside the spectrogram (0 Hz and the Nyquist frequency at its edges)."""
    b = hz_to_mel_bin(np.clip(hz, params.f_min, params.f_max), params.n_mels, params.f_min, params.f_max)
    return np.clip(b, -0.5, params.n_mels - 0.5)


def _spectrogram(ax, mel: np.ndarray, t0: float, t1: float, params: MelParams) -> None:  # noqa: ANN001 (Axes)
    lo, hi = np.percentile(mel, [5, 99.7]) if mel.size else (0.0, 1.0)
    ax.imshow(
        mel,
        origin="lower",
        aspect="auto",
        cmap=CMAP,
        vmin=lo,
        vmax=max(hi, lo + 1e-3),
        extent=(t0, t1, -0.5, params.n_mels - 0.5),
        interpolation="antialiased",
    )
    ticks = [hz for hz in TICKS_HZ if params.f_min < hz < params.f_max]
    ax.set_yticks(mel_bin(np.array(ticks, dtype=np.float64), params))
    ax.set_yticklabels([f"{hz / 1000:g}k" for hz in ticks], fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("Hz", fontsize=7)


def _box(
    ax,
    t0: float,
    t1: float,
    low: float,
    high: float,
    params: MelParams,
    colour: str,  # noqa: ANN001
    width: float,
    style: str = "-",
) -> None:
    if math.isnan(low) or math.isnan(high):  # no band known: the span's edges only
        for t in (t0, t1):
            ax.axvline(t, color=colour, linewidth=width, linestyle=style)
        return
    b0, b1 = mel_bin(low, params), mel_bin(high, params)
    ax.add_patch(
        Rectangle(
            (t0, float(b0)), t1 - t0, float(b1 - b0), fill=False, edgecolor=colour, linewidth=width, linestyle=style
        )
    )


def event_png(fs: FeatureStore, event, path: Path, margin_s: float = 1.0) -> tuple[float, float]:  # noqa: ANN001
    """The event's spectrogram (``event``: a row of an events table) to ``path``; returns the span shown (s)."""
    params = fs.params
    fps = params.frames_per_second
    length_s = fs.n_frames(event.recording_id) / fps
    t0 = max(0.0, float(event.start_s) - margin_s)
    t1 = min(length_s, float(event.end_s) + margin_s)
    f0 = int(math.floor(t0 * fps))
    n = max(1, int(math.ceil(t1 * fps)) - f0)
    mel = fs.crop(event.recording_id, f0, n)
    fig, ax = plt.subplots(figsize=(4.0, 2.1))
    _spectrogram(ax, mel, f0 / fps, (f0 + n) / fps, params)
    _box(
        ax,
        float(event.start_s),
        float(event.end_s),
        float(event.low_hz),
        float(event.high_hz),
        params,
        EVENT_COLOUR,
        1.6,
    )
    ax.set_xlabel("s", fontsize=7, labelpad=1)
    fig.tight_layout(pad=0.3)
    save_png(fig, path)
    return t0, t1


def train_clip_png(
    fs: FeatureStore,
    recording_id: str,
    species: int,
    boxes: pd.DataFrame,
    curves: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: Path,
) -> None:
    """A train clip with its boxes (``boxes``: the clip's TP and FP boxes, ``is_tp``), and beneath it the
    ``curves`` (label, window centres in s, the species' pseudo labels) of ``species``."""
    params = fs.params
    mel = fs.mel(recording_id)
    length_s = mel.shape[1] / params.frames_per_second
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9.0, 3.6), sharex=True, gridspec_kw={"height_ratios": [2.2, 1.0], "hspace": 0.08}
    )
    _spectrogram(top, mel, 0.0, length_s, params)
    for box in boxes.itertuples():
        mine = int(box.species_id) == species
        colour = TP_COLOUR if box.is_tp else FP_COLOUR
        _box(
            top,
            box.t_min,
            box.t_max,
            box.f_min,
            box.f_max,
            params,
            colour,
            2.0 if mine else 0.7,
            "-" if box.is_tp else "--",
        )
        top.annotate(
            f"{'TP' if box.is_tp else 'FP'} {int(box.species_id)}",
            (box.t_min, float(mel_bin(box.f_max, params))),
            xytext=(1, 2),
            textcoords="offset points",
            fontsize=6 if mine else 5,
            color=colour,
            fontweight="bold" if mine else "normal",
        )
        if mine:
            bottom.axvspan(box.t_min, box.t_max, color=colour, alpha=0.25, linewidth=0)
    for label, times, values in curves:
        bottom.plot(times, values, linewidth=1.1, label=label)
    bottom.set_ylim(-0.03, 1.03)
    bottom.set_xlim(0.0, length_s)
    bottom.set_yticks([0, 0.5, 1])
    bottom.tick_params(labelsize=7)
    bottom.set_ylabel(f"species {species}", fontsize=7)
    bottom.set_xlabel("s", fontsize=7, labelpad=1)
    bottom.grid(alpha=0.3)
    if curves:
        bottom.legend(fontsize=6, loc="upper right", ncol=len(curves))
    else:
        bottom.text(
            0.5,
            0.5,
            "no pseudo labels for this clip",
            transform=bottom.transAxes,
            ha="center",
            va="center",
            fontsize=7,
            color="dimgrey",
        )
    fig.subplots_adjust(left=0.06, right=0.99, top=0.98, bottom=0.11)
    save_png(fig, path)


def copy_png(src: Path, dst: Path) -> bool:
    """Copy a PNG the run already has (loss.png, lwlrap.png); False where it is missing."""
    if not src.is_file():
        return False
    dst.write_bytes(src.read_bytes())
    return True
