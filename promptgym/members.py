"""A Result's members as LM prompts: what the test harness scores and what calibration fits a bias for.

A Result names its final prompt(s) as actions of the env's space, demonstrations or a soft prompt
(:class:`promptgym.agent.Result`); only the env knows the LM prompt an action stands for. Test
scoring (:mod:`promptgym.runner`) and calibration (:mod:`promptgym.calibration`) both need that
translation, so it lives here, below both, and the run driver may import calibration without a
circle.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import Result, result_members
from promptgym.errors import ConfigError
from promptgym.lm.base import Prompt, SoftPrompt, TokenPrompt


def result_prompt(env: gym.Env, result: Any) -> Prompt:
    """The LM prompt of a single-prompt Result: soft prompt, demonstrations, the action's prompt, or none."""
    base = env.unwrapped
    soft = getattr(result, "soft_prompt", None)
    if soft is not None:
        return SoftPrompt(np.asarray(soft, dtype=np.float32))
    if getattr(result, "demonstrations", None):
        return base.text_prompt(result.demonstrations)
    if result.action is None:
        return TokenPrompt(())
    return base.prompt_of(result.action)


def member_prompts(env: gym.Env, result: Result) -> list[tuple[Prompt, float]]:
    """``(LM prompt, normalised weight)`` of every member of ``result`` (one member for a single prompt)."""
    if not result.is_set:
        return [(result_prompt(env, result), 1.0)]
    base = env.unwrapped
    return [(base.prompt_of(m), w) for m, w in result_members(result)]


def member_biases(result: Result, n_members: int, n_labels: int) -> np.ndarray | None:
    """The label bias of each member, ``(K, C)``, from a shared ``(C,)`` or a per-member ``(K, C)`` bias."""
    if result.label_bias is None:
        return None
    bias = np.asarray(result.label_bias, dtype=np.float64)
    if bias.shape == (n_labels,):
        return np.broadcast_to(bias, (n_members, n_labels))
    if bias.shape != (n_members, n_labels):
        raise ConfigError(f"label_bias must have shape ({n_labels},) or ({n_members}, {n_labels}), got {bias.shape}")
    return bias


__all__ = ["member_biases", "member_prompts", "result_prompt"]
