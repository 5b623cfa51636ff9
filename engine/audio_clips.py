"""Audio files that are not in a feature store, as clips for the engine: decoded and turned into log-mel
spectrograms with the store's own pipeline (``store.audio.decode`` + ``store.torch_mel.TorchLogMel``)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from store import BadInputError, MelParams, Rejection, layout
from store.audio import AUDIO_SUFFIXES, decode, probe
from store.errors import InvalidInputError, NotFoundError
from store.torch_mel import TorchLogMel


def find_audio(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files given, plus the audio files (``.flac``, ``.wav``, ``.ogg``) under folders given, sorted per folder."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            raise NotFoundError(f"{p}: no such file or folder")
    if not found:
        raise InvalidInputError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


class AudioClips:
    """``mel(recording_id)`` for audio files; the recording id is the file's stem (must be unique).

    Every file's header is checked up front (:func:`store.audio.probe`): an unreadable file raises
    :class:`store.BadInputError` naming it before any work is done, or with ``skip_bad`` is left out and
    recorded in :attr:`rejected` (a file whose header reads but whose audio does not decode raises from
    :meth:`mel`: the engine's ``on_bad`` skips it). Two files with one recording id are an error either way.
    """

    def __init__(self, files: Sequence[str | os.PathLike], params: MelParams, skip_bad: bool = False) -> None:
        self.params = params
        self.files: dict[str, Path] = {}
        self.rejected: list[Rejection] = []
        for f in map(Path, files):
            if f.stem in self.files:
                raise InvalidInputError(f"two files share the recording id {f.stem!r}: {self.files[f.stem]} and {f}")
            try:
                probe(f)
            except BadInputError as exc:
                if not skip_bad:
                    raise
                self.rejected.append(exc.rejection)
                continue
            self.files[f.stem] = f
        self._local = threading.local()

    @property
    def ids(self) -> list[str]:
        return list(self.files)

    @property
    def fingerprint(self) -> str:
        """Names these files (paths, sizes, times) for a resumable run's manifest."""
        h = hashlib.sha1()
        for f in self.files.values():
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"{len(self.files)} audio files {h.hexdigest()[:12]}"

    def mel(self, recording_id: str) -> np.ndarray:
        """Decode (downmix, resample to the store's rate) and compute the (n_mels, frames) dB log-mel, rounded
        through the store's float16 as a stored clip is, so that a file scores as it would from a store."""
        signal, _ = decode(self.files[recording_id], self.params.sample_rate)
        logmel = getattr(self._local, "logmel", None)
        if logmel is None:
            logmel = self._local.logmel = TorchLogMel(self.params, "cpu")
        return logmel([signal])[0].astype(layout.MEL_DTYPE).astype(np.float32)
