"""Vote sets (``combine="vote"``, the label-only agents abc_smc and snpe): the smoothed predictive
distribution, the tie-break, and the versioning that keeps schema version 1 entries on their rule.

Pure functions on hand-built label scores, plus one re-scoring on the tiny random model.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from agents.prompt_sets import score_set
from promptgym.agent import VOTE_V1, Result
from promptgym.bench.evaluate import complete_run, has_uncertainty, prompt_record, replay_result
from promptgym.bench.ranking import entry_row
from promptgym.bench.schema import SCHEMA_VERSION, bare_vote, combine_rule, parse_submission
from promptgym.evaluation import score_test
from promptgym.members import combine_members, combine_set
from promptgym.metrics.stats import encode_predictions
from promptgym.metrics.uncertainty import NLL_FLOOR, nll

ROOT = Path(__file__).resolve().parents[1]
#: the committed vote entries, submitted under schema version 1 (NLL ~13.3: the bare histogram's floor)
OLD_VOTE_ENTRIES = sorted(p for p in (ROOT / "leaderboards").glob("*/*.json")
                          if json.loads(p.read_text())["runs"][0]["prompt"].get("combine") == "vote")


def one_hot_scores(votes: list[list[int]], n_labels: int = 2) -> np.ndarray:
    """(K, n, C) scores whose argmax is each member's vote (what a label-only env gives)."""
    return np.eye(n_labels)[np.asarray(votes)]


# ------------------------------------------------------------------------------------ the distribution
@pytest.mark.parametrize("k,c", [(1, 2), (3, 2), (20, 2), (5, 3), (7, 4)])
def test_smoothed_rows_sum_to_one_without_zeros(k: int, c: int) -> None:
    rng = np.random.default_rng(k * 10 + c)
    lp = rng.normal(0, 2, (k, 50, c))
    for weights in (None, rng.random(k) + 0.01):
        p, preds = combine_set(lp, weights, "vote")
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        assert p.min() >= 1.0 / (k + c) - 1e-8  # at least a / (K + C a): one pseudo-vote of K + C
        np.testing.assert_array_equal(np.argmax(p, axis=1), preds)  # the distribution's argmax is the prediction
        hist = combine_members(lp, weights, VOTE_V1)  # the old rule: the bare histogram
        untied = np.sort(hist, axis=1)[:, -1] - np.sort(hist, axis=1)[:, -2] > 1e-9
        np.testing.assert_array_equal(preds[untied], np.argmax(hist, axis=1)[untied])  # predictions unchanged


def test_unanimous_vote_by_hand() -> None:
    p, preds = combine_set(one_hot_scores([[1, 0]] * 20), None, "vote", labels_only=True)
    np.testing.assert_allclose(p, [[1 / 22, 21 / 22], [21 / 22, 1 / 22]])  # (20 * 1 + 1) / (20 + 2 * 1)
    np.testing.assert_array_equal(preds, [1, 0])
    np.testing.assert_array_equal(combine_members(one_hot_scores([[1, 0]] * 20), None, VOTE_V1), [[0, 1], [1, 0]])


def test_weighted_shares_by_hand() -> None:
    # weights 3:1 -> h = (0.75, 0.25) with K = 2: p = (2 * 0.75 + 1) / 4, (2 * 0.25 + 1) / 4
    p = combine_members(one_hot_scores([[0], [1]]), [3.0, 1.0], "vote")
    np.testing.assert_allclose(p, [[0.625, 0.375]])
    # a zero weight drops its member from K too: one voter, p = (1 + 1) / (1 + 2)
    np.testing.assert_allclose(combine_members(one_hot_scores([[0], [1]]), [0.0, 1.0], "vote"), [[1 / 3, 2 / 3]])


