"""A member checkpoint (``members/{member}_fold{f}/checkpoint.pt``): on disk a plain dict, as ``torch.save``
wrote it; :class:`Checkpoint` names its keys in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

from store.atomic import atomic_path

T = TypeVar("T")

# the keys a model is rebuilt from (what rfcx export needs): weights, config, member, fold, mel parameters
MODEL_KEYS = ("state_dict", "config", "member", "fold", "mel")


@dataclass
class Checkpoint:
    """One member on one fold after ``epoch`` epochs (``Checkpoint()``: none trained yet).

    A field that is None is a key the dict lacks: :meth:`to_dict` leaves it out and :meth:`from_dict` reads a
    missing key as None, so ``from_dict(d).to_dict() == d`` for a dict of these keys with no None value
    (``ddp_world``: written under DDP only; ``round``: readers fall back where a file lacks it)."""

    state_dict: dict[str, torch.Tensor] | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    epoch: int | None = 0
    history: list[dict] | None = field(default_factory=list)
    complete: bool | None = False
    config: dict | None = None  # TrainConfig.to_dict()
    member: dict | None = None  # {"backbone", "crop_seconds"}: a ModelSpec
    fold: int | None = None
    round: int | None = None
    mel: dict | None = None  # MelParams.to_dict()
    ddp_world: int | None = None  # processes of the DDP launch that wrote it

    def to_dict(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes (in field order, None fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Checkpoint:
        """A checkpoint dict as read (its values not copied); a key it lacks is None."""
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


def present(value: T | None) -> T:
    """A :class:`Checkpoint` field typed as the value it holds, where the reader knows the dict has that key (a
    trained member's weights, its epoch, ...). Not checked: a missing key fails where the value is used, as before
    the field was typed."""
    return cast(T, value)


def load_checkpoint_file(path: str | os.PathLike, map_location: Any) -> Any:
    """``torch.load`` of a checkpoint file (``weights_only=False``: it holds plain Python objects besides tensors)."""
    return torch.load(path, map_location=map_location, weights_only=False)


def mark_complete(d: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint dict ``d``, marked complete in place (trained and scored); any other keys it has are kept."""
    d["complete"] = True
    return d


def save_checkpoint_file(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` through a temp file and a rename: a reader never sees half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
