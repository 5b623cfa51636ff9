"""Where a training run keeps its files (one place for training, pseudo labels, export and inference).

    RUNS/
      config.json                         the TrainConfig the run was made with (a resumed run must match)
      store.json                          the feature store it was made on and its log-mel parameters (a resumed
                                          run's store must hold every recording of folds.json, with these)
      folds.json                          the fold of every train recording
      best_round.json                     the complete round with the best held-out signal
                                          (rfcx.train.round_metrics.round_signal), with the signal of every
                                          complete round: `rfcx infer`/`export`'s default
      round{k}/
        members/{member}_fold{f}/checkpoint.pt   model + optimizer + scheduler + RNG + history + config;
                                          "complete": True once its last epoch is done
        members/{member}_fold{f}/predictions.npz OOF windows of its held-out train clips and test windows
        pseudo.zarr                       soft labels for round k+1: one (n_windows, 24) array per train clip
        models/{member}_fold{f}.ts / .pt2 exported TorchScript / torch.export programs (+ metadata)
        metrics.json, *.png               per-round report
        complete.json                     written last: the round is complete

``member`` is ``{backbone}-{crop_seconds}s``, e.g. ``mobilenetv3_small_100-4s``. ``RUNS`` may also be an
fsspec URL (``s3://bucket/runs``): :func:`open_run` mirrors it in a local cache folder (:mod:`rfcx.runs.mirror`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rfcx.errors import InvalidInputError

if TYPE_CHECKING:
    from rfcx.runs.mirror import RunMirror
    from rfcx.train.config import ModelSpec

_ROUND = re.compile(r"^round(\d+)$")


def member_name(spec: ModelSpec) -> str:
    return f"{spec.backbone}-{spec.crop_seconds:g}s"


@dataclass(frozen=True)
class RunDir:
    """The files of a run under ``root``, a local folder. A run at an fsspec URL (:func:`open_run`) has a
    ``mirror``: ``root`` is then its local cache folder, :meth:`sync` uploads what changed and :meth:`fetch`
    downloads a part of the run; for a local run both do nothing."""

    root: Path
    mirror: RunMirror | None = field(default=None, compare=False)

    @property
    def location(self) -> str:
        """Where the run lives: its URL, or its folder."""
        return self.mirror.url if self.mirror is not None else str(self.root)

    def describe(self, path: Path) -> str:
        """A file of the run as the user knows it: its URL for a mirrored run, else the path."""
        return self.mirror.url_of(path) if self.mirror is not None else str(path)

    def sync(self, strict: bool = False) -> None:
        """Upload the files that changed since the last sync (mirrored runs; markers last). ``strict=False``
        logs a failed upload and leaves it for the next sync."""
        if self.mirror is not None:
            self.mirror.push(strict=strict)

    def fetch(self, part: str | Path, suffix: str | None = None) -> None:
        """Download the remote files under ``part`` (a path relative to the run, or one below ``root``), those
        ending in ``suffix`` where given (mirrored runs)."""
        if self.mirror is not None:
            part = Path(part)
            rel = part.relative_to(self.root) if part.is_absolute() else part
            select = None if suffix is None else (lambda name, _names: name.endswith(suffix))
            self.mirror.pull(select, prefix=rel.as_posix())

    def round_dir(self, k: int) -> Path:
        return self.root / f"round{k}"

    def member_dir(self, k: int, spec: ModelSpec, fold: int) -> Path:
        return self.round_dir(k) / "members" / f"{member_name(spec)}_fold{fold}"

    def checkpoint(self, k: int, spec: ModelSpec, fold: int) -> Path:
        return self.member_dir(k, spec, fold) / "checkpoint.pt"

    def predictions(self, k: int, spec: ModelSpec, fold: int) -> Path:
        return self.member_dir(k, spec, fold) / "predictions.npz"

    def pseudo_labels(self, k: int) -> Path:
        return self.round_dir(k) / "pseudo.zarr"

    def models_dir(self, k: int) -> Path:
        return self.round_dir(k) / "models"

    def metrics(self, k: int) -> Path:
        return self.round_dir(k) / "metrics.json"

    def complete_marker(self, k: int) -> Path:
        return self.round_dir(k) / "complete.json"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def store_file(self) -> Path:
        return self.root / "store.json"

    @property
    def template_labels(self) -> Path:
        """The template teacher's labels (``pseudo_templates``): computed once, for every round >= 1."""
        return self.root / "templates.zarr"

    @property
    def best_round_file(self) -> Path:
        return self.root / "best_round.json"

    def best_round(self) -> dict | None:
        """``best_round.json`` (``round``, ``signal``, ``value``, ``rounds``: signal by round), or None where the run
        has none (a run directory from before it was written) or it is unreadable."""
        try:
            data = json.loads(self.best_round_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("round"), int) else None

    def is_complete(self, k: int) -> bool:
        return self.complete_marker(k).is_file()

    def rounds(self) -> list[int]:
        """Round numbers that have a folder, ascending."""
        if not self.root.is_dir():
            return []
        found = (_ROUND.match(p.name) for p in self.root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_complete(self) -> int | None:
        done = [k for k in self.rounds() if self.is_complete(k)]
        return done[-1] if done else None


# What a run directory holds at its top (besides round{k}/): its own files, the runs beside its rounds (the oracle,
# the equal-compute bootstrap), the writer lock and a mirror's manifest
RUN_ENTRIES = frozenset(
    {
        "config.json",
        "store.json",
        "folds.json",
        "best_round.json",
        "templates.zarr",
        "templates.json",
        "lwlrap.png",
        "oracle",
        "equal-compute",
        ".rfcx.lock",
        ".rfcx-mirror.json",
    }
)


def check_run_folder(location: str | os.PathLike) -> None:
    """Refuse a local ``--runs`` that cannot be a run directory before anything is written to it: a file, or a
    folder holding other things than a run's (``RUN_ENTRIES``, ``round{k}/``); a new or empty folder, or a run,
    passes. URLs pass (their contents are checked as they are read)."""
    from store.location import Location

    loc = Location.parse(location)
    if not loc.is_local:
        return
    root = loc.local_path
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"{location}: is a file; --runs takes a folder (a new one, or a run directory)")
    if not root.is_dir() or (root / "config.json").is_file():
        return
    other = sorted(p.name for p in root.iterdir() if p.name not in RUN_ENTRIES and not _ROUND.match(p.name))
    if other:
        raise InvalidInputError(
            f"{location}: a folder holding other files than a training run ({', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}); give a new or empty --runs folder, or a run directory"
        )


