"""Uncertainty metrics (``promptgym.metrics.uncertainty``): hand-computed cases for each metric,
cross-checks against scikit-learn on random data, and properties that must hold for any input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from promptgym.errors import InvalidProbabilitiesError
from promptgym.metrics import uncertainty as u
from promptgym.metrics.registry import probability_metrics, recorded_specs
from promptgym.metrics.stats import expected_calibration_error

# Four rows, two classes. Prediction = argmax, confidence = max:
#   row 0: [0.9, 0.1] label 0 -> predicts 0, conf 0.9, correct
#   row 1: [0.8, 0.2] label 1 -> predicts 0, conf 0.8, WRONG
#   row 2: [0.6, 0.4] label 0 -> predicts 0, conf 0.6, correct
#   row 3: [0.3, 0.7] label 1 -> predicts 1, conf 0.7, correct
P4 = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
Y4 = np.array([0, 1, 0, 1])


def _random_case(rng: np.random.Generator, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    probs = rng.dirichlet(np.full(c, 0.7), size=n)
    return probs, rng.integers(0, c, size=n)


# ----------------------------------------------------------------------------------- hand-computed
def test_ece_hand_computed() -> None:
    # each row is alone in its bin: (0.8,0.9]: |1-0.9| = 0.1, (0.7,0.8]: |0-0.8| = 0.8,
    # (0.6,0.7]: |1-0.7| = 0.3, (0.5,0.6]: |1-0.6| = 0.4  ->  (0.1+0.8+0.3+0.4)/4 = 0.4
    assert u.ece(P4, Y4) == pytest.approx(0.4)
    # one bin: accuracy 3/4 = 0.75, mean confidence (0.9+0.8+0.6+0.7)/4 = 0.75  ->  0
    assert u.ece(P4, Y4, n_bins=1) == pytest.approx(0.0)
    assert u.ece(P4, Y4) == expected_calibration_error(P4, Y4)  # the project's one ECE


def test_nll_hand_computed_and_floor() -> None:
    # p[label] = 0.9, 0.2, 0.6, 0.7: (0.10536 + 1.60944 + 0.51083 + 0.35667) / 4 = 0.645575
    assert u.nll(P4, Y4) == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.7)) / 4)
    assert u.nll(P4, Y4) == pytest.approx(0.645575, abs=1e-6)
    # a vote histogram that puts 0 on the truth: the row costs -ln(1e-12) = 27.63, not infinity
    votes = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert u.nll(votes, [1, 0]) == pytest.approx((-math.log(u.NLL_FLOOR) + math.log(2)) / 2)


def test_brier_hand_computed() -> None:
    # (0.1^2 + 0.1^2) = 0.02, (0.8^2 + 0.8^2) = 1.28, (0.4^2 + 0.4^2) = 0.32, (0.3^2 + 0.3^2) = 0.18
    # -> 1.80 / 4 = 0.45 (sum over classes, mean over rows)
    assert u.brier(P4, Y4) == pytest.approx(0.45)
    # three classes: [.2,.3,.5] label 2 -> .04+.09+.25 = .38; [.6,.2,.2] label 0 -> .16+.04+.04 = .24
    assert u.brier(np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]), [2, 0]) == pytest.approx(0.31)
    # the worst case: all mass on a wrong class -> 1 + 1 = 2
    assert u.brier(np.array([[0.0, 1.0, 0.0]]), [0]) == pytest.approx(2.0)


def test_risk_coverage_and_aurc_hand_computed() -> None:
    # by confidence: 0.9 (ok), 0.8 (err), 0.7 (ok), 0.6 (ok)
    # risks at k = 1..4: 0/1, 1/2, 1/3, 1/4
    coverage, risk = u.risk_coverage(P4, Y4)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 1 / 2, 1 / 3, 1 / 4])
    assert u.aurc(P4, Y4) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # 0.270833
    # the best ranking of one error in four puts it last: risks 0, 0, 0, 1/4 -> 1/16
    assert u.aurc_lower_bound(P4, Y4) == pytest.approx(1 / 16)


def test_aurc_ties_are_averaged_over_their_orders() -> None:
    # confidences 0.8 (err), 0.8 (ok), 0.6 (ok): the two tied rows in either order give risks
    # (1, 1/2, 1/3) or (0, 1/2, 1/3); their mean is (1/2, 1/2, 1/3) -> AURC = (1/2+1/2+1/3)/3 = 4/9
    probs = np.array([[0.8, 0.2], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([1, 1, 0])
    np.testing.assert_allclose(u.risk_coverage(probs, labels)[1], [0.5, 0.5, 1 / 3])
    assert u.aurc(probs, labels) == pytest.approx(4 / 9)
    assert u.aurc(probs[[1, 0, 2]], labels[[1, 0, 2]]) == pytest.approx(4 / 9)  # input order does not matter


def test_aurc_binned_hand_computed() -> None:
    # five rows by confidence: ok, err, ok, ok, err; two bins -> m = 5 // 2 = 2
    # bin 1 keeps the top 2 (risk 1/2), bin 2 the top 4 (risk 1/4); the fifth row enters no bin
    # -> (1/2 + 1/4) / 2 = 0.375, while the exact AURC is (0 + 1/2 + 1/3 + 1/4 + 2/5) / 5 = 0.296667
    conf = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.array([0, 1, 0, 0, 1])
    assert u.aurc_binned(probs, labels, n_bins=2) == pytest.approx(0.375)
    assert u.aurc(probs, labels) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4 + 2 / 5) / 5)
    # ties widen a bin: confidences 0.9 (ok), 0.8 (err), 0.8 (ok), 0.6 (ok), two bins of m = 2:
    # bin 1's threshold is 0.8, which keeps three rows (risk 1/3); bin 2 keeps all four (1/4)
    conf = np.array([0.9, 0.8, 0.8, 0.6])
    probs = np.stack([conf, 1 - conf], axis=1)
    assert u.aurc_binned(probs, [0, 1, 0, 0], n_bins=2) == pytest.approx((1 / 3 + 1 / 4) / 2)


def test_entropy_and_ood_auroc_hand_computed() -> None:
    np.testing.assert_allclose(u.entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), [math.log(2), 0.0])
    # max-probs in [0.9, 0.7], out [0.7, 0.5]: pairs (0.9>0.7) 1, (0.9>0.5) 1, (0.7=0.7) 1/2, (0.7>0.5) 1
    # -> 3.5 / 4 = 0.875; with two classes entropy orders rows as max-prob does
    p_in = np.array([[0.9, 0.1], [0.3, 0.7]])
    p_out = np.array([[0.7, 0.3], [0.5, 0.5]])
    assert u.ood_auroc(p_in, p_out, "maxprob") == pytest.approx(0.875)
    assert u.ood_auroc(p_in, p_out, "entropy") == pytest.approx(0.875)
    # three classes, where the two scores disagree: in [0.6, 0.2, 0.2] (max 0.6, H 0.950),
    # out [0.5, 0.5, 0] (max 0.5, H 0.693): max-prob calls the in-domain row surer (1), entropy the OOD one (0)
    p_in3, p_out3 = np.array([[0.6, 0.2, 0.2]]), np.array([[0.5, 0.5, 0.0]])
    assert u.ood_auroc(p_in3, p_out3, "maxprob") == 1.0
    assert u.ood_auroc(p_in3, p_out3, "entropy") == 0.0


def test_probability_metrics_returns_every_recorded_key() -> None:
    probs, labels = _random_case(np.random.default_rng(0), 50, 3)
    out = probability_metrics(probs, labels)
    assert tuple(out) == tuple(spec.name for spec in recorded_specs()) == ("ece", "nll", "brier", "aurc", "aurc_10bin")
    assert all(type(v) is float for v in out.values())
    assert out["aurc"] == u.aurc(probs, labels) and out["aurc_10bin"] == u.aurc_binned(probs, labels)


# ----------------------------------------------------------------------------------- cross-checks
@pytest.mark.parametrize(("n", "c", "seed"), [(200, 2, 0), (300, 4, 1), (150, 14, 2)])
def test_cross_checks_against_scikit_learn(n: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs, labels = _random_case(rng, n, c)
    probs = np.clip(probs, 1e-9, None)
    probs /= probs.sum(axis=1, keepdims=True)  # away from 0: both sides clip differently there
    assert u.nll(probs, labels) == pytest.approx(log_loss(labels, probs, labels=list(range(c))), rel=1e-12)
    onehot = np.eye(c)[labels]
    assert u.brier(probs, labels) == pytest.approx(
        mean_squared_error(onehot, probs, multioutput="raw_values").sum(), rel=1e-12)
    out_probs, _ = _random_case(rng, n // 2, c)
    out_probs = 0.5 * out_probs + 0.5 / c  # flatter: a shifted, overlapping distribution
    truth = np.r_[np.ones(n), np.zeros(n // 2)]
    assert u.ood_auroc(probs, out_probs, "maxprob") == pytest.approx(
        roc_auc_score(truth, np.r_[probs.max(axis=1), out_probs.max(axis=1)]), rel=1e-12)
    assert u.ood_auroc(probs, out_probs, "entropy") == pytest.approx(
        roc_auc_score(truth, -np.r_[u.entropy(probs), u.entropy(out_probs)]), rel=1e-12)


def test_ood_auroc_matches_scikit_learn_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    votes_in = rng.integers(0, 6, size=(80, 1)) / 5  # vote histograms of 5 members: heavy ties
    votes_out = rng.integers(0, 6, size=(60, 1)) / 5
    p_in, p_out = np.hstack([votes_in, 1 - votes_in]), np.hstack([votes_out, 1 - votes_out])
    truth = np.r_[np.ones(80), np.zeros(60)]
    assert u.ood_auroc(p_in, p_out) == pytest.approx(roc_auc_score(truth, np.r_[p_in.max(1), p_out.max(1)]))


def _brute_force_aurc(probs: np.ndarray, labels: np.ndarray) -> float:
    """The definition, spelled out: average the plain AURC over every order of the tied rows."""
    conf = probs.max(axis=1)
    err = (probs.argmax(axis=1) != labels).astype(float)
    values = []
    for perm in itertools.permutations(range(len(conf))):
        order = np.array(perm)
        if np.any(np.diff(conf[order]) > 0):
            continue  # not a decreasing-confidence order
        e = err[order]
        values.append(np.mean(np.cumsum(e) / np.arange(1, len(e) + 1)))
    return float(np.mean(values))


# ------------------------------------------------------------------------------------ properties
_CONF_LEVELS = st.sampled_from([0.5, 0.6, 0.75, 0.9, 1.0])  # few levels: ties are common


@st.composite
def _binary_cases(draw: st.DrawFn, max_n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, max_n))
    conf = np.array(draw(st.lists(_CONF_LEVELS, min_size=n, max_size=n)))
    first = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    p0 = np.where(first, conf, 1 - conf)
    probs = np.stack([p0, 1 - p0], axis=1)
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    return probs, labels


@settings(max_examples=60, deadline=None)
@given(_binary_cases(max_n=6))
def test_aurc_equals_the_brute_force_average_over_tie_orders(case: tuple[np.ndarray, np.ndarray]) -> None:
    probs, labels = case
    assert u.aurc(probs, labels) == pytest.approx(_brute_force_aurc(probs, labels), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(_binary_cases(), st.randoms(use_true_random=False))
def test_aurc_bounds_and_order_invariance(case: tuple[np.ndarray, np.ndarray], rnd) -> None:
    probs, labels = case
    value, low = u.aurc(probs, labels), u.aurc_lower_bound(probs, labels)
    error_rate = float(np.mean(probs.argmax(axis=1) != labels))
    assert 0.0 <= low <= value + 1e-12 <= 1.0 + 1e-12
    assert u.risk_coverage(probs, labels)[1][-1] == pytest.approx(error_rate)  # full coverage: the error rate
    perm = list(range(len(labels)))
    rnd.shuffle(perm)
    assert u.aurc(probs[perm], labels[perm]) == pytest.approx(value, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=30))
def test_aurc_of_a_perfect_ranking_equals_its_lower_bound(correct: list[bool]) -> None:
    ok = np.array(correct)
    labels = np.where(ok, 0, 1)  # every row predicts label 0 (confidence > 0.5): correct where the label is 0

    def probs_ranking_first(first: np.ndarray) -> np.ndarray:
        rank = np.argsort(np.argsort(~first, kind="stable"), kind="stable")  # rows of `first` on top
        conf = 0.99 - 0.45 * rank / ok.size  # distinct confidences in (0.5, 1)
        return np.stack([conf, 1 - conf], axis=1)

    best, worst = probs_ranking_first(ok), probs_ranking_first(~ok)
    assert u.aurc(best, labels) == pytest.approx(u.aurc_lower_bound(best, labels), abs=1e-12)
    if 0 < ok.sum() < ok.size:  # with both kinds of rows, the errors-first ranking is strictly worse
        assert u.aurc(worst, labels) > u.aurc_lower_bound(worst, labels) == u.aurc_lower_bound(best, labels)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=10, max_size=10), st.permutations(list(range(10))))
def test_binned_aurc_is_the_exact_aurc_with_one_row_per_bin(errors: list[bool], order: list[int]) -> None:
    conf = 0.55 + 0.04 * np.array(order)  # distinct confidences
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.where(errors, 1, 0)
    assert u.aurc_binned(probs, labels, n_bins=10) == pytest.approx(u.aurc(probs, labels), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 40), st.integers(2, 5))
def test_ood_auroc_is_antisymmetric_and_in_range(seed: int, n_in: int, n_out: int, c: int) -> None:
    rng = np.random.default_rng(seed)
    p_in, p_out = rng.dirichlet(np.ones(c), n_in), rng.dirichlet(np.ones(c), n_out)
    for score in u.OOD_SCORES:
        a, b = u.ood_auroc(p_in, p_out, score), u.ood_auroc(p_out, p_in, score)
        assert 0.0 <= a <= 1.0 and a + b == pytest.approx(1.0)
    assert u.ood_auroc(p_in, p_in) == pytest.approx(0.5)  # a set against itself: chance


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(10, 60), st.integers(2, 6))
def test_metric_ranges(seed: int, n: int, c: int) -> None:
    probs, labels = _random_case(np.random.default_rng(seed), n, c)
    m = probability_metrics(probs, labels)
    assert 0 <= m["ece"] <= 1 and m["nll"] >= 0 and 0 <= m["brier"] <= 2
    assert 0 <= m["aurc"] <= 1 and 0 <= m["aurc_10bin"] <= 1


def test_one_hot_correct_predictions_score_zero() -> None:
    probs = np.eye(3)[[0, 2, 1, 1]]
    m = probability_metrics(np.tile(probs, (3, 1)), np.tile([0, 2, 1, 1], 3))
    assert m == {"ece": 0.0, "nll": pytest.approx(0.0), "brier": 0.0, "aurc": 0.0, "aurc_10bin": 0.0}


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("probs", "labels", "message"), [
    (np.array([0.5, 0.5]), [0], "must be an (n, C) array"),
    (np.ones((0, 2)), [], "must be an (n, C) array"),
    (np.ones((2, 1)), [0, 0], "C >= 2 classes"),
    (np.array([[0.5, np.nan]]), [0], "must be finite"),
    (np.array([[1.2, -0.2]]), [0], "must lie in [0, 1], row 0"),
    (np.array([[0.5, 0.5], [0.6, 0.3]]), [0, 1], "row 1 sums to 0.9"),
    (np.full((2, 2), 0.5), [0], "labels must have shape (2,)"),
    (np.full((2, 2), 0.5), [0, 2], "labels must be in [0, 1]"),
    (np.full((2, 2), 0.5), [0.5, 1], "integer label ids"),
    ([["a", "b"]], [0], "numeric (n, C) array"),
])
def test_bad_input_raises_one_clear_error(probs, labels, message: str) -> None:
    for metric in (u.ece, u.nll, u.brier, u.aurc, probability_metrics):
        with pytest.raises(InvalidProbabilitiesError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):
            metric(probs, labels)


def test_other_bad_arguments() -> None:
    with pytest.raises(InvalidProbabilitiesError, match="at least n_bins=10 rows"):
        u.aurc_binned(P4, Y4)
    with pytest.raises(InvalidProbabilitiesError, match="n_bins must be a positive int"):
        u.aurc_binned(P4, Y4, n_bins=0)
    with pytest.raises(InvalidProbabilitiesError, match="score must be one of"):
        u.ood_auroc(P4, P4, "margin")
    with pytest.raises(InvalidProbabilitiesError, match="same classes"):
        u.ood_auroc(P4, np.full((2, 3), 1 / 3))
    assert isinstance(InvalidProbabilitiesError("x"), ValueError)
