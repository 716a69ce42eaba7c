"""Random search: the baseline every agent must beat at equal budget.

Samples prompts uniformly from the env's action space (seeded), scores them in batches of
``batch`` (one LM call per batch), and checks the best train prompt of every batch on dev; returns
the best dev prompt. For tokenwise envs it samples full prompts over the same candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, DevSelector, Result, TrainCurve, require


@dataclass
class RandomSearchConfig(AgentConfig):
    batch: int = 20   # prompts per batched LM call (each batch's best is checked on dev)
    seed: int = 0     # seeds the env reset and the sampled prompts

    def validate(self) -> None:
        require(self.batch >= 1, f"RandomSearchConfig.batch must be >= 1, got {self.batch}")
        require(self.seed >= 0, f"RandomSearchConfig.seed must be >= 0, got {self.seed}")


def full_prompt_space(base: Any) -> gym.Space:
    """The action space of a *whole* prompt: tokenwise envs step one candidate at a time, but
    ``score_actions`` takes all ``prompt_length`` indices, as on the discrete env."""
    if base.kind == "tokenwise":
        return gym.spaces.MultiDiscrete([base.num_candidates] * base.prompt_length)
    return base.action_space


class RandomSearchAgent(ConfiguredAgent):
    """Uniform samples of whole prompts, each batch's best checked on dev."""

    name = "random"
    config_class = RandomSearchConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        base = self.start(env)
        space = full_prompt_space(base)
        space.seed(cfg.seed)
        dev, train = DevSelector(env), TrainCurve()
        while base.budget.remaining >= 2:
            n = min(cfg.batch, base.budget.remaining - 1)
            acts = [space.sample() for _ in range(n)]
            outs = base.score_actions(acts)
            rewards = [o.reward for o in outs]
            train.update(base.budget.calls, acts, rewards)
            dev.consider(acts[int(np.argmax(rewards))], max(rewards))
        return dev.result(self.name, train.best_action, train, cfg)
