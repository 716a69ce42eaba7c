"""Third-party agents and tasks, found through the entry points of installed packages.

As pytest finds its plugins and Gymnasium its third-party envs: a package declares, in its
``pyproject.toml``, ::

    [project.entry-points."promptgym.agents"]
    my_agent = "my_pkg.agents:MyAgent"        # an agent class (see promptgym.agent)

    [project.entry-points."promptgym.tasks"]
    my_task = "my_pkg.tasks:MY_TASK"          # a TaskSpec, or a function returning one

and ``pip install`` makes ``promptgym train --agent my_agent`` and ``promptgym list`` see it. Entry
points are read (``importlib.metadata``, the installed distributions on ``sys.path``) only when a name
is not built in, and by ``promptgym list``; a plugin's module is imported only then. A plugin never
shadows a built-in (or already registered) name: the built-in wins and ``promptgym list`` says the
plugin is ignored. A plugin that fails to import is reported in one line naming it
(:class:`~promptgym.errors.PluginError`), never with a traceback.

This module only finds and imports entry points; the agent registry (``promptgym.agent``) and the
task catalog (``promptgym.tasks.catalog``) decide what a loaded object must be.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptgym.errors import PluginError

AGENTS_GROUP = "promptgym.agents"
TASKS_GROUP = "promptgym.tasks"
_KIND = {AGENTS_GROUP: "agent", TASKS_GROUP: "task"}


@dataclass(frozen=True)
class Plugin:
    """One entry point of an installed distribution: ``name = module:attr`` in ``group``."""

    group: str
    name: str
    module: str
    attr: str
    dist: str  # "my-agent 0.1", for messages

    @property
    def value(self) -> str:
        return f"{self.module}:{self.attr}" if self.attr else self.module

    def describe(self) -> str:
        """``agent plugin 'my_agent' (my_pkg.agents:MyAgent from my-agent 0.1)``."""
        return f"{_KIND.get(self.group, self.group)} plugin {self.name!r} ({self.value} from {self.dist})"

    def error(self, why: str) -> PluginError:
        """A one-line :class:`PluginError` about this plugin."""
        return PluginError(" ".join(f"{self.describe()}: {why}".split()))

    def load(self) -> Any:
        """Import the module and return the object the entry point names; any failure is one PluginError."""
        try:
            obj: Any = importlib.import_module(self.module)
            for part in filter(None, self.attr.split(".")):
                obj = getattr(obj, part)
        except Exception as exc:  # a plugin's import may raise anything; report it, never a traceback
            raise self.error(f"cannot be loaded: {type(exc).__name__}: {exc}") from exc
        return obj


def installed(group: str, name: str | None = None) -> list[Plugin]:
    """The entry points of ``group`` (only those called ``name``, if given), in discovery order.

    Nothing is imported. The same entry point seen twice (a distribution on ``sys.path`` twice) is listed once.
    """
    seen: set[tuple[str, str, str]] = set()
    out = []
    for ep in importlib.metadata.entry_points(group=group):
        if name is not None and ep.name != name:
            continue
        dist = getattr(ep, "dist", None)
        label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown distribution"
        plugin = Plugin(group, ep.name, ep.module, ep.attr or "", label)
        key = (plugin.name, plugin.value, plugin.dist)
        if key not in seen:
            seen.add(key)
            out.append(plugin)
    return out


def the_plugin(group: str, name: str) -> Plugin | None:
    """The one installed plugin called ``name`` in ``group``, None if there is none.

    Two distributions offering the same name is an error: which one runs must not depend on install order.
    """
    found = installed(group, name)
    if len(found) > 1:
        offers = ", ".join(f"{p.value} from {p.dist}" for p in found)
        raise PluginError(f"{_KIND.get(group, group)} {name!r} is offered by {len(found)} installed plugins "
                          f"({offers}); uninstall all but one")
    return found[0] if found else None


def load_all(group: str, taken: Callable[[Plugin], str | None], register: Callable[[Plugin], Any]) -> list[str]:
    """Register every installed plugin of ``group`` that is not registered yet (``promptgym list``).

    ``taken(plugin)``: None if the name is free, ``""`` if this very plugin is registered already,
    else why the name is taken (the plugin is then ignored: a built-in always wins). Returns one line
    per plugin that could not be used (it fails to load, or its name is taken); the others are registered.
    """
    problems = []
    plugins = installed(group)
    for plugin in plugins:
        why = taken(plugin)
        if why is not None:
            if why:
                problems.append(f"{plugin.describe()} is ignored: {why}")
            continue
        if sum(p.name == plugin.name for p in plugins) > 1:
            problems.append(f"{plugin.describe()} is ignored: another installed plugin has the name {plugin.name!r}")
            continue
        try:
            register(plugin)
        except PluginError as exc:
            problems.append(str(exc))
    return problems


__all__ = ["AGENTS_GROUP", "TASKS_GROUP", "Plugin", "installed", "load_all", "the_plugin"]
