"""Baselines with no learned prompt: the manual template, a calibrated template, in-context learning.

Every learned prompt must beat these at its budget, or it has not earned its calls:

* :class:`ManualAgent`: the task's template alone (zero calls; optionally one dev call to report
  its dev metric). ``Result.action`` is None, which every env scores as the empty prompt.
* :class:`CalibratedAgent`: the template plus one additive bias per label on the label
  log-probabilities, fitted on the train examples from ONE call (contextual calibration in spirit,
  Zhao et al. 2021, but fitted on labelled rows rather than a content-free input) by
  ``promptgym.calibration.fit_label_bias``, which fits any agent's final prompts too. Zero-shot
  templates are often lopsided (SmolLM2 says "great" for 99% of SST-2 rows after "It was"); a bias
  undoes that without touching the prompt. The bias is in ``Result.label_bias``; the env re-reads
  scores with it (``env.unwrapped.with_label_bias``, no call), as the test harness will.
* :class:`ICLAgent`: k demonstrations per label from the train split, rendered with the template
  and the gold verbalizer word, prepended as a text prefix. The prefix is a prompt the black-box
  API accepts (its tokens, ``env.unwrapped.text_prompt(text)``) but it is *outside* the env's
  action space: ``Result.action`` is None and ``Result.demonstrations`` holds the text.

These score prompts that are not actions through ``env.unwrapped.score_prompts`` (charged like
``score_actions``). With ``check_dev`` (default True for the calibrated and ICL agents) one more
call reports the dev metric, so that they appear on the same dev curve as search agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, Result, config_dict, require
from promptgym.calibration import CALIBRATION_METHODS, check_calibratable, fit_label_bias
from promptgym.errors import IncompatibleAgentError
from promptgym.task_view import TokenPrompt

EMPTY = TokenPrompt(())


def dev_check(base: Any, prompt: TokenPrompt, enabled: bool,
              label_bias: np.ndarray | None = None) -> tuple[float | None, list[tuple[int, float]]]:
    """The dev metric of a prompt outside the action space (one call, if ``enabled`` and affordable)
    and its one-point dev curve; ``(None, [])`` otherwise. ``label_bias`` is applied first."""
    if not enabled or base.budget.remaining < 1:
        return None, []
    out = base.score_prompts([prompt], "dev")[0]
    if label_bias is not None:
        out = base.with_label_bias(out, label_bias)
    return float(out.metric), [(base.budget.calls, float(out.metric))]


@dataclass
class ManualConfig(AgentConfig):
    check_dev: bool = False   # spend one call to report the template's dev metric
    seed: int = 0             # seeds the env reset (nothing else is random)

    def validate(self) -> None:
        require(self.seed >= 0, f"ManualConfig.seed must be >= 0, got {self.seed}")


class ManualAgent(ConfiguredAgent):
    """The template with no learned prompt: the zero-shot baseline."""

    name = "manual"
    config_class = ManualConfig

    def search(self, env: gym.Env) -> Result:
        base = self.start(env)
        dev_metric, curve = dev_check(base, EMPTY, self.config.check_dev)
        return Result(self.name, None, "", float("nan"), dev_metric, base.budget.calls, curve,
                      config=config_dict(self.config))


@dataclass
class CalibrationConfig(AgentConfig):
    method: str = "ce"        # "ce": maximise train log-likelihood; "uniform": equalise mean predictions
    l2: float = 1e-3          # keeps the bias finite when a bias alone separates the train rows
    check_dev: bool = True    # one more call to report the calibrated dev metric
    seed: int = 0             # seeds the env reset (nothing else is random)

    def validate(self) -> None:
        require(self.method in CALIBRATION_METHODS,
                f"CalibrationConfig.method must be one of {CALIBRATION_METHODS}, got {self.method!r}")
        require(self.l2 >= 0, f"CalibrationConfig.l2 must be >= 0, got {self.l2}")
        require(self.seed >= 0, f"CalibrationConfig.seed must be >= 0, got {self.seed}")


class CalibratedAgent(ConfiguredAgent):
    """The template plus a per-label bias fitted on the train rows of ONE call (see module docstring)."""

    name = "calibrated"
    config_class = CalibrationConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        check_calibratable(env.unwrapped.reward_kind)
        base = self.start(env)
        out = base.score_prompts([EMPTY], "train")[0]
        bias = fit_label_bias(out.label_logprobs, out.labels, cfg.method, cfg.l2)
        train_reward = base.with_label_bias(out, bias).reward  # re-scored without another call
        train_curve = [(base.budget.calls, float(train_reward))]
        dev_metric, curve = dev_check(base, EMPTY, cfg.check_dev, bias)
        bias_text = ", ".join(f"{w}{b:+.3f}" for w, b in zip(base.template.verbalizers, bias))
        return Result(self.name, None, f"<template only; label bias {bias_text}>", float(train_reward), dev_metric,
                      base.budget.calls, curve, train_curve,
                      label_bias=bias.astype(np.float32), config=config_dict(cfg),
                      extra={"uncalibrated_train_reward": float(out.reward), "uncalibrated_train_metric": out.metric})


@dataclass
class ICLConfig(AgentConfig):
    shots_per_label: int = 1  # demonstrations per label drawn from the train split
    separator: str = "\n"     # between demonstrations, and between the last one and the input
    check_dev: bool = True    # one more call to report the dev metric
    seed: int = 0             # seeds the env reset and the choice and order of the demonstrations

    def validate(self) -> None:
        require(self.shots_per_label >= 1, f"ICLConfig.shots_per_label must be >= 1, got {self.shots_per_label}")
        require(self.seed >= 0, f"ICLConfig.seed must be >= 0, got {self.seed}")


def render_demonstrations(base: Any, shots_per_label: int = 1, seed: int = 0, separator: str = "\n") -> str:
    """k train rows per label, seeded and shuffled, each rendered with its gold verbalizer word.

    Causal templates: ``body + cue + " " + word``. Masked templates: the mask slot filled with the
    word. The result ends with ``separator`` so the input that follows starts on a fresh line.
    """
    if shots_per_label < 1:
        raise ValueError(f"shots_per_label must be >= 1, got {shots_per_label}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(base.train.labels)
    texts, pairs = base.train.texts, base.train.text_pairs
    chosen: list[int] = []
    for c in range(base.spec_task.num_labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            continue
        chosen.extend(int(i) for i in rng.choice(idx, size=min(shots_per_label, len(idx)), replace=False))
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    tmpl = base.template
    demos = []
    for i in chosen:
        word = tmpl.verbalizers[labels[i]]
        if "{mask}" in tmpl.cue:
            left, right = tmpl.render(texts[i], pairs[i], position="before", mask_token=word)
            demos.append(left + right)
        else:
            left, right = tmpl.render(texts[i], pairs[i], position="before")
            demos.append(left + right + " " + word)
    return separator.join(demos) + separator


class ICLAgent(ConfiguredAgent):
    """In-context learning: demonstrations from the train split as a text prefix (see module docstring)."""

    name = "icl"
    config_class = ICLConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        if env.unwrapped.prompt_position != "before":
            raise IncompatibleAgentError("in-context demonstrations go before the input: make the env with "
                                         "prompt_position='before'")
        base = self.start(env)
        text = render_demonstrations(base, cfg.shots_per_label, cfg.seed, cfg.separator)
        prompt = base.text_prompt(text)
        out = base.score_prompts([prompt], "train")[0]
        train_curve = [(base.budget.calls, float(out.reward))]
        dev_metric, curve = dev_check(base, prompt, cfg.check_dev)
        return Result(self.name, None, text, float(out.reward), dev_metric, base.budget.calls, curve, train_curve,
                      demonstrations=text, config=config_dict(cfg),
                      extra={"prompt_tokens": len(prompt),
                             "note": "the train reward includes the demonstrations' own rows"})
