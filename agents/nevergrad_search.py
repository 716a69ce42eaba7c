"""Nevergrad optimizers as agents: any optimizer of Nevergrad's registry, by name, on subspace and discrete envs.

Nevergrad puts hundreds of derivative-free optimizers (CMA-ES variants, differential evolution,
particle swarms, (1+1) evolution strategies, and NGOpt, which picks one from the space, budget and
parallelism) behind one ask/tell interface: the natural set of baselines for BBT's hand-picked
CMA-ES. To make a comparison about the optimizer alone, the agent keeps BBT's schedule exactly: it
asks a whole population (``batch`` candidates; Nevergrad's ``num_workers``, so the optimizer knows
they are evaluated in parallel), scores it in ONE ``score_actions`` call (``batch`` API calls),
tells every loss (minus the reward), and every ``dev_every`` batches checks the recommendation and
the batch's best on dev; the best dev prompt is returned. The optimizer's own budget is the number of
train evaluations that schedule fits into the env's budget (NGOpt chooses by it).

Search spaces. Subspace envs: an ``ng.p.Array`` starting at z = 0 (BBT's start) and bounded by the
env's Box, with Nevergrad's step size for bounded arrays (each optimizer as its authors tuned it).
Discrete envs: ``ng.p.Choice(K, repetitions=L)``, one *unordered* categorical per prompt position.
The K candidates are n-grams with no meaningful distance between their indices, so an integer array
or a ``TransitionChoice`` (whose mutations move to neighbouring indices) would search an order that
does not exist; a ``Choice`` is what NGOpt recognises as categorical (it hands it to its discrete
optimizers), and continuous optimizers (CMA, DE, PSO) search its K softmax weights per position,
the relaxation BDPL's per-position distributions use too.

Determinism: the optimizers' draws and a Choice's softmax sampling come from the parametrization's
numpy RandomState, seeded with ``seed`` (the global numpy generator is never touched), so a seed
gives the same prompt.

Known failure (Nevergrad 1.0.12 with pycma 4, its issue #1690): the CMA family draws generations
of its own size (``CMA`` on a box picks an elitist variant: batch + 1), which straddle our batches;
from d = 300 pycma's TPA step-size rule then warns and, after some 10-25 generations, raises.
NGOpt picks a CMA-based optimizer on the 500-dim box, so it is hit too (not on discrete envs). An
optimizer error after calls were charged ends the search there (a RuntimeWarning, and
``optimizer_error`` / ``stopped_at_calls`` in ``Result.extra``) and the best dev prompt so far is
returned, so a run is never lost; an error before the first call is raised as it is.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, DevSelector, Result, TrainCurve, require
from promptgym.errors import ConfigError

#: a useful short list (what ``promptgym list --agent nevergrad`` names); any registered name works
SUGGESTED_OPTIMIZERS = ("NGOpt", "CMA", "TwoPointsDE", "PSO", "OnePlusOne", "TBPSA", "RandomSearch",
                        "DiscreteOnePlusOne")
INSTALL_HINT = "pip install 'promptgym[nevergrad]'"


def optimizer_registry() -> Any:
    """Nevergrad's optimizer registry (name -> optimizer class or configured factory), imported now."""
    try:
        import nevergrad as ng
    except ImportError:
        raise ConfigError(f"the nevergrad agent needs the nevergrad package: {INSTALL_HINT}") from None
    return ng.optimizers.registry


def close_matches(name: str, names: Any, n: int = 5) -> list[str]:
    """Registered names that look like ``name`` (case ignored, so ``ngopt`` finds NGOpt)."""
    lowered = {k.lower(): k for k in names}
    return [lowered[k] for k in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]


@dataclass
class NevergradConfig(AgentConfig):
    optimizer: str = "NGOpt"  # NGOpt, CMA, TwoPointsDE, PSO, OnePlusOne, TBPSA, RandomSearch, DiscreteOnePlusOne, ...
    batch: int = 20           # candidates asked per batch (num_workers), scored in one batched call (BBT's popsize)
    dev_every: int = 5        # batches between dev checks of the recommendation and the batch's best
    seed: int = 0             # seeds the env reset and the parametrization's RandomState (all the optimizer's draws)

    def validate(self) -> None:
        require(self.batch >= 1, f"NevergradConfig.batch must be >= 1, got {self.batch}")
        require(self.dev_every >= 1, f"NevergradConfig.dev_every must be >= 1, got {self.dev_every}")
        require(self.seed >= 0, f"NevergradConfig.seed must be >= 0, got {self.seed}")
        registry = optimizer_registry()
        if self.optimizer not in registry:
            near = close_matches(self.optimizer, registry)
            hint = f"close matches: {', '.join(near)}" if near else f"e.g. {', '.join(SUGGESTED_OPTIMIZERS)}"
            raise ConfigError(f"NevergradConfig.optimizer: {self.optimizer!r} is not a registered Nevergrad "
                              f"optimizer ({hint})")
        require(self.batch == 1 or not getattr(registry[self.optimizer], "no_parallelization", False),
                f"NevergradConfig.optimizer: {self.optimizer} evaluates one candidate at a time; use batch=1 "
                f"or a population optimizer (got batch={self.batch})")


