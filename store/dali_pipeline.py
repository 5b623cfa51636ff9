"""The DALI backend: encoded audio bytes -> decoded mono 48 kHz -> spectrogram -> mel filter bank -> dB.

The pipeline is a plain function (as in DALI's own examples); :class:`DaliLogMel` feeds it batches of
encoded files through ``external_source`` and returns numpy arrays. Decoding runs on the CPU (DALI's
audio decoder is CPU-only); the spectrogram and mel stages run on the GPU when ``device_id`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .params import MelParams


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except Exception:
        return False
    return True


def logmel_pipeline(params: MelParams, batch_size: int, num_threads: int, device_id: int | None):
    """Build (not run) the DALI pipeline; input ``encoded``, outputs ``(logmel, decoded_length)``."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(  # type: ignore[call-overload]  # DALI's stubs lack exec_dynamic (a keyword DALI takes)
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1, exec_dynamic=True
    )
    def pipeline():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        audio, _ = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True, sample_rate=params.sample_rate)
        length = audio.shape()
        if device_id is not None:
            audio = audio.gpu()
        spec = fn.spectrogram(
            audio,
            nfft=params.n_fft,
            window_length=params.n_fft,
            window_step=params.hop,
            center_windows=True,
            reflect_padding=False,
            power=2,
        )
        if params.power != 2.0:
            spec = fn.pow(spec, params.power / 2.0)
        mel = fn.mel_filter_bank(
            spec,
            sample_rate=params.sample_rate,
            nfilter=params.n_mels,
            freq_low=params.f_min,
            freq_high=params.f_max,
            normalize=True,
            mel_formula="slaney",
        )
        db = fn.to_decibels(mel, multiplier=10.0, reference=1.0, cutoff_db=params.floor_db)
        return db, length

    return pipeline()


class DaliLogMel:
    """Runs :func:`logmel_pipeline` over batches of encoded files (bytes)."""

    def __init__(self, params: MelParams, batch_size: int = 8, num_threads: int = 2, device_id: int | None = None):
        self.params = params
        self.batch_size = batch_size
        self.device_id = device_id
        self.pipe = logmel_pipeline(params, batch_size, num_threads, device_id)
        self.pipe.build()

    def __call__(self, encoded: Sequence[bytes | np.ndarray]) -> list[tuple[np.ndarray, int]]:
        """(logmel float32 (n_mels, frames), decoded samples) per input; raises if any input fails to decode."""
        results: list[tuple[np.ndarray, int]] = []
        for start in range(0, len(encoded), self.batch_size):
            chunk = [
                np.frombuffer(e, dtype=np.uint8) if isinstance(e, bytes) else e
                for e in encoded[start : start + self.batch_size]
            ]
            self.pipe.feed_input("encoded", chunk)
            db, length = self.pipe.run()
            if self.device_id is not None:
                db = db.as_cpu()
            for i in range(len(chunk)):
                results.append((np.array(db[i], dtype=np.float32), int(np.array(length[i])[0])))
        return results
