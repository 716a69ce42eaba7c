"""SB3-style callbacks (promptgym.callbacks): they see every charged call, can stop a search early without
a call charged after the stop, reach agents that take no callback, and refuse what is not a callback."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import promptgym
from promptgym.agent import DevSelector, Result, TrainCurve
from promptgym.callbacks import Callback, CallbackList, as_callback, hooked, takes_callback
from promptgym.errors import ConfigError
from promptgym.runner import run_agent

TINY = {"model": "tiny-random-causal", "dtype": "float32"}


class Recorder(Callback):
    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[str] = []
        self.calls = 0
        self.stop_after = stop_after
        self.seen_budget: list[int] = []

    def on_learn_start(self, task) -> None:
        self.events.append("start")
        self.task = task

    def on_call(self, split, outcomes):
        self.calls += len(outcomes)
        self.events.append(split)
        self.seen_budget.append(self.task.budget.calls)
        if self.stop_after is not None and self.calls >= self.stop_after:
            return False
        return None

    def on_learn_end(self) -> None:
        self.events.append("end")


def test_a_callback_sees_every_charged_call_of_a_built_in_agent():
    env = gym.make("PromptSST2-Subspace-v0", budget=60, intrinsic_dim=8, **TINY)
    rec = Recorder()
    result = promptgym.make_agent("bbt", popsize=6, seed=1).learn(env, callback=rec)
    budget = env.unwrapped.budget
    assert rec.calls == budget.calls == result.calls_used > 40
    assert rec.events[0] == "start" and rec.events[-1] == "end"
    assert {"train", "dev"} <= set(rec.events)
    assert rec.seen_budget == sorted(rec.seen_budget)  # called after each charge, in order
    assert env.unwrapped.score_listeners == []  # unhooked at the end


def test_returning_false_stops_the_search_and_nothing_is_charged_after():
    env = gym.make("PromptSST2-v0", budget=200, num_candidates=20, **TINY)
    rec = Recorder(stop_after=30)
    result = promptgym.make_agent("random", batch=10, seed=3).learn(env, callback=rec)
    used = env.unwrapped.budget.calls
    assert 30 <= used < 30 + 10 + 1  # the batch that crossed 30 finishes; nothing after it
    assert rec.calls == used and result.calls_used == used
    assert result.action is not None and len(result.prompt_text) > 0  # the best prompt so far


def test_the_run_driver_hooks_a_callback_around_an_agent_that_takes_none():
    class Bare:
        name = "bare"

        def learn(self, env):
            env.reset(seed=0)
            base = env.unwrapped
            dev, train = DevSelector(env), TrainCurve()
            actions = [env.action_space.sample() for _ in range(5)]
            rewards = [o.reward for o in base.score_actions(actions)]
            train.update(base.budget.calls, actions, rewards)
            dev.consider(actions[int(np.argmax(rewards))])
            return dev.result(self.name, actions[0], train, None)

    assert not takes_callback(Bare()) and takes_callback(promptgym.make_agent("random"))
    seen: list[str] = []
    run = run_agent("PromptSST2-v0", Bare(), budget=20, env_kwargs={"num_candidates": 20}, model=TINY["model"],
                    dtype="float32", progress=False, callback=lambda split, outs: seen.extend([split] * len(outs)))
    assert isinstance(run.result, Result)
    assert seen == ["train"] * 5 + ["dev"]


def test_stopping_through_the_run_driver_keeps_calibration_calls():
    seen: list[str] = []

    def stop_at_first_dev(split, outs):
        seen.extend([split] * len(outs))
        return False if split == "dev" else None

    run = run_agent("PromptSST2-Subspace-v0", "bbt", budget=80, env_kwargs={"intrinsic_dim": 8},
                    agent_kwargs={"popsize": 4}, model=TINY["model"], dtype="float32", progress=False,
                    calibrate=True, callback=stop_at_first_dev)
    used = run.env.unwrapped.budget.calls
    assert used < 40 and 1 <= seen.count("dev") <= 2  # stopped at the first dev check
    assert run.result.label_bias is not None  # calibration still had its reserved call
    assert seen[-1] == "train" and used == len(seen)  # calibration's train call was seen too


def test_callbacks_compose_and_bad_ones_are_refused():
    a, b = Recorder(), Recorder(stop_after=1)
    both = as_callback([a, b])
    assert isinstance(both, CallbackList)
    env = gym.make("PromptSST2-v0", budget=50, num_candidates=20, **TINY)
    with hooked(env, both):
        env.unwrapped.score_actions([env.action_space.sample() for _ in range(3)])
    assert a.calls == b.calls == 3 and a.events == ["start", "train", "end"]
    assert env.unwrapped.budget.remaining == 0  # b asked to stop: no further call fits
    with pytest.raises(ConfigError, match="a callback is"):
        as_callback(42)
    with pytest.raises(ConfigError, match="a callback is"):
        run_agent("PromptSST2-v0", "random", budget=10, model=TINY["model"], callback="print")
