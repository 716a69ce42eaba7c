"""The BDPL setting: choose one candidate n-gram for each of L prompt positions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.envs.core import OneShotPromptEnv
from promptgym.errors import InvalidActionError
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
    ``prompt_length`` L (default 10), ``num_candidates`` K (default 200), ``vocab_method`` "pmi" or
    "frequency", plus the common arguments of :class:`promptgym.envs.core.PromptEnvBase`.
    """

    def __init__(self, task: str = "sst2", prompt_length: int = 10, num_candidates: int = 200,
                 vocab_method: str = "pmi", **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        from promptgym.envs.vocab import build_candidates

        if int(prompt_length) < 1:
            raise ValueError(f"prompt_length must be >= 1, got {prompt_length}")
        self.prompt_length = int(prompt_length)
        self.candidates = build_candidates(self.spec_task, self.lm.encode, k=int(num_candidates),
                                           seed=self.split_seed, method=vocab_method, data_dir=self.data_dir)
        self.num_candidates = len(self.candidates)
        self.action_space = gym.spaces.MultiDiscrete([self.num_candidates] * self.prompt_length)

    def _validate_prompt(self, action: Any) -> np.ndarray:
        return check_indices(action, self.prompt_length, self.num_candidates)

    def _prompt_of(self, action: np.ndarray) -> TokenPrompt:
        return TokenPrompt(self.candidates.prompt_ids(action))

    def prompt_text(self, action: Any) -> str:
        return "".join(self.candidates.texts[i] for i in self._validate_prompt(action))


def check_indices(action: Any, length: int, k: int) -> np.ndarray:
    """Validate an array of ``length`` candidate indices in ``[0, k)``; the budget is untouched."""
    try:
        arr = np.asarray(action)
    except Exception as exc:  # ragged lists and the like
        raise InvalidActionError(f"action must be {length} integers in [0, {k}): {exc}") from None
    if arr.shape != (length,):
        raise InvalidActionError(f"action must have shape ({length},), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidActionError("action must hold integers (got NaN/inf or fractional values)")
    elif arr.dtype.kind not in "iu":
        raise InvalidActionError(f"action must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if np.any(arr < 0) or np.any(arr >= k):
        raise InvalidActionError(f"action entries must be in [0, {k}), got min {arr.min()} max {arr.max()}")
    return arr
