"""K-fold split of the train recordings, stratified by the species their boxes name."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rfcx.errors import InvalidInputError


def assign_folds(ids: list[str], boxes: pd.DataFrame, k: int, seed: int = 0) -> dict[str, int]:
    """``{recording_id: fold}``: recordings grouped by their first TP species (else first FP species, else
    none), each group shuffled with ``seed`` and dealt round-robin, so every fold sees every species."""
    if k < 2:
        raise InvalidInputError(f"need at least 2 folds, got {k}")
    if len(ids) < k:
        raise InvalidInputError(
            f"{len(ids)} train recordings cannot be split into {k} folds (every fold holds out at "
            f"least one recording: use --folds {len(ids)} or fewer)"
        )
    key: dict[str, str] = {}
    if len(boxes):
        ordered = boxes.sort_values(["is_tp", "species_id"], ascending=[False, True])
        for rid, is_tp, species in zip(ordered.recording_id, ordered.is_tp, ordered.species_id):
            key.setdefault(rid, f"{'tp' if is_tp else 'fp'}{species:02d}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for rid in sorted(ids):
        groups.setdefault(key.get(rid, "none"), []).append(rid)
    folds: dict[str, int] = {}
    offset = 0
    for name in sorted(groups):
        members = groups[name]
        for i, j in enumerate(rng.permutation(len(members))):
            folds[members[j]] = (offset + i) % k
        offset += len(members)
    return folds
