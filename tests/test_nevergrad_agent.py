"""The nevergrad agent: both env kinds within budget, BBT's batched schedule, determinism, refused
configs (before any model loads or call), the CLI round trip and ``promptgym list --agent nevergrad``.

On the tiny random model (code paths only: its scores mean nothing).
"""

from __future__ import annotations

import json

import gymnasium as gym
import nevergrad as ng
import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the env ids)
from agents.nevergrad_search import SUGGESTED_OPTIMIZERS, NevergradConfig, planned_batches
from promptgym.agent import check_compatible, check_kind, make_agent
from promptgym.cli import main
from promptgym.envs.registration import env_id
from promptgym.errors import ConfigError, IncompatibleAgentError
from promptgym.runs import load_result

TINY = {"model": "tiny-random-causal", "dtype": "float32"}
SMALL_ENV = {
    "discrete": {"num_candidates": 30, "prompt_length": 4, "batch_size": 8},
    "subspace": {"intrinsic_dim": 16, "prompt_length": 4, "batch_size": 8},
}
SMALL = {"batch": 8, "dev_every": 2}


def tiny_env(kind: str, budget: int = 40) -> gym.Env:
    return gym.make(env_id("sst2", kind), budget=budget, **TINY, **SMALL_ENV[kind])


def spy_batches(env: gym.Env) -> list[int]:
    """Record the size of every train ``score_actions`` call (each is one batched LM call)."""
    base = env.unwrapped
    sizes: list[int] = []
    score = base.score_actions

    def recording(actions, split: str = "train"):
        if split == "train":
            sizes.append(len(actions))
        return score(actions, split)

    base.score_actions = recording
    return sizes


@pytest.mark.parametrize("kind", ["discrete", "subspace"])
@pytest.mark.parametrize("optimizer", ["NGOpt", "CMA", "TwoPointsDE", "OnePlusOne"])
def test_runs_on_both_kinds_within_budget(kind, optimizer):
    env = tiny_env(kind)
    base = env.unwrapped
    check_compatible("nevergrad", env)
    result = make_agent("nevergrad", optimizer=optimizer, **SMALL).learn(env)
    assert result.agent == "nevergrad" and result.calls_used == base.budget.calls <= 40
    assert base.budget.calls >= 40 - 10, "it should spend (nearly) all of the budget"
    base.validate_action(result.action)
    assert result.action.dtype == (np.int64 if kind == "discrete" else np.float32)
    assert result.prompt_text and 0.0 <= result.dev_metric <= 1.0 and result.train_curve
    assert result.extra["optimizer"] == optimizer and result.extra["batches"] >= planned_batches(40, 8, 2) == 4
    assert all(0 < calls <= 40 for calls, _ in result.curve + result.train_curve)


def test_a_batch_is_one_call_per_candidate_on_bbts_schedule():
    """The budget meter and the LM see the same train calls as for BBT with popsize = batch."""
    sizes = {}
    for agent, kwargs in (("nevergrad", {"optimizer": "CMA", "batch": 6, "dev_every": 2}),
                          ("bbt", {"popsize": 6, "dev_every": 2})):
        env = tiny_env("subspace", budget=50)
        base = env.unwrapped
        sizes[agent] = spy_batches(env)
        before = base.budget.calls
        make_agent(agent, **kwargs).learn(env)
        assert base.budget.calls - base.budget.dev_calls - before == sum(sizes[agent])
    assert sizes["nevergrad"] == sizes["bbt"] == [6] * len(sizes["bbt"]) and len(sizes["bbt"]) >= 5
    discrete = tiny_env("discrete")
    found = spy_batches(discrete)
    result = make_agent("nevergrad", optimizer="NGOpt", batch=7, dev_every=3).learn(discrete)
    assert found == [7] * result.extra["batches"]


@pytest.mark.parametrize(("kind", "optimizer"), [("discrete", "NGOpt"), ("subspace", "NGOpt"), ("subspace", "CMA"),
                                                 ("discrete", "DiscreteOnePlusOne"), ("subspace", "PSO")])
def test_same_seed_same_prompt(kind, optimizer):
    runs = [make_agent("nevergrad", optimizer=optimizer, seed=5, **SMALL).learn(tiny_env(kind)) for _ in range(2)]
    a, b = runs
    np.testing.assert_array_equal(a.action, b.action)
    assert a.curve == b.curve and a.train_curve == b.train_curve and a.train_reward == b.train_reward
    other = make_agent("nevergrad", optimizer=optimizer, seed=6, **SMALL).learn(tiny_env(kind))
    assert a.train_curve != other.train_curve or not np.array_equal(a.action, other.action)


def test_bad_optimizer_names_and_values_are_refused_before_any_call():
    env = tiny_env("subspace")
    with pytest.raises(ConfigError, match=r"NevergradConfig\.optimizer: 'ngopt' .*close matches: NGOpt"):
        make_agent("nevergrad", optimizer="ngopt")
    with pytest.raises(ConfigError, match=r"close matches: .*\bCMA\b"):
        make_agent("nevergrad", optimizer="CMAES")
    with pytest.raises(ConfigError, match="one candidate at a time; use batch=1"):
        make_agent("nevergrad", optimizer="Cobyla")
    assert make_agent("nevergrad", optimizer="Cobyla", batch=1).config.batch == 1
    for bad, field in (({"batch": 0}, "batch"), ({"dev_every": 0}, "dev_every"), ({"seed": -1}, "seed"),
                       ({"optimizer": 3}, "optimizer"), ({"batch": 2.0}, "batch")):
        with pytest.raises(ConfigError, match=rf"NevergradConfig\.{field}\b"):
            NevergradConfig(**bad)
    with pytest.raises(IncompatibleAgentError, match="subspace envs"):
        check_kind("nevergrad", "tokenwise")
    assert env.unwrapped.budget.calls == 0


