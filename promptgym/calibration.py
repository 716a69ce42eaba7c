"""Calibration: one additive bias per label, fitted on the train rows, for any prompt or prompt set.

Zero-shot templates and tuned prompts alike are often lopsided (SmolLM2 says "great" for 99% of
SST-2 rows after "It was"); a bias on the label log-probabilities undoes that without touching the
prompt. The calibrated manual baseline (``agents.manual.CalibratedAgent``) fits it for the template
alone; :func:`calibrate_result` fits it for the final prompt(s) of any agent, after ``learn()``
(``run_agent(..., calibrate=True)``, ``--calibrate``), so a leaderboard can tell whether a tuned
prompt plus calibration beats the calibrated template. Both fit with :func:`fit_label_bias`.

Fitting is charged like any call: the train batch is scored once per member (one batched LM call,
one API call per member); the run driver reserves those calls out of the budget before the agent
starts (:func:`calibration_calls`), so the whole run stays within its tier.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import Result, max_members
from promptgym.errors import IncompatibleAgentError
from promptgym.members import member_prompts

#: "ce": maximise the train log-likelihood; "uniform": equalise the mean prediction (no labels used)
CALIBRATION_METHODS = ("ce", "uniform")


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


def calibration_calls(agent: Any) -> int:
    """API calls calibration may need after ``agent`` learns: one per member of its Result."""
    return max_members(agent)


def check_calibratable(reward_kind: str) -> None:
    """Refuse calibration on an env that returns predicted labels only (nothing to put a bias on)."""
    if reward_kind == "label_only":
        raise IncompatibleAgentError("calibration fits a bias on label log-probabilities; the env uses "
                                     "reward='label_only', which returns predicted labels only")


def calibrate_result(env: gym.Env, result: Result, method: str = "ce", l2: float = 1e-3) -> Result:
    """``result`` with one label bias per member fitted on the env's train batch (charged).

    The members are scored on the train batch in one batched call (one API call each); each gets
    its own bias, as the calibrated baseline fits one for the template: a shared bias would mix
    members whose lopsidedness differs. The Result's train reward becomes the calibrated one (the
    mean over members); the uncalibrated one is kept in ``extra``.
    """
    base = env.unwrapped
    check_calibratable(base.reward_kind)
    if result.label_bias is not None:
        raise IncompatibleAgentError(f"agent {result.agent!r} already returns a label bias; calibrating it again "
                                     "would fit a bias on top of a bias")
    members = member_prompts(env, result)
    outcomes = base.score_prompts([p for p, _ in members], "train")
    if any(o.label_logprobs is None for o in outcomes):
        raise IncompatibleAgentError("calibration needs label log-probabilities; the LM returned labels only")
    biases = np.stack([fit_label_bias(o.label_logprobs, o.labels, method, l2) for o in outcomes])
    rewards = [base.with_label_bias(o, b).reward for o, b in zip(outcomes, biases)]
    extra = {**result.extra, "calibration": {"method": method, "l2": float(l2), "calls": len(outcomes),
                                             "uncalibrated_train_reward": float(np.mean([o.reward for o in outcomes])),
                                             "calibrated_train_reward": float(np.mean(rewards))}}
    bias = biases if result.is_set else biases[0]
    return dataclasses.replace(result, label_bias=bias.astype(np.float32), train_reward=float(np.mean(rewards)),
                               calls_used=base.budget.calls, extra=extra)


__all__ = ["CALIBRATION_METHODS", "calibrate_result", "calibration_calls", "check_calibratable", "fit_label_bias"]
