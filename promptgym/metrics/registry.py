"""The leaderboard's metrics: one :class:`MetricSpec` per metric, all in :data:`METRIC_REGISTRY`.

A leaderboard metric is read in five places: evaluation (what a run's test record holds), the
submission schema (which keys a record may carry, and their ranges), verification (which claims
``promptgym submit`` re-scores, within what tolerance), ranking (a mean over seeds) and the pages
(a column, its format, its definition in the summary). Each of them iterates over this registry
and names no metric, so adding one is a :func:`register` call in this module plus a test, as
lm-evaluation-harness registers its metrics.

Metrics come from one of two sources, trusted differently:

* :attr:`Source.PROBABILITIES`: computed from the predictive distribution when a prompt is scored
  on test, *recorded* in each run by the submitter's harness, and re-checked by the verifier, which
  re-scores the prompt (``verify``: a tolerance, since near-ties flip across CPUs). A file written
  before such a metric existed lacks its key: the page shows it as not available, because only the
  model could recompute it. A new recorded metric also adds an optional key to the published JSON
  Schema (``leaderboards/submission.schema.json``, regenerated).
* :attr:`Source.PREDICTIONS`: computed from the stored test predictions and the gold labels wherever
  the labels are at hand (the ranking). Nothing is recorded, so nothing is claimed or verified
  beyond the predictions themselves (which the verifier reproduces), and every entry has it, those
  submitted before it existed included.

``tasks`` limits a metric to the tasks it informs (a column appears only in those tasks' tables).
The task metric itself (accuracy, F1, Matthews correlation) is not in this registry: it is the
score tables rank by, with its own bootstrap CI (:mod:`promptgym.metrics.task`, ``stats``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from promptgym.errors import ConfigError
from promptgym.metrics.task import f1
from promptgym.metrics.uncertainty import aurc, aurc_binned, brier, check_probs, ece, nll

__all__ = ["METRIC_REGISTRY", "RESERVED_NAMES", "UNCERTAINTY_TOLERANCE", "Direction", "Format", "MetricSpec", "Source",
           "Tolerance", "column_specs", "macro_f1", "metric_spec", "probability_metrics", "recorded_specs", "register"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: keys of a run's test record that are not metrics of this registry
RESERVED_NAMES = frozenset({"metric", "n", "predictions", "ood"})


class Direction(str, Enum):
    """Which way a metric improves; its value is how the pages say it."""

    HIGHER = "higher is better"
    LOWER = "lower is better"


class Source(str, Enum):
    """What a metric is computed from (see the module docstring: recorded and verified, or derived)."""

    PROBABILITIES = "probabilities"
    PREDICTIONS = "predictions"


class Format(str, Enum):
    """How a value is written on the pages."""

    PERCENT = "percent"  #: ×100 with one decimal, like the scores: 0.6127 -> "61.3"
    NATS = "nats"  #: as is, three decimals (an unbounded quantity): 0.6127 -> "0.613"

    def text(self, value: float) -> str:
        return f"{100 * value:.1f}" if self is Format.PERCENT else f"{value:.3f}"


@dataclass(frozen=True)
class Tolerance:
    """How far a re-scored value may lie from the claimed one: ``atol + rtol * |claimed|`` (the relative
    part for unbounded metrics such as NLL, where a flipped near-tie moves large values more)."""

    atol: float
    rtol: float = 0.0

    def __post_init__(self) -> None:
        for name in ("atol", "rtol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"Tolerance.{name} must be a finite number >= 0, got {value!r}")

    def close(self, claimed: float, got: float) -> bool:
        return abs(claimed - got) <= self.atol + self.rtol * abs(claimed)


#: the verifier's slack for recorded uncertainty metrics (and the OOD AUROCs): a task metric's 0.005, plus 1%
UNCERTAINTY_TOLERANCE = Tolerance(atol=0.005, rtol=0.01)


@dataclass(frozen=True)
class MetricSpec:
    """One leaderboard metric: what it is called, how it is computed, checked and shown.

    :param name: its key in a run's test record and in a ranked row (an identifier, a-z 0-9 _).
    :param label: what the pages call it; the column header when ``column``.
    :param description: its definition as the page's summary states it (one clause, no final period).
    :param direction: whether higher or lower values are better.
    :param source: computed from the predictive distribution (recorded, verified) or from the
        stored predictions (derived); ``compute`` is then ``f(probs, labels)`` or ``f(labels, predictions)``.
    :param compute: the definition, a pure function of numpy arrays returning a float.
    :param bounds: the range a value must lie in (``None`` as the upper end: unbounded); a recorded
        value outside it is refused by the schema.
    :param fmt: how the pages write a value.
    :param column: shown as a leaderboard column (False: recorded and verified, not shown).
    :param verify: the verifier's tolerance for a recorded value; None for a derived one.
    :param tasks: the tasks it applies to (their tables get the column); None: every task.
    :param required: every submission file records it (only for metrics as old as the format).
    :param bare_vote_na: not applicable to a schema version 1 vote set, whose bare histogram puts
        probability 0 on labels (its value would be an artefact of the floor, not of the method).
    """

    name: str
    label: str
    description: str
    direction: Direction
    source: Source
    compute: Callable[[np.ndarray, np.ndarray], float]
    bounds: tuple[float, float | None]
    fmt: Format = Format.PERCENT
    column: bool = True
    verify: Tolerance | None = None
    tasks: frozenset[str] | None = None
    required: bool = False
    bare_vote_na: bool = False

    def __post_init__(self) -> None:
        where = f"metric {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name) or self.name in RESERVED_NAMES:
            raise ConfigError(f"metric name must match {_NAME_RE.pattern} and not be one of {sorted(RESERVED_NAMES)}, "
                              f"got {self.name!r}")
        for field in ("label", "description"):
            text = getattr(self, field)
            if not isinstance(text, str) or not text.strip() or "\n" in text:
                raise ConfigError(f"{where}: {field} must be a non-empty single line, got {text!r}")
        for field, kind in (("direction", Direction), ("source", Source), ("fmt", Format)):
            value = getattr(self, field)
            try:
                object.__setattr__(self, field, kind(value))
            except ValueError:
                raise ConfigError(f"{where}: {field} must be one of {[k.value for k in kind]}, got {value!r}") from None
        if not callable(self.compute):
            raise ConfigError(f"{where}: compute must be a function, got {type(self.compute).__name__}")
        if not isinstance(self.bounds, tuple) or len(self.bounds) != 2:
            raise ConfigError(f"{where}: bounds must be a pair (low, high or None), got {self.bounds!r}")
        lo, hi = self.bounds
        if not math.isfinite(lo) or (hi is not None and not (math.isfinite(hi) and hi > lo)):
            raise ConfigError(f"{where}: bounds must be (finite low, higher finite high or None), got {self.bounds}")
        if self.verify is not None and not isinstance(self.verify, Tolerance):
            raise ConfigError(f"{where}: verify must be a Tolerance or None, got {self.verify!r}")
        recorded = self.source is Source.PROBABILITIES
        if recorded and self.verify is None:
            raise ConfigError(f"{where}: a recorded metric comes from strangers' files and needs a verify tolerance")
        if not recorded and (self.verify is not None or self.required or self.bare_vote_na):
            raise ConfigError(f"{where}: a metric derived from the predictions is not recorded, so it has no verify "
                              "tolerance, is never required and applies to every combine rule")
        if self.tasks is not None:
            tasks = frozenset(self.tasks) if not isinstance(self.tasks, str) else None
            if not tasks or not all(isinstance(t, str) and t for t in tasks):
                raise ConfigError(f"{where}: tasks must be a non-empty set of task names or None, got {self.tasks!r}")
            object.__setattr__(self, "tasks", tasks)

    @property
    def recorded(self) -> bool:
        """True when runs record it (and the verifier re-checks it); False when it is derived."""
        return self.source is Source.PROBABILITIES

    def applies_to(self, task: str) -> bool:
        """Whether it informs ``task`` (a task name such as "mrpc")."""
        return self.tasks is None or task in self.tasks

    def measure(self, labels: np.ndarray | Sequence[int], *, predictions: np.ndarray | Sequence[int] | None = None,
                probs: np.ndarray | None = None) -> float:
        """Its value for one run's test rows, from what its source needs (``probs`` or ``predictions``)."""
        if self.recorded:
            if probs is None:
                raise ConfigError(f"metric {self.name!r} is computed from the predictive distribution: pass probs")
            return float(self.compute(probs, np.asarray(labels)))
        if predictions is None:
            raise ConfigError(f"metric {self.name!r} is computed from the predictions: pass predictions")
        return float(self.compute(np.asarray(labels), np.asarray(predictions)))

    def in_bounds(self, value: float) -> bool:
        lo, hi = self.bounds
        return math.isfinite(value) and lo <= value and (hi is None or value <= hi)


