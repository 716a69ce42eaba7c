"""BBT: black-box tuning (Sun et al., ICML 2022) with CMA-ES, for subspace envs.

CMA-ES (the ``cma`` package) searches ``z`` in the env's random subspace: population ``popsize``
(20, as BBT), ``sigma0`` 1 (BBT's default with its normal projection), bounds from the env's Box.
Each generation's population is scored in ONE batched call (popsize API calls) and CMA-ES is told
the negated rewards of exactly the points it asked for (the env scores float32 copies of them).
Every ``dev_every`` generations the distribution mean and the best train solution of the generation
are checked on dev; the best dev prompt is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, DevSelector, Result, TrainCurve, require


@dataclass
class BBTConfig(AgentConfig):
    popsize: int = 20      # CMA-ES population: prompts per generation, scored in one batched call
    sigma0: float = 1.0    # CMA-ES initial step size in z (BBT's default)
    dev_every: int = 5     # generations between dev checks of the mean and the generation's best
    seed: int = 0          # seeds the env reset and CMA-ES (with seed + 1)

    def validate(self) -> None:
        require_cma_settings(self)
        require(self.seed >= 0, f"BBTConfig.seed must be >= 0, got {self.seed}")


def require_cma_settings(cfg: Any) -> None:
    """Check the :func:`cma_search` settings a config carries (``popsize``, ``sigma0``, ``dev_every``), with
    the same messages in every agent that runs BBT's search."""
    owner = type(cfg).__name__
    require(cfg.popsize >= 2, f"{owner}.popsize must be >= 2 (CMA-ES ranks a population), got {cfg.popsize}")
    require(cfg.sigma0 > 0, f"{owner}.sigma0 must be > 0, got {cfg.sigma0}")
    require(cfg.dev_every >= 1, f"{owner}.dev_every must be >= 1, got {cfg.dev_every}")


class BBTAgent(ConfiguredAgent):
    """CMA-ES over the subspace vector z, one generation per batched call (see the module docstring)."""

    name = "bbt"
    config_class = BBTConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        base = self.start(env)
        dev, train = DevSelector(env), TrainCurve()
        mean, gen = cma_search(base, dev, train, cfg.popsize, cfg.sigma0, cfg.dev_every, cfg.seed + 1)
        return dev.result(self.name, mean, train, cfg, {"generations": gen})


def cma_search(base: Any, dev: DevSelector, train: TrainCurve, popsize: int, sigma0: float, dev_every: int,
               cma_seed: int, calls: int | None = None) -> tuple[np.ndarray, int]:
    """BBT's search: CMA-ES from ``z = 0`` on the unwrapped env ``base`` within ``calls`` API calls (None: the
    rest of the budget), dev checks by ``dev`` included; returns the final mean (clipped, float32, also
    considered on dev when a call is left) and the number of generations. ``cma_seed`` must be >= 1 (pycma
    draws a random seed for 0). Ensembles run it once per member on a share of the budget."""
    import cma

    space = base.action_space
    d = space.shape[0]
    start = base.budget.calls
    limit = base.budget.remaining if calls is None else min(int(calls), base.budget.remaining)
    opts = {"popsize": popsize, "seed": cma_seed, "verbose": -9,
            "bounds": [float(space.low.min()), float(space.high.max())]}
    es = cma.CMAEvolutionStrategy(np.zeros(d), sigma0, opts)
    gen = 0
    # the live budget too: a callback may stop the search (it closes the budget) before ``limit``
    while min(limit - (base.budget.calls - start), base.budget.remaining) >= popsize + 2:
        asked = es.ask()
        sols = [np.clip(np.asarray(s, dtype=np.float32), space.low, space.high) for s in asked]
        outs = base.score_actions(sols)
        rewards = [o.reward for o in outs]
        train.update(base.budget.calls, sols, rewards)
        # tell the exact float64 points asked for: float32 copies break the mirrored pair that
        # pycma's TPA step-size rule (its default from d = 300) relies on
        es.tell(asked, [-r for r in rewards])
        gen += 1
        if gen % dev_every == 0:
            dev.consider(np.clip(es.mean, space.low, space.high).astype(np.float32))
            dev.consider(sols[int(np.argmax(rewards))], max(rewards))
    mean = np.clip(es.mean, space.low, space.high).astype(np.float32)
    if base.budget.calls - start < limit and base.budget.remaining >= 1:
        dev.consider(mean)
    return mean, gen
