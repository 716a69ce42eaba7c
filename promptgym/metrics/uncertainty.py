"""Uncertainty metrics of a predictive distribution: calibration, proper scores, selective
classification and out-of-distribution detection.

A prompt (or a weighted set of prompts) gives every test row a distribution over the labels;
accuracy reads only its argmax. These metrics read the rest, which is what a method that learns a
*distribution* over prompts claims to improve. Every function takes ``probs`` of shape (n, C) —
rows are distributions: finite, in [0, 1], summing to 1 within :data:`PROB_SUM_TOL` — and, where
needed, ``labels`` of shape (n,) with integer ids in [0, C). Bad input raises
:class:`~promptgym.errors.InvalidProbabilitiesError` naming what is wrong.

Conventions, fixed here so that numbers are comparable across entries and with the literature:

* **prediction** = argmax (the first label on ties, as ``numpy.argmax``); **confidence** = the
  largest probability of a row.
* **ECE**: 10 equal-width bins of the confidence, top-label (:func:`ece`; the definition lives in
  :func:`promptgym.metrics.stats.expected_calibration_error`, the project's one ECE).
* **NLL**: mean over rows of ``-ln p[label]`` in nats, ``p[label]`` floored at :data:`NLL_FLOOR`
  (a vote histogram can put 0 on the truth; one such row then costs 27.6 nats, not infinity).
* **Brier**: multi-class, squared distance to the one-hot label summed over classes, mean over
  rows; in [0, 2] (a binary task's value is twice the binary Brier score of the positive class).
* **AURC**: exact area under the risk–coverage curve (:func:`risk_coverage`, :func:`aurc`),
  tied confidences averaged over their orders; **aurc_10bin**: the 10-point estimate the
  reference work reports (:func:`aurc_binned`). Lower is better for both; the lowest possible
  value for a given set of mistakes is :func:`aurc_lower_bound`.
* **OOD AUROC**: in-domain rows are the positive class and a higher score means "in-domain":
  the max-probability or minus the entropy (:func:`ood_auroc`); 0.5 is chance, 1 is perfect.

Which of them a run records, the submission verifier re-checks and the leaderboard shows is said
once, in :mod:`promptgym.metrics.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptgym.errors import InvalidProbabilitiesError
from promptgym.metrics.stats import expected_calibration_error

__all__ = ["NLL_FLOOR", "OOD_SCORES", "PROB_SUM_TOL", "aurc", "aurc_binned", "aurc_lower_bound", "brier",
           "check_probs", "ece", "entropy", "nll", "ood_auroc", "risk_coverage"]

OOD_SCORES: tuple[str, ...] = ("maxprob", "entropy")  # the in-domain scores of ood_auroc
PROB_SUM_TOL = 1e-4  # a row may sum to 1 ± this (float32 softmax and member averaging drift by ~1e-6)
NLL_FLOOR = 1e-12  # p[label] below this counts as this in the NLL (-ln 1e-12 = 27.6 nats)


# ------------------------------------------------------------------------------------------ input
def check_probs(probs: np.ndarray | Sequence[Sequence[float]],
                labels: np.ndarray | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``probs`` as a float64 (n, C) array and ``labels`` as int64 (n,), or raise naming the problem."""
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidProbabilitiesError("probs must be a numeric (n, C) array") from None
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise InvalidProbabilitiesError(f"probs must be an (n, C) array with n >= 1 rows and C >= 2 classes, "
                                        f"got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise InvalidProbabilitiesError(f"probs must be finite, row {int(np.argmin(np.isfinite(p).all(axis=1)))} "
                                        "is not")
    if p.min() < 0 or p.max() > 1:
        bad = int(np.argmax((p < 0).any(axis=1) | (p > 1).any(axis=1)))
        raise InvalidProbabilitiesError(f"probs must lie in [0, 1], row {bad} is {p[bad].tolist()}")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0)
    if off.max() > PROB_SUM_TOL:
        bad = int(np.argmax(off))
        raise InvalidProbabilitiesError(f"each row of probs must sum to 1 (± {PROB_SUM_TOL:g}), row {bad} sums to "
                                        f"{sums[bad]:.6g}")
    if labels is None:
        return p, None
    y = np.asarray(labels)
    if y.shape != (p.shape[0],):
        raise InvalidProbabilitiesError(f"labels must have shape ({p.shape[0]},) to match probs, got {y.shape}")
    if y.size and not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating)
                                                              and np.all(y == np.round(y)))):
        raise InvalidProbabilitiesError(f"labels must be integer label ids, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise InvalidProbabilitiesError(f"labels must be in [0, {p.shape[1] - 1}] (one of the {p.shape[1]} classes), "
                                        f"got [{y.min()}, {y.max()}]")
    return p, y


# ------------------------------------------------------------------------------ calibration, scores
def ece(probs: np.ndarray, labels: np.ndarray | Sequence[int], n_bins: int = 10) -> float:
    """Expected calibration error, top-label, ``n_bins`` equal-width confidence bins ``(k/B, (k+1)/B]``.

    The row-weighted mean over bins of ``|accuracy - mean confidence|``; delegates to
    :func:`promptgym.metrics.stats.expected_calibration_error` so the project has one ECE.
    """
    p, y = check_probs(probs, labels)
    return expected_calibration_error(p, y, n_bins=n_bins)


