"""Snapshot ensemble: the best distinct dev-checked prompts of ONE BBT search, each calibrated.

A variant of Shen et al.'s prompt ensembles made for a budget their recipe was not: the reference
ensemble runs K independent CMA-ES searches of 6,000 evaluations each; at the lite tier's 1,000
calls K shares of ~200 calls each never leave the weak template's plateau (BBT's own dev curve
leaves chance only after 300-600 calls). Here the whole budget goes to one search, exactly BBT's
(:func:`agents.bbt.cma_search`: popsize 20, ``sigma0`` 1, the mean and the generation's best
checked on dev every ``dev_every`` generations), and the set is made of what that search already
paid for: the ``members`` dev-checked prompts with the best dev metric (ties to the better dev
reward), distinct points of one trajectory (means and generation winners at different times).

Each member gets its own label bias (the calibration of the calibrated template, one bias per
label), fitted where ``calibrate_on`` says: ``"train"`` on the 32 train rows the search tuned on
(in-sample for the prompt; one charged call per member, reserved before the search), ``"dev"`` on
the dev rows the member was selected on (free: those outcomes are already paid for), ``"both"``
on the two together (64 rows; the train call as for "train"), ``"none"`` no bias. Members predict
by the mean of their calibrated label distributions ("mean").

The Result's dev metric is the combined set's on the dev rows its members were chosen on: it is
*selected-on* (optimistic), marked ``extra["dev_metric_selected_on"] = True``; the dev split is
fixed, so no fresh dev rows exist to check it on. Member 0 is BBT's own final prompt (its best dev
prompt), so with ``members=1`` and ``calibrate_on="none"`` this is BBT.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gymnasium as gym
import numpy as np

from agents.bbt import cma_search, require_cma_settings
from agents.prompt_sets import set_result
from promptgym.agent import AgentConfig, DevSelector, PromptSetAgent, Result, TrainCurve, require
from promptgym.calibration import fit_label_bias
from promptgym.errors import IncompatibleAgentError
from promptgym.members import combine_members
from promptgym.metrics import compute_metric

#: where a member's label bias is fitted (see the module docstring)
CALIBRATE_ON = ("none", "train", "dev", "both")


@dataclass
class SnapshotConfig(AgentConfig):
    members: int = 5              # best distinct dev-checked prompts of the one search kept as the set
    popsize: int = 20             # CMA-ES population (BBT's)
    sigma0: float = 1.0           # CMA-ES initial step size in z (BBT's)
    dev_every: int = 5            # generations between dev checks of the mean and the generation's best (BBT's)
    calibrate_on: str = "train"   # where each member's label bias is fitted: none, train, dev or both
    seed: int = 0                 # seeds the env reset and CMA-ES (with seed + 1, as BBT)

    def validate(self) -> None:
        require(self.members >= 1, f"SnapshotConfig.members must be >= 1, got {self.members}")
        require_cma_settings(self)
        require(self.calibrate_on in CALIBRATE_ON,
                f"SnapshotConfig.calibrate_on must be one of {CALIBRATE_ON}, got {self.calibrate_on!r}")
        require(self.seed >= 0, f"SnapshotConfig.seed must be >= 0, got {self.seed}")


def pick_members(checked: list[tuple[np.ndarray, object]], k: int) -> list[tuple[np.ndarray, object]]:
    """The ``k`` distinct ``(action, dev outcome)`` pairs with the best (dev metric, dev reward), best first."""
    seen: set[bytes] = set()
    distinct = []
    for action, out in checked:
        key = np.asarray(action, dtype=np.float32).tobytes()
        if key not in seen:
            seen.add(key)
            distinct.append((action, out))
    # stable sort: among equal (metric, reward), the earlier check first
    order = sorted(range(len(distinct)), key=lambda i: (-distinct[i][1].metric, -distinct[i][1].reward, i))
    return [distinct[i] for i in order[:k]]


def member_bias(train_out: object | None, dev_out: object, where: str) -> np.ndarray | None:
    """One member's label bias fitted on its train outcome, its dev outcome or both (None for "none")."""
    if where == "none":
        return None
    parts = {"train": [train_out], "dev": [dev_out], "both": [train_out, dev_out]}[where]
    lp = np.concatenate([np.asarray(o.label_logprobs, dtype=np.float64) for o in parts])
    labels = np.concatenate([np.asarray(o.labels) for o in parts])
    return fit_label_bias(lp, labels)


class SnapshotAgent(PromptSetAgent):
    """One BBT search; its best distinct dev-checked prompts, each with its own label bias (see the module)."""

    name = "snapshot"
    config_class = SnapshotConfig

    def search(self, env: gym.Env) -> Result:
        cfg = self.config
        base = self.start(env)
        if base.reward_kind == "label_only":
            raise IncompatibleAgentError("snapshot needs label log-probabilities; the env uses reward='label_only'")
        needs_train = cfg.calibrate_on in ("train", "both")
        reserve = cfg.members if needs_train else 0
        dev, train = DevSelector(env), TrainCurve()
        mean, gen = cma_search(base, dev, train, cfg.popsize, cfg.sigma0, cfg.dev_every, cfg.seed + 1,
                               max(0, base.budget.remaining - reserve))
        if not dev.checked and base.budget.remaining >= 1 + reserve:
            dev.consider(mean)
        if not dev.checked:  # not even one dev check was affordable: BBT's fallback, the last mean, unbiased
            return set_result(self.name, base, [mean], [1.0], "mean", train, None, [], cfg,
                              {"generations": gen, "dev_metric_selected_on": False})
        chosen = pick_members(dev.checked, cfg.members)
        actions = [np.asarray(a, dtype=np.float32) for a, _ in chosen]
        dev_outs = [o for _, o in chosen]
        train_outs: list = [None] * len(actions)
        where = cfg.calibrate_on
        if needs_train:
            if base.budget.remaining >= len(actions):
                train_outs = base.score_actions(actions, split="train")
            else:  # cannot happen with the reserve; refit on what is paid for rather than overspend
                where = "dev"
        biases = [member_bias(t, d, where) for t, d in zip(train_outs, dev_outs)]
        bias = None if where == "none" else np.stack(biases).astype(np.float32)
        scores = np.stack([np.asarray(o.label_logprobs, dtype=np.float64) for o in dev_outs])
        probs = combine_members(scores, None, "mean", bias)
        labels = np.asarray(dev_outs[0].labels)
        dev_metric = float(compute_metric(base.spec_task.metric, labels, np.argmax(probs, axis=1)))
        curve = list(dev.curve) + [(base.budget.calls, dev_metric)]
        extra = {"generations": gen, "calibrate_on": where, "member_dev_metrics": [float(o.metric) for o in dev_outs],
                 "dev_checks": len(dev.checked), "dev_metric_selected_on": True}
        result = set_result(self.name, base, actions, [1.0] * len(actions), "mean", train, dev_metric, curve, cfg,
                            extra)
        return result if bias is None else replace(result, label_bias=bias)
