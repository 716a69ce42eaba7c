"""What the prompt-set agents (ensemble, cma_elbo, abc_smc, snpe) share: scoring a weighted set of
prompts on dev, and the Result of a set.

A set is scored as the test harness scores it: every member is one API call (all members in ONE
batched request, charged like any call), and the members' predictions are combined by the harness's
own rule (:func:`promptgym.members.combine_set`), so an agent's dev number is its test number's
twin. A label-only env returns predicted labels only; a "vote" set needs nothing more (its ties then
go to the heaviest member's label, where the test harness, which has log-probs, compares the
members' mean probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptgym.agent import Result, TrainCurve, config_dict
from promptgym.errors import IncompatibleAgentError
from promptgym.members import combine_set
from promptgym.metrics import compute_metric
from promptgym.metrics.uncertainty import nll


@dataclass(frozen=True)
class SetScore:
    """A prompt set's combined predictions on one batch."""

    metric: float       # the task metric of the combined predictions
    nll: float          # mean negative log-likelihood (nats) of the gold labels under the combined distribution
    probs: np.ndarray   # (n, C) the combined predictive distribution
    calls: int          # API calls the scoring cost (one per member)


def score_set(base: Any, members: Sequence[np.ndarray], weights: Sequence[float] | None = None,
              combine: str = "mean", split: str = "dev") -> SetScore:
    """Score ``members`` on ``split`` of the unwrapped env ``base`` in one batched call (charged
    ``len(members)`` calls) and combine them by ``combine`` ("mean" or "vote")."""
    outs = base.score_actions(list(members), split=split)
    n_labels = base.spec_task.num_labels
    labels_only = any(o.label_logprobs is None for o in outs)
    if combine == "mean" and labels_only:
        raise IncompatibleAgentError("a 'mean' prompt set needs label log-probabilities; the env uses "
                                     "reward='label_only' (use a 'vote' set)")
    if labels_only:  # a vote reads the predicted labels; one-hot scores carry exactly them (ties: heaviest member)
        scores = np.stack([np.eye(n_labels)[np.asarray(o.predictions)] for o in outs])
    else:  # with log-probs a vote's ties go to the larger mean probability, as on test
        scores = np.stack([np.asarray(o.label_logprobs, dtype=np.float64) for o in outs])
    probs, preds = combine_set(scores, None if weights is None else np.asarray(weights, dtype=np.float64), combine,
                               labels_only=labels_only)
    labels = np.asarray(outs[0].labels)
    metric = float(compute_metric(base.spec_task.metric, labels, preds))
    return SetScore(metric, float(nll(probs, labels)), probs, len(outs))


def set_result(agent: str, base: Any, members: Sequence[np.ndarray], weights: Sequence[float], combine: str,
               train: TrainCurve, dev_metric: float | None, curve: list[tuple[int, float]], config: Any,
               extra: dict | None = None) -> Result:
    """The Result of a prompt set: ``action`` is the member with the largest weight (what a
    single-prompt reader shows), weights are normalised."""
    members = [np.asarray(m, dtype=np.float32) for m in members]
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    top = members[int(np.argmax(w))]
    return Result(agent, top, base.prompt_text(top), train.best, dev_metric, base.budget.calls, list(curve),
                  train.points, config=config_dict(config), extra=dict(extra or {}), members=members,
                  weights=[float(x) for x in w], combine=combine)


__all__ = ["SetScore", "score_set", "set_result"]
