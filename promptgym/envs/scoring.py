"""The one scorer: prompts + a split's rows -> outcomes (rewards, metrics, label probabilities).

Every split is scored by this code: the env's train and dev batches (the env charges the budget
and then delegates here), and the test split and OOD rows in the evaluation harness
(:mod:`promptgym.evaluation`: uncharged, outside any env, often with the same model loaded in
fp32). Keeping one scorer means a prompt's test score is computed exactly as its rewards were:
same rendering of the template, same prompt position, same label words, same handling of a label
bias.

A :class:`Scorer` holds no budget and no state beyond a cache of rendered rows; it never loads a
split itself (the env loads train and dev, the harness loads test).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from promptgym.envs.reward import compute_reward
from promptgym.lm.base import BlackBoxLM, Prompt, ScoreRequest, ScoreResult
from promptgym.metrics import compute_metric
from promptgym.tasks.data import TaskSplit
from promptgym.tasks.spec import TaskSpec, Template

Segments = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Outcome:
    """The scores of one prompt on one batch: what a step's reward and info are made of."""

    reward: float
    accuracy: float
    metric: float
    label_probs: np.ndarray  # mean predicted probability per label (prediction frequencies if label-only)
    predictions: np.ndarray
    label_logprobs: np.ndarray | None
    num_examples: int
    rows: np.ndarray | None = None  # indices into the split of the scored examples (a minibatch with batch_size)
    logprobs: np.ndarray | None = None  # label-word log-probs over the full vocabulary (None if label-only)
    labels: np.ndarray | None = None  # gold labels of the scored rows
    num_tokens: int = 0  # tokens the LM processed for this prompt (the meter counts them)
    approximate: bool = False  # the backend flagged its scores approximate (e.g. a top-k-only remote API)
    prompt: Prompt | None = None  # the LM prompt scored (listeners such as the tracker show the best one)


def is_approximate(result: ScoreResult) -> bool:
    """Whether a backend flagged ``result`` approximate (``extra["approximate"]``: e.g. label scores
    reconstructed from a remote API's top-k log-probs). Approximate scores cannot be verified."""
    return bool((result.extra or {}).get("approximate"))


def render_rows(template: Template, split: TaskSplit, position: str, mask_token: str | None) -> Segments:
    """``(left, right)`` of every row of ``split``: the prompt goes between the two strings."""
    return tuple(template.render(t, p, position=position, mask_token=mask_token)
                 for t, p in zip(split.texts, split.text_pairs))


def with_label_bias(result: ScoreResult, bias: np.ndarray | Sequence[float]) -> ScoreResult:
    """``result`` with an additive per-label bias on its label scores (what calibration learns).

    The biased scores are renormalised over the label words, so every reward function and metric
    reads them as it reads an LM's own scores.
    """
    if result.label_logprobs is None:
        raise ValueError("a label bias needs label log-probabilities; the LM returned labels only")
    z = np.asarray(result.label_logprobs, dtype=np.float64) + np.asarray(bias, dtype=np.float64)
    top = z.max(axis=1, keepdims=True)
    norm = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
    return ScoreResult(predictions=np.argmax(z, axis=1), logprobs=z, label_logprobs=norm,
                       num_tokens=result.num_tokens, extra=dict(result.extra or {}))


