"""The evaluator: a Result scored outside the budget, through the Scorer, on any split or on OOD rows.

On the tiny random model (code paths only): the cache answers a repeated score without an LM call
and belongs to its evaluator; OOD rows go through the Scorer and come out as the LM's own scores;
train/dev scores have the split's length and the metric of their predictions; test scores equal a
direct LM call on the rendered test rows; and no env is needed when the parts are at hand.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from promptgym.agent import Result
from promptgym.envs.scoring import Scorer
from promptgym.evaluation import Evaluator, ScoreCache, TestScore, score_test, shared_cache
from promptgym.lm.base import ScoreRequest, TokenPrompt
from promptgym.metrics import compute_metric
from promptgym.metrics.stats import expected_calibration_error
from promptgym.tasks import get_task, load_split

TINY = {"model": "tiny-random-causal", "dtype": "float32"}


@pytest.fixture(scope="module")
def env() -> gym.Env:
    return gym.make("PromptSST2-v0", budget=5, split_seed=13, **TINY)


@pytest.fixture
def calls(env: gym.Env, monkeypatch: pytest.MonkeyPatch) -> list[list[ScoreRequest]]:
    """Every batch of requests the env's LM is sent (the LM scores as it would)."""
    lm = env.unwrapped.lm
    score, seen = lm.score, []

    def spy(requests):
        seen.append(list(requests))
        return score(requests)

    monkeypatch.setattr(lm, "score", spy)
    return seen


def prompt_result(env: gym.Env, seed: int, **kwargs: Any) -> Result:
    """A Result of one action of the env, drawn with ``seed`` (a prompt no other test scores)."""
    space = env.action_space
    space.seed(seed)
    return Result("x", space.sample(), "", 0.0, None, 0, **kwargs)


def private(env: gym.Env) -> Evaluator:
    base = env.unwrapped
    return Evaluator(base.scorer, base, base.data_dir, base.split_seed)


def softmax(z: np.ndarray) -> np.ndarray:
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- (a) the cache
def test_a_repeated_score_is_answered_from_the_evaluators_own_cache(env, calls):
    result = prompt_result(env, 101)
    first = private(env)
    a = first.score(result, "dev")
    b = first.score(result, "dev")
    assert len(calls) == 1 and len(first.cache) == 1
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.probs, b.probs)
    second = private(env)  # built with the constructor: a cache of its own, so it scores again
    assert second.cache is not first.cache
    second.score(result, "dev")
    assert len(calls) == 2
    first.cache.clear()
    assert len(first.cache) == 0 and first.cache.cells == 0
    first.score(result, "dev")
    assert len(calls) == 3
    # a repeated member is scored once; the cached one not at all
    other = prompt_result(env, 102)
    as_set = Result("x", result.action, "", 0.0, None, 0, members=[other.action, result.action, other.action])
    first.score(as_set, "dev")
    assert len(calls) == 4 and len(calls[-1]) == 1 and calls[-1][0].prompt == env.unwrapped.prompt_of(other.action)


def test_evaluators_of_one_env_share_the_cache_of_its_lm(env, calls):
    base = env.unwrapped
    assert Evaluator.for_env(env).cache is Evaluator.for_env(env).cache is shared_cache(base.lm)
    mine = ScoreCache()
    assert Evaluator.for_env(env, cache=mine).cache is mine
    result = prompt_result(env, 103)
    Evaluator.for_env(env).score(result, "dev")
    Evaluator.for_env(env).score(result, "dev")
    assert len(calls) == 1  # the documented exception: for_env's evaluators share their LM's cache


def test_the_cache_is_bounded_and_never_aliases_another_lm():
    cache = ScoreCache(max_cells=10)
    lm_a, lm_b = TokenPrompt((1,)), TokenPrompt((2,))  # any weakly referenceable objects stand for LMs
    cache.put(("a",), lm_a, np.zeros((3, 2)), np.zeros(3, int), False)
    assert cache.get(("a",), lm_b) is None  # the entry is lm_a's
    assert cache.get(("a",), lm_a) is not None
    cache.put(("b",), lm_a, np.zeros((2, 2)), np.zeros(2, int), False)
    assert len(cache) == 2 and cache.cells == 10
    cache.put(("c",), lm_a, np.zeros((1, 2)), np.zeros(1, int), False)  # 12 cells: the oldest goes
    assert cache.get(("a",), lm_a) is None and len(cache) == 2 and cache.cells == 6
    cache.put(("d",), lm_a, np.zeros((20, 2)), np.zeros(20, int), False)  # over the bound alone: kept
    assert len(cache) == 1 and cache.get(("d",), lm_a) is not None


