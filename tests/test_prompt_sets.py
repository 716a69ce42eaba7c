"""Prompt sets as Results: combination rules, test scoring of every member, run folders, submissions.

Hand-built label scores check the two combination rules; the tiny random model checks that a
one-member set scores exactly as its single prompt, that every member is scored, and that a
submission of prompt sets goes through schema -> ``verify`` (re-scoring every member) and back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from promptgym.agent import (
    AGENT_REGISTRY,
    VOTE_V1,
    AgentConfig,
    PromptSetAgent,
    Result,
    config_dict,
    register_agent,
    require,
    result_members,
)
from promptgym.bench.evaluate import evaluate, prompt_record, verify
from promptgym.bench.schema import parse_submission, validate_submission
from promptgym.errors import ConfigError, InvalidSubmissionError
from promptgym.evaluation import Evaluator, score_test
from promptgym.members import combine_members
from promptgym.metrics.stats import decode_predictions, encode_predictions
from promptgym.runner import run_agent
from promptgym.runs import load_result, new_run_dir, run_config, write_run

TINY = {"model": "tiny-random-causal", "dtype": "float32"}
SUBSPACE = {"intrinsic_dim": 16, "prompt_length": 4, "batch_size": 8}
ENV = "PromptSST2-Subspace-v0"


# ---------------------------------------------------------------------------------------------- a set agent
@dataclass
class SetConfig(AgentConfig):
    members: int = 3          # random subspace points scored on train, all kept
    combine: str = "mean"     # the Result's combination rule
    seed: int = 0             # seeds the points

    def validate(self) -> None:
        require(self.members >= 1, "members must be >= 1")


class SetAgent(PromptSetAgent):
    """Scores ``members`` random points on train in ONE call and returns them all, weighted by reward."""

    name = "p_set_test"
    config_class = SetConfig

    def learn(self, env: gym.Env) -> Result:
        base = self.start(env)
        self.budget_seen = base.budget.remaining
        rng = np.random.default_rng(self.config.seed)
        points = [rng.normal(0, 1, base.action_space.shape).astype(np.float32) for _ in range(self.config.members)]
        rewards = np.array([o.reward for o in base.score_actions(points)])
        weights = np.exp(rewards - rewards.max())
        best = int(np.argmax(weights))
        return Result(self.name, points[best], base.prompt_text(points[best]), float(rewards.max()), None,
                      base.budget.calls, members=points, weights=weights.tolist(), combine=self.config.combine,
                      config=config_dict(self.config))


@pytest.fixture(scope="module", autouse=True)
def set_agent():
    """``p_set_test`` in the registry for this module's tests only (other modules see the built-ins)."""
    register_agent("p_set_test", f"{SetAgent.__module__}:SetAgent", ("subspace",), "test: a weighted set")
    yield "p_set_test"
    AGENT_REGISTRY.pop("p_set_test", None)


def tiny_env(budget: int = 40) -> gym.Env:
    return gym.make(ENV, budget=budget, **TINY, **SUBSPACE)


