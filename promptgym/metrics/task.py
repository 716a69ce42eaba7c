"""Task metrics: the one number a task is scored by (accuracy, F1, Matthews correlation), from labels.

Written out so that leaderboards do not depend on scikit-learn's version. Conventions follow
scikit-learn: F1 is that of the positive class (label 1: MRPC "equivalent", QQP "duplicate") and is
0 when there are no true positives; Matthews correlation is 0 when its denominator is 0. A task
names its metric by a key of :data:`METRICS`; :data:`RANGES` says where each one's values lie (what
a submission's claimed score is validated against).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from promptgym.errors import ConfigError


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    t, p = _as_arrays(y_true, y_pred)
    return float(np.mean(t == p))


def f1(y_true: Sequence[int], y_pred: Sequence[int], positive: int = 1) -> float:
    t, p = _as_arrays(y_true, y_pred)
    tp = int(np.sum((p == positive) & (t == positive)))
    fp = int(np.sum((p == positive) & (t != positive)))
    fn = int(np.sum((p != positive) & (t == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_correlation(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Multi-class MCC (Gorodkin's R_K), equal to the binary phi coefficient for two classes."""
    t, p = _as_arrays(y_true, y_pred)
    labels = np.union1d(t, p)
    conf = np.zeros((len(labels), len(labels)), dtype=np.float64)
    index = {lab: i for i, lab in enumerate(labels)}
    for a, b in zip(t, p, strict=True):
        conf[index[a], index[b]] += 1
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    n, correct = conf.sum(), np.trace(conf)
    cov_ytyp = correct * n - float(np.dot(t_sum, p_sum))
    cov_ypyp = n * n - float(np.dot(p_sum, p_sum))
    cov_ytyt = n * n - float(np.dot(t_sum, t_sum))
    denom = math.sqrt(cov_ytyt * cov_ypyp)
    return 0.0 if denom == 0 else cov_ytyp / denom


METRICS: dict[str, Callable[[Sequence[int], Sequence[int]], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
}

#: where each task metric's values lie: accuracy and F1 are fractions, Matthews correlation is in [-1, 1]
RANGES: dict[str, tuple[float, float]] = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "matthews_correlation": (-1.0, 1.0)}


def compute_metric(name: str, y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    try:
        fn = METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None
    return fn(y_true, y_pred)


def _as_arrays(y_true: Sequence[int], y_pred: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and equal length, got {t.shape} and {p.shape}")
    if t.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return t, p
