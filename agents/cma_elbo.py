"""CMA-ELBO (Shen et al., 2023): gradient-free variational inference over BBT's subspace.

The variational posterior is a diagonal Gaussian ``q = N(mu, diag(exp(log_var)))`` over ``z``;
CMA-ES searches its ``2d`` numbers ``[mu; log_var]`` and minimises

    loss(q) = E_q[NLL of the training batch] + kl_weight * KL(q || N(0, prior_var * I))

where the expectation is estimated from ``samples`` prompts drawn from ``q`` (each draw on the
train batch is one API call; all draws of a generation go in ONE batched call) and the NLL is summed
over the training examples (the ELBO's likelihood term, scaled to the full train split when the env
scores minibatches). Every ``dev_every`` generations the distribution at the CMA-ES mean is checked
on dev: ``members`` draws from it (one call each) predict by the mean of their label distributions,
and the distribution with the lowest dev NLL is kept; those very draws are the returned members
(uniform weights, "mean"), so the set returned is the set whose dev NLL chose it.

Choices and defaults (the reference's where it has one):

* ``log_var`` rather than the reference's ``|variance|``: positive without a kink at 0, and a CMA-ES
  step acts multiplicatively on the variance. It starts at ``log(init_var)`` = 0 (variance 1, the
  scale of BBT's ``sigma0`` = 1, so the first draws look like BBT's first population), bounded to
  ``[log 1e-4, log bound^2]``; ``mu`` starts at 0 inside the action box. Draws are clipped to the box.
* ``samples`` 10 (the reference's), drawn with common random numbers: the candidates of a generation
  share the same 10 standard-normal vectors, so CMA-ES ranks the distributions' parameters, not the
  luck of their draws. Fresh vectors every generation.
* ``kl_weight`` 1e-3 and ``prior_var`` 50 (the reference's): at d = 500 the full KL of the initial
  ``q`` is ~730 nats against ~22 nats of summed NLL on 32 examples; at weight 1 the prior would
  drown the data and push every variance to 50, where prompts are noise. At 1e-3 it is a ~1-nat
  regulariser that keeps variances from collapsing to 0 (a point estimate) without overriding the
  likelihood; the broad prior keeps that pull weak where the data speak.
* ``popsize`` 10 (not BBT's 20): a generation costs ``popsize * samples`` calls, so 10 leaves 9
  generations at the lite tier's 1,000 calls (20 would leave 4).
* ``members`` 10 dev draws per check (the reference's sample count); ``dev_every`` 2 generations:
  ~5 checks, ~5% of a lite budget.

The Result's dev curve holds, at each check, the task metric of the set chosen so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from agents.prompt_sets import score_set, set_result
from promptgym.agent import AgentConfig, ConfiguredAgent, Result, TrainCurve, require
from promptgym.envs.scoring import Outcome
from promptgym.errors import IncompatibleAgentError

LOG_VAR_MIN = math.log(1e-4)  # smallest variance CMA-ES may give a coordinate of q


@dataclass
class CMAELBOConfig(AgentConfig):
    samples: int = 10         # Monte-Carlo prompts per candidate distribution (each one API call on train)
    popsize: int = 10         # CMA-ES population of candidate distributions per generation
    sigma0: float = 1.0       # CMA-ES initial step size on [mu; log_var]
    init_var: float = 1.0     # initial variance of every coordinate of q (BBT's sigma0 squared)
    prior_var: float = 50.0   # variance of the Gaussian prior N(0, prior_var I) in the KL term
    kl_weight: float = 1e-3   # lambda: weight of the KL term against the summed training NLL
    members: int = 10         # draws per dev check; the chosen check's draws are the returned prompt set
    dev_every: int = 2        # generations between dev checks of the distribution at the CMA-ES mean
    seed: int = 0             # seeds the env reset, CMA-ES (seed + 1) and the Monte-Carlo draws

    def validate(self) -> None:
        require(self.samples >= 1, f"CMAELBOConfig.samples must be >= 1, got {self.samples}")
        require(self.popsize >= 2, f"CMAELBOConfig.popsize must be >= 2 (CMA-ES ranks a population), "
                                   f"got {self.popsize}")
        require(self.sigma0 > 0, f"CMAELBOConfig.sigma0 must be > 0, got {self.sigma0}")
        require(self.init_var > 0, f"CMAELBOConfig.init_var must be > 0, got {self.init_var}")
        require(self.prior_var > 0, f"CMAELBOConfig.prior_var must be > 0, got {self.prior_var}")
        require(self.kl_weight >= 0, f"CMAELBOConfig.kl_weight must be >= 0, got {self.kl_weight}")
        require(self.members >= 1, f"CMAELBOConfig.members must be >= 1, got {self.members}")
        require(self.dev_every >= 1, f"CMAELBOConfig.dev_every must be >= 1, got {self.dev_every}")
        require(self.seed >= 0, f"CMAELBOConfig.seed must be >= 0, got {self.seed}")


def gaussian_kl(mu: np.ndarray, log_var: np.ndarray, prior_var: float) -> float:
    """``KL(N(mu, diag(exp(log_var))) || N(0, prior_var I))`` in nats."""
    var = np.exp(log_var)
    return float(0.5 * np.sum((var + mu ** 2) / prior_var - 1.0 - log_var + math.log(prior_var)))


def draw(mu: np.ndarray, log_var: np.ndarray, eps: np.ndarray, bound: float) -> list[np.ndarray]:
    """Prompts ``mu + exp(log_var / 2) * eps`` for each row of ``eps``, clipped to the action box."""
    z = mu[None, :] + np.exp(0.5 * log_var)[None, :] * eps
    return [np.clip(row, -bound, bound).astype(np.float32) for row in z]


def summed_nll(outcome: Outcome, n_train: int) -> float:
    """The NLL of the gold labels summed over the training split, from one prompt's outcome on a batch."""
    labels = np.asarray(outcome.labels)
    lp = np.asarray(outcome.label_logprobs, dtype=np.float64)
    return float(-np.mean(lp[np.arange(len(labels)), labels]) * n_train)


