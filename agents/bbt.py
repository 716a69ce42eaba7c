"""BBT: black-box tuning (Sun et al., ICML 2022) with CMA-ES, for subspace envs.

CMA-ES (the ``cma`` package) searches ``z`` in the env's random subspace: population ``popsize``
(20, as BBT), ``sigma0`` 1 (BBT's default with its normal projection), bounds from the env's Box.
Each generation's population is scored in ONE batched call (popsize API calls) and CMA-ES is told
the negated rewards of exactly the points it asked for (the env scores float32 copies of them).
Every ``dev_every`` generations the distribution mean and the best train solution of the generation
are checked on dev; the best dev prompt is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import DevSelector, Result, TrainCurve, config_dict


@dataclass
class BBTConfig:
    popsize: int = 20
    sigma0: float = 1.0
    dev_every: int = 5
    seed: int = 0


class BBTAgent:
    name = "bbt"

    def __init__(self, config: BBTConfig | None = None) -> None:
        self.config = config or BBTConfig()

    def learn(self, env) -> Result:
        import cma

        cfg = self.config
        base = env.unwrapped
        env.reset(seed=cfg.seed)
        space = base.action_space
        d = space.shape[0]
        opts = {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9,
                "bounds": [float(space.low.min()), float(space.high.max())]}
        es = cma.CMAEvolutionStrategy(np.zeros(d), cfg.sigma0, opts)
        dev, train = DevSelector(env), TrainCurve()
        gen = 0
        while base.budget.remaining >= cfg.popsize + 2:
            asked = es.ask()
            sols = [np.clip(np.asarray(s, dtype=np.float32), space.low, space.high) for s in asked]
            outs = base.score_actions(sols)
            rewards = [o.reward for o in outs]
            train.update(base.budget.calls, sols, rewards)
            # tell the exact float64 points asked for: float32 copies break the mirrored pair that
            # pycma's TPA step-size rule (its default from d = 300) relies on
            es.tell(asked, [-r for r in rewards])
            gen += 1
            if gen % cfg.dev_every == 0:
                dev.consider(np.clip(es.mean, space.low, space.high).astype(np.float32))
                dev.consider(sols[int(np.argmax(rewards))], max(rewards))
        mean = np.clip(es.mean, space.low, space.high).astype(np.float32)
        dev.consider(mean)
        action = dev.best_action if dev.best_action is not None else mean
        return Result(self.name, np.asarray(action), base.prompt_text(action), train.best,
                      None if dev.best_action is None else float(dev.best_metric), base.budget.calls,
                      dev.curve, train.points, config=config_dict(cfg), extra={"generations": gen})
