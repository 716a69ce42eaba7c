"""A custom agent in ~30 lines: greedy coordinate search over a discrete prompt, then registered.

Any object with a ``name`` and ``learn(env) -> Result`` is an agent: it scores prompts through
``env.unwrapped.score_actions`` (one batched, charged call per population) and stops before the
budget runs out. To make it by name (``promptgym.make_agent``, ``promptgym train --agent``), give
it a ``config_class`` (a dataclass deriving ``AgentConfig``: fields are type-checked when the
config is built) and take the config as first argument. Run: ``python docs/custom_agent.py``
(SmolLM2, ~1 minute).
"""

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

import promptgym
from promptgym.agent import AgentConfig, DevSelector, Result, TrainCurve


@dataclass
class CoordinateConfig(AgentConfig):
    batch: int = 10   # variants per batched call
    seed: int = 0


class CoordinateAgent:
    """Re-draw one prompt position at a time; keep the best of ``batch`` variants."""

    name = "coordinate"
    config_class = CoordinateConfig

    def __init__(self, config: CoordinateConfig | None = None, **fields: Any) -> None:
        self.config = config or CoordinateConfig(**fields)

    def learn(self, env: gym.Env) -> Result:
        cfg = self.config
        env.reset(seed=cfg.seed)
        base = env.unwrapped  # score_actions, evaluate_dev, budget, prompt_text
        rng = np.random.default_rng(cfg.seed)
        k, length = base.num_candidates, base.prompt_length
        best, best_reward, pos = rng.integers(0, k, length), -np.inf, 0
        dev, train = DevSelector(env), TrainCurve()
        while base.budget.remaining > cfg.batch:  # keep one call for the final dev check
            variants = np.repeat(best[None], cfg.batch, axis=0)
            variants[:, pos % length] = rng.integers(0, k, cfg.batch)
            rewards = [o.reward for o in base.score_actions(list(variants))]  # ONE LM call
            train.update(base.budget.calls, list(variants), rewards)
            if max(rewards) > best_reward:
                best, best_reward = variants[int(np.argmax(rewards))], max(rewards)
            pos += 1
        dev.consider(best, best_reward)
        return dev.result(self.name, best, train, cfg)  # the best dev prompt, its curves and config


if __name__ == "__main__":
    # from a package: promptgym.register_agent("coordinate", "my_pkg.agents:CoordinateAgent", ...)
    promptgym.register_agent("coordinate", f"{__name__}:CoordinateAgent", kinds=("discrete",),
                             description="greedy coordinate search")
    env = gym.make("PromptSST2-v0", budget=200)
    promptgym.check_compatible("coordinate", env)
    result = promptgym.make_agent("coordinate", batch=10).learn(env)
    print(f"{result.prompt_text!r}: dev accuracy {result.dev_metric:.3f} after {result.calls_used} calls")
