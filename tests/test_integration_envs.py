"""The gym on the real default model and real SST-2 data."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_manual_prompt_tokens_earn_more_reward_than_random_prompts(smollm2):
    # measured (bf16, split 13): manual -0.81 vs random prompts -1.10 on average (20 samples)
    env = gym.make("PromptSST2-v0", split_seed=13).unwrapped
    env.action_space.seed(0)
    manual = env.text_prompt(" A review of a movie, great or terrible:")
    randoms = [env.prompt_of(env.action_space.sample()) for _ in range(3)]
    outs = env.score_prompts([manual, *randoms], "train")
    assert env.budget.calls == 4
    assert outs[0].reward > np.mean([o.reward for o in outs[1:]]) + 0.1


def test_step_on_the_real_model_reports_scores_and_budget(smollm2):
    env = gym.make("PromptSST2-v0")
    obs, info = env.reset(seed=13)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and reward < 0 and terminated and not truncated
    assert info["budget"].calls_used == 1 and info["budget"].calls_left == 7999
    assert 0.0 <= info["accuracy"] <= 1.0 and abs(float(obs[:2].sum()) - 1) < 1e-2


@pytest.mark.parametrize("module", ["promptgym.envs.discrete", "promptgym.envs.subspace", "promptgym.envs.tokenwise"])
def test_env_docstring_examples_run_on_the_real_model(smollm2, module):
    """Each env class documents a runnable example (as Gymnasium's envs do); it must stay true."""
    import doctest
    import importlib

    mod = importlib.import_module(module)
    cls = next(getattr(mod, n) for n in dir(mod) if getattr(getattr(mod, n), "__module__", "") == module
               and hasattr(getattr(mod, n), "kind"))
    assert "## Version History" in cls.__doc__ and ">>> env = gym.make(" in cls.__doc__
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(cls, cls.__name__, module=mod):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5
