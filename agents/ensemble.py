"""Prompt ensembles (Shen et al., 2023): K independent CMA-ES runs in BBT's subspace, one prompt each.

Member ``i`` is BBT's search (:func:`agents.bbt.cma_search`: start ``z = 0``, ``sigma0`` 1, its own
CMA-ES seed) on an even share of the budget, dev checks included, and contributes its best-dev
prompt. Members get uniform weights and the set predicts the mean of their label distributions
("mean"): disagreement between independently tuned prompts is the uncertainty. One final call per
member scores the whole set on dev (its dev metric is the Result's).

Defaults: ``members`` 5, the usual deep-ensemble size; at the lite tier's 1,000 calls each run then
has ~199 calls, ~9 generations of BBT's population of 20 (the reference ran 10 members on BBT's
full budget each; here all members share ONE tier budget, so more members means shorter runs).
``popsize``, ``sigma0`` and ``dev_every`` are BBT's, so member 0 of seed 0 is BBT on a fifth of
the calls.

The Result's dev curve: while members search, the best single-member dev metric so far (a valid
answer at that time); its last point is the whole set's dev metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from agents.bbt import cma_search, require_cma_settings
from agents.prompt_sets import score_set, set_result
from promptgym.agent import AgentConfig, DevSelector, PromptSetAgent, Result, TrainCurve, require


@dataclass
class EnsembleConfig(AgentConfig):
    members: int = 5        # independent CMA-ES runs, one prompt each; the budget is split evenly among them
    popsize: int = 20       # CMA-ES population of every run (BBT's)
    sigma0: float = 1.0     # CMA-ES initial step size in z (BBT's)
    dev_every: int = 5      # generations between dev checks within a run (BBT's)
    check_dev: bool = True  # one call per member at the end to score the set on dev
    seed: int = 0           # seeds the env reset; member i runs CMA-ES with seed seed * members + i + 1

    def validate(self) -> None:
        require(self.members >= 1, f"EnsembleConfig.members must be >= 1, got {self.members}")
        require_cma_settings(self)
        require(self.seed >= 0, f"EnsembleConfig.seed must be >= 0, got {self.seed}")


class EnsembleAgent(PromptSetAgent):
    """K BBT runs on equal shares of one budget; their best-dev prompts, uniformly weighted (see the module)."""

    name = "ensemble"
    config_class = EnsembleConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        base = self.start(env)
        train = TrainCurve()
        reserve = cfg.members if cfg.check_dev else 0
        members: list[np.ndarray] = []
        member_dev: list[float | None] = []
        curve: list[tuple[int, float]] = []
        best = -np.inf
        generations = []
        for i in range(cfg.members):
            share = max(0, base.budget.remaining - reserve) // (cfg.members - i)  # leftovers roll over
            dev = DevSelector(env)
            mean, gen = cma_search(base, dev, train, cfg.popsize, cfg.sigma0, cfg.dev_every,
                                   cfg.seed * cfg.members + i + 1, share)
            members.append(np.asarray(dev.best_action if dev.best_action is not None else mean, dtype=np.float32))
            member_dev.append(dev.dev_metric)
            generations.append(gen)
            for calls, metric in dev.curve:
                best = max(best, metric)
                curve.append((calls, float(best)))
        dev_metric = None
        if cfg.check_dev and base.budget.remaining >= len(members):
            dev_metric = score_set(base, members, None, "mean").metric
            curve.append((base.budget.calls, dev_metric))
        extra = {"generations": generations, "member_dev_metrics": member_dev}
        return set_result(self.name, base, members, [1.0] * len(members), "mean", train, dev_metric, curve, cfg,
                          extra)
