"""Stable-Baselines3 algorithms as prompt-tuning agents, under the same budget as every agent.

One class per algorithm (:class:`PPOAgent`, :class:`A2CAgent`, :class:`SACAgent`, :class:`TD3Agent`,
:class:`DDPGAgent`, :class:`DQNAgent`; all :class:`SB3Agent` with one :class:`SB3Config`) trains
that SB3 algorithm where its action space fits the env: PPO and A2C on every kind (MultiDiscrete
discrete prompts, Discrete tokenwise steps, Box subspace vectors), SAC / TD3 / DDPG on subspace envs
(Box only), DQN on tokenwise envs (Discrete only). A mismatch raises an ``IncompatibleAgentError``
that names a fitting env kind or algorithm, before any call is spent.

The budget. SB3 counts *timesteps*; the benchmark counts *API calls*. One env step costs at most
one call (one-shot envs: every step; tokenwise envs: the last step of each episode), so a callback
stops ``learn`` cleanly as soon as fewer than ``reserve + 1`` calls remain; the ``reserve`` (2)
pays for the final dev checks. ``total_timesteps=None`` (default) asks SB3 for as many steps as the
remaining budget could pay for, so the callback, not SB3, ends training. User callbacks
(``callbacks=``) and SB3's logger work as usual: they are appended to the budget callback.

The final prompt. A ``PromptRecorder`` wrapper records every prompt scored in training with its
reward. At the end, the policy's deterministic prompt (``model.predict(obs, deterministic=True)``
at the reset observation; for tokenwise envs a deterministic rollout of L steps, with the
observation built as the env documents it, so that no train call is spent) and the best-train
prompt are checked on dev, as is the deterministic prompt every ``dev_every`` calls during
training; the best on dev is returned (:class:`promptgym.agent.DevSelector`).

Defaults for tiny budgets (SB3's own defaults assume millions of cheap steps):

* PPO: a rollout of 32 scored prompts (``n_steps`` = 32, or 32 x L steps on tokenwise envs), one
  minibatch per epoch (two on tokenwise), 10 epochs, learning rate 3e-3 (SB3: 3e-4). With
  SB3's 2048-step rollout there would be no update at all within a 1,000-call budget; with 32,
  a 1,000-call run makes ~30 updates.
* A2C: ``n_steps`` 8 (x L on tokenwise), learning rate 3e-3, advantages normalised (the
  cross-entropy rewards of different prompts differ by a few hundredths of a nat), entropy bonus
  0.01 (without it the tokenwise policy collapsed onto one candidate within ~100 calls).
* SAC / TD3 / DDPG: learning starts after 20 steps (SB3: 100), minibatch 32, learning rate 1e-3.
  SAC's entropy coefficient is fixed at 0.01: SB3's automatic tuning kept actions spread over the
  whole box for the entire run of a few hundred calls (no better than random search on a synthetic
  task where PPO and CMA-ES found the optimum).
* DQN: learning starts after 10 episodes, exploration decays over the first half of the run.
* ``gamma`` 1: episodes are short and finite, and a prompt is only as good as its final score.

Everything can be overridden: the named fields of :class:`SB3Config`, ``algo_kwargs`` for any
other constructor argument of the SB3 class, and ``policy_kwargs``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, DevSelector, Result, TrainCurve, config_dict, require
from promptgym.errors import ConfigError, IncompatibleAgentError

#: algorithm name -> (module attribute of stable_baselines3, action spaces it supports)
ALGORITHMS: dict[str, tuple[str, tuple[type, ...]]] = {
    "ppo": ("PPO", (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)),
    "a2c": ("A2C", (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)),
    "sac": ("SAC", (gym.spaces.Box,)),
    "td3": ("TD3", (gym.spaces.Box,)),
    "ddpg": ("DDPG", (gym.spaces.Box,)),
    "dqn": ("DQN", (gym.spaces.Discrete,)),
}
ON_POLICY = ("ppo", "a2c")
ROLLOUT_PROMPTS = {"ppo": 32, "a2c": 8}  # scored prompts per on-policy rollout


@dataclass
class SB3Config(AgentConfig):
    """Hyper-parameters of an SB3 agent; None picks the tiny-budget default of the module docstring."""

    total_timesteps: int | None = None   # None: as many steps as the remaining budget can pay for
    n_steps: int | None = None           # on-policy rollout length in env steps
    batch_size: int | None = None        # PPO / off-policy minibatch
    n_epochs: int | None = None          # PPO epochs per rollout
    learning_rate: float | None = None   # None: 3e-3 on-policy, 1e-3 off-policy, SB3's for DQN
    gamma: float = 1.0                   # discount; 1: a prompt is only as good as its final score
    learning_starts: int | None = None   # off-policy algorithms
    policy: str = "MlpPolicy"            # SB3 policy name
    policy_kwargs: dict | None = None    # passed to the policy (e.g. net_arch)
    algo_kwargs: dict = field(default_factory=dict)  # any other argument of the SB3 class
    dev_every: int = 100                 # train calls between dev checks of the deterministic prompt (0: end only)
    reserve: int = 2                     # calls kept for the final dev checks
    torch_threads: int | None = 1        # threads for SB3's own networks (None: leave torch's setting)
    seed: int = 0                        # seeds the env reset and SB3 (networks, exploration)
    verbose: int = 0                     # SB3's verbosity (0, 1 or 2)

    def validate(self) -> None:
        minima = {"total_timesteps": 0, "n_steps": 1, "batch_size": 1, "n_epochs": 1, "learning_starts": 0,
                  "dev_every": 0, "torch_threads": 1, "seed": 0, "verbose": 0}
        for name, minimum in minima.items():
            value = getattr(self, name)
            require(value is None or value >= minimum, f"SB3Config.{name} must be >= {minimum}, got {value}")
        require(self.reserve >= 1, f"SB3Config.reserve must be >= 1 (the final prompt is chosen on dev), "
                                   f"got {self.reserve}")
        require(self.learning_rate is None or self.learning_rate > 0,
                f"SB3Config.learning_rate must be > 0 or None, got {self.learning_rate}")
        require(0 <= self.gamma <= 1, f"SB3Config.gamma must be in [0, 1], got {self.gamma}")
        require(bool(self.policy), "SB3Config.policy must name an SB3 policy, got ''")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous setting.

    Why: SB3's policies are tiny MLPs. On our 2-core machines their ops took 10 ms each with torch's
    2 threads when another process was busy, against 0.5 ms on one thread (thread hand-offs, not
    arithmetic). SB3's updates therefore run on ``SB3Config.torch_threads`` (1) while every LM
    call inside ``learn`` (env steps, dev checks) gets the process's own setting back.
    """
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_algorithm(algo: str, action_space: gym.Space) -> None:
    """Raise ``IncompatibleAgentError`` unless SB3's ``algo`` supports ``action_space``; say what would fit."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown SB3 algorithm {algo!r}; known: {', '.join(ALGORITHMS)}")
    supported = ALGORITHMS[algo][1]
    if isinstance(action_space, supported):
        return
    fits = [name for name, (_, spaces) in ALGORITHMS.items() if isinstance(action_space, spaces)]
    kinds = {gym.spaces.Box: "subspace envs (Prompt<Task>-Subspace-v0)",
             gym.spaces.Discrete: "tokenwise envs (Prompt<Task>-Tokenwise-v0)",
             gym.spaces.MultiDiscrete: "discrete envs (Prompt<Task>-v0)"}
    where = " or ".join(kinds[s] for s in supported if s in kinds)
    raise IncompatibleAgentError(
        f"{algo.upper()} needs a {'/'.join(s.__name__ for s in supported)} action space but this env has "
        f"{action_space}: use {algo} on {where}, or on this env one of: {', '.join(fits)}")


class PromptRecorder(gym.Wrapper):
    """Records every prompt scored through ``step`` (full prompt, reward, calls used); keeps the best.

    A step scored a prompt when its ``info`` carries the outcome (``"accuracy"``). On tokenwise envs
    the full prompt is the episode's L actions, collected here.
    """

    def __init__(self, env: gym.Env, lm_threads: int | None = None) -> None:
        super().__init__(env)
        self.lm_threads = lm_threads  # torch threads for the LM call of a step (see ``torch_threads``)
        self._tokenwise = env.unwrapped.kind == "tokenwise"
        self._tokens: list[int] = []
        self.train = TrainCurve()   # best-so-far train reward (and its prompt) vs. calls used
        self.episodes = 0

    def reset(self, **kwargs: Any):
        self._tokens = []
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        with torch_threads(self.lm_threads):
            obs, reward, terminated, truncated, info = self.env.step(action)
        if self._tokenwise:
            self._tokens.append(int(np.asarray(action).reshape(-1)[0]))
        if "accuracy" in info:
            full = np.asarray(self._tokens if self._tokenwise else action).copy()
            self.train.update(self.env.unwrapped.budget.calls, [full], [float(reward)])
        if terminated or truncated:
            self.episodes += 1
        return obs, reward, terminated, truncated, info


def deterministic_prompt(model: Any, base: Any, reset_obs: np.ndarray) -> np.ndarray:
    """The policy's deterministic full prompt, computed without spending a call.

    One-shot envs: the action at the reset observation. Tokenwise envs: a rollout in which the
    observation is the prompt so far with K marking unchosen positions (the env's documented layout).
    """
    if base.kind != "tokenwise":
        action, _ = model.predict(reset_obs, deterministic=True)
        return np.asarray(action)
    obs = np.full(base.prompt_length, base.num_candidates, dtype=np.int64)
    for t in range(base.prompt_length):
        action, _ = model.predict(obs, deterministic=True)
        obs[t] = int(np.asarray(action).reshape(-1)[0])
    return obs.copy()


def _budget_callback(cfg: SB3Config, base: Any, dev: DevSelector, reset_obs: np.ndarray, lm_threads: int):
    from stable_baselines3.common.callbacks import BaseCallback

    class BudgetCallback(BaseCallback):
        """Returns False (SB3 stops) once the next step would eat into the calls reserved for the end.

        Also checks the deterministic prompt on dev every ``dev_every`` train calls, if that fits.
        """

        def __init__(self) -> None:
            super().__init__()
            self.next_dev = cfg.dev_every if cfg.dev_every > 0 else None

        def _on_step(self) -> bool:
            budget = base.budget
            if self.next_dev is not None and budget.train_calls >= self.next_dev:
                self.next_dev = budget.train_calls + cfg.dev_every
                if budget.remaining > cfg.reserve + 1:
                    prompt = deterministic_prompt(self.model, base, reset_obs)
                    with torch_threads(lm_threads):
                        metric = dev.consider(prompt)
                    if metric is not None:
                        self.logger.record("promptgym/dev_metric", metric)
            self.logger.record("promptgym/calls_used", budget.calls)
            return budget.remaining > cfg.reserve

    return BudgetCallback()


class SB3Agent(ConfiguredAgent):
    """Train a Stable-Baselines3 algorithm on a prompt env under its query budget.

    Use a subclass (``PPOAgent(SB3Config(n_steps=16))``); its ``algo`` names the algorithm in
    :data:`ALGORITHMS`. ``callbacks`` are SB3 callbacks run alongside the budget callback. After
    ``learn`` the trained SB3 model is ``agent.model`` (save it, inspect its logger, keep training
    it on a new env with a fresh budget).
    """

    algo: ClassVar[str] = ""
    config_class = SB3Config

    def __init__(self, config: SB3Config | None = None, callbacks: Sequence[Any] | None = None) -> None:
        if self.algo not in ALGORITHMS:
            raise ConfigError(f"{type(self).__name__} names no SB3 algorithm: use one of the subclasses "
                              "PPOAgent, A2CAgent, SACAgent, TD3Agent, DDPGAgent, DQNAgent")
        super().__init__(config)
        self.callbacks = list(callbacks or [])
        self.model: Any = None
        self.tracking_dir: Path | None = None

    def use_tracking(self, logdir: Path) -> None:
        """Send SB3's own logger (losses, entropy, rollout statistics) to ``logdir/sb3`` as TensorBoard
        events, beside the run's promptgym curves (``promptgym.tracking``); its x axis is SB3's timesteps."""
        self.tracking_dir = Path(logdir) / "sb3"

    def algo_kwargs(self, base: Any) -> dict[str, Any]:
        """Constructor arguments of the SB3 class: tiny-budget defaults, then the config's choices."""
        cfg = self.config
        steps_per_prompt = base.prompt_length if base.kind == "tokenwise" else 1
        kw: dict[str, Any] = {"gamma": cfg.gamma}
        if self.algo == "ppo":
            n = cfg.n_steps or ROLLOUT_PROMPTS["ppo"] * steps_per_prompt
            kw.update(n_steps=n, batch_size=cfg.batch_size or max(1, n // (2 if steps_per_prompt > 1 else 1)),
                      n_epochs=cfg.n_epochs or 10, learning_rate=cfg.learning_rate or 3e-3)
        elif self.algo == "a2c":
            kw.update(n_steps=cfg.n_steps or ROLLOUT_PROMPTS["a2c"] * steps_per_prompt,
                      learning_rate=cfg.learning_rate or 3e-3, normalize_advantage=True, ent_coef=0.01)
        elif self.algo == "dqn":
            kw.update(learning_starts=cfg.learning_starts if cfg.learning_starts is not None else 10 * steps_per_prompt,
                      batch_size=cfg.batch_size or 32, exploration_fraction=0.5,
                      target_update_interval=10 * steps_per_prompt, train_freq=1)
            if cfg.learning_rate:
                kw["learning_rate"] = cfg.learning_rate
        else:  # sac, td3, ddpg
            kw.update(learning_starts=cfg.learning_starts if cfg.learning_starts is not None else 20,
                      batch_size=cfg.batch_size or 32, learning_rate=cfg.learning_rate or 1e-3)
            if self.algo == "sac":
                kw["ent_coef"] = 0.01
        if cfg.policy_kwargs is not None:
            kw["policy_kwargs"] = dict(cfg.policy_kwargs)
        kw.update(cfg.algo_kwargs)
        return kw

    def search(self, env: gym.Env) -> Result:
        import stable_baselines3
        import torch
        from stable_baselines3.common.callbacks import CallbackList

        cfg = self.config
        base = env.unwrapped
        check_algorithm(self.algo, base.action_space)
        lm_threads = torch.get_num_threads()
        recorder = PromptRecorder(env, lm_threads if cfg.torch_threads is not None else None)
        # not self.start(env): the policy needs the reset observation, and the recorder its reset
        reset_obs, _ = recorder.reset(seed=cfg.seed)
        steps_per_prompt = base.prompt_length if base.kind == "tokenwise" else 1
        affordable = max(0, base.budget.remaining - cfg.reserve) * steps_per_prompt
        total = cfg.total_timesteps if cfg.total_timesteps is not None else affordable
        cls = getattr(stable_baselines3, ALGORITHMS[self.algo][0])
        with torch_threads(cfg.torch_threads):
            self.model = cls(cfg.policy, recorder, seed=cfg.seed, device="cpu", verbose=cfg.verbose,
                             **self.algo_kwargs(base))
            if self.tracking_dir is not None:
                from stable_baselines3.common.logger import configure

                formats = ["stdout", "tensorboard"] if cfg.verbose else ["tensorboard"]
                self.model.set_logger(configure(str(self.tracking_dir), formats))
            dev = DevSelector(env)
            if total > 0 and base.budget.remaining > cfg.reserve:
                budget_stop = _budget_callback(cfg, base, dev, reset_obs, lm_threads)
                self.model.learn(total_timesteps=int(total), callback=CallbackList([budget_stop, *self.callbacks]))
            final = deterministic_prompt(self.model, base, reset_obs)
        dev.consider(final)
        best_train = recorder.train.best_action
        if best_train is not None and not np.array_equal(best_train, final):
            dev.consider(best_train, recorder.train.best)
        return dev.result(self.name, final, recorder.train, {"algo": self.algo, **config_dict(cfg)},
                          {"timesteps": int(self.model.num_timesteps), "episodes": recorder.episodes,
                           "deterministic_prompt": final.tolist(), "sb3_kwargs": _jsonable(self.algo_kwargs(base))})


def _algorithm_agent(algo: str) -> type[SB3Agent]:
    """The agent class of one SB3 algorithm: a named subclass whose ``name`` and ``algo`` are ``algo``."""
    return type(f"{algo.upper()}Agent", (SB3Agent,), {"name": algo, "algo": algo, "__module__": __name__,
                                                      "__doc__": f"Stable-Baselines3 {algo.upper()} (see the module)."})


PPOAgent, A2CAgent, SACAgent, TD3Agent, DDPGAgent, DQNAgent = map(_algorithm_agent,
                                                                  ("ppo", "a2c", "sac", "td3", "ddpg", "dqn"))


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else repr(v) for k, v in d.items()}
