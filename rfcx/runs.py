"""Where a training run keeps its files (one place for training, pseudo labels, export and inference).

    RUNS/
      config.json                         the TrainConfig the run was made with (a resumed run must match)
      round{k}/
        members/{member}_fold{f}/checkpoint.pt   model + optimizer + scheduler + RNG + history + config;
                                          "complete": True once its last epoch is done
        members/{member}_fold{f}/predictions.npz OOF windows of its held-out train clips and test windows
        pseudo.zarr                       soft labels for round k+1: one (n_windows, 24) array per train clip
        models/{member}_fold{f}.ts / .pt2 exported TorchScript / torch.export programs (+ metadata)
        metrics.json, *.png               per-round report
        complete.json                     written last: the round is complete

``member`` is ``{backbone}-{crop_seconds}s``, e.g. ``mobilenetv3_small_100-4s``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfcx.config import ModelSpec

_ROUND = re.compile(r"^round(\d+)$")


def member_name(spec: ModelSpec) -> str:
    return f"{spec.backbone}-{spec.crop_seconds:g}s"


@dataclass(frozen=True)
class RunDir:
    root: Path

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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader never sees half a file (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)
