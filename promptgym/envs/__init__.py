"""The gym: prompt environments over the black-box LM, their budget and rewards."""

from promptgym.envs.budget import DEFAULT_BUDGET, QueryBudget
from promptgym.envs.registration import env_id, env_kind, register_all, registered_ids

__all__ = ["DEFAULT_BUDGET", "QueryBudget", "env_id", "env_kind", "register_all", "registered_ids"]
