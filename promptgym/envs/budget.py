"""The query budget: the one shared contract of the benchmark.

One API call = one prompt scored on one batch of examples (BBT's and BDPL's unit). The meter also
counts examples and tokens, for users whose real API bills by token. A budget belongs to an
environment's *lifetime*, not to an episode: ``reset()`` never refills it. Every LM query made
during tuning is charged, training batches and dev evaluations alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from promptgym.errors import BudgetExhausted, ConfigError

DEFAULT_BUDGET = 8000  # API calls, as in BBT and BDPL


@dataclass
class QueryBudget:
    """Counts LM usage and refuses calls beyond ``max_calls``."""

    max_calls: int = DEFAULT_BUDGET
    calls: int = 0
    examples: int = 0
    tokens: int = 0
    train_calls: int = 0
    dev_calls: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_calls, bool) or not isinstance(self.max_calls, (int, np.integer)):
            raise ConfigError(f"budget must be a whole number of API calls, got {self.max_calls!r}")
        if self.max_calls < 1:
            raise ConfigError(f"budget must be at least 1 API call, got {self.max_calls!r}")
        self.max_calls = int(self.max_calls)

    @property
    def remaining(self) -> int:
        return self.max_calls - self.calls

    @property
    def exhausted(self) -> bool:
        return self.calls >= self.max_calls

    def require(self, n_calls: int) -> None:
        """Raise :class:`BudgetExhausted` *before* any LM work if ``n_calls`` do not fit."""
        if n_calls > self.remaining:
            if self.remaining == 0:
                raise BudgetExhausted(
                    f"the query budget of {self.max_calls} API calls is spent; create a new environment "
                    f"(or pass a larger budget=...) to score more prompts"
                )
            raise BudgetExhausted(
                f"{n_calls} API calls requested but only {self.remaining} of {self.max_calls} remain; "
                f"score at most {self.remaining} prompts"
            )

    def charge(self, n_calls: int, n_examples: int, n_tokens: int, split: str = "train") -> None:
        self.require(n_calls)
        self.calls += n_calls
        self.examples += n_examples
        self.tokens += n_tokens
        if split == "dev":
            self.dev_calls += n_calls
        else:
            self.train_calls += n_calls

    def stop(self) -> None:
        """End the search at the calls used: no further call fits (a callback asked to stop early)."""
        self.max_calls = self.calls

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BudgetView:
    """A live, read-only view of a :class:`QueryBudget`, as carried in ``info["budget"]``.

    Why a view and not numbers: a budget outlives ``reset()``, so the calls used after "reset with
    seed s, then step a" differ between two such runs; Gymnasium's ``check_env`` nevertheless (rightly)
    requires equal infos for equal seeds and actions. The view reads the current counters, and two
    views are equal when they view the same meter. Call ``snapshot()`` to keep the numbers of a step.
    """

    __slots__ = ("_budget",)

    def __init__(self, budget: QueryBudget) -> None:
        self._budget = budget

    @property
    def calls_used(self) -> int:
        return self._budget.calls

    @property
    def calls_left(self) -> int:
        return self._budget.remaining

    @property
    def max_calls(self) -> int:
        return self._budget.max_calls

    def snapshot(self) -> dict[str, int]:
        return self._budget.as_dict()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BudgetView) and other._budget is self._budget

    def __hash__(self) -> int:
        return id(self._budget)

    def __repr__(self) -> str:
        return f"BudgetView(calls_used={self.calls_used}, calls_left={self.calls_left}, max_calls={self.max_calls})"
