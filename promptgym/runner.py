"""The one run driver: check everything, make the env, let an agent learn, score its prompt on test.

``promptgym train``, the leaderboard protocol (``promptgym evaluate``), the demo and the benchmark
scripts all run agents through :func:`run_agent` and score on the test split through
:func:`score_test`, so a number in a run folder, a leaderboard entry and a benchmark table come
from the same code. Everything that can be checked without the model (env id, budget, agent name
and config) is checked first: a typo costs neither the model's load time nor an API call.

Test scoring follows the rule "search in bf16, report in fp32": by default the prompt is re-scored
with the same model loaded in fp32 (bf16 moves single logits by up to ~0.3). It goes through the
env's own :class:`~promptgym.envs.scoring.Scorer`, uncharged: the test split never enters an env.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import AGENT_REGISTRY, Agent, Result, check_compatible, check_kind, make_agent
from promptgym.bench.stats import expected_calibration_error
from promptgym.envs.budget import QueryBudget
from promptgym.envs.registration import check_env_id, env_kind
from promptgym.envs.scoring import Outcome
from promptgym.errors import ConfigError, PromptGymError
from promptgym.lm import DEFAULT_MODEL, in_dtype
from promptgym.lm.base import Prompt, SoftPrompt, TokenPrompt
from promptgym.progress import LiveMonitor
from promptgym.tasks import load_split

#: env arguments the driver sets itself; passing them in ``env_kwargs`` too would be ambiguous
DRIVER_ENV_ARGS = ("model", "dtype", "split_seed", "budget")


@dataclass
class Run:
    """What :func:`run_agent` returns."""

    result: Result
    env: gym.Env
    agent: Agent
    agent_name: str
    seconds: float


@dataclass
class TestScore:
    """A prompt's predictions on the test split and what leaderboards report of them."""

    metric: float
    predictions: np.ndarray
    ece: float
    n: int


TestScore.__test__ = False  # type: ignore[attr-defined]  # not a pytest class, despite its name


def check_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(env_kwargs or {})
    clash = sorted(set(kwargs) & set(DRIVER_ENV_ARGS))
    if clash:
        raise ConfigError(f"env kwargs {clash} are set by their own options (--model, --dtype, --split-seed, "
                          "--budget), not as env kwargs")
    return kwargs


