"""Env ids: ``Prompt<Task>-v0`` (discrete, the default), ``-Subspace-v0`` and ``-Tokenwise-v0``.

The env kind has one source of truth: the ``kind`` class attribute of each env class (with its
``id_suffix`` and ``version``). Everything here derives from those attributes, so the ids, the
agent registry's compatibility checks and the leaderboard's grouping of kinds of one task cannot
disagree. Registration hands Gymnasium ``"module:Class"`` entry-point strings (the LM loads when an
env is made, never on ``import promptgym``); importing the env classes themselves is cheap.

Any field of the kind's config (``promptgym.envs.config``) can be passed to ``gym.make`` as a
kwarg, e.g. ``gym.make("PromptSST2-v0", model="tiny-random-causal", split_seed=42, budget=1000)``.
Tasks registered after import (``promptgym.tasks.register_task``, task plugins) get their ids at once.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym

from promptgym.envs.config import EnvConfig
from promptgym.envs.core import PromptEnvBase
from promptgym.envs.discrete import DiscretePromptEnv
from promptgym.envs.subspace import SubspacePromptEnv
from promptgym.envs.tokenwise import TokenwisePromptEnv
from promptgym.errors import UnknownEnvError
from promptgym.tasks.catalog import TASK_LISTENERS, TASKS, load_task_plugins
from promptgym.tasks.spec import TaskSpec

#: the env classes, one per kind, in the order the kinds are listed everywhere
ENV_CLASSES: tuple[type[PromptEnvBase], ...] = (DiscretePromptEnv, SubspacePromptEnv, TokenwisePromptEnv)
#: kind name -> env class
KINDS: dict[str, type[PromptEnvBase]] = {cls.kind: cls for cls in ENV_CLASSES}


def env_id(task: str, kind: str = "discrete") -> str:
    """The registered id of ``task``'s env of ``kind`` (e.g. ``env_id("sst2", "subspace")``)."""
    cls = KINDS[kind]
    return f"Prompt{TASKS[task].env_name}{cls.id_suffix}-v{cls.version}"


def kind_pattern(kind: str) -> str:
    """The id pattern of a kind, for messages: ``"Prompt<Task>-Subspace-v0"``."""
    cls = KINDS[kind]
    return f"Prompt<Task>{cls.id_suffix}-v{cls.version}"


def registered_ids() -> list[str]:
    return [env_id(t, k) for t in TASKS for k in KINDS]


def check_env_id(id_: str) -> str:
    """Return ``id_`` if it is a registered promptgym env id, else raise :class:`UnknownEnvError`.

    Checked before anything loads, so a typo costs nothing (Gymnasium's own error comes with a
    traceback and only after the registry lookup fails inside ``gym.make``). An id not registered
    yet may be a task plugin's: the installed task plugins are loaded (with their ids) and it is
    looked up again.
    """
    ids = registered_ids()
    if isinstance(id_, str) and id_ in ids:
        return id_
    problems = load_task_plugins()
    ids = registered_ids()
    if isinstance(id_, str) and id_ in ids:
        return id_
    close = difflib.get_close_matches(str(id_), ids, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `promptgym list` shows all ids"
    note = f" (note: {problems[0]})" if problems else ""
    raise UnknownEnvError(f"unknown env id {id_!r}{hint}{note}")


def env_config_class(id_: str) -> type[EnvConfig]:
    """The config dataclass of a promptgym env id's kind: the kwargs ``gym.make(id_, ...)`` takes."""
    return _class_of_id(id_).config_class


def _class_of_id(id_: str) -> type[PromptEnvBase]:
    entry = gym.registry[check_env_id(id_)].entry_point
    return next(cls for cls in ENV_CLASSES if entry == f"{cls.__module__}:{cls.__qualname__}")


def env_kind(id_: str) -> str:
    """"discrete", "subspace" or "tokenwise" for a promptgym env id."""
    return _class_of_id(id_).kind


def env_task(id_: str) -> str:
    """The task name of a promptgym env id (``"PromptSST2-Subspace-v0"`` -> ``"sst2"``)."""
    return str(gym.registry[check_env_id(id_)].kwargs["task"])


def kind_of(env: Any) -> str:
    """The kind of a (wrapped) promptgym env instance."""
    base = getattr(env, "unwrapped", env)
    if not isinstance(base, PromptEnvBase):
        raise UnknownEnvError(f"not a promptgym prompt env: {type(base).__name__}")
    return base.kind


def register_task_envs(spec: TaskSpec) -> None:
    """Register the env ids of every kind for one task (those already registered are kept)."""
    for kind, cls in KINDS.items():
        id_ = env_id(spec.name, kind)
        if id_ in gym.registry:
            continue
        vec = f"promptgym.envs.vector:make_{kind}_vec"
        gym.register(id=id_, entry_point=f"{cls.__module__}:{cls.__qualname__}", vector_entry_point=vec,
                     kwargs={"task": spec.name})


def register_all() -> None:
    """Register the env ids of every task in the catalog; a task registered later gets its ids at once."""
    for spec in TASKS.values():
        register_task_envs(spec)
    if register_task_envs not in TASK_LISTENERS:
        TASK_LISTENERS.append(register_task_envs)