#: every leaderboard metric by name, in column order (the pages' columns and the records' keys follow it)
METRIC_REGISTRY: dict[str, MetricSpec] = {}


def register(spec: MetricSpec) -> MetricSpec:
    """Add ``spec`` to :data:`METRIC_REGISTRY` (after the others); a name already taken is refused."""
    if not isinstance(spec, MetricSpec):
        raise ConfigError(f"register takes a MetricSpec, got {type(spec).__name__}")
    if spec.name in METRIC_REGISTRY:
        raise ConfigError(f"metric {spec.name!r} is already registered")
    taken = next((s.name for s in METRIC_REGISTRY.values() if s.label == spec.label), None)
    if taken is not None:
        raise ConfigError(f"metric {spec.name!r}: label {spec.label!r} is already metric {taken!r}'s")
    METRIC_REGISTRY[spec.name] = spec
    return spec


def metric_spec(name: str) -> MetricSpec:
    """The registered spec called ``name``."""
    try:
        return METRIC_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown leaderboard metric {name!r}; known: {', '.join(METRIC_REGISTRY)}") from None


def recorded_specs(specs: Iterable[MetricSpec] | None = None) -> tuple[MetricSpec, ...]:
    """The metrics a run's test record carries (computed from probabilities), in registry order."""
    return tuple(s for s in (METRIC_REGISTRY.values() if specs is None else specs) if s.recorded)


