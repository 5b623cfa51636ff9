"""The build's backends: which one computes the log-mel (:func:`choose_backend`), and one call over either
(:class:`_LogMel`: files in, log-mel and decoded samples or a rejection out), with the reasons of files that do not
decode."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr

from . import layout
from .audio import AudioInfo, decode
from .dali_pipeline import DaliLogMel, dali_available
from .errors import BadInputError, InvalidInputError, Rejection
from .location import Location
from .params import MelParams


class Backend(StrEnum):
    """What computes the log-mel spectrograms: DALI, torch, or the one measured fastest on the device (auto)."""

    AUTO = "auto"
    DALI = "dali"
    TORCH = "torch"


BACKENDS = tuple(m.value for m in Backend)  # the names, as plain strings


def choose_backend(
    backend: str,
    device: str,
    store_path: str | Path | Location | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """``auto`` -> the backend that measured fastest where the build runs: on a GPU DALI (where it is installed),
    on the CPU torch (banded mel product, clips on all cores: ``benchmarks/store_build.py``); a store that
    already holds clips keeps the backend it was built with. ``device`` is ``cpu`` or ``gpu`` (resolved)."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    if store_path is not None:
        built_with = _stored_backend(store_path, storage_options)
        if built_with is not None:
            return built_with
    return "dali" if device == "gpu" and dali_available() else "torch"


def _stored_backend(store_path: str | Path | Location, storage_options: Mapping[str, Any] | None) -> str | None:
    """The backend of an existing store that holds clips, else None."""
    try:
        root = zarr.open_group(Location.parse(store_path, storage_options).zarr_store(), mode="r")
        built_with = root.attrs.get("backend")
        return built_with if built_with in BACKENDS and layout.holds_clips(root) else None
    except Exception:  # no store yet, or not one: open_or_create says what is wrong
        return None


class _LogMel:
    """One backend behind one call: files in, (logmel, decoded samples) or a rejection out, per file."""

    def __init__(
        self, backend: str, device: str, params: MelParams, batch_size: int, threads: int | None = None
    ) -> None:
        self.params = params
        self.backend = backend
        self.threads = threads = max(1, threads or os.cpu_count() or 1)
        if backend == "dali":
            self.dali = DaliLogMel(
                params,
                batch_size=batch_size,
                num_threads=threads,
                device_id=_cuda_device() if device == "gpu" else None,
            )
        elif backend == "torch":
            from .torch_mel import TorchLogMel

            self.torch = TorchLogMel(params, "cuda" if device == "gpu" else "cpu")
            self.on_cpu = device != "gpu"
            # decoding (libsndfile releases the GIL), and on the CPU the log-mel too (torch releases it): one clip
            # per thread, all the cores given (a worker process per core measured the same: 19.4 vs 19.0 clips/s)
            self.pool = ThreadPoolExecutor(threads)
        else:
            raise InvalidInputError(f"backend must be dali or torch, got {backend!r}")

    @contextmanager
    def threads_for_clips(self) -> Iterator[None]:
        """While clips are computed on the CPU by the torch backend, one clip per thread of the pool, torch's own
        intra-op threads are set to 1 (more would only contend for the same cores); restored after."""
        if self.backend != "torch" or not self.on_cpu or self.threads == 1:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def submit(self, infos: Sequence[AudioInfo]) -> Callable[[], Iterable[tuple[np.ndarray, int] | Rejection]]:
        """Start the batch where it can run while the caller goes on (the torch backend's threads on the CPU),
        and return what gives its results, one per file in order (each as soon as it is in): ``(logmel, decoded
        samples)`` or a rejection."""
        if self.backend == "torch" and self.on_cpu:
            # every clip handed to the threads now (on the CPU, _load computes the log-mel too)
            started = cast(Iterator[tuple[np.ndarray, int] | Rejection], self.pool.map(self._load, infos))
            return lambda: started
        return lambda: self(infos)

    def __call__(self, infos: Sequence[AudioInfo]) -> list[tuple[np.ndarray, int] | Rejection]:
        if self.backend == "dali":
            return self._dali(infos)
        return self._torch(infos)

    def _dali(self, infos: Sequence[AudioInfo]) -> list[tuple[np.ndarray, int] | Rejection]:
        encoded = [np.fromfile(i.path, dtype=np.uint8) for i in infos]
        try:
            return [self._check_length(i, r) for i, r in zip(infos, self.dali(encoded))]
        except RuntimeError:
            pass  # some file of the batch does not decode: find which, one at a time
        out: list[tuple[np.ndarray, int] | Rejection] = []
        for info, enc in zip(infos, encoded):
            try:
                out.append(self._check_length(info, self.dali([enc])[0]))
            except RuntimeError as exc:
                out.append(_decode_failure(info.path, exc))
        return out

    def _check_length(self, info: AudioInfo, result: tuple[np.ndarray, int]) -> tuple[np.ndarray, int] | Rejection:
        expected = info.frames * self.params.sample_rate / info.sample_rate
        if result[1] < 0.99 * expected - 1:
            return Rejection(str(info.path), f"truncated: decoded {result[1]} of {int(expected)} samples")
        return result

    def _load(self, info: AudioInfo) -> np.ndarray | tuple[np.ndarray, int] | Rejection:
        """One file decoded; on the CPU its log-mel computed too (one clip per thread)."""
        try:
            signal = decode(info.path, self.params.sample_rate)[0]
        except BadInputError as exc:
            return exc.rejection
        return (self.torch.logmel_cpu(signal), len(signal)) if self.on_cpu else signal

    def _torch(self, infos: Sequence[AudioInfo]) -> list[tuple[np.ndarray, int] | Rejection]:
        if self.on_cpu:  # _load computes the log-mel too
            return cast(list[tuple[np.ndarray, int] | Rejection], list(self.pool.map(self._load, infos)))
        decoded = list(self.pool.map(self._load, infos))
        signals = [d for d in decoded if isinstance(d, np.ndarray)]
        mels = iter(self.torch(signals))
        return [d if isinstance(d, Rejection) else (next(mels), len(d)) for d in decoded]


def _cuda_device() -> int:
    """The current CUDA device (a process of a multi-GPU launch has set its own)."""
    import torch

    return torch.cuda.current_device()


def _decode_failure(path: Path, exc: Exception) -> Rejection:
    """The clearest reason available: libsndfile's, else DALI's first line."""
    try:
        decode(path, 48_000)
    except BadInputError as bad:
        return bad.rejection
    first = next((ln.strip() for ln in str(exc).splitlines() if "rror" in ln), str(exc).splitlines()[0])
    return Rejection(str(path), f"corrupt audio (DALI: {first[:200]})")
