"""Random search: the baseline every agent must beat at equal budget.

Samples prompts uniformly from the env's action space (seeded), scores them in batches of
``batch`` (one LM call per batch), and checks the best train prompt of every batch on dev; returns
the best dev prompt. For tokenwise envs it samples full prompts over the same candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import DevSelector, Result, TrainCurve, config_dict


@dataclass
class RandomSearchConfig:
    batch: int = 20
    seed: int = 0


def full_prompt_space(base):
    """The action space of a *whole* prompt (tokenwise envs step one candidate at a time)."""
    import gymnasium as gym

    if hasattr(base, "num_candidates") and isinstance(base.action_space, gym.spaces.Discrete):
        return gym.spaces.MultiDiscrete([base.num_candidates] * base.prompt_length)
    return base.action_space


class RandomSearchAgent:
    name = "random"

    def __init__(self, config: RandomSearchConfig | None = None) -> None:
        self.config = config or RandomSearchConfig()

    def learn(self, env) -> Result:
        cfg = self.config
        base = env.unwrapped
        env.reset(seed=cfg.seed)
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
        action = dev.best_action if dev.best_action is not None else train.best_action
        return Result(self.name, None if action is None else np.asarray(action),
                      "" if action is None else base.prompt_text(action), train.best,
                      None if dev.best_action is None else float(dev.best_metric), base.budget.calls,
                      dev.curve, train.points, config=config_dict(cfg))
