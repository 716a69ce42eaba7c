"""Metrics: a leaf package (it imports nothing from promptgym but its errors), so every layer can use it.

* :mod:`~promptgym.metrics.task`: the task metrics (accuracy, F1, Matthews correlation);
* :mod:`~promptgym.metrics.uncertainty`: metrics of a predictive distribution (ECE, NLL, Brier,
  AURC, OOD AUROC);
* :mod:`~promptgym.metrics.stats`: the leaderboard's statistics (bootstrap CIs, curve areas, the
  predictions codec);
* :mod:`~promptgym.metrics.registry`: one spec per leaderboard metric, which evaluation, the
  submission schema, the verifier, the ranking and the pages read.
"""

from promptgym.metrics.registry import (
    METRIC_REGISTRY,
    MetricSpec,
    column_specs,
    metric_spec,
    probability_metrics,
    recorded_specs,
    register,
)
from promptgym.metrics.task import METRICS, accuracy, compute_metric, f1, matthews_correlation

__all__ = ["METRICS", "METRIC_REGISTRY", "MetricSpec", "accuracy", "column_specs", "compute_metric", "f1",
           "matthews_correlation", "metric_spec", "probability_metrics", "recorded_specs", "register"]
