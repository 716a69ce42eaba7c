"""The prompt-set agents of Shen et al. (2023): ensemble, cma_elbo, abc_smc, snpe.

On the tiny random model (scores mean nothing there: code paths, budgets, sets, determinism), with
hand-checked densities for ABC-SMC's importance weights and the Gaussian KL of CMA-ELBO.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from scipy.stats import norm

import promptgym  # noqa: F401  (registers the env ids)
from agents.abc_smc import importance_weights, kernel_std, log_mixture, log_prior, sample_mixture
from agents.cma_elbo import gaussian_kl
from agents.snpe import one_hot_outputs
from promptgym.agent import check_compatible, make_agent, max_members
from promptgym.errors import IncompatibleAgentError
from promptgym.evaluation import score_test
from promptgym.runner import run_agent

TINY = {"model": "tiny-random-causal", "dtype": "float32"}
ENV = {"intrinsic_dim": 16, "prompt_length": 4}
SMALL = {
    "ensemble": {"members": 3, "popsize": 4, "dev_every": 2},
    "cma_elbo": {"samples": 2, "popsize": 4, "members": 3, "dev_every": 2},
    "abc_smc": {"particles": 4, "eps0_draws": 8, "popsize": 4},
    "snpe": {"members": 4, "rounds": 2, "simulations": 16, "max_epochs": 3, "popsize": 10, "num_transforms": 2,
             "hidden_features": 16},
}
REWARD = {"ensemble": "ce", "cma_elbo": "ce", "abc_smc": "label_only", "snpe": "label_only"}
COMBINE = {"ensemble": "mean", "cma_elbo": "mean", "abc_smc": "vote", "snpe": "vote"}
BATCH = {"ensemble": 8, "cma_elbo": 8, "abc_smc": 8, "snpe": None}  # snpe needs the whole train split per call
BUDGET = 40


def tiny_env(agent: str, budget: int = BUDGET, **kw) -> gym.Env:
    kw.setdefault("batch_size", BATCH[agent])
    return gym.make("PromptSST2-Subspace-v0", budget=budget, reward=REWARD[agent], **{**TINY, **ENV, **kw})


def learn(agent: str, seed: int = 0, budget: int = BUDGET, agent_kw: dict | None = None, **kw):
    env = tiny_env(agent, budget, **kw)
    scored: list = []
    env.unwrapped.score_listeners.append(lambda split, outs: scored.extend((split, o) for o in outs))
    check_compatible(agent, env)
    learner = make_agent(agent, seed=seed, **{**SMALL[agent], **(agent_kw or {})})
    return learner, learner.learn(env), env, scored


@pytest.mark.parametrize("agent", list(SMALL))
def test_returns_a_valid_weighted_set_within_budget_deterministically(agent):
    learner, result, env, scored = learn(agent)
    base = env.unwrapped
    # every call is counted once: the meter, the Result and the prompts actually scored agree
    assert result.calls_used == base.budget.calls == len(scored) <= BUDGET
    assert base.budget.dev_calls == sum(split == "dev" for split, _ in scored)
    assert result.is_set and result.combine == COMBINE[agent]
    assert 1 <= len(result.members) <= max_members(learner)
    assert all(env.action_space.contains(np.asarray(m, dtype=np.float32)) for m in result.members)
    w = np.asarray(result.weights)
    assert w.shape == (len(result.members),) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert np.array_equal(result.action, result.members[int(np.argmax(w))])
    # the set's own dev check is the Result's dev metric and the curve's last point
    assert result.dev_metric is not None and result.curve[-1][1] == result.dev_metric
    if agent == "abc_smc":  # the harness scores a weighted vote set on test (once here: 872 rows per member)
        assert score_test(env, result).probs.shape == (872, 2)
    # the same seed gives the same set; another seed another
    _, again, _, _ = learn(agent)
    _, other, _, _ = learn(agent, seed=1)
    assert len(result.members) == len(again.members)
    assert all(np.array_equal(x, y) for x, y in zip(result.members, again.members))
    assert result.weights == again.weights and result.calls_used == again.calls_used and result.curve == again.curve
    assert not all(np.array_equal(x, y) for x, y in zip(result.members, other.members))


@pytest.mark.parametrize("agent", ["abc_smc", "snpe"])
def test_likelihood_free_agents_see_predicted_labels_only(agent):
    _, result, env, scored = learn(agent)
    assert env.unwrapped.reward_kind == "label_only"
    assert scored and all(o.label_logprobs is None and o.logprobs is None for _, o in scored)
    if agent == "abc_smc":  # generation 0 drew its eps_0 sample (and maybe more prior draws)
        assert result.extra["history"][0]["proposed"] >= SMALL["abc_smc"]["eps0_draws"]
    else:
        assert result.extra["rounds"] == SMALL["snpe"]["rounds"]


@pytest.mark.parametrize("agent", ["ensemble", "cma_elbo"])
def test_likelihood_agents_are_refused_on_label_only_envs(agent):
    env = gym.make("PromptSST2-Subspace-v0", budget=10, reward="label_only", **{**TINY, **ENV})
    with pytest.raises(IncompatibleAgentError, match="log-probabilities"):
        check_compatible(agent, env)


def test_ensemble_splits_the_budget_evenly_among_members():
    _, result, _, _ = learn("ensemble", budget=90)
    gens = result.extra["generations"]  # 87 calls after the set's 3 dev calls: ~29 per member, leftovers roll over
    assert min(gens) >= 4 and max(gens) - min(gens) <= 1
    assert 90 - (4 + 2) <= result.calls_used <= 90  # all but less than one generation's calls are used
    assert len(result.members) == 3 and len({m.tobytes() for m in result.members}) == 3


def test_run_agent_with_calibration_keeps_sets_within_the_budget():
    run = run_agent("PromptSST2-Subspace-v0", "cma_elbo", 60, env_kwargs={**ENV, "batch_size": 8},
                    agent_kwargs=SMALL["cma_elbo"], progress=False, calibrate=True, **TINY)
    assert run.env.unwrapped.budget.calls <= 60
    assert np.asarray(run.result.label_bias).shape == (3, 2)  # one bias per member, fitted by one call each


# ---------------------------------------------------------------------------------------------- ABC-SMC weights
def truncated_density(x: float, loc: float, scale: float, bound: float) -> float:
    return norm.pdf((x - loc) / scale) / scale / (norm.cdf((bound - loc) / scale) - norm.cdf((-bound - loc) / scale))


def test_abc_weights_are_prior_over_mixture_proposal_densities():
    bound, prior_std = 2.0, 1.0
    centres = np.array([[0.0, 0.0], [1.0, -0.5]])
    prev_w = np.array([0.3, 0.7])
    std = np.array([0.5, 0.8])
    theta = np.array([[0.2, -0.1], [1.5, -1.9], [-1.0, 0.4]])
    expected = []
    for t in theta:
        prior = np.prod([truncated_density(x, 0.0, prior_std, bound) for x in t])
        proposal = sum(wj * np.prod([truncated_density(x, c, s, bound) for x, c, s in zip(t, cj, std)])
                       for wj, cj in zip(prev_w, centres))
        expected.append(prior / proposal)
    expected = np.array(expected) / np.sum(expected)
    got = importance_weights(theta, centres, prev_w, std, prior_std, bound)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert got.sum() == pytest.approx(1.0) and np.ptp(got) > 0.05  # not uniform: the weights matter here
    np.testing.assert_allclose(np.exp(log_prior(theta[:1], prior_std, bound)),
                               [np.prod([truncated_density(x, 0.0, 1.0, bound) for x in theta[0]])])
    assert np.all(np.isfinite(log_mixture(theta, centres, prev_w, std, bound)))


def test_abc_proposals_stay_in_the_box_and_follow_the_weights():
    rng = np.random.default_rng(0)
    centres = np.array([[-1.5, -1.5], [1.5, 1.5]])
    draws = sample_mixture(rng, 4000, centres, np.array([0.9, 0.1]), np.array([0.3, 0.3]), 2.0)
    assert np.all(np.abs(draws) <= 2.0)
    assert np.mean(draws[:, 0] < 0) == pytest.approx(0.9, abs=0.02)
    assert kernel_std(centres, 2.0, 0.05) == pytest.approx(np.sqrt(2.0 * 1.5 ** 2))
    assert np.all(kernel_std(np.zeros((3, 2)), 2.0, 0.05) == 0.05)


# ---------------------------------------------------------------------------------------------- CMA-ELBO, SNPE
def test_gaussian_kl_matches_torch():
    import torch

    mu, log_var = np.array([0.5, -1.0, 2.0]), np.array([0.0, -1.0, 1.5])
    q = torch.distributions.Normal(torch.tensor(mu), torch.tensor(np.exp(0.5 * log_var)))
    p = torch.distributions.Normal(torch.zeros(3, dtype=torch.float64), torch.full((3,), math.sqrt(50.0),
                                                                                  dtype=torch.float64))
    assert gaussian_kl(mu, log_var, 50.0) == pytest.approx(float(torch.distributions.kl_divergence(q, p).sum()))
    assert gaussian_kl(np.zeros(4), np.full(4, math.log(50.0)), 50.0) == pytest.approx(0.0, abs=1e-12)


def test_snpe_can_condition_on_the_observed_training_labels(monkeypatch):
    from sbi.inference import DirectPosterior

    seen = []
    original = DirectPosterior.sample

    def spy(self, sample_shape, x=None, **kw):
        seen.append(None if x is None else np.asarray(x).reshape(-1))
        return original(self, sample_shape, x=x, **kw)

    monkeypatch.setattr(DirectPosterior, "sample", spy)
    _, result, env, _ = learn("snpe", agent_kw={"observation": "gold"})  # the previous default
    observed = one_hot_outputs(np.asarray(env.unwrapped.train.labels), 2)
    assert observed.shape == (2 * len(env.unwrapped.train),)
    assert seen and np.array_equal(seen[-1], observed)  # the members are drawn given the gold labels


def test_snpe_needs_the_whole_training_split():
    env = tiny_env("snpe", batch_size=8)
    with pytest.raises(IncompatibleAgentError, match="batch_size=None"):
        make_agent("snpe", **SMALL["snpe"]).learn(env)
