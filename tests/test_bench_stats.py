"""Leaderboard statistics: ECE, curve AUC, seed summaries, bootstrap CIs, the predictions codec.

Inputs are synthetic (hand-made or seeded random) so that the expected values are known.
"""

from __future__ import annotations

import numpy as np
import pytest

from promptgym.metrics.stats import (
    bootstrap_ci,
    curve_auc,
    curve_on_grid,
    decode_predictions,
    distinguishable,
    encode_predictions,
    expected_calibration_error,
    metric_from_confusion,
    paired_difference_ci,
    score_predictions,
    seed_bootstrap_ci,
    seed_summary,
)
from promptgym.metrics.task import METRICS, compute_metric


def _noisy_copies(labels: np.ndarray, error_rates: list[float], seed: int = 0, n_classes: int = 2) -> list[np.ndarray]:
    """Per seed, the labels with a random fraction replaced by a different label."""
    rng = np.random.default_rng(seed)
    out = []
    for rate in error_rates:
        p = labels.copy()
        wrong = rng.random(labels.size) < rate
        p[wrong] = (p[wrong] + rng.integers(1, n_classes, wrong.sum())) % n_classes
        out.append(p)
    return out


# ------------------------------------------------------------------------------------------ ECE
def test_ece_hand_computed() -> None:
    probs = np.array([[0.95, 0.05], [0.15, 0.85], [0.28, 0.72], [0.55, 0.45], [0.92, 0.08]])
    labels = np.array([0, 0, 1, 1, 0])
    # bin (0.9, 1]: rows 0 and 4, accuracy 1, mean confidence 0.935 -> 2/5 * 0.065 = 0.026
    # bin (0.8, 0.9]: row 1, wrong, confidence 0.85                  -> 1/5 * 0.85  = 0.170
    # bin (0.7, 0.8]: row 2, right, confidence 0.72                  -> 1/5 * 0.28  = 0.056
    # bin (0.5, 0.6]: row 3, wrong, confidence 0.55                  -> 1/5 * 0.55  = 0.110
    assert expected_calibration_error(probs, labels) == pytest.approx(0.362)
    # one bin: |accuracy 3/5 - mean confidence 0.798|
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.198)


