"""Statistics of the leaderboard: calibration, learning-curve area, seed summaries, bootstrap CIs.

A leaderboard score is a mean over five data seeds of a metric on one test split. It is noisy in
two ways: the seeds (which 16-shot split the agent tuned on, and its own randomness) and the test
rows (a finite sample of the task). The bootstrap here resamples *both* — seeds with replacement
and test rows with replacement — so a CI is not falsely narrow when one source dominates
(a 277-row RTE test set is as much noise as the seeds).

Point estimates go through :func:`promptgym.metrics.task.compute_metric`, the single definition
of each metric. Inside the bootstrap, metrics are evaluated from confusion matrices in a
vectorised form (:func:`metric_from_confusion`), because compute_metric's Matthews correlation
loops over rows in Python and ~5,000 bootstrap evaluations per entry would take minutes; the tests
check both forms agree to 1e-12.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptgym.metrics.task import METRICS, compute_metric

__all__ = ["bootstrap_ci", "curve_auc", "curve_on_grid", "decode_predictions", "distinguishable",
           "encode_predictions", "expected_calibration_error", "metric_from_confusion", "paired_difference_ci",
           "score_predictions", "seed_bootstrap_ci", "seed_summary"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_DECODE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(_ALPHABET):
    _DECODE[ord(_c)] = _i

# Upper bound on the (replicates x rows) index block drawn at once, to keep memory at a few MB.
_BLOCK_ELEMENTS = 2_000_000


# ------------------------------------------------------------------------------ predictions codec
def encode_predictions(arr: Sequence[int] | np.ndarray) -> str:
    """Label ids (0-35) as a base-36 string, one character per test row.

    A string is ~4x smaller than a JSON array of ints, which keeps a 5-seed submission on a
    10,000-row test set far below the 5 MB file limit; 36 labels cover every task (DBPedia has 14).
    """
    a = np.asarray(arr)
    if a.ndim != 1:
        raise ValueError(f"predictions must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"predictions must be integer label ids, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= len(_ALPHABET)):
        raise ValueError(f"label ids must be in [0, {len(_ALPHABET) - 1}], got [{a.min()}, {a.max()}]")
    return "".join(_ALPHABET[int(x)] for x in a)


def decode_predictions(s: str) -> np.ndarray:
    """The inverse of :func:`encode_predictions`: an int64 array of label ids."""
    try:
        raw = np.frombuffer(s.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        raise ValueError("predictions must contain only the characters 0-9 and a-z") from None
    out = _DECODE[raw]
    if out.size and out.min() < 0:
        bad = s[int(np.argmin(out))]
        raise ValueError(f"predictions must contain only the characters 0-9 and a-z, found {bad!r}")
    return out


# ---------------------------------------------------------------------------------- calibration
def expected_calibration_error(probs: np.ndarray, labels: Sequence[int] | np.ndarray, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins of the top-class confidence.

    Bins are ``(k/B, (k+1)/B]`` (a confidence of exactly 0 goes to the first bin); ECE is the
    row-weighted mean over bins of ``|accuracy - mean confidence|``. This is the common definition
    (Guo et al., 2017) that Shen et al. report, so numbers are comparable with theirs.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"probs must be a non-empty (n, C) array, got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got {y.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Edges k/B are computed by division so that e.g. 0.7 falls exactly on an edge, in bin (0.6, 0.7].
    edges = np.arange(n_bins + 1) / n_bins
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    return float(np.sum(np.abs(acc_sum - conf_sum)) / p.shape[0])


# ------------------------------------------------------------------------------- learning curves
def curve_auc(curve: Sequence[Sequence[float]], budget: int) -> float:
    """Area under the best-so-far dev curve as a step function of calls, divided by the budget.

    Rewards sample efficiency: two agents that end at the same dev score differ by how early they
    got there. The value before the first point is 0 (no prompt known yet), each point holds until
    the next one, the last holds until ``budget``; points beyond the budget are ignored. Values are
    made monotone with a running maximum ("best so far"), so a curve that reports the dev score of
    a prompt chosen by another criterion is still read as the best found. For metrics in [0, 1]
    the result is in [0, 1]. An empty curve scores 0.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if len(curve) == 0:
        return 0.0
    pts = np.asarray(curve, dtype=np.float64).reshape(-1, 2)
    calls = np.clip(pts[:, 0], 0, budget)
    values = np.maximum.accumulate(pts[:, 1])
    widths = np.diff(np.append(calls, budget))
    if np.any(widths < 0):
        raise ValueError("curve calls must be non-decreasing")
    return float(np.sum(values * widths) / budget)


