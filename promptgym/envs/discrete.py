"""The BDPL setting: choose one candidate n-gram for each of L prompt positions."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from promptgym.envs.config import CandidateConfig, DiscreteConfig, EnvConfig
from promptgym.envs.core import OneShotPromptEnv
from promptgym.envs.vocab import build_candidates, check_indices
from promptgym.lm.base import TokenPrompt


class DiscretePromptEnv(OneShotPromptEnv):
    """Discrete prompt search over a task-specific candidate list (BDPL, Diao et al. 2023).

    ## Action Space
    ``MultiDiscrete([K] * L)``: entry i picks candidate ``candidates.texts[a_i]`` for prompt position
    i. The prompt is the concatenation of the chosen candidates' tokens, placed before the input
    (or after it, ``prompt_position="after"``). Candidates are PMI-ranked n-grams of the task's
    training text (``promptgym.envs.vocab``); ``env.unwrapped.candidates`` documents the list.

    ## Observation Space
    ``Box(0, 1, (C + 1,))``: the mean predicted probability of each of the C labels and the accuracy
    of the prompt scored at the previous step of the episode (``[1/C..., 0]`` after reset).

    ## Rewards
    The frozen LM's score of the prompt on the 16-shot train examples (all 32, or a random
    minibatch of ``batch_size``): minus the cross-entropy of the gold label words by default; see
    ``promptgym.envs.reward`` for "hinge", "accuracy" and "label_only".

    ## Episode End
    Terminated after ``episode_length`` steps (default 1: each step is an episode). Truncated on the
    step that spends the last API call of the budget; any later step raises ``BudgetExhausted``.
    ``reset()`` never refills the budget.

    ## Arguments
    The fields of :class:`promptgym.envs.config.DiscreteConfig`: ``prompt_length`` L (default 10),
    ``num_candidates`` K (default 200), ``vocab_method`` "pmi" or "frequency", ``episode_length``
    (default 1), plus the common arguments of :class:`promptgym.envs.core.PromptEnvBase`.

    ## Example
    >>> import gymnasium as gym, promptgym
    >>> env = gym.make("PromptSST2-v0", budget=100)
    >>> env.action_space, env.observation_space
    (MultiDiscrete([200 200 200 200 200 200 200 200 200 200]), Box(0.0, 1.0, (3,), float32))
    >>> obs, info = env.reset(seed=13)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> terminated, info["budget"].calls_used
    (True, 1)

    ## Version History
    * v0: initial version (PMI candidates, weak causal templates, rewards "ce", "hinge",
      "accuracy", "label_only").
    """

    kind = "discrete"
    id_suffix = ""
    version = 0
    config_class: ClassVar[type[EnvConfig]] = DiscreteConfig
    config: CandidateConfig

    def __init__(self, config: CandidateConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.prompt_length = cfg.prompt_length
        self.candidates = build_candidates(self.spec_task, self.lm.encode, k=cfg.num_candidates,
                                           seed=self.split_seed, method=cfg.vocab_method.value, data_dir=self.data_dir)
        self.num_candidates = len(self.candidates)
        self.action_space = gym.spaces.MultiDiscrete([self.num_candidates] * self.prompt_length)

    def validate_action(self, action: Any) -> np.ndarray:
        return check_indices(action, self.num_candidates, self.prompt_length)

    def _prompt_of(self, action: np.ndarray) -> TokenPrompt:
        return TokenPrompt(self.candidates.prompt_ids(action))

    def prompt_text(self, action: Any) -> str:
        return "".join(self.candidates.texts[i] for i in self.validate_action(action))

