"""ABC-SMC (Shen et al., 2023): likelihood-free posterior sampling over BBT's subspace.

Nothing but predicted labels is used: a particle ``z`` is accepted when the training accuracy of its
predicted labels reaches the tolerance ``eps``, so the agent runs with ``reward="label_only"``.
Sequential Monte Carlo as in the reference code (maohaos2/SBI_LLM, ``ABC_SMC`` with
``weighted=False``):

1. ``eps_0`` is the best training accuracy of ``eps0_draws`` = 20 draws of the prior
   ``N(0, prior_std^2 I)``, ``prior_std`` = sqrt(50) (the reference's variance 50), truncated to the
   action box. Generation 0 is rejection from the prior at ``eps_0``: batches of ``popsize`` = 20
   prior draws are scored until ``particles`` = 100 reach it (the first in draw order).
2. Generation t: ``eps_t = eps_{t-1} + 1/n`` (one more correct example of the ``n`` scored per call).
   Proposals pick a particle ``j`` with probability ``W_j`` and perturb it with a diagonal Gaussian
   kernel whose variance is the population's (``W``-weighted) variance per coordinate, rescaled so
   that its mean over coordinates is ``kernel_mean_var`` = 10; batches of ``popsize`` are scored
   until ``particles`` are accepted. ``weights="uniform"``: the new population is weighted
   uniformly, as the reference runs; ``"exact"``: by the importance weights
   ``w_i ∝ prior(z_i) / sum_j W_j K_j(z_i)`` (:func:`smc_weights`). Exact weights collapse in
   d = 500 even with no data at all: with every proposal accepted, 20 particles keep an ESS of 1-2
   (18-19 of 20 at d = 2, 7-9 at d = 20, 2-4 at d = 100; :func:`effective_sample_size`) — a
   dimension effect, not a signal, which is why the reference (and now the default) weights uniformly.
3. ``select_on_dev``: every complete generation's weighted vote is scored on dev (one call per
   particle, reserved before the generation's first proposal); the generation with the best dev
   metric is returned (ties to the later, as the reference's ``>=``), members = its particles,
   weights = its W, predicting by weighted vote. ``Result.extra["generation_dev_metrics"]`` lists
   the dev metric of every generation, ``extra["chosen_generation"]`` the one returned.

It stops when ``eps`` would exceed 1, when the budget cannot complete a generation, or when
``stall_batches`` batches in a row of a generation accepted nothing (the reference's early stop).

The project's previous lite-tier recipe (:data:`LITE_ADAPTED`)::

    make_agent("abc_smc", weights="exact", particles=20, prior_std=1.0, eps0="nth_best", eps0_draws=100,
               kernel_mean_var=0.0, select_on_dev=False, stall_batches=0)

(20 particles; ``eps_0`` the 20th-best of 100 prior draws, which also form generation 0; ``N(0, I)``
prior; kernel variance 2x the population's, ``kernel_scale``; exact importance weights; the last
population returned, its vote scored on dev once, nothing selected on dev.)

Departures from the reference that remain, and why:

* Budget: the env's call budget bounds everything (lite tier: 1,000 calls). Generation 0 at the
  reference's ``eps_0`` needs ~``particles`` x (1 / acceptance) prior draws; it may spend at most
  ``gen0_budget`` (half) of the budget, and when that ends first, ``eps_0`` is lowered to the
  ``particles``-th best accuracy among all prior draws scored so far and those (first in draw
  order) form generation 0 (``extra["eps0_lowered"]``). The reference loops until it succeeds;
  here that would spend the whole budget on the prior. Later generations end when the budget does;
  the best complete generation (on dev) is returned. At 100 particles a generation costs >= 200
  calls (100 accepted + 100 dev calls), so a lite run completes generation 0 and at most a few more.
* The prior and the kernels are truncated to the env's action box ``[-bound, bound]`` (5 by
  default; the reference's z was unbounded), so every proposal is a valid action; the exact
  weights use the truncated densities.
* With ``weights="exact"`` the kernel is the same rescaled-variance kernel, weighted by ``W`` (the
  reference's weighted branch used a fixed ``10 I`` kernel and never ran: it overwrote its weights
  with uniform ones).
* The population's vote on dev is scored as the test harness combines a "vote" set
  (:func:`agents.prompt_sets.score_set`), one call per particle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import truncnorm

from agents.prompt_sets import score_set, set_result
from promptgym.agent import AgentConfig, PromptSetAgent, Result, TrainCurve, require

MIN_KERNEL_STD = 0.05  # kernel_scale rule: the kernel's smallest standard deviation, as a fraction of prior_std
WEIGHTS = ("uniform", "exact")
EPS0_RULES = ("best", "nth_best")

#: the project's previous defaults (its lite-tier adaptation), to re-run old rows: make_agent("abc_smc", **LITE_ADAPTED)
LITE_ADAPTED = {"weights": "exact", "particles": 20, "prior_std": 1.0, "eps0": "nth_best", "eps0_draws": 100,
                "kernel_mean_var": 0.0, "select_on_dev": False, "stall_batches": 0}


@dataclass
class ABCSMCConfig(AgentConfig):
    particles: int = 100              # population size N, and the size of the returned prompt set
    weights: str = "uniform"          # "uniform" (the reference's) or "exact" importance weights per generation
    prior_std: float = math.sqrt(50)  # the prior N(0, prior_std^2 I) on z (variance 50), truncated to the box
    eps0: str = "best"                # eps_0: "best" of eps0_draws, then rejection; "nth_best": N-th best of them
    eps0_draws: int = 20              # prior draws scored to set eps_0 (with "nth_best" they are generation 0)
    gen0_budget: float = 0.5          # budget share generation 0 may use; past it eps_0 = N-th best prior draw
    popsize: int = 20                 # proposals per batched LM call while sampling a generation
    kernel_mean_var: float = 10.0     # kernel variance = population's, rescaled to this mean; 0 = kernel_scale
    kernel_scale: float = 2.0         # kernel_mean_var 0: kernel variance = this x the population's (previous)
    stall_batches: int = 50           # stop when a generation accepted nothing in this many batches (0: never)
    select_on_dev: bool = True        # score every generation's vote on dev (N calls each); return the best
    check_dev: bool = True            # select_on_dev False: score the last population on dev (N calls, reserved)
    seed: int = 0                     # seeds the env reset and every draw

    def validate(self) -> None:
        require(self.particles >= 1, f"ABCSMCConfig.particles must be >= 1, got {self.particles}")
        require(self.weights in WEIGHTS, f"ABCSMCConfig.weights must be one of {WEIGHTS}, got {self.weights!r}")
        require(self.prior_std > 0, f"ABCSMCConfig.prior_std must be > 0, got {self.prior_std}")
        require(self.eps0 in EPS0_RULES, f"ABCSMCConfig.eps0 must be one of {EPS0_RULES}, got {self.eps0!r}")
        require(self.eps0_draws >= 1, f"ABCSMCConfig.eps0_draws must be >= 1, got {self.eps0_draws}")
        require(self.eps0 != "nth_best" or self.eps0_draws >= self.particles,
                f"ABCSMCConfig.eps0_draws must be >= particles ({self.particles}) with eps0='nth_best', "
                f"got {self.eps0_draws}")
        require(0 < self.gen0_budget <= 1, f"ABCSMCConfig.gen0_budget must be in (0, 1], got {self.gen0_budget}")
        require(self.popsize >= 1, f"ABCSMCConfig.popsize must be >= 1, got {self.popsize}")
        require(self.kernel_mean_var >= 0, f"ABCSMCConfig.kernel_mean_var must be >= 0, got {self.kernel_mean_var}")
        require(self.kernel_scale > 0, f"ABCSMCConfig.kernel_scale must be > 0, got {self.kernel_scale}")
        require(self.stall_batches >= 0, f"ABCSMCConfig.stall_batches must be >= 0, got {self.stall_batches}")
        require(self.check_dev or not self.select_on_dev,
                "ABCSMCConfig.select_on_dev scores every generation on dev: it needs check_dev=True")
        require(self.seed >= 0, f"ABCSMCConfig.seed must be >= 0, got {self.seed}")


# ---------------------------------------------------------------------------------------------- densities
def truncated_logpdf(x: np.ndarray, loc: np.ndarray | float, scale: np.ndarray | float, bound: float) -> np.ndarray:
    """Elementwise log density of ``N(loc, scale^2)`` truncated to ``[-bound, bound]``."""
    loc, scale = np.asarray(loc, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    return truncnorm.logpdf(x, (-bound - loc) / scale, (bound - loc) / scale, loc=loc, scale=scale)


def log_prior(theta: np.ndarray, prior_std: float, bound: float) -> np.ndarray:
    """``log prior(theta_i)`` for each row of ``theta`` (n, d): independent truncated normals."""
    return truncated_logpdf(np.asarray(theta, dtype=np.float64), 0.0, prior_std, bound).sum(axis=1)


def log_mixture(theta: np.ndarray, centres: np.ndarray, weights: np.ndarray, kernel_std: np.ndarray,
                bound: float) -> np.ndarray:
    """``log sum_j W_j K_j(theta_i)`` for each row of ``theta`` (n, d): truncated diagonal Gaussian kernels
    of standard deviations ``kernel_std`` (d,) around ``centres`` (m, d), mixed by ``weights`` (m,)."""
    t = np.asarray(theta, dtype=np.float64)[:, None, :]
    c = np.asarray(centres, dtype=np.float64)[None, :, :]
    comp = truncated_logpdf(t, c, np.asarray(kernel_std, dtype=np.float64)[None, None, :], bound).sum(axis=2)
    with np.errstate(divide="ignore"):
        logw = np.log(np.asarray(weights, dtype=np.float64))
    return logsumexp(comp + logw[None, :], axis=1)


def importance_weights(theta: np.ndarray, centres: np.ndarray, weights: np.ndarray, kernel_std: np.ndarray,
                       prior_std: float, bound: float) -> np.ndarray:
    """Normalised SMC weights of the accepted ``theta``: prior density over the proposal mixture's density."""
    logw = log_prior(theta, prior_std, bound) - log_mixture(theta, centres, weights, kernel_std, bound)
    return softmax(logw)


