"""A VectorEnv whose step scores all sub-envs' prompts in ONE batched LM call.

``gym.make_vec("PromptSST2-v0", num_envs=N)`` builds N sub-environments that share one LM and one
``QueryBudget`` (the budget is the user's, not a sub-env's). A step validates all N actions first
(nothing is charged if any is invalid), then scores every prompt that needs scoring in one call,
charging one API call per prompt. With ``batch_size`` set, all prompts of a step share the same
random minibatch of train examples (a paired comparison, as BDPL's samples).

Autoreset is ``SAME_STEP``: a finished sub-env is reset inside the same ``step``; the returned
observation is the new episode's first one and the last one is in ``infos["final_obs"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from promptgym.envs.budget import DEFAULT_BUDGET, QueryBudget
from promptgym.envs.core import PromptEnvBase


class PromptVectorEnv(VectorEnv):
    """N prompt envs of one class, stepped together with one batched LM call per step."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, env_cls: type[PromptEnvBase], num_envs: int, **kwargs: Any) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        kwargs.pop("max_episode_steps", None)
        budget = kwargs.pop("budget", DEFAULT_BUDGET)
        kwargs["budget"] = budget if isinstance(budget, QueryBudget) else QueryBudget(budget)
        first = env_cls(**kwargs)
        kwargs["model"] = first.lm
        self.envs = [first] + [env_cls(**kwargs) for _ in range(int(num_envs) - 1)]
        self.num_envs = int(num_envs)
        self.budget = first.budget
        self.lm = first.lm
        self.single_action_space = first.action_space
        self.single_observation_space = first.observation_space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._obs = create_empty_array(self.single_observation_space, self.num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = seed if isinstance(seed, list) else [None if seed is None else seed + i for i in range(self.num_envs)]
        infos: dict = {}
        obs = []
        for i, (env, s) in enumerate(zip(self.envs, seeds)):
            o, info = env.reset(seed=s, options=options)
            obs.append(o)
            infos = self._add_info(infos, info, i)
        self._obs = concatenate(self.single_observation_space, obs, self._obs)
        return self._obs, infos

    def step(self, actions: Any):
        actions = list(actions)
        if len(actions) != self.num_envs:
            from promptgym.errors import InvalidActionError

            raise InvalidActionError(f"expected {self.num_envs} actions, got {len(actions)}")
        checked = [env.check_step(a) for env, a in zip(self.envs, actions)]
        pending = [env.pending_prompt(c) for env, c in zip(self.envs, checked)]
        todo = [i for i, p in enumerate(pending) if p is not None]
        outcomes: dict[int, Any] = {}
        if todo:
            scored = self.envs[0].score_prompts([pending[i] for i in todo], "train")
            outcomes = dict(zip(todo, scored))
        obs, rewards, terms, truncs, infos = [], [], [], [], {}
        for i, (env, c) in enumerate(zip(self.envs, checked)):
            o, r, term, trunc, info = env.advance(c, outcomes.get(i))
            if term or trunc:
                info = dict(info, final_obs=o, final_info=dict(info))
                o, reset_info = env.reset()
                info.update(reset_info)
            obs.append(o)
            rewards.append(r)
            terms.append(term)
            truncs.append(trunc)
            infos = self._add_info(infos, info, i)
        self._obs = concatenate(self.single_observation_space, obs, self._obs)
        return (self._obs, np.asarray(rewards, dtype=np.float64), np.asarray(terms, dtype=bool),
                np.asarray(truncs, dtype=bool), infos)

    def score_actions(self, actions, split: str = "train"):
        """Score full prompts in one LM call (as ``PromptEnvBase.score_actions``)."""
        return self.envs[0].score_actions(actions, split)


def _factory(cls_path: str):
    def make(num_envs: int = 1, **kwargs: Any) -> PromptVectorEnv:
        module, name = cls_path.split(":")
        import importlib

        return PromptVectorEnv(getattr(importlib.import_module(module), name), num_envs, **kwargs)

    return make


make_discrete_vec = _factory("promptgym.envs.discrete:DiscretePromptEnv")
make_subspace_vec = _factory("promptgym.envs.subspace:SubspacePromptEnv")
make_tokenwise_vec = _factory("promptgym.envs.tokenwise:TokenwisePromptEnv")
