"""CMA-ELBO (Shen et al., 2023): gradient-free variational inference over BBT's subspace.

The variational posterior is a diagonal Gaussian ``q = N(mu, diag(exp(log_var)))`` over ``z``;
CMA-ES searches its ``2d`` numbers ``[mu; log_var]`` and minimises

    loss(q) = E_q[NLL of the training batch] + kl_weight * KL(q || N(0, prior_var * I))

where the expectation is estimated from ``samples`` = 10 prompts drawn from each candidate ``q``
(each draw on the train batch is one API call; all draws of a generation go in ONE batched call)
and the NLL is summed over the training examples (the ELBO's likelihood term, scaled to the full
train split when the env scores minibatches). As the reference code (maohaos2/SBI_LLM,
``CMA_ELBO``): CMA-ES has ``popsize`` = 20 candidates; every candidate's 10 draws are ALSO scored
on dev (``dev_check="candidates"``: one call per draw, the mean of their label distributions) and
the candidate with the lowest dev NLL over the whole run picks the distribution (the first on ties,
the reference's ``<``). ``fresh_draws``: the returned members are ``members`` NEW draws from that
distribution, not the draws its dev NLL was measured on; they are scored on dev once (one call
each, reserved from the start) and that is the Result's dev metric, so it was not selected on
(``Result.extra["dev_metric_selected_on"]`` False; ``extra["selected_dev_metric"]`` is the chosen
draws' own, selected-on, dev metric). With ``fresh_draws=False`` the chosen candidate's dev-scored
draws are the members and their dev metric is reported (``dev_metric_selected_on`` True).

The project's previous lite-tier recipe (:data:`LITE_ADAPTED`)::

    make_agent("cma_elbo", popsize=10, dev_check="mean", common_draws=True, fresh_draws=False)

(10 candidates; one set of 10 standard-normal vectors shared by a generation's candidates; the
distribution at the CMA-ES mean checked on dev every ``dev_every`` = 2 generations with ``members``
draws; those very draws returned, their dev metric selected on.)

Choices and the departures from the reference that remain, and why:

* Budget: a generation costs ``popsize x samples`` train calls plus as many dev calls (400 at the
  defaults), so a lite run (1,000 calls) has 2 generations and leaves ~190 calls unused; it stops
  when the next whole generation would not fit beside the reserved final dev check (the reference
  ran 300 generations). ``dev_check="mean"`` halves a generation's cost.
* ``members`` 10 fresh draws, not the reference's 100: the final dev check costs one call per member
  and the test harness scores every member on the whole test split.
* ``log_var`` rather than the reference's ``|variance|``: positive without a kink at 0, and a CMA-ES
  step acts multiplicatively on the variance. It starts at ``log(init_var)`` = 0 (variance 1, as
  the reference), bounded to ``[log 1e-4, log bound^2]``; ``mu`` starts at 0 inside the env's action
  box (the reference bounded all 2d numbers to +-100). Draws are clipped to the box.
* ``kl_weight`` 1e-3 and ``prior_var`` 50 are the reference's: at d = 500 the full KL of the initial
  ``q`` is ~730 nats against ~22 nats of summed NLL on 32 examples; at weight 1 the prior would
  drown the data. At 1e-3 it is a ~1-nat regulariser that keeps variances from collapsing to 0.
* If no whole generation fits the budget, the distribution at the CMA-ES mean is checked once
  (``members`` draws) instead, else returned unchecked.

The Result's dev curve holds, at each check, the dev metric of the distribution chosen so far
(selected on), and last the fresh members' dev metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from agents.prompt_sets import score_set, set_result
from promptgym.agent import AgentConfig, ConfiguredAgent, Result, TrainCurve, require
from promptgym.errors import IncompatibleAgentError
from promptgym.task_view import Outcome

LOG_VAR_MIN = math.log(1e-4)  # smallest variance CMA-ES may give a coordinate of q
DEV_CHECKS = ("candidates", "mean")

#: the project's previous defaults (its lite-tier adaptation): make_agent("cma_elbo", **LITE_ADAPTED) re-runs old rows
LITE_ADAPTED = {"popsize": 10, "dev_check": "mean", "common_draws": True, "fresh_draws": False}


@dataclass
class CMAELBOConfig(AgentConfig):
    samples: int = 10          # Monte-Carlo prompts per candidate distribution (each one API call on train)
    popsize: int = 20          # CMA-ES population of candidate distributions per generation
    sigma0: float = 1.0        # CMA-ES initial step size on [mu; log_var]
    init_var: float = 1.0      # initial variance of every coordinate of q (BBT's sigma0 squared)
    prior_var: float = 50.0    # variance of the Gaussian prior N(0, prior_var I) in the KL term
    kl_weight: float = 1e-3    # lambda: weight of the KL term against the summed training NLL
    dev_check: str = "candidates"  # "candidates": every candidate's draws on dev; "mean": the CMA-ES mean's
    common_draws: bool = False  # one set of standard-normal vectors for all candidates of a generation
    dev_every: int = 2         # dev_check "mean": generations between dev checks of the CMA-ES mean
    members: int = 10          # fresh draws returned (and draws per "mean" dev check)
    fresh_draws: bool = True   # return fresh draws of the chosen q, scored on dev once; else its dev-scored draws
    seed: int = 0              # seeds the env reset, CMA-ES (seed + 1) and the Monte-Carlo draws

    def validate(self) -> None:
        require(self.samples >= 1, f"CMAELBOConfig.samples must be >= 1, got {self.samples}")
        require(self.popsize >= 2, f"CMAELBOConfig.popsize must be >= 2 (CMA-ES ranks a population), "
                                   f"got {self.popsize}")
        require(self.sigma0 > 0, f"CMAELBOConfig.sigma0 must be > 0, got {self.sigma0}")
        require(self.init_var > 0, f"CMAELBOConfig.init_var must be > 0, got {self.init_var}")
        require(self.prior_var > 0, f"CMAELBOConfig.prior_var must be > 0, got {self.prior_var}")
        require(self.kl_weight >= 0, f"CMAELBOConfig.kl_weight must be >= 0, got {self.kl_weight}")
        require(self.dev_check in DEV_CHECKS,
                f"CMAELBOConfig.dev_check must be one of {DEV_CHECKS}, got {self.dev_check!r}")
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
        cfg = self.config
        return cfg.members if cfg.fresh_draws else max(cfg.members, cfg.samples)

    def search(self, env: gym.Env) -> Result:
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
        dev_eps = rng.standard_normal((cfg.members, d))  # "mean" checks: the same dev draws for every distribution
        reserve = cfg.members if cfg.fresh_draws else 0  # the fresh members' dev check
        train = TrainCurve()
        chosen: dict = {}
        curve: list[tuple[int, float]] = []
        checked: set[bytes] = set()

        def consider(x: np.ndarray, members: list[np.ndarray]) -> None:
            score = score_set(base, members, None, "mean")
            if not chosen or score.nll < chosen["nll"]:  # ties to the first checked
                chosen.update(nll=score.nll, metric=score.metric, members=members, x=x)
            curve.append((base.budget.calls, float(chosen["metric"])))

        def check_mean(x: np.ndarray) -> None:
            x = np.clip(x, lower, upper)
            if x.tobytes() in checked or base.budget.remaining < cfg.members + reserve:
                return
            checked.add(x.tobytes())
            consider(x, draw(x[:d], x[d:], dev_eps, bound))

        candidates = cfg.dev_check == "candidates"
        gen_cost = cfg.popsize * cfg.samples * (2 if candidates else 1)
        gen_reserve = reserve if candidates else 2 * cfg.members + reserve
        gen = n_checked = 0
        while base.budget.remaining >= gen_cost + gen_reserve:
            asked = es.ask()
            params = [np.clip(np.asarray(a), lower, upper) for a in asked]
            if cfg.common_draws:  # common random numbers: CMA-ES ranks the parameters, not the luck of the draws
                eps = np.broadcast_to(rng.standard_normal((cfg.samples, d)), (cfg.popsize, cfg.samples, d))
            else:
                eps = rng.standard_normal((cfg.popsize, cfg.samples, d))
            drawn = [draw(x[:d], x[d:], e, bound) for x, e in zip(params, eps)]
            prompts = [p for ps in drawn for p in ps]
            outs = base.score_actions(prompts)
            train.update(base.budget.calls, prompts, [o.reward for o in outs])
            losses = []
            for j, x in enumerate(params):
                nll = np.mean([summed_nll(o, n_train) for o in outs[j * cfg.samples:(j + 1) * cfg.samples]])
                losses.append(float(nll) + cfg.kl_weight * gaussian_kl(x[:d], x[d:], cfg.prior_var))
            es.tell(asked, losses)
            gen += 1
            if candidates:  # the reference: every candidate's train draws, scored on dev
                for x, members in zip(params, drawn):
                    consider(x, members)
                n_checked += len(params)
            elif gen % cfg.dev_every == 0:
                check_mean(es.mean)
        if not candidates or not chosen:
            check_mean(es.mean)
        n_checked += len(checked)
        if not chosen:  # no dev check was affordable: the draws of the final distribution, unchecked
            x = np.clip(es.mean, lower, upper)
            chosen.update(metric=None, members=draw(x[:d], x[d:], dev_eps, bound), x=x, nll=None)
        x = chosen["x"]
        members, dev_metric, selected_on = chosen["members"], chosen["metric"], chosen["metric"] is not None
        if cfg.fresh_draws:
            members = draw(x[:d], x[d:], rng.standard_normal((cfg.members, d)), bound)
            dev_metric = selected_on = None
            if base.budget.remaining >= len(members):
                dev_metric, selected_on = score_set(base, members, None, "mean").metric, False
                curve.append((base.budget.calls, dev_metric))
        extra = {"generations": gen, "checked": n_checked, "dev_nll": chosen["nll"],
                 "selected_dev_metric": chosen["metric"], "dev_metric_selected_on": selected_on,
                 "kl": gaussian_kl(x[:d], x[d:], cfg.prior_var), "mean_std": float(np.mean(np.exp(0.5 * x[d:])))}
        return set_result(self.name, base, members, [1.0] * len(members), "mean", train, dev_metric, curve, cfg,
                          extra)
