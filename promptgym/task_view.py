"""What an agent may use of an env: the task interface behind ``env.unwrapped``.

An agent sees the unwrapped env, a Python object with far more on it than a black-box agent should
touch (the LM, the rendered rows, the dev labels). These protocols name what it may use, so that
the contract is written down and checked (``tests/test_task_view.py`` reads every agent's attribute
uses against them) instead of being whatever the env class happens to hold. Names are the env's
own, so agents written against ``env.unwrapped`` keep working.

:class:`AgentTask` is what every env kind offers every agent; :class:`CandidateTask` and
:class:`SubspaceTask` add what only some kinds have (read after checking ``kind``);
:class:`WhiteBoxTask` adds raw access for the white-box reference only (``agents/prompt_tuning.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from promptgym.envs.budget import QueryBudget
from promptgym.envs.scoring import Outcome, Segments
from promptgym.envs.vocab import CandidateList
from promptgym.lm.base import BlackBoxLM, Prompt, TokenPrompt
from promptgym.tasks.data import TaskSplit
from promptgym.tasks.spec import TaskSpec, Template


@runtime_checkable
class AgentTask(Protocol):
    """The task as a black-box agent sees it: every env kind's unwrapped env satisfies it."""

    budget: QueryBudget        # the call meter: ``calls`` used and ``remaining`` before the env refuses
    action_space: gym.Space    # the prompts an agent may propose (what ``score_actions`` takes)
    kind: str                  # the env kind ("discrete", "tokenwise", "subspace"): which extras it has
    spec_task: TaskSpec        # the task: its labels (``num_labels``) and its ``metric``
    template: Template         # how rows are rendered; its ``verbalizers`` are the label words
    train: TaskSplit           # the training examples and their labels (demonstrations, sizes, gold)
    batch_size: int | None     # train rows scored per call (None: all of them)
    reward_kind: str           # what the reward is ("ce", ..., "label_only": labels only, no scores)
    prompt_length: int         # prompt positions (tokens or soft vectors) an action fills
    prompt_position: str       # where the prompt goes: "before" or "after" the input

    # scores full-prompt actions in one batched call on "train" or "dev" (charged one call each)
    def score_actions(self, actions: Sequence[Any], split: str = "train") -> list[Outcome]: ...

    # scores LM prompts outside the action space (template alone, demonstrations), charged likewise
    def score_prompts(self, prompts: Sequence[Prompt], split: str = "train") -> list[Outcome]: ...

    # scores one action on dev (one call): how a final prompt is chosen
    def evaluate_dev(self, action: Any) -> Outcome: ...

    # an outcome re-scored with an additive per-label bias (no call)
    def with_label_bias(self, outcome: Outcome, label_bias: np.ndarray) -> Outcome: ...

    # a text prefix as a prompt the API accepts, its tokens (no call)
    def text_prompt(self, text: str) -> TokenPrompt: ...

    # the readable text of the prompt an action stands for (no call)
    def prompt_text(self, action: Any) -> str: ...


@runtime_checkable
class CandidateTask(AgentTask, Protocol):
    """Discrete and tokenwise envs: an action picks words from a candidate list."""

    num_candidates: int        # the candidate list's size: each position's choices
    candidates: CandidateList  # the candidates themselves (their token ids and text)


@runtime_checkable
class SubspaceTask(AgentTask, Protocol):
    """Subspace envs: an action ``z`` moves the soft prompt ``p0 + A z``."""

    p0: np.ndarray             # the starting soft prompt, ``(prompt_length, embedding_dim)``: what z = 0 is
    p0_text: str               # the text ``p0`` was embedded from ("" for a zero start)


@runtime_checkable
class WhiteBoxTask(AgentTask, Protocol):
    """Raw access for white-box and reference agents only (never a ranked black-box agent)."""

    lm: BlackBoxLM             # the model itself (its white-box entry, embeddings, tokenizer)
    dev: TaskSplit             # the dev examples and their labels, read without a charged call

    # the rendered rows ``(left, right)`` of "train" or "dev" (the prompt goes between)
    def segments(self, split: str) -> Segments: ...


#: the extras of each env kind beyond :class:`AgentTask`
KIND_TASKS: dict[str, type] = {"discrete": CandidateTask, "tokenwise": CandidateTask, "subspace": SubspaceTask}


def members(protocol: type) -> frozenset[str]:
    """The names a protocol (with the protocols it extends) declares: attributes and methods."""
    names: set[str] = set()
    for cls in protocol.__mro__:
        if cls in (Protocol, object) or not getattr(cls, "_is_protocol", False):
            continue
        names.update(cls.__dict__.get("__annotations__", {}))
        names.update(k for k, v in cls.__dict__.items() if callable(v) and not k.startswith("_"))
    return frozenset(names)