def test_nll_of_a_vote_set_is_finite_and_small() -> None:
    # 20 members, 40 rows: unanimous and right on half the rows, unanimous and wrong on the other half
    labels = np.array([0, 1] * 20)
    votes = [np.where(np.arange(40) < 20, labels, 1 - labels).tolist()] * 20
    p = combine_members(one_hot_scores(votes), None, "vote")
    value = nll(p, labels)
    assert np.isfinite(value) and value < 13
    np.testing.assert_allclose(value, 0.5 * -np.log(21 / 22) + 0.5 * -np.log(1 / 22))
    old = nll(combine_members(one_hot_scores(votes), None, VOTE_V1), labels)
    np.testing.assert_allclose(old, 0.5 * -np.log(NLL_FLOOR), rtol=1e-6)  # the artifact: 13.8 nats


# -------------------------------------------------------------------------------------------- ties
def test_tie_goes_to_the_larger_mean_probability() -> None:
    # member A says 0 barely (0.51), member B says 1 firmly (0.9): a 1-1 tie; mean prob of 1 is 0.695
    lp = np.log(np.array([[[0.51, 0.49]], [[0.1, 0.9]]]))
    p, preds = combine_set(lp, None, "vote")
    assert preds.tolist() == [1]
    assert p[0, 1] > p[0, 0] and p[0, 1] == pytest.approx(0.5, abs=1e-8)
    assert combine_set(lp, None, VOTE_V1)[1].tolist() == [0]  # the old rule: the first label
    # the same on three labels: two labels tied at 2 votes of 5, the third with 1
    lp3 = np.log(np.array([[[0.5, 0.3, 0.2]], [[0.4, 0.35, 0.25]], [[0.05, 0.9, 0.05]], [[0.1, 0.8, 0.1]],
                           [[0.2, 0.1, 0.7]]]))
    p3, preds3 = combine_set(lp3, None, "vote")
    assert preds3.tolist() == [1] and np.argmax(p3[0]) == 1
    np.testing.assert_allclose(p3, [[3 / 8, 3 / 8, 2 / 8]], atol=1e-8)


def test_tie_without_logprobs_goes_to_the_heaviest_member() -> None:
    # 3 members vote 0, 1, 0 with weights 1, 2, 1: h = (0.5, 0.5); the heaviest member says 1
    scores = one_hot_scores([[0], [1], [0]])
    p, preds = combine_set(scores, [1.0, 2.0, 1.0], "vote", labels_only=True)
    assert preds.tolist() == [1] and np.argmax(p[0]) == 1
    # heaviest member says 0 -> 0
    assert combine_set(one_hot_scores([[1], [0], [1]]), [1.0, 2.0, 1.0], "vote", labels_only=True)[1].tolist() == [0]
    # equal weights: the earliest member
    assert combine_set(one_hot_scores([[1], [0]]), None, "vote", labels_only=True)[1].tolist() == [1]
    assert combine_set(one_hot_scores([[0], [1]]), None, "vote", labels_only=True)[1].tolist() == [0]


def test_dev_scoring_of_a_label_only_env_breaks_ties_by_the_heaviest_member() -> None:
    labels = np.array([1, 1, 0])
    votes = [[0, 1, 0], [1, 1, 0]]  # row 0 tied: member 2 (weight 3) says 1

    def score_actions(members, split):
        return [SimpleNamespace(label_logprobs=None, predictions=np.array(v), labels=labels) for v in votes]

    base = SimpleNamespace(score_actions=score_actions, spec_task=SimpleNamespace(num_labels=2, metric="accuracy"))
    got = score_set(base, [None, None], [1.0, 3.0], "vote")
    assert got.metric == 1.0 and np.isfinite(got.nll) and got.calls == 2
    got = score_set(base, [None, None], [3.0, 1.0], "vote")  # now member 1 is heavier and says 0 on row 0
    assert got.metric == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------- versioning
def test_combine_rule_by_schema_version() -> None:
    assert combine_rule("vote", 1) == VOTE_V1
    assert combine_rule("vote", 2) == "vote" and combine_rule("vote", SCHEMA_VERSION) == "vote"
    assert combine_rule("mean", 1) == combine_rule("mean", 2) == "mean"
    assert combine_rule(None, 1) == "mean"