def parametrization(space: gym.Space, seed: int) -> Any:
    """The Nevergrad search space of an env action space (see the module docstring), seeded."""
    import nevergrad as ng

    if isinstance(space, gym.spaces.Box):
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        param = ng.p.Array(init=np.clip(np.zeros(space.shape), low, high), lower=low, upper=high)
    elif isinstance(space, gym.spaces.MultiDiscrete):
        nvec = [int(k) for k in np.asarray(space.nvec).ravel()]
        if len(set(nvec)) == 1:
            param = ng.p.Choice(nvec[0], repetitions=len(nvec))
        else:
            param = ng.p.Tuple(*(ng.p.Choice(k) for k in nvec))
    else:
        raise ConfigError(f"the nevergrad agent searches Box or MultiDiscrete action spaces, not {space}")
    param.random_state = np.random.RandomState(seed)
    return param


def planned_batches(calls: int, batch: int, dev_every: int) -> int:
    """How many batches the schedule of :meth:`NevergradAgent.learn` runs in ``calls`` API calls (two dev
    checks every ``dev_every`` batches; fewer when a checked prompt was already scored on dev)."""
    used = n = 0
    while calls - used >= batch + 2:
        used += batch
        n += 1
        if n % dev_every == 0:
            used += 2
    return n


class NevergradAgent(ConfiguredAgent):
    """A Nevergrad optimizer asked a population per batched call (see the module docstring)."""

    name = "nevergrad"
    config_class = NevergradConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        registry = optimizer_registry()
        base = self.start(env)
        space = base.action_space
        param = parametrization(space, cfg.seed)
        budget = max(1, planned_batches(base.budget.remaining, cfg.batch, cfg.dev_every) * cfg.batch)
        try:
            opt = registry[cfg.optimizer](parametrization=param, budget=budget, num_workers=cfg.batch)
        except ImportError as exc:  # an optimizer wrapping another package: refused before any call
            raise missing_package(cfg.optimizer, exc) from None
        dev, train = DevSelector(env), TrainCurve()
        batches, failure = 0, None
        while base.budget.remaining >= cfg.batch + 2:
            try:
                cands = [opt.ask() for _ in range(cfg.batch)]
            except ImportError as exc:  # some import their package at the first ask, still before any call
                raise missing_package(cfg.optimizer, exc) from None
            except Exception as exc:
                if not batches:  # nothing charged yet: the error as it is
                    raise
                failure = exc
                break
            acts = [action_of(space, c.value) for c in cands]
            outs = base.score_actions(acts)
            rewards = [o.reward for o in outs]
            train.update(base.budget.calls, acts, rewards)
            batches += 1
            best = int(np.argmax(rewards))
            check = batches % cfg.dev_every == 0
            try:
                for cand, r in zip(cands, rewards):
                    opt.tell(cand, -float(r))
                recommended = action_of(space, opt.recommend().value) if check else None
            except Exception as exc:
                failure = exc
                dev.consider(acts[best], rewards[best])
                break
            if check:
                dev.consider(recommended)
                dev.consider(acts[best], rewards[best])
        extra: dict[str, Any] = {"batches": batches, "optimizer": cfg.optimizer, "optimizer_budget": budget}
        final = train.best_action
        if failure is None and batches:
            final = action_of(space, opt.recommend().value)
            if base.budget.remaining >= 1:
                dev.consider(final)
        elif failure is not None:
            extra.update(stopped(cfg.optimizer, failure, base.budget.calls))
        return dev.result(self.name, final, train, cfg, extra)


def stopped(optimizer: str, exc: Exception, calls: int) -> dict[str, Any]:
    """Why a search ended early, for Result.extra (and a warning): the optimizer itself failed after
    ``calls`` charged calls, so the best dev prompt so far is returned rather than losing the run. Nevergrad
    1.0.12's CMA family (NGOpt picks it on a 500-dim box) fails so under parallel asks (RuntimeError "Mean
    shift samples are expected but missing": its generations straddle the batches)."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    warnings.warn(f"nevergrad optimizer {optimizer} failed after {calls} calls ({reason}); the search stopped "
                  "there and returns the best dev prompt so far", RuntimeWarning, stacklevel=3)
    return {"optimizer_error": reason, "stopped_at_calls": int(calls)}


def missing_package(optimizer: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"Nevergrad optimizer {optimizer} needs a package that is not installed: {exc}")


def action_of(space: gym.Space, value: Any) -> np.ndarray:
    """An env action from a Nevergrad value: float32 z clipped to the Box, or int64 candidate indices."""
    if isinstance(space, gym.spaces.Box):
        return np.clip(np.asarray(value, dtype=np.float32).reshape(space.shape), space.low, space.high)
    return np.asarray(value, dtype=np.int64).reshape(space.shape)
