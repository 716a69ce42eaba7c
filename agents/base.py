"""One interface for every policy: ``agent.learn(env) -> Result``.

Agents only see the environment: its action space, ``score_actions`` (batched, charged) and
``evaluate_dev`` (charged) on ``env.unwrapped``, and the budget meter. They never touch the LM.
They stop cleanly when the budget is spent: they ask for at most ``budget.remaining`` prompts.

Choosing the final prompt on the dev split matters: agents overfit 32 training examples within a
few hundred calls (MISSION.md), so ``DevSelector`` evaluates candidate prompts on dev (charged like
any call) and keeps the best; its best-so-far dev metric vs. calls used is the learning curve that
leaderboards integrate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Result:
    """What an agent learned.

    ``action`` is the final prompt in the env's action space (None: the template alone);
    ``label_bias`` is an additive per-label bias on label log-probs (calibration), else None.
    ``curve`` holds ``(calls_used, best-so-far dev metric)`` points; ``train_curve`` holds
    ``(calls_used, best-so-far train reward)`` points.
    """

    agent: str
    action: Any
    prompt_text: str
    train_reward: float
    dev_metric: float | None
    calls_used: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    label_bias: np.ndarray | None = None
    demonstrations: str | None = None
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Agent(Protocol):
    name: str

    def learn(self, env: Any) -> Result: ...


def config_dict(config: Any) -> dict:
    return asdict(config) if is_dataclass(config) else dict(config or {})


class DevSelector:
    """Keeps the prompt with the best dev metric among those it was asked to consider.

    A prompt already scored on dev is not scored (nor charged) again: the dev split is fixed, so
    the answer would be the same (agents often re-propose an unchanged argmax prompt).
    """

    def __init__(self, env: Any) -> None:
        self.env = env.unwrapped
        self.best_action: Any = None
        self.best_metric = -np.inf
        self.best_reward = -np.inf
        self.curve: list[tuple[int, float]] = []
        self._seen: dict[tuple | None, float] = {}

    def consider(self, action: Any, train_reward: float = float("nan")) -> float | None:
        """Evaluate ``action`` on dev (one call) if the budget allows; return its dev metric."""
        arr = np.asarray(action)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if action is not None else None
        if key in self._seen:
            return self._seen[key]
        if self.env.budget.remaining < 1:
            return None
        out = self.env.evaluate_dev(action)
        self._seen[key] = out.metric
        # ties go to the higher dev reward (a smoother signal than 32-example accuracy)
        if (out.metric, out.reward) > (self.best_metric, self.best_reward):
            self.best_action, self.best_metric, self.best_reward = action, out.metric, out.reward
            self._train_reward = train_reward
        self.curve.append((self.env.budget.calls, float(self.best_metric)))
        return out.metric


class TrainCurve:
    """Best-so-far train reward vs. calls used."""

    def __init__(self) -> None:
        self.best = -np.inf
        self.best_action: Any = None
        self.points: list[tuple[int, float]] = []

    def update(self, calls: int, actions: list, rewards: list[float]) -> None:
        i = int(np.argmax(rewards))
        if rewards[i] > self.best:
            self.best, self.best_action = float(rewards[i]), actions[i]
        self.points.append((calls, self.best))