def column_specs(task: str) -> tuple[MetricSpec, ...]:
    """The columns of ``task``'s tables, in registry order."""
    return tuple(s for s in METRIC_REGISTRY.values() if s.column and s.applies_to(task))


def probability_metrics(probs: np.ndarray, labels: np.ndarray | Sequence[int]) -> dict[str, float]:
    """Every recorded metric of a predictive distribution ``probs`` (n, C) on ``labels``: name -> value.

    What a scored prompt's test record holds next to the task metric; the input is checked once
    (:func:`~promptgym.metrics.uncertainty.check_probs`), so a bad distribution is refused by name.
    """
    p, y = check_probs(probs, labels)
    return {s.name: s.measure(y, probs=p) for s in recorded_specs()}


# ------------------------------------------------------------------------------------- definitions
def macro_f1(y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int]) -> float:
    """Unweighted mean over the labels of each label's F1 (that label as the positive class).

    The labels are those occurring in ``y_true`` or ``y_pred`` (scikit-learn's ``average="macro"``);
    a label without a true positive scores 0 (:func:`~promptgym.metrics.task.f1`'s convention). Unlike
    accuracy or the F1 of one class, a prompt that answers the majority label everywhere scores below
    1/C on C labels (0.5 on two), whatever the class balance.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    f1(t, p)  # the same shape checks as the task metrics
    labels = np.union1d(t, p)
    return float(np.mean([f1(t, p, positive=int(label)) for label in labels]))


register(MetricSpec(
    "macro_f1", "Macro-F1",
    "the unweighted mean over the labels of each label's F1 (a prompt answering the majority label everywhere "
    "scores below 50 on two labels, whatever the class balance), mean over the seeds; derived from the stored test "
    "predictions, so entries submitted before it existed have it too (– when the test labels were not at hand)",
    Direction.HIGHER, Source.PREDICTIONS, macro_f1, (0.0, 1.0),
    # the class-imbalanced tasks: F1-scored (MRPC, QQP) or skewed on test (CoLA 69% acceptable, MRPC 68%)
    tasks=frozenset({"mrpc", "qqp", "cola"})))
register(MetricSpec(
    "ece", "ECE",
    "expected calibration error of the predicted label distribution on the test split (10 bins, top label)",
    Direction.LOWER, Source.PROBABILITIES, ece, (0.0, 1.0), verify=UNCERTAINTY_TOLERANCE, required=True))
register(MetricSpec(
    "nll", "NLL", "mean negative log-likelihood of the test labels, in nats",
    Direction.LOWER, Source.PROBABILITIES, nll, (0.0, None), fmt=Format.NATS, verify=UNCERTAINTY_TOLERANCE,
    bare_vote_na=True))
register(MetricSpec(
    "brier", "Brier", "multi-class Brier score of the predicted label distribution on the test split, in [0, 2]",
    Direction.LOWER, Source.PROBABILITIES, brier, (0.0, 2.0), column=False, verify=UNCERTAINTY_TOLERANCE))
register(MetricSpec(
    "aurc", "AURC",
    "area under the risk–coverage curve (error rate among the most confident rows, averaged over every coverage; "
    "lower is better)",
    Direction.LOWER, Source.PROBABILITIES, aurc, (0.0, 1.0), verify=UNCERTAINTY_TOLERANCE))
register(MetricSpec(
    "aurc_10bin", "AURC (10 bins)",
    "the area under the risk–coverage curve estimated at 10 coverages, as the reference work reports it",
    Direction.LOWER, Source.PROBABILITIES, lambda probs, labels: aurc_binned(probs, labels, n_bins=10), (0.0, 1.0),
    column=False, verify=UNCERTAINTY_TOLERANCE))