def test_cli_refuses_an_unknown_optimizer_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import promptgym.runner

    def no_env(*args, **kwargs):
        raise AssertionError("the env (and its model) must not be made for a refused config")

    monkeypatch.setattr(promptgym.runner, "make_env", no_env)
    code = main(["train", "--env", "PromptSST2-Subspace-v0", "--agent", "nevergrad", "--agent-kwarg",
                 "optimizer=TwoPointDE", "--budget", "20", "--model", "tiny-random-causal", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "TwoPointDE" in err and "TwoPointsDE" in err
    assert not any(tmp_path.iterdir())


def test_cli_train_round_trip(tmp_path, capsys):
    argv = ["train", "--env", "PromptSST2-Subspace-v0", "--agent", "nevergrad", "--budget", "30", "--seed", "4",
            "--env-kwarg", "intrinsic_dim=12", "--env-kwarg", "batch_size=8", "--agent-kwarg", "optimizer=TwoPointsDE",
            "--agent-kwarg", "batch=6", "--model", "tiny-random-causal", "--dtype", "float32", "--quiet",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "run folder" in capsys.readouterr().out
    (run_dir,) = list(tmp_path.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"] == "nevergrad" and config["env_kind"] == "subspace"
    assert config["agent_config"] == {"optimizer": "TwoPointsDE", "batch": 6, "dev_every": 5, "seed": 4}
    prompt = json.loads((run_dir / "prompt.json").read_text())
    assert prompt["action_kind"] == "z" and len(prompt["action"]) == 12 and prompt["calls_used"] <= 30
    result = load_result(run_dir)
    np.testing.assert_array_equal(result.action, np.asarray(prompt["action"], dtype=np.float32))
    assert result.dev_metric == prompt["dev_metric"]
    again = make_agent("nevergrad", optimizer="TwoPointsDE", batch=6, seed=4).learn(gym.make(
        "PromptSST2-Subspace-v0", budget=30, intrinsic_dim=12, batch_size=8, **TINY))
    np.testing.assert_array_equal(again.action, result.action)  # the CLI run is the API run


def test_list_names_a_short_list_of_registered_optimizers(capsys):
    assert main(["list", "--agent", "nevergrad"]) == 0
    out = capsys.readouterr().out
    assert "discrete (Prompt<Task>-v0), subspace (Prompt<Task>-Subspace-v0)" in out
    shown = [name for name in SUGGESTED_OPTIMIZERS if name in out]
    assert len(shown) >= 6 and all(name in ng.optimizers.registry for name in SUGGESTED_OPTIMIZERS)


def test_planned_batches_follows_the_schedule():
    assert planned_batches(1000, 20, 5) == 49  # 9 x (5 x 20 + 2) = 918, then 4 batches = 998
    assert planned_batches(21, 20, 5) == 0 and planned_batches(22, 20, 5) == 1
    assert planned_batches(40, 8, 2) == 4



class Flaky:
    """A Nevergrad optimizer (OnePlusOne) whose ask fails from the ``fail_at``-th call on, as Nevergrad's CMA
    family does under parallel asks at d >= 300 (see the agent's module docstring)."""

    fail_at = 17

    def __init__(self, parametrization, budget=None, num_workers=1) -> None:
        self.inner = ng.optimizers.registry["OnePlusOne"](parametrization=parametrization, budget=budget,
                                                           num_workers=num_workers)
        self.asks = 0

    def ask(self):
        self.asks += 1
        if self.asks >= self.fail_at:
            raise RuntimeError("Mean shift samples are expected but missing.\nmore lines")
        return self.inner.ask()

    def tell(self, candidate, loss) -> None:
        self.inner.tell(candidate, loss)

    def recommend(self):
        return self.inner.recommend()


def test_an_optimizer_failing_mid_search_keeps_the_calls_spent(monkeypatch):
    monkeypatch.setitem(ng.optimizers.registry, "FlakyForTests", Flaky)
    env = tiny_env("discrete")
    with pytest.warns(RuntimeWarning, match=r"FlakyForTests failed after 1[78] calls"):
        result = make_agent("nevergrad", optimizer="FlakyForTests", **SMALL).learn(env)
    # 2 batches of 8, then the dev check of batch 2 (recommendation and best: one call if they coincide)
    assert result.extra["batches"] == 2 and result.extra["stopped_at_calls"] == result.calls_used in (17, 18)
    assert result.extra["optimizer_error"] == "RuntimeError: Mean shift samples are expected but missing."
    assert result.dev_metric is not None and result.action is not None  # the best dev prompt so far
    monkeypatch.setattr(Flaky, "fail_at", 1)
    fresh = tiny_env("discrete")
    with pytest.raises(RuntimeError, match="Mean shift"):  # before any call: the error as it is
        make_agent("nevergrad", optimizer="FlakyForTests", **SMALL).learn(fresh)
    assert fresh.unwrapped.budget.calls == 0
