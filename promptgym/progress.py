"""The live progress bar of a run: calls used / budget, best train reward and best dev metric.

It also shows the time left, estimated from the calls/s measured so far in this run (so it is
refined as the run goes): a first ``promptgym train`` at the default 8,000 calls takes about an
hour on a 2-core CPU, and the bar says so within the first few calls.

It listens to the env's charged scorings (``PromptEnvBase.score_listeners``), so it follows any
agent, built-in or a user's own, without the agent's cooperation.
"""

from __future__ import annotations

import math
from typing import Any

from promptgym.envs.scoring import Outcome


def fmt(x: float | None, digits: int = 4) -> str:
    """A score for people: "-" for a missing or non-finite value."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


class LiveMonitor:
    """Listens to the env's charged scorings and keeps a rich progress bar up to date.

    :param base: the unwrapped env
    :param label: the bar's description
    :param enabled: False keeps the bar hidden (tests, scripts that log elsewhere)
    """

    def __init__(self, base: Any, label: str, enabled: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.base = base
        self.best_train = -math.inf
        self.best_dev = -math.inf
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                                 MofNCompleteColumn(), TextColumn("calls  best train {task.fields[train]}  "
                                                                  "best dev {task.fields[dev]}"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 disable=not enabled)
        self.task = self.progress.add_task(label, total=base.budget.max_calls, train="-", dev="-")

    def __call__(self, split: str, outcomes: list[Outcome]) -> None:
        if split == "train":
            self.best_train = max(self.best_train, *(o.reward for o in outcomes))
        else:
            self.best_dev = max(self.best_dev, *(o.metric for o in outcomes))
        self.progress.update(self.task, completed=self.base.budget.calls,
                             train=fmt(self.best_train), dev=fmt(self.best_dev))

    def __enter__(self) -> LiveMonitor:
        self.progress.start()
        self.base.score_listeners.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.base.score_listeners.remove(self)
        self.progress.update(self.task, completed=self.base.budget.calls)
        self.progress.stop()
