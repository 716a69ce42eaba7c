"""SNPE (Shen et al., 2023): sequential neural posterior estimation over BBT's subspace, with ``sbi``.

Likelihood-free: the simulator maps a prompt ``z`` to the LM's predicted labels on the training
split, one-hot and flattened (``n x C`` numbers); nothing else is read, so the agent runs with
``reward="label_only"``. A conditional masked autoregressive flow ``q(z | x)`` is trained on
``(z, x)`` pairs (sbi's SNPE-C / APT, which corrects for proposals other than the prior) over
``rounds`` rounds: round 0 draws ``z`` from the prior ``N(0, prior_std^2 I)``, later rounds from the
current posterior at the observation. The observation is the OBSERVED true labels of the training
split (one-hot): the posterior is over prompts that make the LM reproduce the gold labels. Members
are ``members`` draws from the final posterior (clipped to the action box), uniform weights,
predicting by vote.

Budget: all calls but the final dev check (one per member, reserved) are split evenly among the
rounds (~330 simulations per round at the lite tier), scored ``popsize`` prompts per batched call.

Defaults and bounded training time: a small flow (``num_transforms`` 2 MADE layers of
``hidden_features`` 32; the reference used 10 of 60 on a GPU) trained for at most ``max_epochs`` 10
epochs per round (sbi also stops earlier when validation stops improving), batches of 50. At
d = 500 a MAF samples one coordinate after another, so training plus drawing takes ~1-2.5 minutes
for a whole lite run on 2 busy CPU cores (measured on a stand-in simulator; ``Result.extra`` records
``sbi_seconds``), against ~7 minutes of LM calls. ``rounds`` 3 (the reference used 5 rounds of 1,000
simulations, 5x the lite tier's whole budget). ``prior_std`` 1 as in :mod:`agents.abc_smc`.
``members`` 20: the vote histogram's resolution is 1/20. ``z_score_x`` is off: one-hot outputs
are bounded, and columns that never change would be divided by a zero spread.

Needs the whole training split on every call (the env's ``batch_size`` None, the default): the
simulator output must always describe the same examples.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agents.prompt_sets import score_set, set_result
from promptgym.agent import AgentConfig, ConfiguredAgent, Result, TrainCurve, require
from promptgym.errors import IncompatibleAgentError


@dataclass
class SNPEConfig(AgentConfig):
    rounds: int = 3             # simulation-and-training rounds (round 0 from the prior, then from the posterior)
    members: int = 20           # posterior draws returned as the prompt set (uniform weights, vote)
    prior_std: float = 1.0      # the prior N(0, prior_std^2 I) on z
    hidden_features: int = 32   # width of each MADE layer of the flow
    num_transforms: int = 2     # MADE layers of the masked autoregressive flow
    max_epochs: int = 10        # training epochs per round at most (early stopping may end sooner)
    batch: int = 50             # training batch size of the flow
    popsize: int = 20           # prompts per batched LM call while simulating
    check_dev: bool = True      # score the members' vote on dev once (one call per member, reserved)
    seed: int = 0               # seeds the env reset, torch (flow, draws) for the duration of learn()

    def validate(self) -> None:
        require(self.rounds >= 1, f"SNPEConfig.rounds must be >= 1, got {self.rounds}")
        require(self.members >= 1, f"SNPEConfig.members must be >= 1, got {self.members}")
        require(self.prior_std > 0, f"SNPEConfig.prior_std must be > 0, got {self.prior_std}")
        require(self.hidden_features >= 1, f"SNPEConfig.hidden_features must be >= 1, got {self.hidden_features}")
        require(self.num_transforms >= 1, f"SNPEConfig.num_transforms must be >= 1, got {self.num_transforms}")
        require(self.max_epochs >= 1, f"SNPEConfig.max_epochs must be >= 1, got {self.max_epochs}")
        require(self.batch >= 1, f"SNPEConfig.batch must be >= 1, got {self.batch}")
        require(self.popsize >= 1, f"SNPEConfig.popsize must be >= 1, got {self.popsize}")
        require(self.seed >= 0, f"SNPEConfig.seed must be >= 0, got {self.seed}")


def one_hot_outputs(predictions: np.ndarray, n_labels: int) -> np.ndarray:
    """The simulator output of one prompt: its predicted labels one-hot, flattened (n * C,)."""
    return np.eye(n_labels, dtype=np.float32)[np.asarray(predictions)].reshape(-1)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence sbi's chatter (its choice of loss on stdout, clamped settings on the root logger) while it trains."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


class NoTracker:
    """sbi's experiment-tracker protocol, recording nothing (its default writes TensorBoard logs to ./sbi-logs)."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass


