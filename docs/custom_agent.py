"""A custom agent in ~20 lines: greedy coordinate search over a discrete prompt.

Any object with a ``name`` and ``learn(env) -> Result`` is an agent: it scores prompts through
``env.unwrapped.score_actions`` (one batched, charged call per population) and stops before the
budget runs out. Run: ``python docs/custom_agent.py`` (SmolLM2, ~1 minute).
"""

import gymnasium as gym
import numpy as np

import promptgym  # noqa: F401  (registers the env ids)
from agents.base import DevSelector, Result, TrainCurve


class CoordinateAgent:
    """Re-draw one prompt position at a time; keep the best of ``batch`` variants."""

    name = "coordinate"

    def __init__(self, batch: int = 10, seed: int = 0) -> None:
        self.batch, self.seed = batch, seed

    def learn(self, env: gym.Env) -> Result:
        base = env.unwrapped  # score_actions, evaluate_dev, budget, prompt_text
        rng = np.random.default_rng(self.seed)
        k, length = base.num_candidates, base.prompt_length
        best, best_reward, pos = rng.integers(0, k, length), -np.inf, 0
        dev, train = DevSelector(env), TrainCurve()
        while base.budget.remaining > self.batch:  # keep one call for the final dev check
            variants = np.repeat(best[None], self.batch, axis=0)
            variants[:, pos % length] = rng.integers(0, k, self.batch)
            rewards = [o.reward for o in base.score_actions(list(variants))]  # ONE LM call
            train.update(base.budget.calls, list(variants), rewards)
            if max(rewards) > best_reward:
                best, best_reward = variants[int(np.argmax(rewards))], max(rewards)
            pos += 1
        dev.consider(best, best_reward)
        return Result(self.name, best, base.prompt_text(best), float(best_reward), dev.best_metric,
                      base.budget.calls, dev.curve, train.points)


if __name__ == "__main__":
    env = gym.make("PromptSST2-v0", budget=200)
    result = CoordinateAgent().learn(env)
    print(f"{result.prompt_text!r}: dev accuracy {result.dev_metric:.3f} after {result.calls_used} calls")
