"""``rfcx export --round K``: every member checkpoint of a round as TorchScript (``.ts``) and ``torch.export``
(``.pt2``) files in ``RUNS/round{k}/models/{member}_fold{f}.{ts,pt2}`` (see :mod:`engine.export`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.export import SUFFIXES, export_program, export_torchscript
from rfcx.errors import InvalidInputError
from rfcx.runs.directory import RunDir, member_name, open_run
from rfcx.train.checkpoint import MODEL_KEYS, Checkpoint, load_checkpoint_file, present
from rfcx.train.config import ModelSpec, TrainConfig
from rfcx.train.models import build_classifier

log = logging.getLogger(__name__)

FORMATS = tuple(SUFFIXES)  # ("torchscript", "export")
CHECKPOINT_KEYS = MODEL_KEYS  # what export needs of a checkpoint


def member_checkpoints(runs_dir: str | os.PathLike, k: int) -> list[Path]:
    """The round's member checkpoints (``members/*/checkpoint.pt``), sorted."""
    return sorted((RunDir(Path(runs_dir)).round_dir(k) / "members").glob("*/checkpoint.pt"))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A member checkpoint, checked for the keys export needs; errors name the file and say why."""
    try:
        ckpt = load_checkpoint_file(path, "cpu")
    except Exception as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise InvalidInputError(f"{path}: unreadable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise InvalidInputError(f"{path}: not a training checkpoint (a {type(ckpt).__name__}, not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise InvalidInputError(f"{path}: checkpoint lacks {missing}")
    member = Checkpoint.from_dict(ckpt)
    if not member.complete:
        raise InvalidInputError(f"{path}: the member has not finished training (epoch {member.epoch}, not complete)")
    return ckpt


def export_checkpoint(path: Path, out_dir: Path, k: int, formats: Sequence[str]) -> list[Path]:
    """Export one member checkpoint into ``out_dir`` in ``formats``; returns the files written."""
    ckpt = Checkpoint.from_dict(load_checkpoint(path))
    cfg = TrainConfig.from_dict(present(ckpt.config))  # load_checkpoint: it has the MODEL_KEYS
    spec = ModelSpec(**present(ckpt.member))
    model = build_classifier(cfg, spec)
    try:
        model.load_state_dict(present(ckpt.state_dict))
    except RuntimeError as exc:
        raise InvalidInputError(f"{path}: weights do not fit {spec.backbone} ({str(exc).splitlines()[0]})") from None
    model.eval()
    fold = int(present(ckpt.fold))
    meta = {
        "config_name": cfg.name,
        "config": cfg.to_dict(),
        "backbone": spec.backbone,
        "crop_seconds": float(spec.crop_seconds),
        "hop_seconds": float(cfg.pseudo_hop_seconds),
        "mel": dict(present(ckpt.mel)),
        "round": int(k if ckpt.round is None else ckpt.round),
        "fold": fold,
        "epoch": ckpt.epoch,
        "member": member_name(spec),
        "checkpoint": str(path),
    }
    written = []
    for fmt in formats:
        target = out_dir / f"{member_name(spec)}_fold{fold}{SUFFIXES[fmt]}"
        export = export_torchscript if fmt == "torchscript" else export_program
        written.append(export(model, meta, target))
        log.info("exported %s", target)
    return written


@dataclass
class ExportedFiles:
    """The model files of a round after an export: those written now, and those left as they were (newer than
    their checkpoint)."""

    written: list[Path] = field(default_factory=list)
    up_to_date: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # both, member by member (each member's formats in order)


def export_round(
    runs_dir: str | os.PathLike | RunDir, k: int, formats: Sequence[str] = FORMATS, force: bool = False
) -> list[Path]:
    """Export every member checkpoint of round ``k``; returns the files written or kept (see
    :func:`export_round_files`, which tells them apart)."""
    return export_round_files(runs_dir, k, formats, force).files


def export_round_files(
    runs_dir: str | os.PathLike | RunDir, k: int, formats: Sequence[str] = FORMATS, force: bool = False
) -> ExportedFiles:
    """Export every member checkpoint of round ``k``: the files written, and those kept as they were.

    Each file is written to a temp file and renamed, so a reader never sees half a model. Files newer than
    their checkpoint are kept as they are (a resumed round does not export twice) unless ``force``.
    ``runs_dir`` may be an fsspec URL (or a mirrored :class:`RunDir`): the round's checkpoints are fetched into
    the local cache and the models pushed back (the returned paths are in the cache; ``RunDir.describe``).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InvalidInputError(f"formats must be among {FORMATS}, got {list(formats)}")
    run = runs_dir if isinstance(runs_dir, RunDir) else open_run(runs_dir, pull="none")
    for part in ("members", "models"):
        run.fetch(run.round_dir(k) / part)
    exported = _export_round(run, k, formats, force)
    run.sync(strict=True)
    return exported


def _export_round(run: RunDir, k: int, formats: Sequence[str], force: bool) -> ExportedFiles:
    if not run.round_dir(k).is_dir():
        known = ", ".join(map(str, run.rounds())) or "none"
        raise InvalidInputError(f"{run.describe(run.round_dir(k))}: no such round (rounds in {run.location}: {known})")
    checkpoints = member_checkpoints(run.root, k)
    if not checkpoints:
        raise InvalidInputError(
            f"{run.describe(run.round_dir(k))}: no member checkpoints (members/*/checkpoint.pt) to export"
        )
    out_dir = run.models_dir(k)
    exported = ExportedFiles()
    for path in checkpoints:
        todo = list(formats)
        if not force:
            fresh = [f for f in formats if _is_fresh(out_dir, path, f)]
            exported.up_to_date += [_target(out_dir, path, f) for f in fresh]
            exported.files += [_target(out_dir, path, f) for f in fresh]
            todo = [f for f in formats if f not in fresh]
        if todo:
            written = export_checkpoint(path, out_dir, k, todo)
            exported.written += written
            exported.files += written
    return exported


def _target(out_dir: Path, checkpoint: Path, fmt: str) -> Path:
    return out_dir / f"{checkpoint.parent.name}{SUFFIXES[fmt]}"


def _is_fresh(out_dir: Path, checkpoint: Path, fmt: str) -> bool:
    target = _target(out_dir, checkpoint, fmt)
    return target.is_file() and target.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns
