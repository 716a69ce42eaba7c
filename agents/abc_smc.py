"""ABC-SMC (Shen et al., 2023): likelihood-free posterior sampling over BBT's subspace.

Nothing but predicted labels is used: a particle ``z`` is accepted when the training accuracy of its
predicted labels reaches the tolerance ``eps``, so the agent runs with ``reward="label_only"``.
Sequential Monte Carlo (Beaumont et al., 2009's population Monte Carlo form):

1. Generation 0, rejection from the prior ``N(0, prior_std^2 I)`` truncated to the action box:
   ``prior_draws`` draws are scored; ``eps_0`` is the accuracy of the ``particles``-th best, and the
   first ``particles`` draws (in draw order) reaching it form the population, weighted uniformly.
2. Generation t: ``eps_t = eps_{t-1} + 1/n`` (one more correct example of the ``n`` scored per call).
   Proposals pick a particle ``j`` with probability ``W_j`` and perturb it with a Gaussian kernel
   truncated to the box; batches of ``particles`` proposals are scored until ``particles`` are
   accepted (the first in proposal order). The new weights are the exact importance weights
   ``w_i ∝ prior(z_i) / sum_j W_j K_j(z_i)`` with every density truncated to the box, normalised
   (:func:`importance_weights`).
3. When ``eps`` would exceed 1 or the budget cannot complete a generation, the last complete
   population is returned: members = particles, weights = W, predictions by their weighted vote.

Choices and defaults:

* ``particles`` 20, not the reference's 100: at the lite tier's 1,000 calls a population of 100
  costs >= 100 calls per generation even at full acceptance (<= 8 generations; at the 15-30%
  acceptance seen on a stand-in simulator, 1-2), and the test harness scores every member (20 x
  the test split, not 100 x). 20 particles left 5 generations on that stand-in.
* ``eps_0`` from ``prior_draws`` = 100 draws (the reference takes the best of one population of prior
  draws and then keeps drawing from the prior until a whole population reaches it, ~particles x
  popsize calls; taking the ``particles``-th best of 100 draws is the same rejection step at a
  bounded cost).
* ``prior_std`` 1: ``z ~ N(0, I)`` moves each prompt entry by about one embedding standard deviation
  (how the env scales its projection), the scale BBT's CMA-ES starts at.
* Kernel: per coordinate, ``kernel_scale`` = 2 times the variance of the accepted particles
  (Beaumont et al.'s choice), floored at 5% of ``prior_std``. The variance is taken unweighted: in
  d = 500 the importance weights are close to degenerate (see ``Result.extra["ess"]``) and a
  weighted variance would shrink the kernel to a point; any kernel keeps the weights exact, since
  they divide by the density of the mixture actually sampled.
* ``check_dev``: the final population's vote is scored on dev once (one call per particle,
  reserved from the start) to report a dev metric; nothing is selected on dev.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import truncnorm

from agents.prompt_sets import score_set, set_result
from promptgym.agent import AgentConfig, ConfiguredAgent, Result, TrainCurve, require

MIN_KERNEL_STD = 0.05  # the kernel's smallest standard deviation, as a fraction of prior_std


@dataclass
class ABCSMCConfig(AgentConfig):
    particles: int = 20       # population size N, and the size of the returned prompt set
    prior_draws: int = 100    # prior draws of generation 0; eps_0 is the accuracy of the N-th best
    prior_std: float = 1.0    # the prior N(0, prior_std^2 I) on z, truncated to the action box
    kernel_scale: float = 2.0  # kernel variance = this times the population's variance, per coordinate
    check_dev: bool = True    # score the final population's vote on dev (one call per particle, reserved)
    seed: int = 0             # seeds the env reset and every draw

    def validate(self) -> None:
        require(self.particles >= 1, f"ABCSMCConfig.particles must be >= 1, got {self.particles}")
        require(self.prior_draws >= self.particles,
                f"ABCSMCConfig.prior_draws must be >= particles ({self.particles}), got {self.prior_draws}")
        require(self.prior_std > 0, f"ABCSMCConfig.prior_std must be > 0, got {self.prior_std}")
        require(self.kernel_scale > 0, f"ABCSMCConfig.kernel_scale must be > 0, got {self.kernel_scale}")
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


def kernel_std(particles: np.ndarray, scale: float, floor: float) -> np.ndarray:
    """Per-coordinate kernel standard deviation: ``sqrt(scale * variance of the particles)``, at least ``floor``."""
    var = np.var(np.asarray(particles, dtype=np.float64), axis=0)
    return np.maximum(np.sqrt(scale * var), floor)


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
class ABCSMCAgent(ConfiguredAgent):
    """ABC-SMC on predicted labels only: tolerance on training accuracy, exact importance weights."""

    name = "abc_smc"
    config_class = ABCSMCConfig

    @property
    def max_members(self) -> int:
        return self.config.particles

    def learn(self, env: gym.Env) -> Result:
        cfg = self.config
        base = self.start(env)
        space = base.action_space
        d, bound = space.shape[0], float(space.high.max())
        rng = np.random.default_rng(cfg.seed)
        reserve = cfg.particles if cfg.check_dev else 0
        train = TrainCurve()

        def simulate(theta: np.ndarray) -> np.ndarray:
            """Training accuracies of the prompts ``theta`` (one batched call; labels only are read)."""
            prompts = [np.clip(t, -bound, bound).astype(np.float32) for t in theta]
            outs = base.score_actions(prompts)
            train.update(base.budget.calls, prompts, [o.reward for o in outs])
            return np.array([o.accuracy for o in outs])

        n_scored = len(base.train) if base.batch_size is None else min(base.batch_size, len(base.train))
        # generation 0: rejection from the prior at the accuracy the prior's best draws reach
        n0 = min(cfg.prior_draws, base.budget.remaining - reserve)
        if n0 < 1:
            theta = sample_prior(rng, cfg.particles, d, cfg.prior_std, bound)
            return self._result(base, theta, np.ones(len(theta)), train, cfg, {"generations": 0})
        theta = sample_prior(rng, n0, d, cfg.prior_std, bound)
        acc = simulate(theta)
        size = min(cfg.particles, n0)
        eps = float(np.sort(acc)[::-1][size - 1])
        population = theta[np.flatnonzero(acc >= eps)[:size]]
        weights = np.full(len(population), 1.0 / len(population))
        history = [{"eps": eps, "calls": base.budget.calls, "proposed": n0, "ess": float(len(population))}]
        while eps + 1.0 / n_scored <= 1.0 + 1e-9:
            target = eps + 1.0 / n_scored
            std = kernel_std(population, cfg.kernel_scale, MIN_KERNEL_STD * cfg.prior_std)
            accepted: list[np.ndarray] = []
            proposed = 0
            while len(accepted) < cfg.particles:
                n = min(cfg.particles, base.budget.remaining - reserve)
                if n < 1:
                    break
                batch = sample_mixture(rng, n, population, weights, std, bound)
                acc = simulate(batch)
                proposed += n
                accepted.extend(batch[acc >= target - 1e-9][: cfg.particles - len(accepted)])
            if len(accepted) < cfg.particles:
                break  # the budget ran out inside the generation: keep the last complete population
            new = np.stack(accepted)
            weights = importance_weights(new, population, weights, std, cfg.prior_std, bound)
            population, eps = new, target
            history.append({"eps": eps, "calls": base.budget.calls, "proposed": proposed,
                            "ess": float(1.0 / np.sum(weights ** 2))})
        extra = {"generations": len(history) - 1, "epsilon": eps, "ess": history[-1]["ess"], "history": history}
        return self._result(base, population, weights, train, cfg, extra)

    def _result(self, base: Any, theta: np.ndarray, weights: np.ndarray, train: TrainCurve, cfg: ABCSMCConfig,
                extra: dict) -> Result:
        bound = float(base.action_space.high.max())
        members = [np.clip(t, -bound, bound).astype(np.float32) for t in theta]
        dev_metric, curve = None, []
        if cfg.check_dev and base.budget.remaining >= len(members):
            dev_metric = score_set(base, members, weights, "vote").metric
            curve = [(base.budget.calls, dev_metric)]
        return set_result(self.name, base, members, weights, "vote", train, dev_metric, curve, cfg, extra)
