"""The reference recipes (Shen et al., 2023; maohaos2/SBI_LLM) of abc_smc, snpe and cma_elbo.

Hand cases for ABC-SMC's weights, and runs on the tiny random model with small sizes (scores mean
nothing there: code paths, budgets, what is selected on what). Where a run needs training
accuracies that move with the prompt, the env's train scores are replaced by a synthetic function
of ``z`` (the calls are still made and charged).
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the env ids)
from agents import abc_smc, cma_elbo, snpe
from agents.abc_smc import effective_sample_size, rescaled_kernel_std, sample_mixture, sample_prior, smc_weights
from agents.snpe import one_hot_outputs
from promptgym.agent import make_agent
from promptgym.errors import ConfigError

TINY = {"model": "tiny-random-causal", "dtype": "float32", "intrinsic_dim": 16, "prompt_length": 4}


def tiny_env(budget: int, reward: str, batch_size: int | None) -> gym.Env:
    return gym.make("PromptSST2-Subspace-v0", budget=budget, reward=reward, batch_size=batch_size, **TINY)


def record(env: gym.Env, synthetic: bool = False) -> list[tuple[str, list, list]]:
    """Wrap the env's ``score_actions``: every call's ``(split, actions, outcomes)`` is recorded. With
    ``synthetic``, train accuracies become ``floor(z_0 + 3) / n`` (n scored rows) and dev predictions
    are right on a share ``sigmoid(z_1)`` of the rows, so both move with the prompt."""
    base, calls = env.unwrapped, []
    original = base.score_actions

    def score_actions(actions, split="train"):
        outs = original(actions, split=split)
        if synthetic and split == "train":
            outs = [dataclasses.replace(o, accuracy=float(np.clip(np.floor(a[0] + 3), 0, len(o.labels)))
                                        / len(o.labels)) for a, o in zip(actions, outs)]
        elif synthetic:
            def predictions(a, o):
                labels = np.asarray(o.labels)
                right = (np.arange(len(labels)) * 0.618) % 1 < 1 / (1 + math.exp(-float(a[1])))
                return np.where(right, labels, 1 - labels)
            outs = [dataclasses.replace(o, predictions=predictions(a, o)) for a, o in zip(actions, outs)]
        calls.append((split, [np.asarray(a) for a in actions], outs))
        return outs

    base.score_actions = score_actions
    return calls


# ---------------------------------------------------------------------------------------------- configs
def test_defaults_are_the_reference_and_lite_adapted_configs_are_valid():
    a = make_agent("abc_smc").config
    assert (a.particles, a.weights, a.eps0, a.eps0_draws, a.kernel_mean_var, a.popsize, a.select_on_dev) == \
        (100, "uniform", "best", 20, 10.0, 20, True)
    assert a.prior_std == pytest.approx(math.sqrt(50))
    s = make_agent("snpe").config
    assert (s.observation, s.num_transforms, s.hidden_features, s.rounds, s.simulations, s.select_on_dev) == \
        ("best_simulated", 10, 60, 5, 1000, True)
    c = make_agent("cma_elbo").config
    assert (c.popsize, c.samples, c.fresh_draws, c.dev_check, c.common_draws) == (20, 10, True, "candidates", False)
    for name, module in (("abc_smc", abc_smc), ("snpe", snpe), ("cma_elbo", cma_elbo)):
        config = make_agent(name, **module.LITE_ADAPTED).config
        assert all(getattr(config, k) == v for k, v in module.LITE_ADAPTED.items())


@pytest.mark.parametrize("name,kw", [("abc_smc", {"weights": "importance"}), ("abc_smc", {"eps0": "median"}),
                                     ("abc_smc", {"select_on_dev": True, "check_dev": False}),
                                     ("abc_smc", {"eps0": "nth_best", "eps0_draws": 10, "particles": 20}),
                                     ("abc_smc", {"gen0_budget": 0.0}), ("snpe", {"observation": "labels"}),
                                     ("snpe", {"simulations": 5}), ("cma_elbo", {"dev_check": "all"})])
def test_bad_options_are_refused(name, kw):
    with pytest.raises(ConfigError):
        make_agent(name, **kw)


# ---------------------------------------------------------------------------------------------- ABC-SMC weights
def weights_with_every_proposal_accepted(d: int, kind: str, n: int = 20, seed: int = 0) -> np.ndarray:
    """One SMC step with no data at all: a prior population, proposals from its mixture, all accepted."""
    rng = np.random.default_rng(seed)
    bound, prior_std = 5.0, math.sqrt(50)
    population = sample_prior(rng, n, d, prior_std, bound)
    uniform = np.full(n, 1.0 / n)
    std = rescaled_kernel_std(population, uniform, 10.0)
    proposals = sample_mixture(rng, n, population, uniform, std, bound)
    return smc_weights(kind, proposals, population, uniform, std, prior_std, bound)


def test_uniform_weights_keep_every_particle_and_exact_weights_collapse_with_dimension():
    n = 20
    uniform = weights_with_every_proposal_accepted(500, "uniform", n)
    assert effective_sample_size(uniform) == pytest.approx(n, rel=1e-12)
    exact_500 = weights_with_every_proposal_accepted(500, "exact", n)
    exact_2 = weights_with_every_proposal_accepted(2, "exact", n)
    assert exact_500.sum() == pytest.approx(1.0) and exact_2.sum() == pytest.approx(1.0)
    assert effective_sample_size(exact_500) < 0.2 * n
    assert effective_sample_size(exact_2) > effective_sample_size(exact_500)
    assert effective_sample_size(np.array([0.0, 3.0, 0.0])) == pytest.approx(1.0)  # one particle carries it all


def test_the_reference_kernel_rescales_the_population_variance_to_mean_10():
    rng = np.random.default_rng(1)
    population = rng.normal(size=(30, 8)) * np.arange(1, 9)
    std = rescaled_kernel_std(population, np.full(30, 1 / 30), 10.0)
    assert np.mean(std ** 2) == pytest.approx(10.0)
    np.testing.assert_allclose(std ** 2 / np.var(population, axis=0), 10.0 / np.mean(np.var(population, axis=0)))
    assert np.all(rescaled_kernel_std(np.ones((3, 4)), np.full(3, 1 / 3), 10.0) == pytest.approx(math.sqrt(10)))


# ---------------------------------------------------------------------------------------------- ABC-SMC runs
ABC_SMALL = {"particles": 4, "popsize": 4, "eps0_draws": 8, "prior_std": 1.0}


@pytest.fixture(scope="module")
def abc_run():
    env = tiny_env(100, "label_only", 8)
    calls = record(env, synthetic=True)
    result = make_agent("abc_smc", **ABC_SMALL).learn(env)
    return env, calls, result


def test_abc_tolerance_starts_at_the_best_prior_draw_and_rises_by_one_over_n(abc_run):
    env, calls, result = abc_run
    history = result.extra["history"]
    assert result.extra["generations"] >= 2 and not result.extra["eps0_lowered"]
    first = calls[0]  # the eps_0 draws: one batched call of eps0_draws prior draws
    assert first[0] == "train" and len(first[1]) == ABC_SMALL["eps0_draws"]
    assert history[0]["eps"] == max(o.accuracy for o in first[2])
    np.testing.assert_allclose(np.diff([h["eps"] for h in history]), 1 / 8, rtol=0, atol=1e-12)  # n = 8 rows
    assert result.extra["epsilon"] == history[result.extra["chosen_generation"]]["eps"]


def test_abc_returns_the_generation_best_on_dev(abc_run):
    env, calls, result = abc_run
    metrics = result.extra["generation_dev_metrics"]
    assert len(metrics) == result.extra["generations"] + 1 and len(set(metrics)) > 1  # they differ here
    assert result.dev_metric == max(metrics) == result.curve[-1][1]
    chosen = result.extra["chosen_generation"]
    assert chosen == max(i for i, m in enumerate(metrics) if m == max(metrics))  # ties to the later
    dev_calls = [actions for split, actions, _ in calls if split == "dev"]
    assert len(dev_calls) == len(metrics)  # one dev check per complete generation, nothing else on dev
    assert len(result.members) == ABC_SMALL["particles"]
    assert all(np.array_equal(m, a) for m, a in zip(result.members, dev_calls[chosen]))
    assert result.weights == pytest.approx([1 / 4] * 4)  # uniform weights
    assert result.calls_used == env.unwrapped.budget.calls <= 100


def test_abc_lowers_eps0_when_generation_0_cannot_fill_within_its_share():
    env = tiny_env(60, "label_only", 8)
    calls = record(env, synthetic=True)  # accuracies of N(0, 50)-ish draws: the best of 8 is rare
    result = make_agent("abc_smc", particles=6, popsize=4, eps0_draws=8, gen0_budget=0.3).learn(env)
    assert result.extra["eps0_lowered"]
    first_dev = [split for split, _, _ in calls].index("dev")  # generation 0's dev check
    prior_acc = sorted((o.accuracy for _, _, outs in calls[:first_dev] for o in outs), reverse=True)
    assert len(prior_acc) == result.extra["history"][0]["proposed"] == 18  # 8 eps_0 draws, then up to 0.3 x 60
    assert result.extra["history"][0]["eps"] == prior_acc[5] < prior_acc[0]  # the 6th best prior draw
    assert result.calls_used <= 60


def test_abc_previous_recipe_uses_exact_weights_and_one_final_dev_check():
    env = tiny_env(80, "label_only", 8)
    calls = record(env, synthetic=True)
    kw = {**abc_smc.LITE_ADAPTED, "particles": 4, "eps0_draws": 8, "popsize": 4}
    result = make_agent("abc_smc", **kw).learn(env)
    assert "generation_dev_metrics" not in result.extra
    assert [split for split, _, _ in calls].count("dev") == 1 and calls[-1][0] == "dev"
    assert result.extra["history"][0]["proposed"] == 8  # the eps_0 draws are generation 0
    assert result.calls_used <= 80


# ---------------------------------------------------------------------------------------------- SNPE
SNPE_SMALL = {"members": 4, "popsize": 8, "max_epochs": 2, "num_transforms": 2, "hidden_features": 16}


def test_snpe_conditions_on_the_best_simulated_output_and_picks_the_round_on_dev(monkeypatch):
    from sbi.inference import DirectPosterior

    seen = []
    original = DirectPosterior.sample

    def spy(self, sample_shape, x=None, **kw):
        if x is not None:
            seen.append(np.asarray(x).reshape(-1))
        return original(self, sample_shape, x=x, **kw)

    monkeypatch.setattr(DirectPosterior, "sample", spy)
    env = tiny_env(60, "label_only", None)
    calls = record(env)
    result = make_agent("snpe", rounds=2, simulations=16, **SNPE_SMALL).learn(env)
    assert result.extra["rounds"] == 2 and result.extra["simulations"] == [16, 16]
    train = [o for split, _, outs in calls if split == "train" for o in outs]
    rounds = [train[:16], train[16:32]]
    assert result.extra["observation_accuracies"] == [max(o.accuracy for o in r) for r in rounds]
    # the last draws were conditioned on an output the LM actually produced, the round's best
    best = [one_hot_outputs(o.predictions, 2) for o in rounds[1] if o.accuracy == max(p.accuracy for p in rounds[1])]
    assert seen and any(np.array_equal(seen[-1], x) for x in best)
    gold = one_hot_outputs(np.asarray(env.unwrapped.train.labels), 2)
    assert not np.array_equal(seen[-1], gold) or result.extra["observation_accuracies"][1] == 1.0
    # each round's draws are scored on dev; the best round is returned
    metrics = result.extra["round_dev_metrics"]
    assert len(metrics) == 2 and result.dev_metric == max(metrics) == result.curve[-1][1]
    dev_calls = [actions for split, actions, _ in calls if split == "dev"]
    assert all(np.array_equal(m, a) for m, a in zip(result.members, dev_calls[result.extra["chosen_round"]]))
    assert result.calls_used == 2 * (16 + 4) <= 60


def test_snpe_simulations_are_capped_by_the_remaining_budget():
    env = tiny_env(40, "label_only", None)
    result = make_agent("snpe", **SNPE_SMALL).learn(env)  # 5 rounds of 1,000 simulations asked for
    assert result.extra["simulations"] == [40 - 4] and result.extra["rounds"] == 1  # one round fits
    assert result.calls_used == env.unwrapped.budget.calls == 40


# ---------------------------------------------------------------------------------------------- CMA-ELBO
CMA_SMALL = {"samples": 2, "popsize": 4, "members": 3}


@pytest.mark.parametrize("fresh", [True, False])
def test_cma_elbo_returns_fresh_draws_unless_told_not_to(fresh):
    env = tiny_env(60, "ce", 8)
    calls = record(env)
    result = make_agent("cma_elbo", fresh_draws=fresh, **CMA_SMALL).learn(env)
    dev_calls = [actions for split, actions, _ in calls if split == "dev"]
    assert result.extra["generations"] == 3 and result.extra["checked"] == 12  # every candidate checked on dev
    selection = dev_calls[:12]  # one dev call per candidate: its train draws
    assert all(len(a) == CMA_SMALL["samples"] for a in selection)
    scored_for_selection = [a for call in selection for a in call]
    in_selection = [any(np.array_equal(m, a) for a in scored_for_selection) for m in result.members]
    if fresh:
        assert len(dev_calls) == 13 and len(result.members) == CMA_SMALL["members"]
        assert not any(in_selection)  # members are new draws of the chosen distribution
        assert all(np.array_equal(m, a) for m, a in zip(result.members, dev_calls[-1]))  # scored once, last
        assert result.extra["dev_metric_selected_on"] is False
    else:
        assert len(dev_calls) == 12 and all(in_selection) and len(result.members) == CMA_SMALL["samples"]
        assert result.extra["dev_metric_selected_on"] is True
        assert result.dev_metric == result.extra["selected_dev_metric"]
    assert result.dev_metric == result.curve[-1][1]
    assert result.calls_used == env.unwrapped.budget.calls <= 60