class Scorer:
    """Scores prompts on rows of a task split with one LM, template, prompt position and reward.

    :param lm: the black-box LM that scores (any ``BlackBoxLM``)
    :param task: the task (labels, metric)
    :param template: the verbalised template whose label words are scored
    :param prompt_position: "before" the input or "after" it, before the cue
    :param reward_kind: a reward of ``promptgym.envs.reward.REWARDS``; "label_only" asks the LM for
        predicted labels only
    """

    def __init__(self, lm: BlackBoxLM, task: TaskSpec, template: Template, prompt_position: str,
                 reward_kind: str) -> None:
        self.lm, self.task, self.template = lm, task, template
        self.prompt_position, self.reward_kind = prompt_position, reward_kind
        self._rendered: dict[tuple[str, str], Segments] = {}
        #: a run's call journal (``promptgym.journal.CallJournal``): set by the run driver so that a killed
        #: run can resume; scorers made by :meth:`with_lm` (test scoring) have none
        self.journal: Any = None

    def with_lm(self, lm: BlackBoxLM, reward_kind: str | None = None) -> Scorer:
        """The same scorer on another LM or reward (the harness re-checks bf16 searches with the fp32
        model and asks for log-probabilities even when the agent saw labels only)."""
        kind = self.reward_kind if reward_kind is None else reward_kind
        if lm is self.lm and kind == self.reward_kind:
            return self
        return Scorer(lm, self.task, self.template, self.prompt_position, kind)

    @property
    def label_only(self) -> bool:
        return self.reward_kind == "label_only"

    def segments(self, split: TaskSplit) -> Segments:
        """The rendered rows of ``split`` (cached per split file)."""
        key = (split.source, split.sha256)
        seg = self._rendered.get(key)
        if seg is None:
            seg = render_rows(self.template, split, self.prompt_position, self.lm.mask_token)
            self._rendered[key] = seg
        return seg

    def score(self, prompts: Sequence[Prompt], split: TaskSplit, rows: np.ndarray | None = None,
              label_bias: np.ndarray | None = None) -> list[Outcome]:
        """Score ``prompts`` on ``rows`` of ``split`` (all rows by default) in ONE batched LM call."""
        idx = np.arange(len(split)) if rows is None else np.asarray(rows)
        all_segments = self.segments(split)
        segments = tuple(all_segments[i] for i in idx)
        labels = np.asarray(split.labels)[idx]
        results = self._call(self.requests(prompts, segments))
        return [replace(self.outcome(res, labels, idx, label_bias), prompt=p) for p, res in zip(prompts, results)]

    def requests(self, prompts: Sequence[Prompt], segments: Segments) -> list[ScoreRequest]:
        """The LM requests that score ``prompts`` on rendered rows ``segments``: one per prompt, with
        this scorer's label words (and labels only if its reward reads no more)."""
        segments = tuple(segments)
        return [ScoreRequest(p, segments, self.template.verbalizers, self.label_only) for p in prompts]

    def score_segments(self, prompts: Sequence[Prompt], segments: Segments) -> list[ScoreResult]:
        """Score ``prompts`` on rows rendered already (e.g. another task's inputs rendered with this
        scorer's label words, for OOD detection) in ONE batched LM call. Rows without gold labels
        make no reward: the LM's results are returned as they are."""
        return self._call(self.requests(prompts, segments))

    def _call(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return self.lm.score(requests) if self.journal is None else self.journal.score(self.lm, requests)

    def outcome(self, result: ScoreResult, labels: np.ndarray, rows: np.ndarray | None = None,
                label_bias: np.ndarray | None = None) -> Outcome:
        """Turn an LM result on rows with gold ``labels`` into an Outcome (optionally with a label bias)."""
        if label_bias is not None:
            result = with_label_bias(result, label_bias)
        n = len(labels)
        if result.label_logprobs is not None:
            probs = np.exp(result.label_logprobs).mean(axis=0)
        else:
            probs = np.bincount(result.predictions, minlength=self.task.num_labels) / n
        return Outcome(
            reward=compute_reward(self.reward_kind, result, labels, self.task.metric),
            accuracy=float(np.mean(result.predictions == labels)),
            metric=compute_metric(self.task.metric, labels, result.predictions),
            label_probs=np.asarray(probs).astype(np.float32),
            predictions=result.predictions,
            label_logprobs=result.label_logprobs,
            num_examples=n,
            rows=rows,
            logprobs=result.logprobs,
            labels=np.asarray(labels),
            num_tokens=int(result.num_tokens),
            approximate=is_approximate(result),
        )

    def rebias(self, outcome: Outcome, label_bias: np.ndarray) -> Outcome:
        """``outcome`` re-read with a label bias, without an LM call (calibration fits on scores it has)."""
        if outcome.label_logprobs is None or outcome.labels is None:
            raise ValueError("a label bias needs label log-probabilities; the LM returned labels only")
        result = ScoreResult(outcome.predictions, outcome.logprobs, outcome.label_logprobs,
                             extra={"approximate": True} if outcome.approximate else {})
        return replace(self.outcome(result, outcome.labels, outcome.rows, label_bias), prompt=outcome.prompt)


__all__ = ["Outcome", "Scorer", "Segments", "is_approximate", "render_rows", "with_label_bias"]
