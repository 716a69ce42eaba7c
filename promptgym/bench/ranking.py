"""Ranking the leaderboard: committed entries -> one scored, sorted table per env id and budget tier.

This is the data side of the leaderboard pages, kept apart from :mod:`promptgym.bench.render` so
the statistics can be tested (and reused) without parsing Markdown or HTML back. Nothing here
formats text: a row carries numbers and a structured comparison, and the renderer words them.

A reader should not have to trust ranks alone, so each row also carries:

* a 95% CI of its score: a bootstrap over seeds *and* test rows when the test labels are given
  (``labels_by_env``), otherwise over seeds only;
* a comparison with the best baseline run on the same model (another model is another problem):
  with labels, a paired bootstrap CI of the difference; without, whether the seed-only CIs overlap;
* every metric of the registry (:data:`promptgym.metrics.registry.METRIC_REGISTRY`: ECE, NLL,
  AURC, macro-F1, ...) that applies to its task, as a mean over seeds in ``Row.metrics``: a recorded
  one as the runs recorded it (None for an entry submitted before it was recorded), a derived one
  computed from the stored predictions (None without the test labels). A table's ``columns`` are
  the registry's columns for its task;
* OOD detection (:mod:`promptgym.bench.ood`), summarised over the OOD tasks the entry was scored
  on (:func:`ood_summary`): the mean over them, their spread (min–max) and their number — an entry
  of protocol version 1 has one OOD task where a new one has several, and AUROCs on different OOD
  sets can rank the same prompts in opposite orders.

An entry whose prompts were followed by a fitted label bias (top-level ``"calibration": true``) is
named "<agent> + calibration", so that a tuned prompt plus calibration can be told from the agent
alone and from the calibrated template (the ``calibrated`` baseline).

Which agents are baselines, and which of them learn no prompt, comes from the agent registry
(:data:`promptgym.agent.AGENT_REGISTRY`); the task of an env id comes from the env registration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptgym.agent import AGENT_REGISTRY
from promptgym.bench.schema import bare_vote, created_date
from promptgym.bench.store import submission_filename
from promptgym.envs.registration import env_task
from promptgym.errors import InvalidSubmissionError, UnknownEnvError
from promptgym.lm.presets import DEFAULT_MODEL
from promptgym.metrics.registry import METRIC_REGISTRY, MetricSpec, column_specs
from promptgym.metrics.stats import (
    bootstrap_ci,
    curve_auc,
    decode_predictions,
    distinguishable,
    paired_difference_ci,
    score_predictions,
    seed_bootstrap_ci,
    seed_summary,
)

__all__ = ["CLAIM_TOLERANCE", "N_BOOT", "TIER_ORDER", "Comparison", "OodSummary", "Row", "Table", "baseline_agents",
           "ood_summary", "prompt_free_agents", "rank", "task_of"]

TIER_ORDER: tuple[str, ...] = ("standard", "lite")  # tables of one env: the headline tier first
N_BOOT = 1000  # bootstrap resamples: fixed (with the fixed seeds in stats) so pages regenerate byte for byte
CLAIM_TOLERANCE = 1e-6  # a submitted per-seed metric must match its predictions to this precision


def baseline_agents() -> frozenset[str]:
    """Registered agents flagged ``baseline``: every entry is compared with the best of them.

    Read from the registry at call time, so an agent registered later counts; a name that is not
    registered (a submitter's own agent) is never a baseline.
    """
    return frozenset(name for name, spec in AGENT_REGISTRY.items() if spec.baseline)


def prompt_free_agents() -> frozenset[str]:
    """Registered baselines that learn no prompt: their runs are the same on every env kind of a task,
    so a subspace or tokenwise table may borrow the ones submitted on the task's discrete env."""
    return frozenset(name for name, spec in AGENT_REGISTRY.items() if spec.baseline and spec.prompt_free)


def task_of(env_id: str) -> str:
    """The task of ``env_id``, or ``env_id`` itself when it is not a registered id.

    An entry for an env this install does not know (an older or newer promptgym) still gets its
    table; it just shares baselines with no other env.
    """
    try:
        return env_task(env_id)
    except UnknownEnvError:
        return env_id


@dataclass(frozen=True)
class Comparison:
    """A row against the best baseline on its model.

    ``ci`` is the paired-bootstrap 95% CI of ``diff`` when both rows' test predictions could be
    scored against the labels; None means the cruder test was used (do the seed-only CIs overlap?).
    """

    baseline_key: str  # submission file name of the baseline's entry
    is_self: bool  # the row *is* the best baseline
    diff: float  # row mean - baseline mean
    ci: tuple[float, float] | None
    distinguishable: bool  # False: the CI contains 0 (or the seed CIs overlap)


@dataclass
class OodSummary:
    """An entry's max-prob OOD AUROC over its OOD tasks: per task the mean over seeds, then the mean,
    extremes and standard deviation over the tasks (std 0 for a single task)."""

    by_task: dict[str, float]  # OOD task -> mean over seeds, in the order the runs list them

    @property
    def n(self) -> int:
        return len(self.by_task)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.by_task)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_task.values())))

    @property
    def low(self) -> float:
        return min(self.by_task.values())

    @property
    def high(self) -> float:
        return max(self.by_task.values())

    @property
    def std(self) -> float:
        """Population standard deviation over the OOD tasks (the tasks are the whole panel, not a sample)."""
        return float(np.std(list(self.by_task.values())))