def make_env(env_id: str, budget: int, split_seed: int = 13, model: Any = DEFAULT_MODEL, dtype: str = "bfloat16",
             env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``gym.make`` with the id checked first (an unknown id names the closest ones)."""
    check_env_id(env_id)
    return gym.make(env_id, model=model, dtype=dtype, split_seed=split_seed, budget=budget,
                    **check_env_kwargs(env_kwargs))


def prepare_agent(agent: str | Agent, seed: int, agent_kwargs: dict[str, Any] | None = None) -> tuple[Agent, str]:
    """The agent to run and its name: a registered name is built with ``agent_kwargs`` (its ``seed``
    defaults to ``seed``); an agent object is used as it is."""
    if isinstance(agent, str):
        kwargs = dict(agent_kwargs or {})
        kwargs.setdefault("seed", int(seed))
        return make_agent(agent, **kwargs), agent
    if agent_kwargs:
        raise ConfigError("agent_kwargs only apply to registered agents given by name")
    if not isinstance(agent, Agent):
        raise ConfigError(f"an agent needs a name and learn(env), got {type(agent).__name__}")
    return agent, agent.name


def run_agent(env_id: str, agent: str | Agent, budget: int, seed: int = 0, split_seed: int = 13,
              model: Any = DEFAULT_MODEL, dtype: str = "bfloat16", env_kwargs: dict[str, Any] | None = None,
              agent_kwargs: dict[str, Any] | None = None, progress: bool = True, label: str | None = None) -> Run:
    """Let ``agent`` learn on ``env_id`` under ``budget`` API calls; return its Result and the env.

    ``seed`` is the agent's seed; ``split_seed`` picks the 16-shot split. Checks run before the
    model loads; the agent's compatibility with the env (kind, reward, backend) before any call.
    """
    check_env_id(env_id)
    QueryBudget(budget)  # a bad budget is refused before the model loads
    check_env_kwargs(env_kwargs)
    learner, name = prepare_agent(agent, seed, agent_kwargs)
    if name in AGENT_REGISTRY:
        check_kind(name, env_kind(env_id))
    env = make_env(env_id, budget, split_seed, model, dtype, env_kwargs)
    if name in AGENT_REGISTRY:
        check_compatible(name, env)
    base = env.unwrapped
    started = time.time()
    with LiveMonitor(base, label or name, enabled=progress):
        result = learner.learn(env)
    seconds = time.time() - started
    if base.budget.calls > budget:  # cannot happen through the env; checked anyway
        raise PromptGymError(f"agent used {base.budget.calls} calls, over the budget of {budget}")
    return Run(result, env, learner, name, seconds)


# ---------------------------------------------------------------------------------------------- test split
def result_prompt(env: gym.Env, result: Any) -> Prompt:
    """The LM prompt a Result stands for: soft prompt, demonstrations, the action's prompt, or none."""
    base = env.unwrapped
    soft = getattr(result, "soft_prompt", None)
    if soft is not None:
        return SoftPrompt(np.asarray(soft, dtype=np.float32))
    if getattr(result, "demonstrations", None):
        return base.text_prompt(result.demonstrations)
    if result.action is None:
        return TokenPrompt(())
    return base.prompt_of(result.action)


def score_test(env: gym.Env, result: Any, dtype: str | None = "float32") -> TestScore:
    """Score ``result``'s prompt on the task's test split, outside any budget.

    Handles every kind of Result: an action of the env, a label bias (added to the label scores
    before the argmax), in-context demonstrations and a white-box soft prompt. ``dtype``
    "float32" (default) re-checks bf16 searches in fp32; None scores with the env's own LM.
    """
    base = env.unwrapped
    scorer = base.scorer.with_lm(in_dtype(base.lm, dtype), reward_kind="ce")
    test = load_split(base.spec_task, "test", None, base.data_dir)
    prompt = result_prompt(env, result)
    key = (id(scorer.lm), test.sha256, base.template, base.prompt_position, _prompt_key(prompt))
    cached = _TEST_SCORES.get(key)
    outcome = cached[1] if cached is not None and cached[0] is scorer.lm else None  # the LM is kept: ids stay unique
    if outcome is None:
        outcome = scorer.score([prompt], test)[0]
        if len(_TEST_SCORES) >= 8:
            _TEST_SCORES.pop(next(iter(_TEST_SCORES)))
        _TEST_SCORES[key] = (scorer.lm, outcome)
    if result.label_bias is not None:
        outcome = scorer.rebias(outcome, np.asarray(result.label_bias))
    return _test_score(outcome)


score_test.__test__ = False  # type: ignore[attr-defined]


def _test_score(outcome: Outcome) -> TestScore:
    scores = np.asarray(outcome.label_logprobs, dtype=np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    labels = np.asarray(outcome.labels)
    return TestScore(float(outcome.metric), np.asarray(outcome.predictions), expected_calibration_error(probs, labels),
                     len(labels))


# the test outcomes of the last few prompts: a calibrated Result shares the manual template's scores
# (only the bias differs), so comparing the two costs one pass over the test split, not two
_TEST_SCORES: dict[tuple, tuple[Any, Outcome]] = {}


def _prompt_key(prompt: Prompt) -> tuple:
    if isinstance(prompt, SoftPrompt):
        arr = np.ascontiguousarray(prompt.embeds, dtype=np.float32)
        return ("soft", arr.shape, arr.tobytes())
    return ("tokens", tuple(prompt.ids))