def nll(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> float:
    """Mean negative log-likelihood of the labels in nats, ``p[label]`` floored at :data:`NLL_FLOOR`."""
    p, y = check_probs(probs, labels)
    return float(np.mean(-np.log(np.maximum(p[np.arange(y.size), y], NLL_FLOOR))))


def brier(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> float:
    """Multi-class Brier score: ``sum_c (p_c - [c == label])^2`` per row, mean over rows; in [0, 2]."""
    p, y = check_probs(probs, labels)
    target = np.zeros_like(p)
    target[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - target) ** 2, axis=1)))


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row in nats (``0 ln 0 = 0``), shape (n,)."""
    p, _ = check_probs(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


# -------------------------------------------------------------------------------- selective risk
def _confidence_and_errors(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p, y = check_probs(probs, labels)
    return p.max(axis=1), (p.argmax(axis=1) != y).astype(np.float64)


def risk_coverage(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The risk–coverage curve: at coverage ``k/n`` (the ``k`` most confident rows kept, k = 1..n),
    the selective risk = error rate among the kept rows.

    Ties: rows with equal confidence cannot be told apart by any threshold, so their order is
    taken as uniformly random and the curve is the expectation over those orders — inside a tied
    group each row counts with the group's mean error. The curve then depends on the rows' values
    only, never on their order in the input (vote histograms tie a lot).
    Returns ``(coverage, risk)``, two arrays of n points.
    """
    confidence, errors = _confidence_and_errors(probs, labels)
    n = confidence.size
    order = np.argsort(-confidence, kind="stable")
    c, e = confidence[order], errors[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_mean = np.add.reduceat(e, starts) / sizes
    expected = np.repeat(group_mean, sizes)
    k = np.arange(1, n + 1, dtype=np.float64)
    return k / n, np.cumsum(expected) / k


def aurc(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> float:
    """Area under the risk–coverage curve, exact: the mean of the selective risks at the n
    coverages ``1/n, 2/n, ..., 1`` of :func:`risk_coverage` (ties averaged as stated there).

    In [0, 1]; 0 only without errors. The error rate itself matters as much as the ranking, so
    compare with :func:`aurc_lower_bound` to judge the ranking alone.
    """
    return float(np.mean(risk_coverage(probs, labels)[1]))


def aurc_lower_bound(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> float:
    """The smallest AURC any confidence ranking of the same predictions can reach: every correct
    row ranked above every error (risk 0 up to coverage ``1 - error rate``)."""
    _, errors = _confidence_and_errors(probs, labels)
    n, m = errors.size, int(errors.sum())
    k = np.arange(n - m + 1, n + 1, dtype=np.float64)
    return float(np.sum((k - (n - m)) / k) / n)


def aurc_binned(probs: np.ndarray, labels: np.ndarray | Sequence[int], n_bins: int = 10) -> float:
    """AURC estimated at ``n_bins`` coverages, as the reference work reports it (it uses the
    UQ360 library's risk–rejection estimate; defined here from scratch, not copied).

    With ``m = n // n_bins`` and rows sorted by decreasing confidence, for b = 1..n_bins: the
    threshold is the confidence of the ``(b*m)``-th row, the kept rows are all rows with confidence
    >= that threshold (tied rows are kept together, so a bin may cover more than ``b*m`` rows),
    and the bin's risk is their error rate. The result is the plain mean of the n_bins risks. When
    ``n`` is not a multiple of ``n_bins`` the last ``n - n_bins*m`` least confident rows enter no bin
    unless tied. Needs ``n >= n_bins``.
    """
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise InvalidProbabilitiesError(f"n_bins must be a positive int, got {n_bins!r}")
    confidence, errors = _confidence_and_errors(probs, labels)
    n = confidence.size
    if n < n_bins:
        raise InvalidProbabilitiesError(f"aurc_binned needs at least n_bins={n_bins} rows, got {n}")
    sorted_conf = np.sort(confidence)[::-1]
    m = n // n_bins
    risks = []
    for b in range(1, n_bins + 1):
        kept = confidence >= sorted_conf[b * m - 1]
        risks.append(errors[kept].mean())
    return float(np.mean(risks))


# ------------------------------------------------------------------------------------ OOD detection
def ood_auroc(probs_in: np.ndarray, probs_out: np.ndarray, score: str = "maxprob") -> float:
    """AUROC of telling in-domain rows (positive) from out-of-distribution rows by a confidence score.

    ``score`` "maxprob": the largest probability; "entropy": minus the entropy (confident rows
    have low entropy). Both say "higher = in-domain", so 1 is perfect separation, 0.5 chance and
    below 0.5 an OOD set the model is *more* sure about. Computed as the Mann–Whitney statistic
    ``P(s_in > s_out) + P(s_in = s_out) / 2`` (ties count one half). Both arrays are the in-domain
    model's label distributions (the OOD rows are read with the in-domain label words), so same C.
    """
    if score not in OOD_SCORES:
        raise InvalidProbabilitiesError(f"score must be one of {OOD_SCORES}, got {score!r}")
    p_in, _ = check_probs(probs_in)
    p_out, _ = check_probs(probs_out)
    if p_in.shape[1] != p_out.shape[1]:
        raise InvalidProbabilitiesError(f"in-domain and OOD probs must have the same classes, got "
                                        f"{p_in.shape[1]} and {p_out.shape[1]}")
    if score == "maxprob":
        s_in, s_out = p_in.max(axis=1), p_out.max(axis=1)
    else:
        s_in, s_out = -entropy(p_in), -entropy(p_out)
    return _mann_whitney_auc(s_in, s_out)


def _mann_whitney_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """``P(pos > neg) + P(pos == neg) / 2`` from mid-ranks of the pooled scores (O(n log n))."""
    pooled = np.concatenate([pos, neg])
    values, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_rank = ends - (counts - 1) / 2.0  # 1-based rank, averaged over ties
    rank_sum = mid_rank[inverse[:pos.size]].sum()
    n_pos, n_neg = pos.size, neg.size
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
