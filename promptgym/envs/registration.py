"""Env ids: ``Prompt<Task>-v0`` (discrete, the default), ``-Subspace-v0`` and ``-Tokenwise-v0``.

String entry points only, so that registering (on ``import promptgym``) stays cheap; the LM is
loaded when an env is made. Any constructor argument can be passed to ``gym.make`` as a kwarg,
e.g. ``gym.make("PromptSST2-v0", model="tiny-random-causal", split_seed=42, budget=1000)``.
"""

from __future__ import annotations

import gymnasium as gym

from promptgym.tasks.catalog import TASKS

KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (id suffix, entry point, vector entry point)
    "discrete": ("", "promptgym.envs.discrete:DiscretePromptEnv", "promptgym.envs.vector:make_discrete_vec"),
    "subspace": ("-Subspace", "promptgym.envs.subspace:SubspacePromptEnv", "promptgym.envs.vector:make_subspace_vec"),
    "tokenwise": ("-Tokenwise", "promptgym.envs.tokenwise:TokenwisePromptEnv",
                  "promptgym.envs.vector:make_tokenwise_vec"),
}


def env_id(task: str, kind: str = "discrete") -> str:
    return f"Prompt{TASKS[task].env_name}{KINDS[kind][0]}-v0"


def registered_ids() -> list[str]:
    return [env_id(t, k) for t in TASKS for k in KINDS]


def env_kind(id_: str) -> str:
    """"discrete", "subspace" or "tokenwise" for a promptgym env id."""
    for kind, (suffix, _, _) in KINDS.items():
        if suffix and id_.endswith(f"{suffix}-v0"):
            return kind
    return "discrete"


def register_all() -> None:
    for task in TASKS:
        for kind, (_, entry, vec_entry) in KINDS.items():
            id_ = env_id(task, kind)
            if id_ in gym.registry:
                continue
            gym.register(id=id_, entry_point=entry, vector_entry_point=vec_entry, kwargs={"task": task})
