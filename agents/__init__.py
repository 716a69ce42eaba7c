"""Agents: interchangeable policies with one interface, ``agent.learn(env) -> Result``, under one budget.

``make_agent("bdpl", lr=0.5, seed=13)`` builds a registered agent with config overrides;
``check_compatible("bbt", env)`` raises a ``ValueError`` that says which env kind an agent needs.
The registry (:data:`AGENTS`) is what the ``promptgym train --agent NAME`` command and the
leaderboard harness use; a user's own agent needs no registration (any object with ``name`` and
``learn(env)`` works, see ``docs/custom_agent.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from agents.base import Agent, DevSelector, Result, TrainCurve, config_dict
from agents.bbt import BBTAgent, BBTConfig
from agents.bdpl import BDPLAgent, BDPLConfig
from agents.manual import (
    CalibratedAgent,
    CalibrationConfig,
    ICLAgent,
    ICLConfig,
    ManualAgent,
    ManualConfig,
)
from agents.prompt_tuning import PromptTuningAgent, PromptTuningConfig
from agents.random_search import RandomSearchAgent, RandomSearchConfig
from agents.sb3 import SB3Agent, SB3Config

ALL_KINDS: tuple[str, ...] = ("discrete", "subspace", "tokenwise")
KIND_IDS = {"discrete": "Prompt<Task>-v0", "subspace": "Prompt<Task>-Subspace-v0",
            "tokenwise": "Prompt<Task>-Tokenwise-v0"}


@dataclass(frozen=True)
class AgentSpec:
    """How to build a registered agent and which env kinds it runs on."""

    build: Callable[[Any], Any]   # config -> agent
    config_cls: type
    kinds: tuple[str, ...]
    description: str
    white_box: bool = False


def _sb3(algo: str) -> Callable[[SB3Config], SB3Agent]:
    return lambda config: SB3Agent(algo, config)


AGENTS: dict[str, AgentSpec] = {
    "bdpl": AgentSpec(BDPLAgent, BDPLConfig, ("discrete", "tokenwise"),
                      "BDPL: variance-reduced policy gradient over candidate distributions"),
    "bbt": AgentSpec(BBTAgent, BBTConfig, ("subspace",), "BBT: CMA-ES in a random subspace"),
    "random": AgentSpec(RandomSearchAgent, RandomSearchConfig, ALL_KINDS, "random search baseline"),
    "manual": AgentSpec(ManualAgent, ManualConfig, ALL_KINDS, "the task's template, no learned prompt"),
    "calibrated": AgentSpec(CalibratedAgent, CalibrationConfig, ALL_KINDS,
                            "template + one bias per label fitted on train (1 call)"),
    "icl": AgentSpec(ICLAgent, ICLConfig, ALL_KINDS, "in-context demonstrations from train as a text prefix"),
    "ppo": AgentSpec(_sb3("ppo"), SB3Config, ALL_KINDS, "Stable-Baselines3 PPO"),
    "a2c": AgentSpec(_sb3("a2c"), SB3Config, ALL_KINDS, "Stable-Baselines3 A2C"),
    "sac": AgentSpec(_sb3("sac"), SB3Config, ("subspace",), "Stable-Baselines3 SAC (continuous actions)"),
    "prompt_tuning": AgentSpec(PromptTuningAgent, PromptTuningConfig, ALL_KINDS,
                               "WHITE-BOX soft prompt tuning by back-propagation (reference)", white_box=True),
}


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown agent {name!r}; registered agents: {', '.join(AGENTS)}")


def env_kind_of(env: Any) -> str:
    """"discrete", "subspace" or "tokenwise" for a (wrapped) promptgym env."""
    from promptgym.envs.discrete import DiscretePromptEnv
    from promptgym.envs.subspace import SubspacePromptEnv
    from promptgym.envs.tokenwise import TokenwisePromptEnv

    base = getattr(env, "unwrapped", env)
    if isinstance(base, TokenwisePromptEnv):
        return "tokenwise"
    if isinstance(base, SubspacePromptEnv):
        return "subspace"
    if isinstance(base, DiscretePromptEnv):
        return "discrete"
    raise ValueError(f"not a promptgym prompt env: {type(base).__name__}")


def check_compatible(agent_name: str, env: Any) -> None:
    """Raise ``ValueError`` (saying what would work) unless agent ``agent_name`` can run on ``env``."""
    if agent_name not in AGENTS:
        raise _unknown(agent_name)
    spec = AGENTS[agent_name]
    kind = env_kind_of(env)
    base = env.unwrapped
    if kind not in spec.kinds:
        fitting = [n for n, s in AGENTS.items() if kind in s.kinds]
        needs = " or ".join(f"{k} envs ({KIND_IDS[k]})" for k in spec.kinds)
        raise ValueError(f"agent {agent_name!r} runs on {needs}; this is a {kind} env. "
                         f"Agents for {kind} envs: {', '.join(fitting)}")
    if agent_name == "calibrated" and base.reward_kind == "label_only":
        raise ValueError("agent 'calibrated' needs label log-probabilities; the env uses reward='label_only'")
    if agent_name == "icl" and base.prompt_position != "before":
        raise ValueError("agent 'icl' puts demonstrations before the input; make the env with prompt_position='before'")
    if spec.white_box:
        from promptgym.lm.local import LocalLM

        if not isinstance(base.lm, LocalLM):
            raise ValueError(f"agent {agent_name!r} is white-box (back-propagation): it needs an in-process "
                             f"transformers model, not {type(base.lm).__name__}")


def make_agent(name: str, **config_overrides: Any) -> Any:
    """Build registered agent ``name`` with its default config updated by ``config_overrides``.

    SB3 agents also take ``callbacks=[...]`` (SB3 callbacks run during ``learn``).
    """
    if name not in AGENTS:
        raise _unknown(name)
    spec = AGENTS[name]
    callbacks = config_overrides.pop("callbacks", None)
    known = [f.name for f in fields(spec.config_cls)]
    bad = sorted(set(config_overrides) - set(known))
    if bad:
        raise ValueError(f"agent {name!r} has no config field(s) {bad}; its {spec.config_cls.__name__} fields: "
                         f"{', '.join(known)}")
    agent = spec.build(spec.config_cls(**config_overrides))
    if callbacks is not None:
        if not isinstance(agent, SB3Agent):
            raise ValueError("callbacks= is only for the Stable-Baselines3 agents (ppo, a2c, sac)")
        agent.callbacks = list(callbacks)
    return agent


__all__ = ["AGENTS", "Agent", "AgentSpec", "BBTAgent", "BDPLAgent", "CalibratedAgent", "DevSelector", "ICLAgent",
           "ManualAgent", "PromptTuningAgent", "RandomSearchAgent", "Result", "SB3Agent", "SB3Config", "TrainCurve",
           "check_compatible", "config_dict", "env_kind_of", "make_agent"]