def point(env: gym.Env, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, env.action_space.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------- combination
def test_mean_and_vote_on_hand_built_scores():
    # 2 members, 2 examples, 2 labels; probabilities given directly (log-probs of normalised rows)
    p = np.array([[[0.9, 0.1], [0.4, 0.6]],
                  [[0.3, 0.7], [0.2, 0.8]]])
    lp = np.log(p)
    mean = combine_members(lp, None, "mean")
    np.testing.assert_allclose(mean, [[0.6, 0.4], [0.3, 0.7]])
    hist = combine_members(lp, None, VOTE_V1)  # the bare histogram of schema version 1
    np.testing.assert_allclose(hist, [[0.5, 0.5], [0.0, 1.0]])  # member 1 says 0, member 2 says 1; both say 1
    # "vote" smooths the shares h: (K h + 1) / (K + C) with K = 2 members, C = 2 labels
    np.testing.assert_allclose(combine_members(lp, None, "vote"), [[0.5, 0.5], [0.25, 0.75]])
    # weights 3:1 (unnormalised): mean 0.75 p1 + 0.25 p2, vote 0.75 for member 1's label
    np.testing.assert_allclose(combine_members(lp, [3, 1], "mean"), [[0.75, 0.25], [0.35, 0.65]])
    np.testing.assert_allclose(combine_members(lp, [3, 1], VOTE_V1), [[0.75, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(combine_members(lp, [3, 1], "vote"), [[0.625, 0.375], [0.25, 0.75]])
    np.testing.assert_allclose(combine_members(lp, [0, 2], "mean"), p[1])  # a zero weight drops a member


def test_per_member_bias_moves_only_its_member():
    p = np.array([[[0.9, 0.1]], [[0.9, 0.1]]])
    bias = np.array([[0.0, 0.0], [0.0, np.log(81.0)]])  # member 2: odds 9:1 -> 1:9
    np.testing.assert_allclose(combine_members(np.log(p), None, "mean", bias), [[0.5, 0.5]])
    np.testing.assert_allclose(combine_members(np.log(p), None, "vote", bias), [[0.5, 0.5]])
    shared = combine_members(np.log(p), None, "mean", np.array([0.0, np.log(81.0)]))
    np.testing.assert_allclose(shared, [[0.1, 0.9]])


def test_result_validates_its_set():
    a = np.zeros(4, np.float32)
    with pytest.raises(ConfigError, match="weights"):
        Result("x", a, "", 0.0, None, 0, members=[a, a], weights=[1.0])
    with pytest.raises(ConfigError, match="weights"):
        Result("x", a, "", 0.0, None, 0, members=[a, a], weights=[0.0, 0.0])
    with pytest.raises(ConfigError, match="weights"):
        Result("x", a, "", 0.0, None, 0, members=[a, a], weights=[-1.0, 2.0])
    with pytest.raises(ConfigError, match="at least one"):
        Result("x", a, "", 0.0, None, 0, members=[])
    with pytest.raises(ConfigError, match="combine"):
        Result("x", a, "", 0.0, None, 0, members=[a], combine="median")
    with pytest.raises(ConfigError, match="members"):
        Result("x", a, "", 0.0, None, 0, weights=[1.0])
    single = Result("x", a, "", 0.0, None, 0)
    assert not single.is_set and result_members(single) == [(a, 1.0)]
    pairs = result_members(Result("x", a, "", 0.0, None, 0, members=[a, a + 1], weights=[1.0, 3.0]))
    assert [w for _, w in pairs] == [0.25, 0.75]
    top = Result("x", None, "", 0.0, None, 0, members=[a, a + 1, a + 2], weights=[1.0, 3.0, 2.0])
    np.testing.assert_array_equal(top.action, a + 1)  # a set's action is its member of largest weight


# ---------------------------------------------------------------------------------------------- test scoring
def test_a_one_member_set_scores_exactly_as_its_prompt():
    env = tiny_env()
    a = point(env, 1)
    single = score_test(env, Result("x", a, "", 0.0, None, 0))
    as_set = score_test(env, Result("x", a, "", 0.0, None, 0, members=[a], weights=[5.0]))
    assert single.metric == as_set.metric
    np.testing.assert_array_equal(single.predictions, as_set.predictions)
    np.testing.assert_array_equal(single.probs, as_set.probs)
    assert single.metrics == as_set.metrics and set(single.metrics) >= {"ece", "nll", "brier", "aurc", "aurc_10bin"}
    bias = np.array([0.3, -0.3], np.float32)
    biased = score_test(env, Result("x", a, "", 0.0, None, 0, label_bias=bias))
    biased_set = score_test(env, Result("x", a, "", 0.0, None, 0, label_bias=bias[None, :], members=[a]))
    np.testing.assert_array_equal(biased.predictions, biased_set.predictions)
    np.testing.assert_array_equal(biased.probs, biased_set.probs)


def test_a_set_combines_every_member_on_test():
    env = tiny_env()
    a, b = point(env, 1), point(env, 2)
    bias_b = np.array([2.0, -2.0])  # the tiny model's answers barely depend on the prompt: a bias moves them
    pa = score_test(env, Result("x", a, "", 0.0, None, 0)).probs
    pb = score_test(env, Result("x", b, "", 0.0, None, 0, label_bias=bias_b.astype(np.float32))).probs
    bias = np.stack([np.zeros(2), bias_b]).astype(np.float32)
    got = score_test(env, Result("x", a, "", 0.0, None, 0, members=[a, b], weights=[1.0, 3.0], label_bias=bias))
    np.testing.assert_allclose(got.probs, 0.25 * pa + 0.75 * pb, rtol=1e-6)
    np.testing.assert_array_equal(got.predictions, np.argmax(got.probs, axis=1))
    vote = score_test(env, Result("x", a, "", 0.0, None, 0, members=[a, b], weights=[1.0, 3.0], label_bias=bias,
                                  combine="vote"))
    hist = 0.25 * np.eye(2)[pa.argmax(1)] + 0.75 * np.eye(2)[pb.argmax(1)]
    np.testing.assert_allclose(vote.probs, (2 * hist + 1) / 4)  # smoothed: (K h + 1) / (K + C)
    np.testing.assert_array_equal(vote.predictions, hist.argmax(1))
    # the same distribution on rendered rows given directly (what OOD scoring uses)
    rows = env.unwrapped.scorer.segments(env.unwrapped.dev)
    dev = Evaluator.for_env(env).probs(Result("x", a, "", 0.0, None, 0, members=[a, b], weights=[1.0, 3.0],
                                              label_bias=bias), segments=rows)
    assert dev.shape == (len(rows), 2)
    np.testing.assert_allclose(dev.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------------------------- run folders
def test_run_folder_keeps_the_set(tmp_path):
    run = run_agent(ENV, "p_set_test", 20, model=TINY["model"], dtype="float32", env_kwargs=SUBSPACE,
                    progress=False, calibrate=True)
    res = run.result
    run_dir = new_run_dir(tmp_path, ENV, "p_set_test", 0, 13)
    write_run(run_dir, run.env, res, run_config(ENV, run.env, "p_set_test", run.agent, 20, 0, 13, TINY["model"],
                                                "float32", SUBSPACE, run.seconds, True))
    back = load_result(run_dir)
    assert back.combine == res.combine and back.weights == res.weights and len(back.members) == 3
    for m, n in zip(back.members, res.members):
        np.testing.assert_array_equal(m, n)
    np.testing.assert_array_equal(back.label_bias, res.label_bias)
    assert back.label_bias.shape == (3, 2) and back.extra["calibration"]["calls"] == 3
    assert json.loads((run_dir / "config.json").read_text())["calibrate"] is True
    assert "a set of 3 prompts" in (run_dir / "prompt.txt").read_text()
    np.testing.assert_array_equal(score_test(run.env, back).predictions, score_test(run.env, res).predictions)


# ---------------------------------------------------------------------------------------------- submissions
@pytest.fixture(scope="module")
def set_submission(set_agent, unit_tier, tmp_path_factory) -> dict:
    sub = evaluate(ENV, "p_set_test", unit_tier, TINY["model"], env_kwargs=SUBSPACE, agent_kwargs={"combine": "vote"},
                   workdir=tmp_path_factory.mktemp("work"), submitter="ci")
    return json.loads(json.dumps(sub))


def test_a_set_submission_round_trips_through_verify(set_submission, unit_tier):
    sub = parse_submission(json.dumps(set_submission))
    for run in sub["runs"]:
        assert len(run["prompt"]["members"]) == 3 and run["prompt"]["combine"] == "vote"
        assert len(run["prompt"]["weights"]) == 3
        assert set(run["test"]) >= {"ece", "nll", "brier", "aurc", "aurc_10bin"}
    report = verify(sub, log=lambda *_: None)
    assert [r["agree"] for r in report] == [1.0] * 5


def test_verify_rescores_every_member(set_submission, unit_tier):
    forged = json.loads(json.dumps(set_submission))
    majority = np.bincount(decode_predictions(forged["runs"][0]["test"]["predictions"]), minlength=2).argmax()
    push = [50.0, 0.0] if majority == 1 else [0.0, 50.0]  # two of three voters now always say the other label
    forged["runs"][0]["prompt"]["label_bias"] = [[0.0, 0.0], push, push]
    with pytest.raises(InvalidSubmissionError, match=r"runs\[0\]"):
        verify(parse_submission(json.dumps(forged)), log=lambda *_: None)
    forged = json.loads(json.dumps(set_submission))
    forged["runs"][1]["prompt"]["members"][2] = [9.0] * 16  # outside the action space's bounds
    with pytest.raises(InvalidSubmissionError, match=r"runs\[1\]\.prompt\.members\[2\]"):
        verify(parse_submission(json.dumps(forged)), log=lambda *_: None)


def test_verify_rechecks_the_uncertainty_metrics(set_submission, unit_tier):
    forged = json.loads(json.dumps(set_submission))
    forged["runs"][3]["test"]["nll"] += 0.5
    with pytest.raises(InvalidSubmissionError, match=r"runs\[3\]\.test\.nll"):
        verify(parse_submission(json.dumps(forged)), log=lambda *_: None)


def test_schema_refuses_inconsistent_sets(set_submission, unit_tier):
    def broken(change) -> dict:
        sub = json.loads(json.dumps(set_submission))
        change(sub["runs"][0]["prompt"])
        return sub

    cases = [(lambda p: p.update(weights=[1.0]), "one weight per member"),
             (lambda p: p.update(weights=[0.0, 0.0, 0.0]), "positive sum"),
             (lambda p: p.update(combine="median"), "combine"),
             (lambda p: p.update(label_bias=[[0.0, 0.0]]), "one bias per member"),
             (lambda p: (p.pop("members"), p.pop("weights"), p.pop("combine")) and p.update(label_bias=[[0.0, 0.0]]),
              "needs members"),
             (lambda p: p.pop("members"), "only a prompt set")]
    for change, message in cases:
        with pytest.raises(InvalidSubmissionError, match=message):
            validate_submission(broken(change))


def test_single_prompt_submissions_without_metrics_still_verify(set_submission, unit_tier):
    """The pre-set format: one action, no members, no uncertainty metrics, no OOD (as committed entries)."""
    old = json.loads(json.dumps(set_submission))
    for run in old["runs"]:
        p = run["prompt"]
        for key in ("members", "weights", "combine"):
            p.pop(key)
        p["label_bias"] = None
        res = Result("p_set_test", np.asarray(p["action"], np.float32), "", 0.0, None, 0)
        assert prompt_record(res)["action"] == p["action"]  # float32 values written exactly
        test = score_test(gym.make(ENV, budget=1, split_seed=run["seed"], **TINY, **SUBSPACE), res)
        run["test"] = {"metric": test.metric, "ece": test.ece, "n": test.n,
                       "predictions": encode_predictions(test.predictions)}
    report = verify(parse_submission(json.dumps(old)), log=lambda *_: None)
    assert len(report) == 5


def test_committed_single_prompt_entries_still_parse():
    entries = sorted((Path(__file__).resolve().parents[1] / "leaderboards").glob("*/*.json"))
    assert entries
    for path in entries:
        sub = parse_submission(path.read_bytes())
        for run in sub["runs"]:
            assert "members" not in run["prompt"] or run["prompt"]["members"]


def test_cached_runs_without_uncertainty_are_completed(unit_tier, tmp_path):
    """A seed run cached before the protocol reported uncertainty gets it on the next evaluate, uncharged."""
    kwargs = dict(env_kwargs=SUBSPACE, agent_kwargs={"members": 2}, workdir=tmp_path)
    assert evaluate(ENV, "p_set_test", unit_tier, TINY["model"], seeds=(21,), **kwargs) is None
    path = tmp_path / "seed-21.json"
    fresh = json.loads(path.read_text())
    old = json.loads(path.read_text())
    old["test"] = {k: old["test"][k] for k in ("metric", "ece", "n", "predictions")}
    path.write_text(json.dumps(old))
    evaluate(ENV, "p_set_test", unit_tier, TINY["model"], seeds=(21,), **kwargs)
    completed = json.loads(path.read_text())
    assert completed["test"].keys() == fresh["test"].keys()
    for key in ("nll", "brier", "aurc", "aurc_10bin", "ece", "metric"):
        assert completed["test"][key] == pytest.approx(fresh["test"][key], abs=1e-9)
    with pytest.raises(ConfigError, match="env kwargs"):
        evaluate(ENV, "p_set_test", unit_tier, TINY["model"], seeds=(21,), workdir=tmp_path,
                 env_kwargs={**SUBSPACE, "reward": "hinge"}, agent_kwargs={"members": 2})


class FlaggedLM:
    """The tiny model behind a backend that flags its scores approximate (as a top-k-only API does)."""

    def __init__(self, lm) -> None:
        self._lm = lm

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def score(self, requests):
        out = self._lm.score(requests)
        for r in out:
            r.extra["approximate"] = True
        return out


def test_approximate_scores_are_flagged_and_never_submitted(set_submission):
    from promptgym.bench.evaluate import assemble
    from promptgym.lm import get_lm

    env = gym.make(ENV, model=FlaggedLM(get_lm(TINY["model"], "float32")), budget=5, **SUBSPACE)
    a = point(env, 3)
    assert score_test(env, Result("x", a, "", 0.0, None, 0, members=[a, a + 0.1]), dtype=None).approximate
    assert not score_test(tiny_env(), Result("x", a, "", 0.0, None, 0)).approximate
    runs = [dict(r, extra={"approximate": r["seed"] == 42}) for r in set_submission["runs"]]
    with pytest.raises(InvalidSubmissionError, match=r"seeds \[42\].*approximate"):
        assemble(ENV, "p_set_test", "unit", TINY["model"], runs, SUBSPACE, None)
