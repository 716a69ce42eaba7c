"""The task interface: agents read only what :mod:`promptgym.task_view` lists, and every env kind offers it.

The protocols are the written contract of ``env.unwrapped`` as agents see it; they only mean
something if the agents keep to them and the envs provide them. Agents are read with ``ast`` (every
``base.X``, ``env.unwrapped.X`` and ``getattr(base, "X")``, ``base`` being any name bound to the
unwrapped env), so a new attribute use fails here until it is added to a protocol on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gymnasium as gym
import pytest

from promptgym.envs.registration import KINDS, env_id
from promptgym.task_view import KIND_TASKS, AgentTask, WhiteBoxTask, members

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "tiny-random-causal", "dtype": "float32"}

#: what any agent may read: the common interface and each kind's extras (read after checking ``kind``)
BLACK_BOX = members(AgentTask).union(*(members(p) for p in KIND_TASKS.values()))
#: agents allowed the white-box extras (the reference, never ranked)
WHITE_BOX_AGENTS = {"prompt_tuning.py"}


def _is_unwrapped(node: ast.AST) -> bool:
    """``X.unwrapped``, ``self.start(env)`` or ``cast(T, self.start(env))``: an expression giving the task."""
    if isinstance(node, ast.Attribute) and node.attr == "unwrapped":
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "start":
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cast"
            and len(node.args) == 2 and _is_unwrapped(node.args[1]))


def task_reads(path: Path) -> list[tuple[int, str]]:
    """``(line, attribute)`` of every read of the task in an agent file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {"base"} | {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and _is_unwrapped(n.value)
                        for t in n.targets if isinstance(t, ast.Name)}

    def is_task(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in names) or _is_unwrapped(node)

    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_task(node.value):
            reads.append((node.lineno, node.attr))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and is_task(node.args[0])
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            reads.append((node.lineno, node.args[1].value))
    return reads


AGENT_FILES = sorted((ROOT / "agents").glob("*.py"))


def test_the_scan_finds_the_reads() -> None:
    """A broken walk would pass the next test vacuously."""
    reads = [a for path in AGENT_FILES for _, a in task_reads(path)]
    assert len(reads) > 100
    assert {"budget", "score_actions", "lm", "segments"} <= set(reads)


def test_agents_read_only_the_task_interface() -> None:
    bad = []
    for path in AGENT_FILES:
        allowed = BLACK_BOX | members(WhiteBoxTask) if path.name in WHITE_BOX_AGENTS else BLACK_BOX
        where = "WhiteBoxTask" if path.name in WHITE_BOX_AGENTS else "AgentTask or a kind's extras"
        bad += [f"agents/{path.name}:{line}: {attr} (not in {where}, promptgym/task_view.py)"
                for line, attr in task_reads(path) if attr not in allowed and attr != "unwrapped"]
    assert not bad, "agents read beyond the task interface:\n" + "\n".join(bad)


def test_kind_extras_cover_every_kind() -> None:
    assert set(KIND_TASKS) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_offers_the_interface(kind: str) -> None:
    base = gym.make(env_id("sst2", kind), prompt_length=4, **TINY).unwrapped
    assert isinstance(base, AgentTask)
    assert isinstance(base, KIND_TASKS[kind])
    assert isinstance(base, WhiteBoxTask)
    assert base.kind == kind
