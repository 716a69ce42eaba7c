"""Baselines with no learned prompt: the manual template, a calibrated template, in-context learning.

Every learned prompt must beat these at its budget, or it has not earned its calls:

* :class:`ManualAgent`: the task's template alone (zero calls; optionally one dev call to report
  its dev metric). ``Result.action`` is None, which every env scores as the empty prompt.
* :class:`CalibratedAgent`: the template plus one additive bias per label on the label
  log-probabilities, fitted on the train examples from ONE call (contextual calibration in spirit,
  Zhao et al. 2021, but fitted on labelled rows rather than a content-free input). Zero-shot
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
from promptgym.errors import IncompatibleAgentError
from promptgym.lm.base import TokenPrompt

EMPTY = TokenPrompt(())
CALIBRATION_METHODS = ("ce", "uniform")


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

    def learn(self, env: gym.Env) -> Result:
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


def fit_label_bias(label_logprobs: np.ndarray, labels: np.ndarray, method: str = "ce", l2: float = 1e-3,
                   iterations: int = 50) -> np.ndarray:
    """One additive bias per label for ``label_logprobs`` (n, C); returned with mean zero.

    ``"ce"``: minimise mean cross-entropy of ``softmax(label_logprobs + b)`` plus ``l2 * |b|^2`` by
    Newton's method with backtracking (the objective is convex in b; C <= 14, so the C x C Hessian
    is free).
    ``"uniform"``: iterate ``b <- b - log(C * mean predicted probability)`` until the mean prediction
    is uniform (contextual calibration's aim), without using the labels.
    """
    lp = np.asarray(label_logprobs, dtype=np.float64)
    n, c = lp.shape
    if method == "uniform":
        b = np.zeros(c)
        for _ in range(iterations):  # fixed point of b <- b - log(mean prediction): a uniform mean
            z = lp + b
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            b -= np.log(p.mean(axis=0) * c + 1e-12)
        return b - b.mean()
    if method != "ce":
        raise ValueError(f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}")
    y = np.asarray(labels)
    onehot = np.eye(c)[y]
    ones = np.ones((c, c)) / c  # the objective ignores b -> b + t: fix the gauge (sum b = 0)

    def objective(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = lp + b
        top = z.max(axis=1, keepdims=True)
        p = np.exp(z - top)
        total = p.sum(axis=1, keepdims=True)
        ce = float(np.mean(top[:, 0] + np.log(total[:, 0]) - z[np.arange(n), y]))
        return ce + l2 * float(b @ b), p / total

    b = np.zeros(c)
    f, p = objective(b)
    for _ in range(iterations):
        grad = (p - onehot).mean(axis=0) + 2 * l2 * b
        hess = (np.diag(p.sum(axis=0)) - p.T @ p) / n + 2 * l2 * np.eye(c) + ones
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking: Newton's full step can overshoot far from the optimum
            f_new, p_new = objective(b - t * step)
            if f_new <= f - 1e-4 * t * float(grad @ step) or t < 1e-6:
                break
            t /= 2
        b, f, p = b - t * step, f_new, p_new
        if np.abs(t * step).max() < 1e-9:
            break
    return b - b.mean()


class CalibratedAgent(ConfiguredAgent):
    """The template plus a per-label bias fitted on the train rows of ONE call (see module docstring)."""

    name = "calibrated"
    config_class = CalibrationConfig

    def learn(self, env: gym.Env) -> Result:
        cfg = self.config
        if env.unwrapped.reward_kind == "label_only":
            raise IncompatibleAgentError("calibration needs label log-probabilities; this env uses "
                                         "reward='label_only'")
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

    def learn(self, env: gym.Env) -> Result:
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
