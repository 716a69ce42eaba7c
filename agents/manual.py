"""Baselines with no learned prompt: the manual template, a calibrated template, in-context learning.

Every learned prompt must beat these at its budget, or it has not earned its calls:

* :class:`ManualAgent`: the task's template alone (zero calls; optionally one dev call to report
  its dev metric). ``Result.action`` is None, which every env scores as the empty prompt.
* :class:`CalibratedAgent`: the template plus one additive bias per label on the label
  log-probabilities, fitted on the train examples from ONE call (contextual calibration in spirit,
  Zhao et al. 2021, but fitted on labelled rows rather than a content-free input). Zero-shot
  templates are often lopsided (SmolLM2 says "great" for 99% of SST-2 rows after "It was"); a bias
  undoes that without touching the prompt. The bias is in ``Result.label_bias``.
* :class:`ICLAgent`: k demonstrations per label from the train split, rendered with the template
  and the gold verbalizer word, prepended as a text prefix. The prefix is a prompt the black-box
  API accepts (the LM's tokens, ``TokenPrompt(lm.encode(text))``) but it is *outside* the env's
  action space: ``Result.action`` is None and ``Result.demonstrations`` holds the text.

These score prompts that are not actions through ``env.unwrapped.score_prompts`` (charged like
``score_actions``). With ``check_dev`` (default True for the calibrated and ICL agents) one more
call reports the dev metric, so that they appear on the same dev curve as search agents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import Result, config_dict
from promptgym.envs.reward import compute_reward
from promptgym.lm.base import ScoreResult, TokenPrompt
from promptgym.tasks.metrics import compute_metric

EMPTY = TokenPrompt(())
CALIBRATION_METHODS = ("ce", "uniform")


@dataclass
class ManualConfig:
    check_dev: bool = False   # spend one call to report the template's dev metric
    seed: int = 0


class ManualAgent:
    """The template with no learned prompt: the zero-shot baseline."""

    name = "manual"

    def __init__(self, config: ManualConfig | None = None) -> None:
        self.config = config or ManualConfig()

    def learn(self, env) -> Result:
        base = env.unwrapped
        env.reset(seed=self.config.seed)
        dev_metric, curve = None, []
        if self.config.check_dev and base.budget.remaining >= 1:
            dev_metric = float(base.score_prompts([EMPTY], "dev")[0].metric)
            curve = [(base.budget.calls, dev_metric)]
        return Result(self.name, None, "", float("nan"), dev_metric, base.budget.calls, curve,
                      config=config_dict(self.config))


@dataclass
class CalibrationConfig:
    method: str = "ce"        # "ce": maximise train log-likelihood; "uniform": equalise mean predictions
    l2: float = 1e-3          # keeps the bias finite when a bias alone separates the train rows
    check_dev: bool = True    # one more call to report the calibrated dev metric
    seed: int = 0


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


def biased_result(label_logprobs: np.ndarray, bias: np.ndarray) -> ScoreResult:
    """A ScoreResult whose scores carry the bias (for the env's reward functions and metrics)."""
    z = np.asarray(label_logprobs, dtype=np.float64) + bias
    top = z.max(axis=1, keepdims=True)
    norm = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    return ScoreResult(predictions=np.argmax(z, axis=1), logprobs=z, label_logprobs=norm)


class CalibratedAgent:
    """The template plus a per-label bias fitted on the train rows of ONE call (see module docstring)."""

    name = "calibrated"

    def __init__(self, config: CalibrationConfig | None = None) -> None:
        self.config = config or CalibrationConfig()

    def learn(self, env) -> Result:
        cfg = self.config
        base = env.unwrapped
        env.reset(seed=cfg.seed)
        if base.reward_kind == "label_only":
            raise ValueError("calibration needs label log-probabilities; this env uses reward='label_only'")
        out = base.score_prompts([EMPTY], "train")[0]
        labels = np.asarray(base.train.labels)[out.rows]
        bias = fit_label_bias(out.label_logprobs, labels, cfg.method, cfg.l2)
        res = biased_result(out.label_logprobs, bias)
        train_reward = compute_reward(base.reward_kind, res, labels, base.spec_task.metric)
        train_curve = [(base.budget.calls, float(train_reward))]
        dev_metric, curve = None, []
        if cfg.check_dev and base.budget.remaining >= 1:
            dev = base.score_prompts([EMPTY], "dev")[0]
            preds = biased_result(dev.label_logprobs, bias).predictions
            dev_metric = float(compute_metric(base.spec_task.metric, np.asarray(base.dev.labels)[dev.rows], preds))
            curve = [(base.budget.calls, dev_metric)]
        bias_text = ", ".join(f"{w}{b:+.3f}" for w, b in zip(base.template.verbalizers, bias))
        return Result(self.name, None, f"<template only; label bias {bias_text}>", float(train_reward), dev_metric,
                      base.budget.calls, curve, train_curve, label_bias=bias.astype(np.float32),
                      config=config_dict(cfg),
                      extra={"uncalibrated_train_reward": float(out.reward), "uncalibrated_train_metric": out.metric})


@dataclass
class ICLConfig:
    shots_per_label: int = 1
    separator: str = "\n"     # between demonstrations, and between the last one and the input
    check_dev: bool = True
    seed: int = 0


def render_demonstrations(base, shots_per_label: int = 1, seed: int = 0, separator: str = "\n") -> str:
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


class ICLAgent:
    """In-context learning: demonstrations from the train split as a text prefix (see module docstring)."""

    name = "icl"

    def __init__(self, config: ICLConfig | None = None) -> None:
        self.config = config or ICLConfig()

    def learn(self, env) -> Result:
        cfg = self.config
        base = env.unwrapped
        env.reset(seed=cfg.seed)
        if base.prompt_position != "before":
            raise ValueError("in-context demonstrations go before the input: use prompt_position='before'")
        text = render_demonstrations(base, cfg.shots_per_label, cfg.seed, cfg.separator)
        prompt = TokenPrompt(tuple(base.lm.encode(text)))
        out = base.score_prompts([prompt], "train")[0]
        train_curve = [(base.budget.calls, float(out.reward))]
        dev_metric, curve = None, []
        if cfg.check_dev and base.budget.remaining >= 1:
            dev_metric = float(base.score_prompts([prompt], "dev")[0].metric)
            curve = [(base.budget.calls, dev_metric)]
        return Result(self.name, None, text, float(out.reward), dev_metric, base.budget.calls, curve, train_curve,
                      demonstrations=text, config=config_dict(cfg),
                      extra={"prompt_tokens": len(prompt),
                             "note": "the train reward includes the demonstrations' own rows"})
