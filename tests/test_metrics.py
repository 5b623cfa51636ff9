"""LWLRAP against a loop implementation written straight from the definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rfcx.scoring.metrics import lwlrap, per_class_lwlrap


def brute_lwlrap(truth: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    n, c = truth.shape
    precisions: list[list[float]] = [[] for _ in range(c)]
    for i in range(n):
        for j in range(c):
            if truth[i, j] <= 0:
                continue
            ranked = [k for k in range(c) if scores[i, k] >= scores[i, j]]
            hits = [k for k in ranked if truth[i, k] > 0]
            precisions[j].append(len(hits) / len(ranked))
    total = sum(len(p) for p in precisions)
    per_class = np.array([np.mean(p) if p else 0.0 for p in precisions])
    weight = np.array([len(p) / total if total else 0.0 for p in precisions])
    overall = sum(sum(p) for p in precisions) / total if total else math.nan
    return overall, per_class, weight


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_with_ties_and_empty_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 40, 7
    truth = (rng.random((n, c)) < 0.25).astype(np.float32)
    truth[:5] = 0  # rows without positives are ignored
    scores = rng.integers(0, 4, size=(n, c)).astype(np.float64)  # many ties
    if seed % 2:
        scores = rng.random((n, c))
    expected, exp_pc, exp_w = brute_lwlrap(truth, scores)
    assert lwlrap(truth, scores) == pytest.approx(expected)
    pc, w = per_class_lwlrap(truth, scores)
    np.testing.assert_allclose(pc, exp_pc)
    np.testing.assert_allclose(w, exp_w)
    assert float((pc * w).sum()) == pytest.approx(expected)


def test_perfect_ranking_is_one() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((30, 24)) < 0.1).astype(float)
    truth[0, 3] = 1
    scores = truth + 0.01 * rng.random(truth.shape)
    assert lwlrap(truth, scores) == pytest.approx(1.0)


def test_hand_example() -> None:
    truth = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.5, 0.5, 0.1, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # row 0: class 0 rank 1 -> 1/1; class 2 rank 4 with 2 hits -> 2/4
    # row 1: class 1 ties with class 0 -> rank 2, 1 hit -> 1/2; row 2 ignored
    assert lwlrap(truth, scores) == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    pc, w = per_class_lwlrap(truth, scores)
    np.testing.assert_allclose(pc, [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(w, [1 / 3, 1 / 3, 1 / 3, 0.0])


def test_no_positives_is_nan() -> None:
    assert math.isnan(lwlrap(np.zeros((3, 4)), np.ones((3, 4))))
    pc, w = per_class_lwlrap(np.zeros((3, 4)), np.ones((3, 4)))
    assert not pc.any() and not w.any()


def test_mask_keeps_only_known_positives() -> None:
    rng = np.random.default_rng(1)
    truth = (rng.random((25, 6)) < 0.4).astype(float)
    mask = (rng.random((25, 6)) < 0.5).astype(float)
    scores = rng.random((25, 6))
    assert lwlrap(truth, scores, mask) == pytest.approx(brute_lwlrap(truth * mask, scores)[0])
    # an unknown class scored above a known positive still costs precision
    t, m = np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])
    assert lwlrap(t, np.array([[0.2, 0.9]]), m) == pytest.approx(0.5)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        lwlrap(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        lwlrap(np.zeros((2, 3)), np.zeros((2, 3)), mask=np.zeros((2, 2)))


def test_average_precision_against_the_definition() -> None:
    from rfcx.scoring.metrics import average_precision, per_class_average_precision

    # ranked 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): precision 1 at the first positive, 2/3 at the second
    assert average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # a tie counts against
    assert math.isnan(average_precision(np.array([0, 0]), np.array([0.1, 0.2])))
    truth = np.array([[1, 0], [0, 0], [1, 0]])
    got = per_class_average_precision(truth, np.array([[0.9, 0.1], [0.5, 0.2], [0.2, 0.3]]))
    assert got[0] == pytest.approx((1 + 2 / 3) / 2) and math.isnan(got[1])
