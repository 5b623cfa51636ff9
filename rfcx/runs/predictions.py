"""Window scores as a run stores them: ragged ``{rid: (n, 24)}`` dicts flattened to (ids, offsets, windows), and
a member's saved predictions (``*.npz`` in a round's directory: out-of-fold, test and in-fold)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from store.atomic import atomic_path
from store.tables import N_SPECIES as N_CLASSES


def stack(scores: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, offsets, concatenated windows) of a ``{rid: (n, 24)}`` dict, ids sorted."""
    ids = sorted(scores)
    lengths = [len(scores[r]) for r in ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate([scores[r] for r in ids]) if ids else np.zeros((0, N_CLASSES), np.float32)
    return ids, offsets, flat.astype(np.float32)


def unstack(ids: list[str], offsets: np.ndarray, flat: np.ndarray) -> dict[str, np.ndarray]:
    return {rid: flat[offsets[i] : offsets[i + 1]] for i, rid in enumerate(ids)}


def save_predictions(
    path: Path, oof: dict[str, np.ndarray], test: dict[str, np.ndarray], infold: dict[str, np.ndarray] | None = None
) -> None:
    """A member's window scores (out-of-fold, test, and in-fold where given) as ``path`` (.npz), atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name, scores in (("oof", oof), ("test", test), ("infold", infold)):
        if scores is not None:
            ids, offsets, flat = stack(scores)
            arrays.update({f"{name}_ids": np.array(ids), f"{name}_offsets": offsets, f"{name}_scores": flat})
    with atomic_path(path, keep_suffix=True) as tmp:  # np.savez keeps a name ending .npz as it is
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stubs take **kwds for allow_pickle


def load_predictions(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A member's (out-of-fold, test) window scores."""
    with np.load(path) as z:
        return (
            unstack(z["oof_ids"].tolist(), z["oof_offsets"], z["oof_scores"]),
            unstack(z["test_ids"].tolist(), z["test_offsets"], z["test_scores"]),
        )


def load_infold(path: Path) -> dict[str, np.ndarray]:
    """A member's window scores of the clips it trained on (``pseudo_teacher = "ensemble"``; {} otherwise)."""
    with np.load(path) as z:
        if "infold_ids" not in z.files:
            return {}
        return unstack(z["infold_ids"].tolist(), z["infold_offsets"], z["infold_scores"])
