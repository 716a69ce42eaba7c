"""The snapshot ensemble: one BBT search, its best distinct dev-checked prompts, each with its own bias."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from agents.snapshot import SnapshotConfig, member_bias, pick_members
from promptgym.errors import ConfigError, IncompatibleAgentError
from promptgym.evaluation import score_test
from promptgym.runner import run_agent

TINY = "tiny-random-causal"
ENV = "PromptSST2-Subspace-v0"


def outcome(metric: float, reward: float, logprobs: list[list[float]] | None = None,
            labels: list[int] | None = None) -> SimpleNamespace:
    return SimpleNamespace(metric=metric, reward=reward, label_logprobs=None if logprobs is None else
                           np.log(np.asarray(logprobs)), labels=None if labels is None else np.asarray(labels))


def test_pick_members_best_dev_first_distinct_and_stable() -> None:
    a, b, c = np.zeros(3), np.ones(3), np.full(3, 2.0)
    checked = [(a, outcome(0.5, -0.7)), (b, outcome(0.75, -0.6)), (a.copy(), outcome(0.5, -0.7)),
               (c, outcome(0.75, -0.5))]
    picked = pick_members(checked, 5)
    assert [p[0][0] for p in picked] == [2.0, 1.0, 0.0]  # c beats b on the dev reward; the repeated a once
    assert len(pick_members(checked, 1)) == 1


def test_member_bias_where() -> None:
    # a prompt that says label 0 for everything: the train and dev biases must push towards label 1
    train = outcome(0.5, 0.0, [[0.9, 0.1]] * 4, [0, 1, 0, 1])
    dev = outcome(0.5, 0.0, [[0.6, 0.4]] * 4, [0, 1, 1, 1])
    assert member_bias(train, dev, "none") is None
    bt, bd, bb = member_bias(train, dev, "train"), member_bias(train, dev, "dev"), member_bias(train, dev, "both")
    assert bt[1] > bt[0] and bd[1] > bd[0] and bb[1] > bb[0]
    # fitted on train, the bias makes train predictions balanced: softmax(log 0.9/0.1 + b) = 1/2
    assert np.isclose(bt[1] - bt[0], np.log(9), atol=0.05)
    assert bt[1] - bt[0] > bb[1] - bb[0] > bd[1] - bd[0]  # "both" lies between its two halves


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="calibrate_on"):
        SnapshotConfig(calibrate_on="test")
    with pytest.raises(ConfigError, match="members"):
        SnapshotConfig(members=0)


def test_one_uncalibrated_member_is_bbt() -> None:
    """members=1, no bias: the one BBT search's best dev prompt, bit for bit."""
    kw = {"popsize": 6, "dev_every": 1}
    snap = run_agent(ENV, "snapshot", 90, seed=3, model=TINY, progress=False,
                     agent_kwargs={**kw, "members": 1, "calibrate_on": "none"}).result
    bbt = run_agent(ENV, "bbt", 90, seed=3, model=TINY, progress=False, agent_kwargs=kw).result
    assert np.array_equal(np.asarray(snap.members[0]), np.asarray(bbt.action))
    assert snap.label_bias is None and snap.calls_used == bbt.calls_used


def test_calibrated_set_within_budget_and_scored() -> None:
    run = run_agent(ENV, "snapshot", 120, seed=1, model=TINY, progress=False,
                    agent_kwargs={"popsize": 6, "dev_every": 1, "members": 3, "calibrate_on": "both"})
    res = run.result
    assert res.calls_used <= 120 and len(res.members) == 3
    assert res.label_bias.shape == (3, 2) and np.allclose(res.label_bias.sum(axis=1), 0, atol=1e-5)
    assert res.extra["dev_metric_selected_on"] is True and res.extra["calibrate_on"] == "both"
    assert len({np.asarray(m).tobytes() for m in res.members}) == 3
    test = score_test(run.env, res, "float32")
    assert test.n > 0 and 0 <= test.metric <= 1 and np.allclose(test.probs.sum(axis=1), 1)


def test_label_only_env_refused_before_any_call() -> None:
    with pytest.raises(IncompatibleAgentError, match="label"):
        run_agent(ENV, "snapshot", 50, seed=0, model=TINY, progress=False, env_kwargs={"reward": "label_only"})
