"""Rewards: functions of the LM's label scores and the gold labels.

* ``ce`` (default, BBT): minus the mean cross-entropy of the gold label, with the softmax taken
  over the label words only (BBT's loss over verbalizer logits).
* ``hinge``: minus the mean multi-class margin loss ``max(0, margin - (s_y - max_{c != y} s_c))``
  on the label log-probabilities (BBT's alternative loss), margin 1 nat.
* ``accuracy``: fraction of examples whose highest-scoring label word is the gold one.
* ``label_only``: the task metric computed from predicted labels alone. The request asks the LM for
  predictions only, so no likelihood ever reaches the agent (the likelihood-free setting of
  Shen et al.).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from promptgym.envs.config import RewardKind
from promptgym.errors import ConfigError
from promptgym.lm.base import ScoreResult
from promptgym.metrics import compute_metric
from promptgym.typed_config import choices

REWARDS: tuple[str, ...] = choices(RewardKind)
HINGE_MARGIN = 1.0


def check_reward_kind(kind: str) -> str:
    if kind not in REWARDS:
        raise ConfigError(f"unknown reward {kind!r}; choose one of {REWARDS}")
    return kind


def compute_reward(kind: str, result: ScoreResult, labels: Sequence[int], metric: str) -> float:
    y = np.asarray(labels)
    if kind == "label_only":
        return compute_metric(metric, y, result.predictions)
    if kind == "accuracy":
        return float(np.mean(result.predictions == y))
    if result.label_logprobs is None or result.logprobs is None:
        raise ValueError(f"reward {kind!r} needs log-probabilities; the LM returned labels only")
    rows = np.arange(len(y))
    if kind == "ce":
        return float(np.mean(result.label_logprobs[rows, y]))
    scores = result.logprobs
    gold = scores[rows, y]
    others = scores.copy()
    others[rows, y] = -np.inf
    margin = gold - np.max(others, axis=1)
    return float(-np.mean(np.maximum(0.0, HINGE_MARGIN - margin)))