def smc_weights(kind: str, theta: np.ndarray, centres: np.ndarray, weights: np.ndarray, kernel_std: np.ndarray,
                prior_std: float, bound: float) -> np.ndarray:
    """The normalised weights of a new population ``theta`` proposed from ``centres`` (weighted ``weights``)
    through kernels of standard deviation ``kernel_std``: "uniform" (1/N each, the reference's) or
    "exact" (:func:`importance_weights`)."""
    if kind == "uniform":
        return np.full(len(theta), 1.0 / len(theta))
    if kind == "exact":
        return importance_weights(theta, centres, weights, kernel_std, prior_std, bound)
    raise ValueError(f"weights must be one of {WEIGHTS}, got {kind!r}")


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``1 / sum w_i^2`` of the weights (normalised first): N for uniform weights."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return float(1.0 / np.sum(w ** 2))


def kernel_std(particles: np.ndarray, scale: float, floor: float) -> np.ndarray:
    """Per-coordinate kernel standard deviation: ``sqrt(scale * variance of the particles)``, at least ``floor``."""
    var = np.var(np.asarray(particles, dtype=np.float64), axis=0)
    return np.maximum(np.sqrt(scale * var), floor)


def rescaled_kernel_std(particles: np.ndarray, weights: np.ndarray, mean_var: float) -> np.ndarray:
    """The reference's kernel: the ``weights``-weighted variance of the particles per coordinate,
    rescaled so that its mean over the coordinates is ``mean_var``; returned as standard deviations.
    A population without spread (one particle, or all equal) gets ``mean_var`` on every coordinate."""
    p = np.asarray(particles, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = w @ p
    var = w @ (p - mean) ** 2
    if not np.mean(var) > 0:
        return np.full(p.shape[1], math.sqrt(mean_var))
    return np.sqrt(var / np.mean(var) * mean_var)


def sample_prior(rng: np.random.Generator, n: int, d: int, prior_std: float, bound: float) -> np.ndarray:
    """``n`` draws (n, d) of the truncated prior."""
    return truncnorm.rvs(-bound / prior_std, bound / prior_std, scale=prior_std, size=(n, d), random_state=rng)


def sample_mixture(rng: np.random.Generator, n: int, centres: np.ndarray, weights: np.ndarray,
                   kernel_std: np.ndarray, bound: float) -> np.ndarray:
    """``n`` draws (n, d) of the weighted mixture of truncated kernels (see :func:`log_mixture`)."""
    centres = np.asarray(centres, dtype=np.float64)
    picks = centres[rng.choice(len(centres), size=n, p=np.asarray(weights, dtype=np.float64))]
    s = np.broadcast_to(kernel_std, picks.shape)
    return truncnorm.rvs((-bound - picks) / s, (bound - picks) / s, loc=picks, scale=s, random_state=rng)


# ---------------------------------------------------------------------------------------------- the agent
class ABCSMCAgent(PromptSetAgent):
    """ABC-SMC on predicted labels only: tolerance on training accuracy, generation chosen on dev (see the module)."""

    name = "abc_smc"
    config_class = ABCSMCConfig
    members_field = "particles"

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        base = self.start(env)
        space = base.action_space
        d, bound = space.shape[0], float(space.high.max())
        rng = np.random.default_rng(cfg.seed)
        N = cfg.particles
        dev_cost = N if cfg.select_on_dev else 0                 # each complete generation's dev check
        final = N if cfg.check_dev and not cfg.select_on_dev else 0  # the last population's one dev check
        train = TrainCurve()

        def free() -> int:
            """Calls proposals may use now, the dev checks they must leave room for kept aside."""
            return base.budget.remaining - dev_cost - final

        def simulate(theta: np.ndarray) -> np.ndarray:
            """Training accuracies of the prompts ``theta`` (one batched call; labels only are read)."""
            prompts = [np.clip(t, -bound, bound).astype(np.float32) for t in theta]
            outs = base.score_actions(prompts)
            train.update(base.budget.calls, prompts, [o.reward for o in outs])
            return np.array([o.accuracy for o in outs])

        n_scored = len(base.train) if base.batch_size is None else min(base.batch_size, len(base.train))
        generations: list[dict] = []  # every complete generation: its particles, weights and what it cost
        best: dict = {}
        curve: list[tuple[int, float]] = []

        def complete(population: np.ndarray, weights: np.ndarray, eps: float, proposed: int) -> None:
            gen = {"eps": eps, "calls": base.budget.calls, "proposed": proposed,
                   "ess": effective_sample_size(weights), "population": population, "weights": weights}
            if cfg.select_on_dev:
                gen["dev_metric"] = score_set(base, self._members(population, bound), weights, "vote").metric
                if not best or gen["dev_metric"] >= best["dev_metric"]:  # ties to the later generation
                    best.update(gen, index=len(generations))
                curve.append((base.budget.calls, float(best["dev_metric"])))
            generations.append(gen)

        # generation 0: rejection from the prior at eps_0
        start = base.budget.remaining
        n0 = min(cfg.eps0_draws, free())
        if n0 < 1:  # not even one prior draw is affordable: prior draws, unchecked by any data
            theta = sample_prior(rng, N, d, cfg.prior_std, bound)
            return self._final(base, theta, np.full(N, 1.0 / N), train, cfg, {"generations": 0})
        pool = sample_prior(rng, n0, d, cfg.prior_std, bound)
        pool_acc = simulate(pool)
        population, lowered = None, False
        if cfg.eps0 == "best":
            eps = float(np.max(pool_acc))
            allowance = int(cfg.gen0_budget * start)  # calls generation 0 may spend, the eps_0 draws included
            accepted: list[np.ndarray] = []
            while len(accepted) < N:
                n = min(cfg.popsize, free(), allowance - (start - base.budget.remaining))
                if n < 1:
                    break
                batch = sample_prior(rng, n, d, cfg.prior_std, bound)
                acc = simulate(batch)
                pool, pool_acc = np.concatenate([pool, batch]), np.concatenate([pool_acc, acc])
                accepted.extend(batch[acc >= eps - 1e-9][: N - len(accepted)])
            if len(accepted) == N:
                population = np.stack(accepted)
            lowered = population is None
        if population is None:  # eps_0 = the N-th best prior draw; the first N in draw order reaching it
            size = min(N, len(pool))
            eps = float(np.sort(pool_acc)[::-1][size - 1])
            population = pool[np.flatnonzero(pool_acc >= eps)[:size]]
        weights = np.full(len(population), 1.0 / len(population))
        complete(population, weights, eps, len(pool))

        # generations 1, 2, ...: eps rises by one correct example per generation
        while eps + 1.0 / n_scored <= 1.0 + 1e-9:
            target = eps + 1.0 / n_scored
            if cfg.kernel_mean_var > 0:
                std = rescaled_kernel_std(population, weights, cfg.kernel_mean_var)
            else:
                std = kernel_std(population, cfg.kernel_scale, MIN_KERNEL_STD * cfg.prior_std)
            accepted = []
            proposed = batches = 0
            while len(accepted) < N:
                n = min(cfg.popsize, free())
                if n < 1 or (cfg.stall_batches and not accepted and batches >= cfg.stall_batches):
                    break
                batch = sample_mixture(rng, n, population, weights, std, bound)
                acc = simulate(batch)
                proposed, batches = proposed + n, batches + 1
                accepted.extend(batch[acc >= target - 1e-9][: N - len(accepted)])
            if len(accepted) < N:
                break  # the budget ran out (or nothing was accepted) inside the generation
            new = np.stack(accepted)
            weights = smc_weights(cfg.weights, new, population, weights, std, cfg.prior_std, bound)
            population, eps = new, target
            complete(population, weights, eps, proposed)

        history = [{k: g[k] for k in ("eps", "calls", "proposed", "ess", "dev_metric") if k in g}
                   for g in generations]
        extra = {"generations": len(generations) - 1, "history": history, "eps0_lowered": lowered}
        if not cfg.select_on_dev:
            extra.update(epsilon=eps, ess=history[-1]["ess"])
            return self._final(base, population, weights, train, cfg, extra)
        extra.update(epsilon=best["eps"], ess=best["ess"], chosen_generation=best["index"],
                     generation_dev_metrics=[g["dev_metric"] for g in generations])
        return set_result(self.name, base, self._members(best["population"], bound), best["weights"], "vote",
                          train, best["dev_metric"], curve, cfg, extra)

    @staticmethod
    def _members(theta: np.ndarray, bound: float) -> list[np.ndarray]:
        return [np.clip(t, -bound, bound).astype(np.float32) for t in theta]

    def _final(self, base: Any, theta: np.ndarray, weights: np.ndarray, train: TrainCurve, cfg: ABCSMCConfig,
               extra: dict) -> Result:
        """The Result of the last population, its vote scored on dev once if ``check_dev`` and affordable."""
        members = self._members(theta, float(base.action_space.high.max()))
        dev_metric, curve = None, []
        if cfg.check_dev and base.budget.remaining >= len(members):
            dev_metric = score_set(base, members, weights, "vote").metric
            curve = [(base.budget.calls, dev_metric)]
        return set_result(self.name, base, members, weights, "vote", train, dev_metric, curve, cfg, extra)
