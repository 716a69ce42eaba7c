"""The live progress bar of a run: calls used / budget, best train reward and best dev metric.

It also shows the time left, estimated from the calls/s measured so far in this run (so it is
refined as the run goes): a first ``promptgym train`` at the default 8,000 calls takes about an
hour on a 2-core CPU, and the bar says so within the first few calls.

It is a callback (:mod:`promptgym.callbacks`) that the run driver hooks around the search, so it
follows any agent, built-in or a user's own, without the agent's cooperation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from promptgym.callbacks import Callback
from promptgym.envs.scoring import Outcome

#: calls timed before the whole run's wall time is estimated (the first call also pays warm-up)
ESTIMATE_AFTER = 5


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fmt(x: float | None, digits: int = 4) -> str:
    """A score for people: "-" for a missing or non-finite value."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


class LiveMonitor(Callback):
    """Follows the charged calls of a search (a callback) and keeps a rich progress bar up to date.

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
        self.enabled = enabled
        self.started = time.monotonic()
        self.calls_at_start = base.budget.calls
        self.estimate: str | None = None  # printed once, after the first few calls

    def estimate_line(self) -> str | None:
        """"about N min for the whole budget at M calls/s" once ``ESTIMATE_AFTER`` calls were timed."""
        done = self.base.budget.calls - self.calls_at_start
        seconds = time.monotonic() - self.started
        if done < min(ESTIMATE_AFTER, self.base.budget.max_calls) or seconds <= 0:
            return None
        rate = done / seconds
        left = self.base.budget.remaining / rate
        return (f"measured {rate:.2f} calls/s over the first {done} calls: the remaining "
                f"{self.base.budget.remaining:,} of {self.base.budget.max_calls:,} calls would take about "
                f"{_duration(left)} (the bar refines this as the run goes)")

    def on_call(self, split: str, outcomes: Sequence[Outcome]) -> None:
        if split == "train":
            self.best_train = max(self.best_train, *(o.reward for o in outcomes))
        else:
            self.best_dev = max(self.best_dev, *(o.metric for o in outcomes))
        self.progress.update(self.task, completed=self.base.budget.calls,
                             train=fmt(self.best_train), dev=fmt(self.best_dev))
        if self.estimate is None:
            self.estimate = self.estimate_line()
            if self.estimate is not None and self.enabled:
                self.progress.console.print(self.estimate)

    def on_learn_start(self, task: Any) -> None:
        self.progress.start()

    def on_learn_end(self) -> None:
        self.progress.update(self.task, completed=self.base.budget.calls)
        self.progress.stop()
