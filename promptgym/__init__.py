"""promptgym: Gymnasium environments for black-box prompt tuning of frozen language models.

``import promptgym`` registers every env id (``Prompt<Task>-v0``, ``-Subspace-v0``, ``-Tokenwise-v0``)
and every built-in agent; ``gym.make("promptgym:PromptSST2-v0")`` works without a prior import.
``promptgym.make_agent("bbt", popsize=20)`` builds a registered agent and
``promptgym.register_agent(name, "module:Class")`` adds your own.
"""

__version__ = "0.1.0"

from promptgym.envs.registration import register_all as _register_all  # noqa: E402

_register_all()

from promptgym.agent import (  # noqa: E402
    Agent,
    AgentConfig,
    DevSelector,
    Result,
    TrainCurve,
    check_compatible,
    make_agent,
    register_agent,
)
from promptgym.envs.budget import QueryBudget  # noqa: E402
from promptgym.errors import BudgetExhausted, ConfigError, InvalidActionError, PromptGymError  # noqa: E402

__all__ = ["Agent", "AgentConfig", "BudgetExhausted", "ConfigError", "DevSelector", "InvalidActionError",
           "PromptGymError", "QueryBudget", "Result", "TrainCurve", "__version__", "check_compatible", "make_agent",
           "register_agent"]
