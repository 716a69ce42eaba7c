"""Task metrics against values worked out by hand (scikit-learn conventions, without scikit-learn)."""

from __future__ import annotations

import math

import pytest

from promptgym.metrics.task import METRICS, RANGES, accuracy, compute_metric, f1, matthews_correlation
from promptgym.tasks import TASKS

# One binary case reused below. Per index:
#   i      0  1  2  3  4  5  6  7
#   true   1  1  1  0  0  0  1  0
#   pred   1  0  1  1  0  0  0  0
#          TP FN TP FP TN TN FN TN
# TP = 2 (i=0,2), FN = 2 (i=1,6), FP = 1 (i=3), TN = 3 (i=4,5,7)
Y_TRUE = [1, 1, 1, 0, 0, 0, 1, 0]
Y_PRED = [1, 0, 1, 1, 0, 0, 0, 0]


def test_accuracy_by_hand():
    # correct at i = 0, 2, 4, 5, 7 -> 5 / 8
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(5 / 8)
    # [0,1,1,0,1] vs [0,1,0,0,0]: correct at 0, 1, 3 -> 3 / 5
    assert accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, 0]) == pytest.approx(0.6)
    assert accuracy([2, 2, 1], [2, 2, 1]) == 1.0
    assert accuracy([0, 1], [1, 0]) == 0.0


def test_f1_by_hand():
    # precision = 2 / 3, recall = 2 / 4; F1 = 2PR / (P + R) = (2/3) / (7/6) = 4/7 = 2TP / (2TP + FP + FN)
    assert f1(Y_TRUE, Y_PRED) == pytest.approx(4 / 7)
    # perfect
    assert f1([0, 1, 1], [0, 1, 1]) == 1.0
    # all predicted positive, 2 of 4 true positives: TP=2, FP=2, FN=0 -> 4 / 6
    assert f1([1, 0, 1, 0], [1, 1, 1, 1]) == pytest.approx(2 / 3)


def test_f1_positive_class_is_label_1_and_configurable():
    # The same case with class 0 as the positive: TP0 = 3 (i=4,5,7), FP0 = 2 (i=1,6), FN0 = 1 (i=3)
    # -> 2*3 / (6 + 2 + 1) = 6/9
    assert f1(Y_TRUE, Y_PRED, positive=0) == pytest.approx(2 / 3)
    assert f1(Y_TRUE, Y_PRED) != pytest.approx(f1(Y_TRUE, Y_PRED, positive=0))


def test_f1_is_zero_without_true_positives():
    assert f1([1, 0], [0, 1]) == 0.0  # TP = 0, FP = FN = 1
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positives at all (sklearn's zero_division default)
    assert f1([1, 1], [0, 0]) == 0.0  # never predicts the positive class


def test_mcc_binary_by_hand():
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (2*3 - 1*2) / sqrt(3 * 4 * 4 * 5) = 4 / sqrt(240) = 1 / sqrt(15) ~= 0.2582
    assert matthews_correlation(Y_TRUE, Y_PRED) == pytest.approx(1 / math.sqrt(15))
    assert matthews_correlation([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_correlation([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_mcc_does_not_depend_on_label_values():
    relabel = {0: 3, 1: 7}
    t = [relabel[y] for y in Y_TRUE]
    p = [relabel[y] for y in Y_PRED]
    assert matthews_correlation(t, p) == pytest.approx(1 / math.sqrt(15))


def test_mcc_multiclass_by_hand():
    # true [0,0,1,1,2,2], pred [0,1,1,2,2,0]; confusion rows = true, columns = pred:
    #   [[1,1,0],[0,1,1],[1,0,1]]   t_sum = p_sum = [2,2,2], n = 6, correct = 3
    # Gorodkin: (c*n - t.p) / sqrt((n^2 - p.p)(n^2 - t.t)) = (18 - 12) / sqrt(24 * 24) = 0.25
    assert matthews_correlation([0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 0]) == pytest.approx(0.25)
    # true [0,0,0,1,1,2], pred [0,0,1,1,2,2]; confusion [[2,1,0],[0,1,1],[0,0,1]]
    #   t_sum = [3,2,1], p_sum = [2,2,2], n = 6, correct = 4, t.p = 6+4+2 = 12, p.p = 12, t.t = 14
    #   (24 - 12) / sqrt((36 - 12)(36 - 14)) = 12 / sqrt(528) = 3 / sqrt(33) ~= 0.5222
    assert matthews_correlation([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]) == pytest.approx(3 / math.sqrt(33))


def test_mcc_multiclass_with_class_only_predicted():
    # true [0,0,1,1], pred [0,2,1,1]: class 2 never occurs in y_true. confusion (classes 0,1,2):
    #   [[1,0,1],[0,2,0],[0,0,0]]  t_sum = [2,2,0], p_sum = [1,2,1], n = 4, correct = 3
    #   t.p = 2 + 4 + 0 = 6, p.p = 1 + 4 + 1 = 6, t.t = 8
    #   (12 - 6) / sqrt((16 - 6)(16 - 8)) = 6 / sqrt(80) ~= 0.6708
    assert matthews_correlation([0, 0, 1, 1], [0, 2, 1, 1]) == pytest.approx(6 / math.sqrt(80))


def test_mcc_is_zero_when_a_side_is_constant():
    assert matthews_correlation([1, 1, 1], [1, 1, 1]) == 0.0  # all one class: denominator 0
    assert matthews_correlation([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant prediction
    assert matthews_correlation([2, 2, 2, 2], [0, 1, 2, 0]) == 0.0  # constant truth, multi-class


@pytest.mark.parametrize("fn", [accuracy, f1, matthews_correlation])
def test_mismatched_lengths_raise(fn):
    with pytest.raises(ValueError, match="equal length"):
        fn([0, 1, 1], [0, 1])


@pytest.mark.parametrize("fn", [accuracy, f1, matthews_correlation])
def test_empty_raises(fn):
    with pytest.raises(ValueError, match="zero examples"):
        fn([], [])


@pytest.mark.parametrize("fn", [accuracy, f1, matthews_correlation])
def test_two_dimensional_input_raises(fn):
    with pytest.raises(ValueError):
        fn([[0, 1]], [[0, 1]])


def test_compute_metric_dispatches_by_name():
    assert compute_metric("accuracy", Y_TRUE, Y_PRED) == pytest.approx(5 / 8)
    assert compute_metric("f1", Y_TRUE, Y_PRED) == pytest.approx(4 / 7)
    assert compute_metric("matthews_correlation", Y_TRUE, Y_PRED) == pytest.approx(1 / math.sqrt(15))
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        compute_metric("auc", Y_TRUE, Y_PRED)


def test_every_task_metric_is_known():
    assert {spec.metric for spec in TASKS.values()} <= set(METRICS)
    assert list(RANGES) == list(METRICS)  # a submission's claimed score is checked against its metric's range
    assert RANGES["matthews_correlation"] == (-1.0, 1.0) and RANGES["f1"] == (0.0, 1.0)
    assert TASKS["mrpc"].metric == "f1" and TASKS["qqp"].metric == "f1"
    assert TASKS["cola"].metric == "matthews_correlation"
