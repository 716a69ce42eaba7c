"""The one run driver: check everything, make the env, let an agent learn.

``promptgym train``, the leaderboard protocol (``promptgym evaluate``), the demo and the benchmark
scripts all run agents through :func:`run_agent` and score their Results on the test split through
:mod:`promptgym.evaluation` (:class:`~promptgym.evaluation.Evaluator`), so a number in a run folder,
a leaderboard entry and a benchmark table come from the same code. Everything that can be checked
without the model (env id, budget, agent name and config) is checked first: a typo costs neither
the model's load time nor an API call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from promptgym.agent import (
    AGENT_REGISTRY,
    Agent,
    Result,
    check_compatible,
    check_kind,
    config_dict,
    make_agent,
)
from promptgym.calibration import calibrate_result, calibration_calls, check_calibratable
from promptgym.callbacks import Callback, CallbackLike, CallbackList, as_callback, hooked
from promptgym.envs.budget import QueryBudget
from promptgym.envs.registration import check_env_id, env_kind
from promptgym.errors import ConfigError, IncompatibleAgentError, PromptGymError
from promptgym.journal import CallJournal
from promptgym.lm import DEFAULT_MODEL
from promptgym.progress import LiveMonitor
from promptgym.threads import check_threads, pinned_threads, planned_threads
from promptgym.tracking import TensorBoardTracker, check_tracker

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
    replayed_calls: int = 0  # calls answered from the journal of a killed run (0: not a resume)
    threads: dict[str, int | None] | None = None  # the thread settings the search ran under (promptgym.threads)


def check_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(env_kwargs or {})
    clash = sorted(set(kwargs) & set(DRIVER_ENV_ARGS))
    if clash:
        raise ConfigError(f"env kwargs {clash} are set by their own options (--model, --dtype, --split-seed, "
                          "--budget), not as env kwargs")
    if "api_key" in kwargs:  # env kwargs are written into run folders and submissions: a key must never be
        raise ConfigError("pass a served model's API key in $PROMPTGYM_API_KEY, not as an env kwarg "
                          "(env kwargs are recorded in run folders)")
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
              agent_kwargs: dict[str, Any] | None = None, progress: bool = True, label: str | None = None,
              calibrate: bool = False, journal: str | Path | None = None,
              tensorboard: str | Path | None = None, callback: CallbackLike = None,
              threads: dict[str, int | None] | None = None) -> Run:
    """Let ``agent`` learn on ``env_id`` under ``budget`` API calls; return its Result and the env.

    ``seed`` is the agent's seed; ``split_seed`` picks the 16-shot split. Checks run before the
    model loads; the agent's compatibility with the env (kind, reward, backend) before any call.

    ``calibrate``: after ``learn()``, fit one bias per label for each final prompt on the train
    batch (:func:`promptgym.calibration.calibrate_result`, one charged call per member). The agent
    learns with the budget minus those calls, reserved up front, so the run stays within ``budget``.

    ``journal``: a call-journal file (:mod:`promptgym.journal`). Every charged LM call is journaled there;
    if the file exists (a killed run), its calls are replayed first, so the run resumes where it stopped
    and ends as the uninterrupted run would: the search runs under the thread settings the journal
    recorded (:mod:`promptgym.threads`), whatever this process's are, and they are restored after.

    ``threads``: thread settings to search under (``{"torch": n, "blas": m}``, :mod:`promptgym.threads`;
    None: the process's own), e.g. an audit replaying an entry under the settings it records; a resumed
    journal's recorded settings take their place.

    ``tensorboard``: a folder for the run's TensorBoard events (:mod:`promptgym.tracking`), indexed by calls.

    ``callback``: watches every charged call, calibration's included, and may stop the search early
    (:mod:`promptgym.callbacks`, as SB3's ``learn(callback=)``). The progress bar and the TensorBoard
    tracker are callbacks too, hooked with it around the search.
    """
    user_callback = as_callback(callback)  # a bad callback is refused before the model loads
    check_env_id(env_id)
    QueryBudget(budget)  # a bad budget is refused before the model loads
    pin = None if threads is None else check_threads(threads)  # None: the process's own settings
    kwargs = check_env_kwargs(env_kwargs)
    if tensorboard is not None:
        check_tracker("tensorboard")
    learner, name = prepare_agent(agent, seed, agent_kwargs)
    if name in AGENT_REGISTRY:
        check_kind(name, env_kind(env_id))
    reserve = 0
    if calibrate:
        check_calibration_request(name, kwargs)
        reserve = calibration_calls(learner)
        if reserve >= budget:
            raise ConfigError(f"calibration needs {reserve} call(s) after the agent learns; a budget of {budget} "
                              "leaves the agent none")
    env = make_env(env_id, budget, split_seed, model, dtype, env_kwargs)
    if name in AGENT_REGISTRY:
        check_compatible(name, env)
    base = env.unwrapped
    if calibrate:
        check_calibratable(base.reward_kind)
    record = None
    if journal is not None:
        identity = {"env_id": env_id, "agent": name, "agent_config": config_dict(getattr(learner, "config", None)),
                    "budget": int(budget), "seed": int(seed), "split_seed": int(split_seed),
                    "model": model if isinstance(model, str) else base.lm.name,
                    "dtype": dtype, "env_kwargs": kwargs, "calibrate": bool(calibrate)}
        record = CallJournal(journal, identity, threads=planned_threads(pin))
        if record.threads is not None:  # a resume searches under the killed run's (older journals have none)
            pin = record.threads
        base.record_calls(record)
        # a served key's quota no longer counts the journaled calls: they were charged before the kill
        base.budget.max_calls = min(int(budget), base.budget.max_calls + record.recorded_calls)
    callbacks: list[Callback] = [LiveMonitor(base, label or name, enabled=progress)]
    if tensorboard is not None:
        description = {"env": env_id, "agent": name, "budget": budget, "seed": seed, "split_seed": split_seed,
                       "model": str(model), "dtype": dtype, "config": config_dict(getattr(learner, "config", None)),
                       "env_kwargs": kwargs, "calibrate": calibrate}
        callbacks.append(TensorBoardTracker(base, tensorboard, description,
                                            replaying=None if record is None else (lambda: record.replaying)))
        use_tracking = getattr(learner, "use_tracking", None)
        if callable(use_tracking):  # the agent's own statistics go into the same run (SB3's logger)
            use_tracking(Path(tensorboard))
    if user_callback is not None:
        callbacks.append(user_callback)
    started = time.time()
    with pinned_threads(pin) as in_force, hooked(env, CallbackList(callbacks)):
        # (the learner's own callback argument stays free for the user's)
        base.budget.max_calls -= reserve  # the agent sees the budget without calibration's calls
        try:
            result = learner.learn(env)
        finally:
            base.budget.max_calls += reserve
        if calibrate:
            members = len(result.members) if result.is_set else 1
            if members > reserve:
                raise PromptGymError(f"agent {name!r} returned {members} members but declared max_members = "
                                     f"{reserve}: calibration would exceed the budget")
            result = calibrate_result(env, result)
    seconds = time.time() - started
    replayed = 0
    if record is not None:
        replayed = record.replayed_calls
        base.record_calls(None)
    if base.budget.calls > budget:  # cannot happen through the env; checked anyway
        raise PromptGymError(f"agent used {base.budget.calls} calls, over the budget of {budget}")
    return Run(result, env, learner, name, seconds, replayed, in_force)


def check_calibration_request(agent: str, env_kwargs: dict[str, Any] | None) -> None:
    """Refuse ``calibrate=True`` before the model loads where it cannot work: a label-only env, or an
    agent that already fits a label bias (the calibrated baseline)."""
    check_calibratable(str((env_kwargs or {}).get("reward", "ce")))
    if agent in AGENT_REGISTRY and AGENT_REGISTRY[agent].fits_label_bias:
        raise IncompatibleAgentError(f"agent {agent!r} fits a label bias itself; calibrating it again would fit a "
                                     "bias on top of a bias")
