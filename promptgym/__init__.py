"""promptgym: Gymnasium environments for black-box prompt tuning of frozen language models.

``import promptgym`` registers every env id (``Prompt<Task>-v0``, ``-Subspace-v0``, ``-Tokenwise-v0``);
``gym.make("promptgym:PromptSST2-v0")`` works without a prior import.
"""

__version__ = "0.1.0"

from promptgym.envs.registration import register_all as _register_all  # noqa: E402

_register_all()

from promptgym.envs.budget import QueryBudget  # noqa: E402
from promptgym.errors import BudgetExhausted, InvalidActionError, PromptGymError  # noqa: E402

__all__ = ["BudgetExhausted", "InvalidActionError", "PromptGymError", "QueryBudget", "__version__"]