PULLS = ("all", "active", "meta", "none")


def _active(rel: str, names: set[str]) -> bool:
    """Everything but the member checkpoints and exported models of complete rounds (training resumes the rest)."""
    parts = rel.split("/")
    return not (len(parts) > 2 and parts[1] in ("members", "models") and f"{parts[0]}/complete.json" in names)


def _meta(rel: str, names: set[str]) -> bool:
    """The JSON files of the run and its rounds (config, folds, metrics, complete markers)."""
    return rel.endswith(".json") and rel.count("/") <= 1


def open_run(location: str | os.PathLike, pull: str = "all") -> RunDir:
    """A run directory at a local path or an fsspec URL.

    A path (or a ``file://`` URL) is the folder itself. Any other URL (``s3://``, ``gs://``, ``memory://``, ...)
    is mirrored in a local cache folder (:mod:`rfcx.runs.mirror`), pulling at once ``pull``: ``all`` files,
    ``active`` (all but the checkpoints and models of complete rounds: what training needs), ``meta`` (the
    JSON files: config, folds, metrics, markers), or ``none``. A URL whose fsspec backend is not installed
    raises :class:`store.location.MissingBackendError` naming the package.
    """
    from store.location import Location

    if pull not in PULLS:
        raise InvalidInputError(f"pull must be one of {PULLS}, got {pull!r}")
    loc = Location.parse(location)
    if loc.is_local:
        return RunDir(loc.local_path)
    from rfcx.runs.mirror import RunMirror

    mirror = RunMirror(loc)
    if pull != "none":
        mirror.pull({"all": None, "active": _active, "meta": _meta}[pull])
    return RunDir(mirror.cache, mirror)
