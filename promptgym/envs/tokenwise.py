"""The sequential RL setting: build the prompt one candidate per step, rewarded at the end."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from promptgym.envs.config import EnvConfig, TokenwiseConfig
from promptgym.envs.discrete import DiscretePromptEnv
from promptgym.envs.scoring import Outcome
from promptgym.envs.vocab import check_indices
from promptgym.errors import InvalidActionError
from promptgym.lm.base import Prompt


class TokenwisePromptEnv(DiscretePromptEnv):
    """Build a prompt of L candidates step by step (the environment where SB3's PPO is natural).

    ## Action Space
    ``Discrete(K)``: the candidate appended at this step (same candidate list as the discrete env).

    ## Observation Space
    ``MultiDiscrete([K + 1] * L)``: the prompt so far, one candidate index per position; ``K`` marks a
    position not chosen yet.

    ## Rewards
    0 for the first L - 1 steps (no LM call, nothing charged); at step L the full prompt is scored
    on the train examples (one API call) and the reward is as in the discrete env.

    ## Episode End
    Terminated after L steps. Truncated on the step that spends the budget's last call.

    ``score_actions`` / ``evaluate_dev`` take full prompts (L indices), as in the discrete env.

    ## Arguments
    The fields of :class:`promptgym.envs.config.TokenwiseConfig`: those of the discrete env but
    ``episode_length`` (an episode is ``prompt_length`` steps).

    ## Example
    >>> import gymnasium as gym, promptgym
    >>> env = gym.make("PromptSST2-Tokenwise-v0", budget=100, prompt_length=3)
    >>> env.action_space, env.observation_space
    (Discrete(200), MultiDiscrete([201 201 201]))
    >>> obs, info = env.reset(seed=13)
    >>> [env.step(7)[1] for _ in range(2)], env.unwrapped.budget.calls  # no LM call before the last step
    ([0.0, 0.0], 0)
    >>> obs, reward, terminated, truncated, info = env.step(7)
    >>> terminated, env.unwrapped.budget.calls, obs.tolist()
    (True, 1, [7, 7, 7])

    ## Version History
    * v0: initial version (same candidates as the discrete env; reward at the last step).
    """

    kind = "tokenwise"
    id_suffix = "-Tokenwise"
    version = 0
    config_class: ClassVar[type[EnvConfig]] = TokenwiseConfig

    def __init__(self, config: TokenwiseConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.action_space = gym.spaces.Discrete(self.num_candidates)
        self.observation_space = gym.spaces.MultiDiscrete([self.num_candidates + 1] * self.prompt_length)
        self._tokens: list[int] = []

    def steps_per_episode(self) -> int:
        """An episode is ``prompt_length`` steps, one candidate each."""
        return self.config.prompt_length

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        gym.Env.reset(self, seed=seed)
        self._tokens = []
        self._last = None
        return self._obs(), self._info(None)

    def _obs(self) -> np.ndarray:
        obs = np.full(self.prompt_length, self.num_candidates, dtype=np.int64)
        obs[: len(self._tokens)] = self._tokens
        return obs

    def check_step(self, action: Any) -> int:
        if len(self._tokens) >= self.prompt_length:
            raise InvalidActionError("the episode is over (prompt complete): call reset()")
        return int(check_indices(np.reshape(np.asarray(action), (1,)) if np.ndim(action) == 0 else action,
                                 self.num_candidates, 1)[0])

    def pending_prompt(self, action: int) -> Prompt | None:
        if len(self._tokens) + 1 < self.prompt_length:
            return None
        return self._prompt_of(np.asarray([*self._tokens, action]))

    def advance(self, action: int, outcome: Outcome | None):
        self._tokens.append(action)
        if outcome is None:
            return self._obs(), 0.0, False, False, self._info(None)
        self._last = outcome
        self._last_prompt_text = self.prompt_text(self._tokens)
        return self._obs(), outcome.reward, True, self.budget.exhausted, self._info(outcome)