def ood_summary(tests: Sequence[Mapping[str, Any]]) -> OodSummary | None:
    """The OOD summary of an entry's per-seed ``test`` records: the max-prob AUROC of every OOD task
    that *every* seed has, averaged over seeds; None when some seed has no OOD scores or the seeds
    share no OOD task (a mean over some seeds would not compare with the other rows' means)."""
    oods = [test.get("ood") for test in tests]
    if not oods or any(not ood for ood in oods):
        return None
    shared = [task for task in oods[0] if all(task in ood for ood in oods[1:])]
    if not shared:
        return None
    return OodSummary({task: float(np.mean([float(ood[task]["auroc_maxprob"]) for ood in oods])) for task in shared})


@dataclass(eq=False)  # rows are compared by identity: two entries never are the same row
class Row:
    """One entry of a table: its per-seed scores and the statistics the pages show."""

    sub: dict[str, Any]
    key: str  # submission file name: unique, breaks ties deterministically
    scores: list[float]  # per seed, in BENCH_SEEDS order
    mean: float
    std: float
    ci: tuple[float, float]
    calls: float
    auc: float
    # every registered metric applying to the task: its mean over seeds; None when not available (not
    # recorded by an older entry, no test labels for a derived one, a bare vote histogram's NLL)
    metrics: dict[str, float | None]
    preds: list[np.ndarray] | None = None  # per seed, when the test labels are known
    rank: int = 0
    versus: Comparison | None = None  # None: no baseline was submitted for this row's model
    ood_auroc: float | None = None  # max-prob OOD AUROC, mean over seeds then the entry's OOD tasks; None: none
    ood: OodSummary | None = None  # per OOD task, with the spread over tasks; None: none

    @property
    def agent(self) -> str:
        return str(self.sub["agent"]["name"])

    @property
    def calibrated(self) -> bool:
        """True for an entry whose final prompts got a fitted label bias (the calibration option)."""
        return bool(self.sub.get("calibration", False))

    @property
    def name(self) -> str:
        """What the pages call the entry: the agent, "+ calibration" for a calibrated variant."""
        return f"{self.agent} + calibration" if self.calibrated else self.agent

    @property
    def model(self) -> str:
        return str(self.sub["model"]["name"])

    @property
    def is_baseline(self) -> bool:
        return self.agent in baseline_agents()


@dataclass
class Table:
    """The rows of one (env id, tier, model), best first, and what the comparisons drew on."""

    env_id: str
    tier: str
    metric: str
    rows: list[Row]
    labels: np.ndarray | None
    borrowed: tuple[tuple[str, str], ...] = ()  # (agent, env id) of best baselines taken from other env kinds
    columns: tuple[MetricSpec, ...] = ()  # the registry's columns for this table's task, in registry order
    model: str = DEFAULT_MODEL  # every row's model: a method's rank is only read against its own model's rows

    @property
    def seed_only(self) -> bool:
        """True when the test labels were missing: CIs resample seeds only and comparisons use overlap."""
        return self.labels is None

    @property
    def missing_baseline(self) -> bool:
        """True when some row's model has no baseline to be compared with."""
        return any(row.versus is None for row in self.rows)


