"""Callbacks: watch (and stop) a prompt search call by call, as Stable-Baselines3's ``learn(..., callback=)``.

Why: progress bars, TensorBoard curves, user logging and early stopping all want the same thing, every
charged LM call as it happens, and none of them should need an agent's cooperation or a hand on the env's
internals. ``agent.learn(env, callback=cb)`` (every built-in agent, through :class:`~promptgym.agent.ConfiguredAgent`)
and ``promptgym.runner.run_agent(..., callback=cb)`` take one; :func:`hooked` is the single place that connects it to an
env for the length of a search (the run driver uses it for its own instruments too, and for agents whose
``learn`` takes no callback).

A callback sees each charged call after it is scored: ``on_call(split, outcomes)`` with the split ("train"
or "dev") and the batch's :class:`~promptgym.envs.scoring.Outcome` list. Returning ``False`` stops the
search: the env's budget closes at the calls used (:meth:`~promptgym.envs.budget.QueryBudget.stop`), so
every agent ends as it ends on a spent budget and returns its best prompt so far; nothing is charged after.
Calls replayed from a killed run's journal are shown to callbacks like live ones (they rebuild the same curves).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym

from promptgym.envs.scoring import Outcome
from promptgym.errors import ConfigError
from promptgym.task_view import AgentTask


class Callback:
    """Base class: override what you need; ``on_learn_start`` hands over the env's agent view (``env.unwrapped``)."""

    def on_learn_start(self, task: AgentTask) -> None:
        """Before the first call of a search (``task.budget`` holds the calls already used, e.g. by a resume)."""

    def on_call(self, split: str, outcomes: Sequence[Outcome]) -> bool | None:
        """After each charged call; return ``False`` to stop the search (``None``/``True``: go on)."""
        return None

    def on_learn_end(self) -> None:
        """After the search, whether it ended, stopped or raised."""


class CallbackList(Callback):
    """Several callbacks in order; the search stops if any of them asks to (all of them still see the call)."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_learn_start(self, task: AgentTask) -> None:
        for cb in self.callbacks:
            cb.on_learn_start(task)

    def on_call(self, split: str, outcomes: Sequence[Outcome]) -> bool | None:
        answers = [cb.on_call(split, outcomes) for cb in self.callbacks]
        return False if any(a is False for a in answers) else None

    def on_learn_end(self) -> None:
        for cb in reversed(self.callbacks):
            cb.on_learn_end()


class FunctionCallback(Callback):
    """A plain function ``fn(split, outcomes) -> bool | None`` as a callback (SB3 wraps functions alike)."""

    def __init__(self, fn: Callable[[str, Sequence[Outcome]], bool | None]) -> None:
        self.fn = fn

    def on_call(self, split: str, outcomes: Sequence[Outcome]) -> bool | None:
        return self.fn(split, outcomes)


CallbackLike = Callback | Callable[[str, Sequence[Outcome]], "bool | None"] | Sequence[Any] | None


def as_callback(callback: CallbackLike) -> Callback | None:
    """``callback`` as one :class:`Callback`: None stays None, a list becomes a :class:`CallbackList`, a
    function a :class:`FunctionCallback`; anything else is a one-line :class:`ConfigError`."""
    if callback is None or isinstance(callback, Callback):
        return callback
    if isinstance(callback, (list, tuple)):
        parts = [as_callback(c) for c in callback]
        return CallbackList([c for c in parts if c is not None])
    if callable(callback):
        return FunctionCallback(callback)
    raise ConfigError(f"a callback is a promptgym.callbacks.Callback, a function (split, outcomes) or a list of "
                      f"them, got {type(callback).__name__}")


@contextlib.contextmanager
def hooked(env: gym.Env, callback: CallbackLike) -> Iterator[Callback | None]:
    """Connect ``callback`` to ``env``'s charged calls for the ``with`` block: start, every call, end."""
    cb = as_callback(callback)
    if cb is None:
        yield None
        return
    task: Any = env.unwrapped  # the env itself: its listeners are not part of the agent's view
    cb.on_learn_start(task)

    def listener(split: str, outcomes: list[Outcome]) -> None:
        if cb.on_call(split, outcomes) is False:
            task.budget.stop()

    task.score_listeners.append(listener)
    try:
        yield cb
    finally:
        task.score_listeners.remove(listener)
        cb.on_learn_end()


def takes_callback(agent: Any) -> bool:
    """Whether ``agent.learn`` accepts ``callback=`` (the built-in agents do; a minimal custom agent may not)."""
    try:
        params = inspect.signature(agent.learn).parameters
    except (TypeError, ValueError):
        return False
    return "callback" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