def test_ece_bin_edges_and_perfect_calibration() -> None:
    # confidence exactly 0.7 belongs to (0.6, 0.7]; with it alone in its bin and right, ECE = 0.3 / 1
    assert expected_calibration_error(np.array([[0.3, 0.7]]), np.array([1])) == pytest.approx(0.3)
    # half right at confidence 0.5: perfectly calibrated
    probs = np.full((4, 2), 0.5)
    assert expected_calibration_error(probs, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_ece_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(np.array([0.5, 0.5]), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(np.full((2, 2), 0.5), np.array([0]))
    with pytest.raises(ValueError, match="finite"):
        expected_calibration_error(np.array([[np.nan, 0.5]]), np.array([0]))


# ------------------------------------------------------------------------------------------ AUC
@pytest.mark.parametrize(("curve", "expected"), [
    ([], 0.0),
    ([[0, 0.5]], 0.5),
    ([[50, 1.0]], 0.5),  # nothing known before call 50
    ([[0, 0.2], [50, 0.6]], 0.4),
    ([[0, 0.6], [50, 0.2]], 0.6),  # best so far: a worse later point does not lower the curve
    ([[0, 0.5], [200, 1.0]], 0.5),  # points beyond the budget are ignored
    ([[10, 0.4], [10, 0.8]], 0.72),  # same call count: the later point wins
])
def test_curve_auc(curve: list[list[float]], expected: float) -> None:
    assert curve_auc(curve, 100) == pytest.approx(expected)


def test_curve_auc_in_unit_interval_for_unit_metrics() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        calls = np.sort(rng.integers(0, 1200, rng.integers(1, 30)))
        curve = [[int(c), float(v)] for c, v in zip(calls, rng.random(calls.size))]
        assert 0.0 <= curve_auc(curve, 1000) <= 1.0
    with pytest.raises(ValueError):
        curve_auc([[0, 0.5]], 0)


def test_curve_on_grid_averages_seeds() -> None:
    grid, mean = curve_on_grid([[[0, 0.2], [50, 0.6]], [[0, 0.4]]], 100, n_points=5)
    assert grid.tolist() == [0, 25, 50, 75, 100]
    assert mean.tolist() == pytest.approx([0.3, 0.3, 0.5, 0.5, 0.5])
    _, late = curve_on_grid([[[30, 0.5]], [[0, 0.1]]], 100, n_points=5)
    assert np.isnan(late[:2]).all() and late[2] == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------- seeds
def test_seed_summary() -> None:
    assert seed_summary([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert seed_summary([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        seed_summary([])


# ---------------------------------------------------------------------------------------- codec
def test_predictions_codec_round_trip() -> None:
    arr = np.array([0, 1, 9, 10, 35, 13])
    s = encode_predictions(arr)
    assert s == "019az" + "d"
    assert decode_predictions(s).tolist() == arr.tolist()
    assert decode_predictions("").size == 0
    for bad in ("01A", "0-1", "é"):
        with pytest.raises(ValueError):
            decode_predictions(bad)
    with pytest.raises(ValueError):
        encode_predictions([36])
    with pytest.raises(ValueError):
        encode_predictions([-1])


# ------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("metric", sorted(METRICS))
def test_confusion_metrics_match_compute_metric(metric: str) -> None:
    rng = np.random.default_rng(2)
    for n_classes in (2, 3, 14):
        for _ in range(20):
            y = rng.integers(0, n_classes, rng.integers(1, 60))
            p = rng.integers(0, n_classes, y.size)
            if rng.random() < 0.2:
                p[:] = p[0]  # degenerate: one predicted class (MCC denominator 0)
            conf = np.zeros((n_classes, n_classes))
            np.add.at(conf, (y, p), 1)
            assert float(metric_from_confusion(metric, conf)) == pytest.approx(compute_metric(metric, y, p), abs=1e-12)


def test_score_predictions_uses_the_reference_metric() -> None:
    labels = np.array([0, 1, 1, 0])
    assert score_predictions([np.array([0, 1, 0, 0]), "0110"], labels, "accuracy") == [0.75, 1.0]


# ---------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_point_estimate_and_shrinks_with_rows() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for n in (100, 10_000):
        labels = rng.integers(0, 2, n)
        preds = _noisy_copies(labels, [0.2, 0.21, 0.19, 0.2, 0.2], seed=n)
        point = float(np.mean(score_predictions(preds, labels, "accuracy")))
        lo, hi = bootstrap_ci(preds, labels, "accuracy", n_boot=500)
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3


def test_bootstrap_ci_counts_seed_noise() -> None:
    # many rows but two very different seeds: the CI must be wide, as a rows-only bootstrap would not be
    labels = np.random.default_rng(4).integers(0, 2, 5000)
    preds = _noisy_copies(labels, [0.05, 0.05, 0.4, 0.4, 0.4], seed=5)
    lo, hi = bootstrap_ci(preds, labels, "accuracy", n_boot=500)
    assert hi - lo > 0.2
    one_seed = bootstrap_ci(preds[:1], labels, "accuracy", n_boot=500)
    assert one_seed[1] - one_seed[0] < 0.03


def test_bootstrap_ci_is_deterministic_and_works_for_every_metric() -> None:
    labels = np.random.default_rng(6).integers(0, 3, 300)
    preds = _noisy_copies(labels, [0.3] * 5, seed=7, n_classes=3)
    for metric in sorted(METRICS):
        first = bootstrap_ci(preds, labels, metric, n_boot=200, rng_seed=1)
        assert first == bootstrap_ci(preds, labels, metric, n_boot=200, rng_seed=1)
        assert first[0] <= first[1]
    assert bootstrap_ci(preds, labels, "accuracy", n_boot=200, rng_seed=1) != bootstrap_ci(
        preds, labels, "accuracy", n_boot=200, rng_seed=2)


def test_bootstrap_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="expected 4 predictions"):
        bootstrap_ci([np.array([0, 1, 0])], np.array([0, 1, 0, 1]), "accuracy")
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci([np.array([0, 1])], np.array([0, 1]), "auc")


def test_paired_difference_ci() -> None:
    labels = np.random.default_rng(8).integers(0, 2, 400)
    good = _noisy_copies(labels, [0.10] * 5, seed=9)
    bad = _noisy_copies(labels, [0.25] * 5, seed=10)
    lo, hi = paired_difference_ci(good, bad, labels, "accuracy", n_boot=500)
    assert lo > 0 and distinguishable((lo, hi))
    lo, hi = paired_difference_ci(bad, good, labels, "accuracy", n_boot=500)
    assert hi < 0 and distinguishable((lo, hi))
    same = paired_difference_ci(good, [p.copy() for p in good], labels, "accuracy", n_boot=500)
    assert same == (0.0, 0.0) and not distinguishable(same)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference_ci(good, good[:4], labels, "accuracy")


def test_paired_ci_is_narrower_than_separate_cis() -> None:
    # b = a with 3% of rows flipped the wrong way: shared row noise cancels in the paired difference
    labels = np.random.default_rng(11).integers(0, 2, 300)
    a = _noisy_copies(labels, [0.2] * 5, seed=12)
    rng = np.random.default_rng(13)
    b = []
    for p in a:
        q = p.copy()
        idx = rng.choice(np.flatnonzero(q == labels), 9, replace=False)
        q[idx] = 1 - q[idx]
        b.append(q)
    lo, hi = paired_difference_ci(a, b, labels, "accuracy", n_boot=500)
    assert lo > 0
    ci_a, ci_b = bootstrap_ci(a, labels, "accuracy", n_boot=500), bootstrap_ci(b, labels, "accuracy", n_boot=500)
    assert ci_a[0] < ci_b[1]  # separately, their CIs overlap


def test_seed_bootstrap_ci() -> None:
    lo, hi = seed_bootstrap_ci([0.7, 0.72, 0.74, 0.76, 0.78])
    assert 0.7 <= lo < 0.74 < hi <= 0.78
    assert seed_bootstrap_ci([0.5] * 5) == (0.5, 0.5)
    with pytest.raises(ValueError):
        seed_bootstrap_ci([float("nan")])
