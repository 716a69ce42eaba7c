"""Imports run one way: no circles among promptgym's modules, and no import from a layer up to a higher one.

The design says data and dependencies flow down: the CLI drives the benchmark, the benchmark the run
driver, the driver the envs, the envs the LM and the tasks. A circle or an "uphill" import makes a
lower module unusable (and untestable) without the layers above it, and lazy imports inside
functions hide such edges from import-time errors, so both kinds are read here from the source
with ``ast``: module-level imports must form no circle, and neither kind may go uphill. Agents (the
top-level ``agents`` package) depend on the agent contract only; what they import beyond it today
is listed below so that the list can only shrink.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: promptgym's layers, lowest first. A module may import its own unit (a top-level module or a
#: subpackage) and the units of lower layers only; units of one layer are independent of each other.
LAYERS: list[tuple[str, ...]] = [
    ("promptgym.errors",),  # the named exceptions every layer raises
    ("promptgym.typed_config", "promptgym.plugins", "promptgym.jsonable", "promptgym.threads",
     "promptgym.host"),  # generic
    # machinery: config field checks, entry points, JSON values of numpy ones, a search's thread settings and
    # the kind of host it ran on
    ("promptgym.metrics", "promptgym.tasks", "promptgym.lm"),  # leaves: how to score, what to solve, the model
    ("promptgym.envs",),  # the gym: a task, an LM and a metric behind a budget
    ("promptgym.task_view",),  # what an agent may use of an env (the agent contract's view of the task)
    ("promptgym.callbacks",),  # SB3-style callbacks: watch and stop a search call by call
    ("promptgym.agent", "promptgym.journal", "promptgym.tracking", "promptgym.progress"),  # the agent contract;
    # the instruments a run hooks onto an env (call journal, TensorBoard, progress line)
    ("promptgym",),  # the package facade: registers envs and agents, re-exports the contract, __version__
    ("promptgym.members",),  # a Result's members as LM prompts, for test scoring and calibration alike
    ("promptgym.calibration",),  # a label bias fitted for a Result after learn()
    ("promptgym.score_store",),  # uncharged scores kept on disk (reuses the journal's request keys)
    ("promptgym.evaluation",),  # a Result scored outside the budget (test, train/dev or OOD rows), with its cache
    ("promptgym.runner", "promptgym.runs"),  # the one run driver; run folders
    ("promptgym.bench",),  # the protocol, verification, leaderboards: runs agents through the runner
    ("promptgym.serve",),  # the service: an LM behind HTTP; the library never imports it, only the CLI
    ("promptgym.cli",),  # the command line: may use everything
]

#: uphill imports tolerated for now, as (importing file, line's imported module): each with its reason.
#: Keep it short; a stale entry fails the test, so the list can only shrink.
ALLOWED_UPHILL: dict[tuple[str, str], str] = {}

#: what an agent may import from promptgym: the contract, its errors and the pure helpers on results
AGENT_API = ("promptgym", "promptgym.agent", "promptgym.task_view", "promptgym.errors", "promptgym.calibration",
             "promptgym.members", "promptgym.metrics")

#: what agents import beyond :data:`AGENT_API` today, as (agent file, imported module): not to grow.
#: A stale entry fails the test, so the list can only shrink.
AGENTS_ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` module imports ``target`` module at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    lazy: bool  # inside a function (runs when called, not when the module loads)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def promptgym_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "promptgym").rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> list[Import]:
    """Every import in ``path`` of a module whose name starts with ``promptgym`` (``known`` ones: a
    ``from X import Y`` where ``X.Y`` is a module counts as an import of ``X.Y`` too)."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    rel = str(path.relative_to(ROOT))
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against the importing package
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([child.module] if child.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in known]
            else:
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
                continue
            for target in targets:
                if (target == "promptgym" or target.startswith("promptgym.")) and target != source:
                    found.append(Import(source, target, rel, child.lineno, lazy))

    visit(ast.parse(path.read_text(), filename=rel), False)
    return found


def unit_of(module: str) -> str:
    """The layered unit of a module: ``promptgym`` itself, a top-level module or a subpackage."""
    return ".".join(module.split(".")[:2])


RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
MODULES = promptgym_modules()
IMPORTS = [imp for path in MODULES.values() for imp in imports_of(path, set(MODULES))]


def test_the_graph_is_read() -> None:
    """The parser finds both kinds of imports (a broken walk would pass every check vacuously)."""
    assert sum(not i.lazy for i in IMPORTS) > 100
    assert sum(i.lazy for i in IMPORTS) > 20  # the CLI imports its commands' modules lazily


def test_every_unit_has_a_layer() -> None:
    missing = sorted({unit_of(m) for m in MODULES} - set(RANK))
    assert not missing, f"place these in LAYERS (tests/test_layering.py): {missing}"
    stale = sorted(set(RANK) - {unit_of(m) for m in MODULES})
    assert not stale, f"LAYERS names units that no longer exist: {stale}"


def test_no_circles_among_module_level_imports() -> None:
    """Module by module (package ``__init__`` files count as modules; a parent package's implicit
    import is not an edge, or every submodule would reach ``promptgym/__init__.py``)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if not imp.lazy and imp.target in MODULES:
            graph[imp.source].add(imp.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    circles: list[list[str]] = []

    def walk(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_uphill_imports() -> None:
    """Module-level and lazy imports alike: a unit imports only its own modules and lower layers."""
    uphill = []
    used = set()
    for imp in IMPORTS:
        src, dst = unit_of(imp.source), unit_of(imp.target)
        if src == dst or RANK[src] > RANK[dst]:
            continue
        if (imp.path, imp.target) in ALLOWED_UPHILL:
            used.add((imp.path, imp.target))
            continue
        kind = "lazy import" if imp.lazy else "import"
        uphill.append(f"{imp.path}:{imp.line}: {kind} of {imp.target} ({src} is not above {dst} in LAYERS)")
    assert not uphill, "uphill imports:\n" + "\n".join(uphill)
    stale = sorted(set(ALLOWED_UPHILL) - used)
    assert not stale, f"ALLOWED_UPHILL entries no longer needed (remove them): {stale}"


def test_promptgym_never_imports_agents() -> None:
    """The registry names built-in agents by ``"module:Class"`` strings: the harness never imports them."""
    bad = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "agents"]
    assert not bad, "promptgym imports agents:\n" + "\n".join(bad)


def test_agents_import_only_the_contract() -> None:
    agent_files = sorted((ROOT / "agents").glob("*.py"))
    assert len(agent_files) > 10
    extra, used = [], set()
    for path in agent_files:
        for imp in imports_of(path, set(MODULES)):
            if unit_of(imp.target) in AGENT_API:
                continue
            if (imp.path, imp.target) in AGENTS_ALLOWED:
                used.add((imp.path, imp.target))
                continue
            extra.append(f"{imp.path}:{imp.line}: {imp.target} (agents may import {AGENT_API})")
    assert not extra, "agents import beyond the contract:\n" + "\n".join(extra)
    stale = sorted(set(AGENTS_ALLOWED) - used)
    assert not stale, f"AGENTS_ALLOWED entries no longer needed (remove them): {stale}"
