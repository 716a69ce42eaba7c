"""A Result's members: as LM prompts (what the test harness scores and calibration fits a bias for),
and combined into one predictive distribution (what a set predicts: :func:`combine_set`).

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

from promptgym.agent import COMBINE_RULES, VOTE_V1, Result, result_members
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




# ------------------------------------------------------------------ one distribution from a set's members
#: pseudo-votes per label that smooth a "vote" set's histogram (additive / Laplace smoothing)
VOTE_PRIOR = 1.0
#: labels whose vote shares differ by less than this are tied (weights are floats)
VOTE_TIE_TOL = 1e-9
#: probability the winner of a tied vote takes from each other tied label, so that the distribution's
#: argmax is the set's prediction (ECE, AURC and dev metrics read the argmax)
VOTE_TIE_TILT = 1e-9


def combine_members(label_logprobs: np.ndarray, weights: np.ndarray | None = None, combine: str = "mean",
                    label_bias: np.ndarray | None = None, *, labels_only: bool = False) -> np.ndarray:
    """One predictive distribution ``(n, C)`` from the members' label log-probs ``(K, n, C)``: the
    distribution of :func:`combine_set` (see there for the rules)."""
    return combine_set(label_logprobs, weights, combine, label_bias, labels_only=labels_only)[0]


def combine_set(label_logprobs: np.ndarray, weights: np.ndarray | None = None, combine: str = "mean",
                label_bias: np.ndarray | None = None, *, labels_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(probs (n, C), predictions (n,))`` of a prompt set from its members' label log-probs ``(K, n, C)``.

    ``weights`` (K,) are normalised (None: uniform); ``label_bias`` is ``(K, C)``, ``(C,)`` or None and
    is added to the log-probs first. The rules:

    * "mean": the weighted average of the members' label distributions (each softmax-normalised);
      the prediction is its argmax.
    * "vote": reads each member's predicted label (argmax) only, what a label-only API returns. With
      ``h`` the weighted histogram of the votes (it sums to 1), ``K`` the members of positive weight,
      ``C`` the labels and ``a`` = :data:`VOTE_PRIOR` = 1, the distribution is the smoothed vote
      share ``p_c = (K * h_c + a) / (K + C * a)``: no label gets probability 0 (a unanimous vote of
      20 members on 2 labels gives 21/22). The prediction is the histogram's argmax. A tie (shares
      equal within :data:`VOTE_TIE_TOL`) goes to the tied label of largest weighted mean member
      probability (the test harness scores members with full label log-probs); with
      ``labels_only`` (the scores carry only the predicted labels, e.g. one-hot rows from a
      label-only env), or if those are equal too, to the tied label voted by the member of largest
      weight (the earliest on equal weights). The winner takes :data:`VOTE_TIE_TILT` from each other
      tied label, so the distribution's argmax is the prediction.
    * "vote_v1" (:data:`promptgym.agent.VOTE_V1`): "vote" as submission schema version 1 defined it,
      kept to re-score those files: the bare histogram ``h`` (exact zeros), ties to the first label.
    """
    if combine not in COMBINE_RULES and combine != VOTE_V1:
        raise ConfigError(f"combine must be one of {COMBINE_RULES}, got {combine!r}")
    z = np.asarray(label_logprobs, dtype=np.float64)
    if z.ndim != 3:
        raise ConfigError(f"label_logprobs must be (members, examples, labels), got shape {z.shape}")
    k, n, c = z.shape
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if label_bias is not None:
        z = z + np.broadcast_to(np.asarray(label_bias, dtype=np.float64), (k, c))[:, None, :]
    if combine == "mean":
        if labels_only:
            raise ConfigError("a 'mean' set needs the members' label log-probs, not their predicted labels only")
        out = np.einsum("k,knc->nc", w, _softmax(z))
        out /= out.sum(axis=1, keepdims=True)  # rows sum to 1 and no entry exceeds 1 despite rounding
        return out, np.argmax(out, axis=1)
    votes = np.argmax(z, axis=2)  # (K, n)
    hist = np.einsum("k,knc->nc", w, np.eye(c)[votes])
    hist /= hist.sum(axis=1, keepdims=True)
    if combine == VOTE_V1:
        return hist, np.argmax(hist, axis=1)
    voters = int(np.count_nonzero(w > 0))
    out = (voters * hist + VOTE_PRIOR) / (voters + c * VOTE_PRIOR)
    preds = np.argmax(hist, axis=1)
    tied = hist >= hist.max(axis=1, keepdims=True) - VOTE_TIE_TOL
    rows = np.flatnonzero(tied.sum(axis=1) > 1)
    if rows.size:
        tied = tied[rows]
        if not labels_only:  # keep the tied labels of largest mean member probability
            mean = np.where(tied, np.einsum("k,knc->nc", w, _softmax(z[:, rows])), -np.inf)
            tied &= mean >= mean.max(axis=1, keepdims=True)
        order = np.argsort(-w, kind="stable")  # heaviest member first, the earliest on equal weights
        ranked = votes[order][:, rows]  # (K, rows)
        first = np.argmax(tied[np.arange(rows.size)[None, :], ranked], axis=0)  # a tied label has a voter
        winner = ranked[first, np.arange(rows.size)]
        preds[rows] = winner
        losers = (hist[rows] >= hist[rows].max(axis=1, keepdims=True) - VOTE_TIE_TOL)
        losers[np.arange(rows.size), winner] = False
        out[rows] -= VOTE_TIE_TILT * losers
        out[rows, winner] += VOTE_TIE_TILT * losers.sum(axis=1)
    return out / out.sum(axis=1, keepdims=True), preds


def _softmax(z: np.ndarray) -> np.ndarray:
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


__all__ = ["VOTE_PRIOR", "VOTE_TIE_TILT", "VOTE_TIE_TOL", "combine_members", "combine_set", "member_biases",
           "member_prompts", "result_prompt"]