class CMAELBOAgent(ConfiguredAgent):
    """CMA-ES on a diagonal Gaussian's mean and log-variance, minimising the tempered negative ELBO."""

    name = "cma_elbo"
    config_class = CMAELBOConfig

    @property
    def max_members(self) -> int:
        return self.config.members

    def learn(self, env: gym.Env) -> Result:
        import cma

        cfg = self.config
        base = self.start(env)
        if base.reward_kind == "label_only":
            raise IncompatibleAgentError("cma_elbo needs label log-probabilities; the env uses reward='label_only'")
        space = base.action_space
        d, bound = space.shape[0], float(space.high.max())
        n_train = len(base.train)
        lower = np.concatenate([np.full(d, -bound), np.full(d, LOG_VAR_MIN)])
        upper = np.concatenate([np.full(d, bound), np.full(d, 2.0 * math.log(bound))])
        x0 = np.clip(np.concatenate([np.zeros(d), np.full(d, math.log(cfg.init_var))]), lower, upper)
        es = cma.CMAEvolutionStrategy(x0, cfg.sigma0, {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9,
                                                        "bounds": [lower.tolist(), upper.tolist()]})
        rng = np.random.default_rng(cfg.seed)
        dev_eps = rng.standard_normal((cfg.members, d))  # the same dev draws for every checked distribution
        train = TrainCurve()
        chosen: dict = {}
        curve: list[tuple[int, float]] = []
        checked: set[bytes] = set()

        def check(x: np.ndarray) -> None:
            x = np.clip(x, lower, upper)
            if x.tobytes() in checked or base.budget.remaining < cfg.members:
                return
            checked.add(x.tobytes())
            members = draw(x[:d], x[d:], dev_eps, bound)
            score = score_set(base, members, None, "mean")
            if not chosen or score.nll < chosen["nll"]:
                chosen.update(nll=score.nll, metric=score.metric, members=members, x=x)
            curve.append((base.budget.calls, float(chosen["metric"])))

        gen_cost = cfg.popsize * cfg.samples
        gen = 0
        while base.budget.remaining >= gen_cost + 2 * cfg.members:
            asked = es.ask()
            eps = rng.standard_normal((cfg.samples, d))  # common random numbers for the generation
            params = [np.clip(np.asarray(a), lower, upper) for a in asked]
            prompts = [p for x in params for p in draw(x[:d], x[d:], eps, bound)]
            outs = base.score_actions(prompts)
            train.update(base.budget.calls, prompts, [o.reward for o in outs])
            losses = []
            for j, x in enumerate(params):
                nll = np.mean([summed_nll(o, n_train) for o in outs[j * cfg.samples:(j + 1) * cfg.samples]])
                losses.append(float(nll) + cfg.kl_weight * gaussian_kl(x[:d], x[d:], cfg.prior_var))
            es.tell(asked, losses)
            gen += 1
            if gen % cfg.dev_every == 0:
                check(es.mean)
        check(es.mean)
        if not chosen:  # no dev check was affordable: the draws of the final distribution, unchecked
            x = np.clip(es.mean, lower, upper)
            chosen.update(metric=None, members=draw(x[:d], x[d:], dev_eps, bound), x=x, nll=None)
        x = chosen["x"]
        extra = {"generations": gen, "dev_nll": chosen["nll"], "kl": gaussian_kl(x[:d], x[d:], cfg.prior_var),
                 "mean_std": float(np.mean(np.exp(0.5 * x[d:])))}
        return set_result(self.name, base, chosen["members"], [1.0] * len(chosen["members"]), "mean", train,
                          chosen["metric"], curve, cfg, extra)