MIN_SIMULATIONS = 10  # sbi holds out a tenth for validation: fewer leave it nothing to validate on


class SNPEAgent(ConfiguredAgent):
    """Neural posterior estimation (sbi, MAF) conditioned on the observed training labels."""

    name = "snpe"
    config_class = SNPEConfig

    @property
    def max_members(self) -> int:
        return self.config.members

    def learn(self, env: gym.Env) -> Result:
        import torch

        base = self.start(env)
        if base.batch_size is not None and base.batch_size < len(base.train):
            raise IncompatibleAgentError("snpe needs the whole training split on every call; make the env with "
                                         "batch_size=None")
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sbi's advice on sample counts and devices, not errors
            torch.manual_seed(self.config.seed)
            return self._learn(base)

    def _learn(self, base: Any) -> Result:
        import torch
        from sbi.inference import NPE_C
        from sbi.neural_nets import posterior_nn

        cfg = self.config
        space = base.action_space
        d, bound = space.shape[0], float(space.high.max())
        n_labels = base.spec_task.num_labels
        x_obs = torch.as_tensor(one_hot_outputs(np.asarray(base.train.labels), n_labels))[None, :]
        prior = torch.distributions.MultivariateNormal(torch.zeros(d), cfg.prior_std ** 2 * torch.eye(d))
        builder = posterior_nn(model="maf", hidden_features=cfg.hidden_features, num_transforms=cfg.num_transforms,
                               z_score_x="none")
        inference = NPE_C(prior=prior, density_estimator=builder, show_progress_bars=False, tracker=NoTracker())
        reserve = cfg.members if cfg.check_dev else 0
        train = TrainCurve()
        proposal = prior
        posterior = None
        simulations: list[int] = []
        sbi_seconds = 0.0
        for r in range(cfg.rounds):
            n = (base.budget.remaining - reserve) // (cfg.rounds - r)
            if n < MIN_SIMULATIONS:
                break
            started = time.perf_counter()
            theta = proposal.sample((n,)) if r == 0 else proposal.sample((n,), show_progress_bars=False)
            sbi_seconds += time.perf_counter() - started
            theta = theta.reshape(n, d)
            x = torch.zeros((n, x_obs.shape[1]))
            for start in range(0, n, cfg.popsize):
                prompts = [np.clip(t, -bound, bound).astype(np.float32)
                           for t in theta[start:start + cfg.popsize].numpy()]
                outs = base.score_actions(prompts)
                train.update(base.budget.calls, prompts, [o.reward for o in outs])
                for j, o in enumerate(outs):
                    x[start + j] = torch.as_tensor(one_hot_outputs(o.predictions, n_labels))
            started = time.perf_counter()
            with quiet():
                inference.append_simulations(theta, x, proposal=proposal)
                estimator = inference.train(max_num_epochs=cfg.max_epochs, training_batch_size=min(cfg.batch, n),
                                            show_train_summary=False)
                posterior = inference.build_posterior(estimator)
            proposal = posterior.set_default_x(x_obs)
            sbi_seconds += time.perf_counter() - started
            simulations.append(n)
        started = time.perf_counter()
        if posterior is None:  # not even one round was affordable: prior draws, unchecked by any data
            theta = prior.sample((cfg.members,))
        else:
            theta = posterior.sample((cfg.members,), x=x_obs, show_progress_bars=False)
        members = [np.clip(t, -bound, bound).astype(np.float32) for t in theta.reshape(cfg.members, d).numpy()]
        sbi_seconds += time.perf_counter() - started
        dev_metric, curve = None, []
        if cfg.check_dev and base.budget.remaining >= len(members):
            dev_metric = score_set(base, members, None, "vote").metric
            curve = [(base.budget.calls, dev_metric)]
        extra = {"rounds": len(simulations), "simulations": simulations, "sbi_seconds": round(sbi_seconds, 1)}
        return set_result(self.name, base, members, [1.0] * len(members), "vote", train, dev_metric, curve, cfg,
                          extra)
