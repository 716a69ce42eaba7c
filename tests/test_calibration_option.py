"""The calibration option for any agent (``run_agent(..., calibrate=True)``, ``--calibrate``), tiny model.

Calibration charges one call per final prompt, reserved out of the budget before the agent starts
(so the run never exceeds it), fits the bias with the calibrated baseline's own function, and is
refused where it cannot work, before the model loads.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_prompt_sets import ENV, SUBSPACE, TINY, SetAgent, set_agent, tiny_env  # noqa: F401  (fixture)

from promptgym.agent import make_agent
from promptgym.calibration import calibrate_result, fit_label_bias
from promptgym.cli import main
from promptgym.errors import ConfigError, IncompatibleAgentError, PromptGymError
from promptgym.evaluation import score_test
from promptgym.runner import run_agent

BBT = {"popsize": 6, "dev_every": 2}
FULL = {"intrinsic_dim": 16, "prompt_length": 4}  # every train row per call: the fit can be recomputed exactly


def test_a_single_prompt_costs_one_call_and_the_run_stays_in_budget():
    run = run_agent(ENV, "bbt", 30, model=TINY["model"], dtype="float32", env_kwargs=FULL, agent_kwargs=BBT,
                    progress=False, calibrate=True)
    base, res = run.env.unwrapped, run.result
    assert base.budget.calls <= 30 and res.calls_used == base.budget.calls and base.budget.max_calls == 30
    assert res.extra["calibration"]["calls"] == 1 and np.shape(res.label_bias) == (2,)
    # the bias is the baseline's fit on the final prompt's train scores (one source of truth)
    train = base.scorer.score([base.prompt_of(res.action)], base.train)[0]
    np.testing.assert_allclose(res.label_bias, fit_label_bias(train.label_logprobs, train.labels), atol=1e-5)
    assert res.extra["calibration"]["calibrated_train_reward"] == pytest.approx(res.train_reward)
    assert res.train_reward >= res.extra["calibration"]["uncalibrated_train_reward"] - 1e-6  # CE fit: no worse


def test_a_set_costs_one_call_per_member_reserved_before_learning():
    run = run_agent(ENV, "p_set_test", 10, model=TINY["model"], dtype="float32", env_kwargs=FULL,
                    agent_kwargs={"members": 4}, progress=False, calibrate=True)
    base = run.env.unwrapped
    assert run.agent.budget_seen == 10 - 4  # the agent saw the budget without calibration's calls
    assert base.budget.calls == 4 + 4 and base.budget.max_calls == 10
    assert run.result.label_bias.shape == (4, 2) and run.result.extra["calibration"]["calls"] == 4
    # each member's bias is fitted on that member's own train scores
    outs = base.scorer.score([base.prompt_of(m) for m in run.result.members], base.train)
    for out, bias in zip(outs, run.result.label_bias):
        np.testing.assert_allclose(bias, fit_label_bias(out.label_logprobs, out.labels), atol=1e-5)


def test_calibration_changes_the_test_distribution_as_its_bias_says():
    env = tiny_env(budget=5)
    agent = make_agent("manual")
    res = agent.learn(env)
    calibrated = calibrate_result(env, res)
    assert env.unwrapped.budget.calls == 1
    lp = np.log(score_test(env, res).probs)
    z = lp + calibrated.label_bias
    expect = np.exp(z - z.max(axis=1, keepdims=True))
    expect /= expect.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(score_test(env, calibrated).probs, expect, rtol=1e-5)


def test_refused_where_it_cannot_work():
    bogus = "no-such-model"  # every refusal comes before the model would load
    with pytest.raises(IncompatibleAgentError, match="label_only"):
        run_agent(ENV, "bbt", 30, model=bogus, env_kwargs={**SUBSPACE, "reward": "label_only"}, progress=False,
                  calibrate=True)
    with pytest.raises(IncompatibleAgentError, match="fits a label bias itself"):
        run_agent(ENV, "calibrated", 30, model=bogus, env_kwargs=SUBSPACE, progress=False, calibrate=True)
    with pytest.raises(ConfigError, match="leaves the agent none"):
        run_agent(ENV, "p_set_test", 4, model=bogus, env_kwargs=SUBSPACE, agent_kwargs={"members": 4},
                  progress=False, calibrate=True)


def test_a_set_larger_than_declared_is_refused():
    class Liar(SetAgent):
        max_members = 1  # type: ignore[assignment]

    with pytest.raises(PromptGymError, match="declared max_members"):
        run_agent(ENV, Liar(), 20, model=TINY["model"], dtype="float32", env_kwargs=SUBSPACE, progress=False,
                  calibrate=True)


def test_cli_train_and_evaluate_with_calibrate(tmp_path, capsys):
    code = main(["train", "--env", ENV, "--agent", "bbt", "--budget", "20", "--model", TINY["model"], "--dtype",
                 "float32", "--out", str(tmp_path), "--no-progress", "--calibrate",
                 *[f"--env-kwarg={k}={v}" for k, v in SUBSPACE.items()],
                 *[f"--agent-kwarg={k}={v}" for k, v in BBT.items()]])
    assert code == 0
    assert "calibrated (1 call(s))" in capsys.readouterr().out
    [run_dir] = list(tmp_path.iterdir())
    record = json.loads((run_dir / "prompt.json").read_text())
    assert len(record["label_bias"]) == 2 and record["calibration"]["calls"] == 1
    assert json.loads((run_dir / "config.json").read_text())["calibrate"] is True
    assert main(["evaluate", "--env", ENV, "--agent", "calibrated", "--calibrate", "--model", TINY["model"],
                 "--workdir", str(tmp_path / "w")]) == 2
    assert "fits a label bias itself" in capsys.readouterr().err