def _accept_any_action():
    return SimpleNamespace(unwrapped=SimpleNamespace(validate_action=lambda action: None))


def test_old_schema_vote_entries_rescore_with_the_old_rule() -> None:
    assert OLD_VOTE_ENTRIES, "the committed abc_smc / snpe entries are schema version 1 vote sets"
    for path in OLD_VOTE_ENTRIES:
        sub = parse_submission(path.read_bytes())
        assert sub["schema_version"] == 1 and bare_vote(sub)
        for i in range(len(sub["runs"])):
            replay = replay_result(sub, i, _accept_any_action(), 2)
            assert replay.combine == VOTE_V1  # what `verify` re-scores them with: the bare histogram
            assert prompt_record(replay)["members"] == sub["runs"][i]["prompt"]["members"]
        # the same file as version 2 would mean the smoothed vote
        assert replay_result({**sub, "schema_version": 2}, 0, _accept_any_action(), 2).combine == "vote"
        assert not bare_vote({**sub, "schema_version": 2})
        # the leaderboard shows their NLL (the floor's ~13.3) as not applicable, the rest as before
        row = entry_row(sub, sub["metric"], None)
        assert row.metrics["nll"] is None
        assert row.metrics["ece"] == pytest.approx(np.mean([r["test"]["ece"] for r in sub["runs"]]))
        assert min(r["test"]["nll"] for r in sub["runs"]) > 13  # what the old rule claimed


def test_vote_v1_is_the_old_histogram_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    lp, w = rng.normal(0, 1, (20, 30, 2)), rng.random(20)
    old = np.einsum("k,knc->nc", w / w.sum(), np.eye(2)[np.argmax(lp, axis=2)])
    old = old / old.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(combine_members(lp, w, VOTE_V1), old)
    np.testing.assert_array_equal(combine_set(lp, w, VOTE_V1)[1], np.argmax(old, axis=1))


# ---------------------------------------------------------------------------------- on the tiny model
TINY = {"model": "tiny-random-causal", "dtype": "float32"}
SUBSPACE = {"intrinsic_dim": 16, "prompt_length": 4, "batch_size": 8}
ENV = "PromptSST2-Subspace-v0"


def test_a_cached_version_1_vote_run_is_rescored_by_the_current_rule() -> None:
    env = gym.make(ENV, budget=1, split_seed=13, **TINY, **SUBSPACE)
    rng = np.random.default_rng(3)
    members = [rng.normal(0, 1, env.action_space.shape).astype(np.float32) for _ in range(3)]
    old = Result("abc_smc", None, "", 0.0, None, 0, members=members, weights=[0.5, 0.3, 0.2], combine=VOTE_V1)
    new = Result("abc_smc", None, "", 0.0, None, 0, members=members, weights=[0.5, 0.3, 0.2], combine="vote")
    old_test, new_test = score_test(env, old), score_test(env, new)
    assert np.isfinite(new_test.metrics["nll"]) and new_test.metrics["nll"] < 13
    assert new_test.probs.min() > 0
    prompt = {**prompt_record(old), "combine": "vote"}  # a run cached before version 2 (no mark in extra)
    run = {"seed": 13, "calls_used": 1, "wall_seconds": 1.0, "prompt": prompt, "curve": [],
           "test": {"metric": old_test.metric, "ece": old_test.ece, "n": old_test.n,
                    "predictions": encode_predictions(old_test.predictions), **old_test.metrics},
           "extra": {"agent": "abc_smc"}}
    assert not has_uncertainty(run)
    done = complete_run(ENV, run, TINY["model"], SUBSPACE)
    assert done["extra"]["schema_version"] == SCHEMA_VERSION and has_uncertainty(done)
    assert done["test"]["nll"] == pytest.approx(new_test.metrics["nll"])
    assert done["test"]["metric"] == pytest.approx(new_test.metric)