# ---------------------------------------------------------------------------------------------- (b) OOD rows
def test_ood_rows_are_scored_through_the_scorer_as_the_lm_scores_them(env, calls, monkeypatch):
    base = env.unwrapped
    texts = ("the plot is thin but fun.", "is water wet?", "A man walks a dog.", "Stocks fell on Monday.")
    segments = tuple((f"{head} {t}", " It was") for head in ("Review:", "Q:", "") for t in texts)  # 12 rows
    through: list[int] = []
    score_segments = Scorer.score_segments

    def spy(self, prompts, segs):
        through.append(len(prompts))
        return score_segments(self, prompts, segs)

    monkeypatch.setattr(Scorer, "score_segments", spy)
    result = prompt_result(env, 104)
    got = private(env).score(result, segments=segments)
    assert through == [1] and len(calls) == 1
    prompt = base.prompt_of(result.action)
    assert calls[0] == [ScoreRequest(prompt, segments, base.template.verbalizers, False)]
    direct = base.lm.score([ScoreRequest(prompt, segments, base.template.verbalizers, False)])[0]
    assert isinstance(got, TestScore) and got.n == 12 and got.labels is None and np.isnan(got.metric)
    np.testing.assert_array_equal(got.predictions, direct.predictions)
    np.testing.assert_allclose(got.probs, softmax(np.asarray(direct.label_logprobs, np.float64)), rtol=1e-12)
    np.testing.assert_array_equal(private(env).probs(result, segments=segments), got.probs)
    labels = np.arange(12) % 2
    with_labels = private(env).score(result, segments=segments, labels=labels)
    assert with_labels.metric == compute_metric(base.spec_task.metric, labels, direct.predictions)
    assert with_labels.ece == expected_calibration_error(got.probs, labels)


# ---------------------------------------------------------------------------------------------- (c) train / dev
@pytest.mark.parametrize("split", ["dev", "train"])
def test_train_and_dev_rows_give_the_splits_predictions_and_metric(env, split):
    base = env.unwrapped
    rows = {"dev": base.dev, "train": base.train}[split]
    result = prompt_result(env, {"dev": 105, "train": 106}[split], label_bias=np.array([0.3, -0.3], dtype=np.float32))
    got = private(env).score(result, split)
    labels = np.asarray(rows.labels)
    assert got.n == len(rows) and got.predictions.shape == (len(rows),) and got.probs.shape == (len(rows), 2)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.metric == compute_metric(base.spec_task.metric, labels, got.predictions)
    assert got.ece == expected_calibration_error(got.probs, labels)
    outcome = base.scorer.score([base.prompt_of(result.action)], rows, label_bias=result.label_bias)[0]
    np.testing.assert_array_equal(got.predictions, outcome.predictions)  # what the env's reward read
    with pytest.raises(ValueError, match="split must be one of"):
        private(env).score(result, "pool")


# ---------------------------------------------------------------------------------------------- (d) test split
def test_a_single_prompt_on_test_is_the_lms_own_scores_of_the_test_rows(env, calls):
    base = env.unwrapped
    result = prompt_result(env, 107)
    test = load_split("sst2", "test", None, base.data_dir)
    segments = base.scorer.segments(test)
    request = ScoreRequest(base.prompt_of(result.action), segments, base.template.verbalizers, False)
    evaluator = private(env)
    assert evaluator.requests(result) == [request]
    got = evaluator.score(result)  # the test split, fp32 (the tiny model is loaded in fp32 already)
    assert calls == [[request]]
    direct = base.lm.score([request])[0]
    labels = np.asarray(test.labels)
    assert got.n == len(test) and not got.approximate
    np.testing.assert_array_equal(got.predictions, direct.predictions)
    np.testing.assert_allclose(got.probs, softmax(np.asarray(direct.label_logprobs, np.float64)), rtol=1e-12)
    assert got.metric == compute_metric(base.spec_task.metric, labels, direct.predictions)
    assert got.metrics["nll"] == pytest.approx(-np.mean(np.log(got.probs[np.arange(len(labels)), labels])))
    again = score_test(env, result)  # the convenience is the same scoring
    np.testing.assert_array_equal(again.predictions, got.predictions)
    np.testing.assert_array_equal(again.probs, got.probs)
    assert (again.metric, again.ece, again.metrics) == (got.metric, got.ece, got.metrics)


def test_no_env_is_needed_when_the_parts_are_at_hand(tiny_causal, data_dir):
    task = get_task("sst2")
    scorer = Scorer(tiny_causal, task, task.template("causal"), "before", "label_only")

    class Prompts:
        def prompt_of(self, action):
            return TokenPrompt(tuple(int(i) for i in action))

        def text_prompt(self, text):
            return TokenPrompt(tuple(tiny_causal.encode(text)))

    evaluator = Evaluator(scorer, Prompts(), data_dir, split_seed=13)
    ids = tiny_causal.encode(" no env")
    single = evaluator.score(Result("x", np.asarray(ids), "", 0.0, None, 0), "dev")
    demos = evaluator.score(Result("icl", None, "", 0.0, None, 0, demonstrations=" no env"), "dev")
    np.testing.assert_array_equal(single.predictions, demos.predictions)  # the same tokens either way
    assert single.probs.shape == (32, 2)  # label log-probs even though the scorer's reward is label-only
    dev = load_split(task, "dev", 13, data_dir)
    assert single.metric == compute_metric(task.metric, np.asarray(dev.labels), single.predictions)
