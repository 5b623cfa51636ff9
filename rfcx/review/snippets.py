"""Short audio snippets of events, cut from the data folder's recordings (``DATA/{train,test}/{id}.flac``) with
soundfile and written as FLAC (mono, 16 bit, the recording's sample rate): what the review page's players play."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf

from store.audio import AUDIO_SUFFIXES


def find_recording(data: Path | None, split: str, recording_id: str) -> Path | None:
    """The recording's audio file in ``data/split`` (any suffix the store builder reads), or None."""
    if data is None:
        return None
    for suffix in AUDIO_SUFFIXES:
        path = data / split / f"{recording_id}{suffix}"
        if path.is_file():
            return path
    return None


def write_snippet(src: Path, start_s: float, end_s: float, dst: Path) -> str | None:
    """Seconds ``start_s``..``end_s`` of ``src`` as a mono FLAC at ``dst``; returns None, or why nothing was written
    (the file does not read, or the span lies outside it)."""
    try:
        info = sf.info(str(src))
        sr = info.samplerate
        a = max(0, int(math.floor(start_s * sr)))
        b = min(info.frames, int(math.ceil(end_s * sr)))
        if b <= a:
            return f"{src.name}: {start_s:.1f}-{end_s:.1f} s lies outside its {info.frames / sr:.1f} s"
        audio, _ = sf.read(str(src), start=a, stop=b, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, ValueError) as exc:  # soundfile: LibsndfileError is a RuntimeError
        return f"{src.name}: does not read ({exc})"
    mono = np.clip(audio.mean(axis=1), -1.0, 1.0)
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), mono, sr, subtype="PCM_16", format="FLAC")
    return None