def curve_on_grid(curves: Sequence[Sequence[Sequence[float]]], budget: int,
                  n_points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Mean best-so-far curve over seeds on a common grid of ``n_points`` call counts in [0, budget].

    Runs record their curves at different call counts; averaging needs one grid. At grid points
    before some seed's first point the mean is NaN (undefined) rather than a mean over fewer
    seeds, which would jump when a seed enters.
    """
    grid = np.linspace(0.0, float(budget), n_points)
    if not curves:
        return grid, np.full(n_points, np.nan)
    rows = []
    for curve in curves:
        row = np.full(n_points, np.nan)
        if len(curve):
            pts = np.asarray(curve, dtype=np.float64).reshape(-1, 2)
            best = np.maximum.accumulate(pts[:, 1])
            idx = np.searchsorted(pts[:, 0], grid, side="right") - 1
            ok = idx >= 0
            row[ok] = best[idx[ok]]
        rows.append(row)
    return grid, np.mean(np.vstack(rows), axis=0)


# ---------------------------------------------------------------------------------------- seeds
def seed_summary(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; std is 0 for a single seed."""
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("seed_summary needs a non-empty 1-D list of scores")
    return float(a.mean()), float(a.std(ddof=1)) if a.size >= 2 else 0.0


def score_predictions(predictions: Sequence[np.ndarray], labels: np.ndarray, metric: str) -> list[float]:
    """The metric of each seed's predictions (via compute_metric, the reference definition)."""
    y = _labels(labels)
    return [compute_metric(metric, y, _predictions(p, y.size, f"predictions[{i}]"))
            for i, p in enumerate(predictions)]


def metric_from_confusion(metric: str, conf: np.ndarray) -> np.ndarray:
    """A metric from confusion counts ``conf[..., true, predicted]``, vectorised over leading axes.

    Same conventions as :mod:`promptgym.metrics.task`: F1 of label 1 (0 without true
    positives), multi-class Matthews correlation (0 when its denominator is 0).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    c = np.asarray(conf, dtype=np.float64)
    n = c.sum(axis=(-2, -1))
    correct = np.trace(c, axis1=-2, axis2=-1)
    if metric == "accuracy":
        return correct / n
    if metric == "f1":
        tp = c[..., 1, 1]
        fp = c[..., :, 1].sum(axis=-1) - tp
        fn = c[..., 1, :].sum(axis=-1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    t_sum, p_sum = c.sum(axis=-1), c.sum(axis=-2)
    cov_ytyp = correct * n - np.sum(t_sum * p_sum, axis=-1)
    cov_ypyp = n * n - np.sum(p_sum * p_sum, axis=-1)
    cov_ytyt = n * n - np.sum(t_sum * t_sum, axis=-1)
    denom = np.sqrt(cov_ytyt * cov_ypyp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cov_ytyp / np.where(denom > 0, denom, 1.0), 0.0)


# ------------------------------------------------------------------------------------ bootstrap
def bootstrap_ci(predictions: Sequence[np.ndarray], labels: np.ndarray, metric: str, n_boot: int = 1000,
                 rng_seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean-over-seeds metric.

    Each replicate draws the seeds with replacement and the test rows with replacement (the same
    rows for every seed in the replicate, since all seeds share one test split), scores each drawn
    seed on the drawn rows and averages. Deterministic for a given ``rng_seed`` so that a
    regenerated leaderboard does not change when no entry changed.
    """
    reps = _replicates([predictions], labels, metric, n_boot, rng_seed)[0]
    return _percentiles(reps, level)


def paired_difference_ci(preds_a: Sequence[np.ndarray], preds_b: Sequence[np.ndarray], labels: np.ndarray,
                         metric: str, n_boot: int = 1000, rng_seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean_a - mean_b`` with both entries on the same draws.

    ``preds_a[i]`` and ``preds_b[i]`` must belong to the same data seed. Pairing (same resampled
    seeds and rows for both) removes the noise the two entries share — a hard test row is hard for
    both — so a real difference is detected with far fewer rows than comparing two separate CIs.
    The difference is real at this level when the interval excludes 0 (see :func:`distinguishable`).
    """
    if len(preds_a) != len(preds_b):
        raise ValueError(f"paired entries need the same seeds, got {len(preds_a)} and {len(preds_b)} runs")
    reps = _replicates([preds_a, preds_b], labels, metric, n_boot, rng_seed)
    return _percentiles(reps[0] - reps[1], level)


def seed_bootstrap_ci(scores: Sequence[float], n_boot: int = 1000, rng_seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds, resampling seeds only.

    The fallback when the test labels are not at hand: it ignores test-row noise, so it is
    narrower than :func:`bootstrap_ci` and must be labelled as such wherever it is shown.
    """
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError("seed_bootstrap_ci needs a non-empty 1-D list of finite scores")
    _check_boot(n_boot, level)
    rng = np.random.default_rng(rng_seed)
    reps = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    return _percentiles(reps, level)


def distinguishable(ci: tuple[float, float]) -> bool:
    """True when a CI of a difference excludes 0."""
    lo, hi = ci
    return lo > 0 or hi < 0


def _replicates(pred_sets: Sequence[Sequence[np.ndarray]], labels: np.ndarray, metric: str, n_boot: int,
                rng_seed: int) -> np.ndarray:
    """Bootstrap replicates of the mean-over-seeds metric, shape (len(pred_sets), n_boot).

    All sets share the draws (seed indices and row indices): that is what makes differences paired.
    """
    _check_boot(n_boot, 0.5)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    y = _labels(labels)
    n = y.size
    k = len(pred_sets[0])
    if k == 0:
        raise ValueError("need at least one seed's predictions")
    preds = [[_predictions(p, n, f"predictions[{i}]") for i, p in enumerate(s)] for s in pred_sets]
    n_classes = max(2, int(y.max()) + 1, *(int(p.max()) + 1 for s in preds for p in s))
    codes = [np.vstack([y * n_classes + p for p in s]) for s in preds]  # (k, n) cell of each row
    cells = n_classes * n_classes

    rng = np.random.default_rng(rng_seed)
    seed_draws = rng.integers(0, k, size=(n_boot, k))
    per_seed = np.empty((len(pred_sets), n_boot, k))
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        rows = rng.integers(0, n, size=(b, n))
        offsets = (np.arange(b) * cells)[:, None]
        for si, code in enumerate(codes):
            for j in range(k):
                flat = np.bincount((code[j][rows] + offsets).ravel(), minlength=b * cells)
                per_seed[si, start:start + b, j] = metric_from_confusion(metric, flat.reshape(b, n_classes, n_classes))
    picked = np.take_along_axis(per_seed, np.broadcast_to(seed_draws, per_seed.shape), axis=2)
    return picked.mean(axis=2)


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    _check_boot(1, level)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _check_boot(n_boot: int, level: float) -> None:
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _labels(labels: np.ndarray | Sequence[int]) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("labels must be a non-empty 1-D array of non-negative integer label ids")
    return y.astype(np.int64)


def _predictions(p: np.ndarray | Sequence[int] | str, n: int, name: str) -> np.ndarray:
    a = decode_predictions(p) if isinstance(p, str) else np.asarray(p)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected {n} predictions (one per test row), got shape {a.shape}")
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0):
        raise ValueError(f"{name}: predictions must be non-negative integer label ids")
    return a.astype(np.int64)
