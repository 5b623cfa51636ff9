"""Prior rescaling of clip scores: the documented formula, what it keeps (per-class ranking across clips) and
what it changes (the order of classes within a clip)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.postprocess import apply_prior, postprocess, prior_from_boxes, prior_from_labels


def test_formula_and_invariants() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 0.99, size=(50, 4))
    prior = np.array([0.4, 0.1, 0.1, 0.2])
    out = apply_prior(scores, prior, strength=1.0)
    odds, new_odds = scores / (1 - scores), out / (1 - out)
    np.testing.assert_allclose(new_odds / odds, np.broadcast_to(prior / prior.mean(), scores.shape), rtol=1e-4)
    np.testing.assert_allclose(apply_prior(scores, prior, strength=0.0), scores, rtol=1e-6)
    for c in range(4):  # clips rank the same on every class
        assert (np.argsort(out[:, c], kind="stable") == np.argsort(scores[:, c], kind="stable")).all()
    tie = apply_prior(np.array([[0.5, 0.5, 0.5, 0.5]]), prior)[0]  # within a clip the likelier class moves up
    assert tie[0] > tie[3] > tie[1] == tie[2]
    with pytest.raises(ValueError, match="one value per class"):
        apply_prior(scores, prior[:3])
    with pytest.raises(ValueError, match="positive"):
        apply_prior(scores, np.array([0.0, 0.1, 0.1, 0.2]))


def test_priors_from_labels_and_boxes() -> None:
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(prior_from_labels(labels), [(3 + 1) / 6, (1 + 1) / 6, 1 / 6])
    soft = prior_from_labels(np.array([[0.5, 0.0], [0.5, 1.0]]), smoothing=0.0)
    np.testing.assert_allclose(soft, [0.5, 0.5])
    p = prior_from_boxes(["a", "a", "b", "c"], [0, 0, 1, 0], n_classes=3)  # a box twice counts once
    np.testing.assert_allclose(p, [(2 + 1) / 5, (1 + 1) / 5, 1 / 5])
    with pytest.raises(ValueError, match="species ids must lie"):
        prior_from_boxes(["a"], [7], n_classes=3)


def test_postprocess_frame() -> None:
    frame = pd.DataFrame({"recording_id": ["x", "y"], "s0": [0.2, 0.7], "s1": [0.3, 0.4]})
    assert postprocess(frame, "none") is frame
    out = postprocess(frame, "prior", np.array([0.5, 0.1]))
    assert out.recording_id.tolist() == ["x", "y"] and out.loc[0, "s0"] > out.loc[0, "s1"]
    with pytest.raises(ValueError, match="needs the class prior"):
        postprocess(frame, "prior")
    with pytest.raises(ValueError, match="postprocess must be one of"):
        postprocess(frame, "rank")