def rank(entries: Sequence[Mapping[str, Any]], labels_by_env: Mapping[str, np.ndarray] | None = None) -> list[Table]:
    """Group entries by (env id, tier, model), score and sort each group, and compare every row with its best
    baseline (on the same model: one table per model, so a ranking never mixes models).

    Tables come sorted by env id, then tier (:data:`TIER_ORDER`), then model (the default model first);
    rows by mean test score, ties going to the earlier submission. With labels, each submitted per-seed
    metric is re-scored from its predictions and a mismatch raises :class:`InvalidSubmissionError`: the pages show the
    submitted numbers, so they must be the true ones.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for sub in entries:
        groups.setdefault((sub["env_id"], sub["tier"], sub["model"]["name"]), []).append(dict(sub))
    tier_rank = {t: i for i, t in enumerate(TIER_ORDER)}
    tables = []
    for env_id, tier, model in sorted(groups, key=lambda g: (g[0], tier_rank.get(g[1], len(TIER_ORDER)), g[1],
                                                             g[2] != DEFAULT_MODEL, g[2])):
        subs = groups[(env_id, tier, model)]
        metrics = sorted({s["metric"] for s in subs})
        if len(metrics) != 1:
            raise InvalidSubmissionError(
                f"{env_id} ({tier}, {model}): entries disagree on the metric {metrics}; an environment has one metric")
        raw = None if labels_by_env is None else labels_by_env.get(env_id)
        labels = None if raw is None else np.asarray(raw)
        task = task_of(env_id)
        rows = [entry_row(sub, metrics[0], labels, task) for sub in subs]
        rows.sort(key=lambda r: (-r.mean, created_date(r.sub), r.key))
        for i, row in enumerate(rows, start=1):
            row.rank = i
        tables.append(Table(env_id, tier, metrics[0], rows, labels, columns=column_specs(task), model=model))
    tasks = {table.env_id: task_of(table.env_id) for table in tables}
    prompt_free = prompt_free_agents()
    for table in tables:
        shared = [row for other in tables if other is not table and other.tier == table.tier
                  and other.model == table.model and other.metric == table.metric
                  and tasks[other.env_id] == tasks[table.env_id]
                  for row in other.rows if row.agent in prompt_free]
        _compare_with_baselines(table, shared)
    return tables


def entry_row(sub: dict[str, Any], metric: str, labels: np.ndarray | None, task: str | None = None) -> Row:
    """A row's statistics; checks the submitted metrics against the predictions when labels are known.
    ``task``: the env id's task (:func:`task_of`, the default), which decides the registry metrics it gets."""
    task = task_of(sub["env_id"]) if task is None else task
    runs = sorted(sub["runs"], key=lambda r: r["seed"])
    scores = [float(r["test"]["metric"]) for r in runs]
    mean, std = seed_summary(scores)
    key = submission_filename(sub)
    preds = None
    if labels is not None:
        preds = []
        for run in runs:
            p = decode_predictions(run["test"]["predictions"])
            if p.size != labels.size:
                raise InvalidSubmissionError(f"{key}: seed {run['seed']} has {p.size} test predictions but the "
                                             f"test split has {labels.size} rows")
            preds.append(p)
        for run, claimed, actual in zip(runs, scores, score_predictions(preds, labels, metric)):
            if abs(claimed - actual) > CLAIM_TOLERANCE:
                raise InvalidSubmissionError(f"{key}: seed {run['seed']} claims test.metric {claimed:.6f} but its "
                                             f"predictions score {actual:.6f} against the test labels")
        ci = bootstrap_ci(preds, labels, metric, n_boot=N_BOOT)
    else:
        ci = seed_bootstrap_ci(scores, n_boot=N_BOOT)
    budget = int(sub["budget_calls"])
    ood = ood_summary([r["test"] for r in runs])
    return Row(sub=sub, key=key, scores=scores, mean=mean, std=std, ci=ci,
               calls=float(np.mean([r["calls_used"] for r in runs])),
               auc=float(np.mean([curve_auc(r["curve"], budget) for r in runs])),
               metrics={spec.name: _metric_mean(spec, sub, runs, labels, preds)
                        for spec in METRIC_REGISTRY.values() if spec.applies_to(task)},
               preds=preds, ood_auroc=None if ood is None else ood.mean, ood=ood)


def _metric_mean(spec: MetricSpec, sub: dict[str, Any], runs: Sequence[dict[str, Any]], labels: np.ndarray | None,
                 preds: list[np.ndarray] | None) -> float | None:
    """A registered metric's mean over the seeds, or None where it is not available: a recorded one as
    the runs recorded it (a bare vote histogram's NLL, schema version 1, is the probability floor's:
    not applicable), a derived one from the predictions when the test labels are known."""
    if spec.recorded:
        return None if spec.bare_vote_na and bare_vote(sub) else _seed_mean([r["test"].get(spec.name) for r in runs])
    if labels is None or preds is None:
        return None
    return float(np.mean([spec.measure(labels, predictions=p) for p in preds]))


def _seed_mean(values: Sequence[float | None]) -> float | None:
    """The mean over seeds, or None unless every seed has the value (a mean over some seeds would
    not be comparable with the other rows' means over all of them)."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean([float(v) for v in values if v is not None]))


def _compare_with_baselines(table: Table, shared: Sequence[Row] = ()) -> None:
    """Set ``row.versus`` for every row against the best baseline on the same model.

    ``shared``: prompt-free baseline rows of the same task on other env kinds, which count as
    baselines here too; the ones that end up best are recorded in ``table.borrowed``.
    """
    best: dict[str, Row] = {}
    candidates = [r for r in table.rows if r.is_baseline] + list(shared)
    for row in sorted(candidates, key=lambda r: -r.mean):  # best first: the first seen per model wins
        best.setdefault(row.model, row)
    table.borrowed = tuple(sorted({(b.agent, b.sub["env_id"]) for b in best.values() if b not in table.rows}))
    for row in table.rows:
        base = best.get(row.model)
        if base is None:
            row.versus = None
        elif base is row:
            row.versus = Comparison(base.key, True, 0.0, None, False)
        elif table.labels is not None and row.preds is not None and base.preds is not None:
            ci = paired_difference_ci(row.preds, base.preds, table.labels, table.metric, n_boot=N_BOOT)
            row.versus = Comparison(base.key, False, row.mean - base.mean, ci, distinguishable(ci))
        else:
            overlap = row.ci[0] <= base.ci[1] and base.ci[0] <= row.ci[1]
            row.versus = Comparison(base.key, False, row.mean - base.mean, None, not overlap)
