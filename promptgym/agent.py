"""The agent contract: what every policy returns, how it chooses its final prompt, and the registry.

An agent is any object with a ``name`` and ``learn(env) -> Result``: it sees only the env (its
action space, the charged ``score_actions`` / ``score_prompts`` / ``evaluate_dev``, the budget
meter) and never the LM. The harness (``promptgym.runner``, ``promptgym.bench``, the CLI) depends
on this module only, never on an agent module: the built-in agents are registered below by
``"module:Class"`` entry-point strings, loaded when first made, the way Gymnasium registers envs.
Users register their own the same way::

    promptgym.register_agent("coordinate", "my_pkg.agents:CoordinateAgent", kinds=("discrete",))
    agent = promptgym.make_agent("coordinate", batch=10)

A registered agent class has a ``config_class`` (a dataclass deriving :class:`AgentConfig`, which
validates its fields on construction) and takes ``config`` as its first argument. An installed
package can offer agents without any call: an entry point ``NAME = "module:Class"`` in group
``promptgym.agents`` is found the first time ``NAME`` is asked for (:func:`find_agent`; built-in
names always win), the class's ``kinds``/``description``/flag attributes filling its spec.

Choosing the final prompt on the dev split matters: agents overfit 32 training examples within a
few hundred calls, so :class:`DevSelector` evaluates candidate prompts on dev (charged like any
call) and keeps the best; its best-so-far dev metric against calls used is the learning curve that
leaderboards integrate.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from promptgym.callbacks import CallbackLike, hooked
from promptgym.envs.registration import KINDS, kind_of, kind_pattern
from promptgym.errors import ConfigError, IncompatibleAgentError, UnknownAgentError
from promptgym.jsonable import finite_or_none, jsonable
from promptgym.plugins import AGENTS_GROUP, Plugin, load_all, the_plugin
from promptgym.task_view import AgentTask
from promptgym.tasks.spec import PROMPT_POSITIONS
from promptgym.typed_config import TypedConfig, config_fields, parse_field, require


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Result:
    """What an agent learned.

    The final prompt is one of: ``action`` (a point of the env's action space), ``demonstrations``
    (a text prefix outside the action space), ``soft_prompt`` (a ``(length, embedding_dim)`` array:
    white-box agents only), or none of them (the template alone). ``label_bias`` is an additive
    per-label bias on the label log-probs (calibration), else None. ``curve`` holds
    ``(cost, best-so-far dev metric)`` points and ``train_curve`` ``(cost, best-so-far train
    reward)`` points, the cost counted in ``curve_unit`` ("calls": API calls; the white-box
    reference counts "passes": forward+backward passes).

    A Result may be a weighted *prompt set* (distributional agents: ensembles, variational and
    likelihood-free posteriors): ``members`` are actions of the env's space, ``weights`` one per
    member (normalised when scored; None = uniform) and ``combine`` says how test predictions are
    made of them: "mean" averages the members' label distributions, "vote" smooths the weighted
    histogram of their predicted labels (for agents that only ever saw labels; the rule, with its
    tie-break, is :func:`promptgym.members.combine_set`'s). ``action`` is then
    the member with the largest weight, what a single-prompt reader shows. ``label_bias`` is either
    one bias ``(C,)`` for every member or one per member ``(K, C)``. A single-prompt Result is a
    one-member set (:func:`result_members`).
    """

    agent: str
    action: Any
    prompt_text: str
    train_reward: float
    dev_metric: float | None
    calls_used: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    label_bias: np.ndarray | None = None
    demonstrations: str | None = None
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    soft_prompt: np.ndarray | None = None
    curve_unit: str = "calls"
    members: list[Any] | None = None    # actions forming a prompt set; None = the single prompt above
    weights: list[float] | None = None  # one per member, >= 0 with a positive sum; None = uniform
    combine: str = "mean"               # "mean" of label distributions, or "vote" of predicted labels

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_RULES and self.combine != VOTE_V1:
            raise ConfigError(f"Result.combine must be one of {COMBINE_RULES}, got {self.combine!r}")
        if self.members is None:
            if self.weights is not None:
                raise ConfigError("Result.weights needs Result.members (weights of a prompt set)")
            return
        self.members = list(self.members)
        if not self.members:
            raise ConfigError("Result.members must hold at least one action (or be None for a single prompt)")
        if self.soft_prompt is not None or self.demonstrations is not None:
            raise ConfigError("a prompt set's members are actions; it cannot also have a soft prompt or demonstrations")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (len(self.members),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ConfigError(f"Result.weights must be {len(self.members)} finite numbers >= 0 with a positive "
                                  f"sum, got {self.weights!r}")
            self.weights = [float(x) for x in w]
        if self.action is None:  # what a single-prompt reader shows: the member of largest weight
            self.action = self.members[int(np.argmax(self.weights))] if self.weights else self.members[0]

    @property
    def prompt_kind(self) -> str:
        """"soft_prompt", "demonstrations", "template" (no prompt) or "action"."""
        if self.soft_prompt is not None:
            return "soft_prompt"
        if self.demonstrations is not None:
            return "demonstrations"
        return "template" if self.action is None else "action"

    @property
    def is_set(self) -> bool:
        """Whether the Result is a prompt set (``members`` given), even of one member."""
        return self.members is not None

    def to_record(self, full: bool = False) -> dict[str, Any]:
        """The Result as a plain JSON record, the one converter of every file that holds one.

        By default the final prompt(s) only, the protocol's ``prompt`` (seed files, submissions):
        ``action``, ``label_bias``, ``text`` (at most 5000 characters), ``demonstrations`` when given,
        and ``members`` / ``weights`` / ``combine`` for a set; actions as :func:`action_list` writes them.
        A set combined by :data:`VOTE_V1` is written "vote": what "vote" means is the file's schema
        version's (:func:`promptgym.bench.schema.combine_rule`). ``full=True`` gives the whole Result as
        a run folder's prompt.json holds it (:func:`promptgym.runs.result_record` adds what only the env
        knows): every field by its name but the soft prompt (a file of its own), actions as plain lists,
        non-finite scores as None, plus the ``calibration`` of ``extra`` for readers.
        """
        if full:
            return {
                "agent": self.agent,
                "action": _plain(self.action),
                "prompt_text": self.prompt_text,
                "train_reward": finite_or_none(self.train_reward),
                "dev_metric": finite_or_none(self.dev_metric),
                "calls_used": int(self.calls_used),
                "label_bias": _plain(self.label_bias),
                "demonstrations": self.demonstrations,
                "curve": [list(p) for p in self.curve],
                "train_curve": [list(p) for p in self.train_curve],
                "curve_unit": self.curve_unit,
                "config": jsonable(self.config),
                "extra": jsonable(self.extra),
                "members": None if self.members is None else [_plain(m) for m in self.members],
                "weights": None if self.weights is None else [float(w) for w in self.weights],
                "combine": self.combine,
                "calibration": jsonable(self.extra.get("calibration")),
            }
        bias = None if self.label_bias is None else np.asarray(self.label_bias, dtype=np.float64).tolist()
        rec: dict[str, Any] = {
            "action": None if self.action is None else action_list(self.action),
            "label_bias": bias,
            "text": str(self.prompt_text or "")[:5000],
        }
        if self.demonstrations:
            rec["demonstrations"] = self.demonstrations
        if self.is_set:
            rec["members"] = [action_list(m) for m in self.members or []]
            if self.weights is not None:
                rec["weights"] = [float(w) for w in self.weights]
            rec["combine"] = "vote" if self.combine == VOTE_V1 else self.combine
        return rec

    @classmethod
    def from_record(cls, record: Mapping[str, Any], agent: str = "", combine: str | None = None,
                    full: bool = False) -> Result:
        """The Result a :meth:`to_record` record of the same ``full`` stands for.

        A prompt record has no scores (NaN train reward, no dev metric, no calls) and keeps its actions
        as the lists it holds; ``agent`` names its agent. A full record (``full=True``) names its own
        agent and gives actions back as arrays; its soft prompt, kept in a file of its own, is the
        reader's (:func:`promptgym.runs.load_result`). ``combine`` overrides the record's rule (a reader
        maps "vote" of an old file to :data:`VOTE_V1`); absent from both, "mean". Raises ConfigError on
        an inconsistent set.
        """
        bias = record["label_bias"]
        bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        rule = combine or record.get("combine") or "mean"
        if not full:
            return cls(agent, record["action"], record["text"], float("nan"), None, 0, label_bias=bias,
                       demonstrations=record.get("demonstrations"), members=record.get("members"),
                       weights=record.get("weights"), combine=rule)
        train = record["train_reward"]
        members = record.get("members")
        return cls(record["agent"], None if record["action"] is None else np.asarray(record["action"]),
                   record["prompt_text"], float("nan") if train is None else float(train), record["dev_metric"],
                   record["calls_used"], [tuple(p) for p in record["curve"]],
                   [tuple(p) for p in record["train_curve"]], bias, record["demonstrations"], record["config"],
                   dict(record.get("extra") or {}), curve_unit=record.get("curve_unit", "calls"),
                   members=None if members is None else [np.asarray(m) for m in members],
                   weights=record.get("weights"), combine=rule)


def _plain(value: Any) -> Any:
    """An array (an action, a bias) as nested Python lists; None stays None."""
    return None if value is None else np.asarray(value).tolist()


def action_list(action: Any) -> list[int] | list[float]:
    """An action as JSON numbers: token ids as ints; a vector as the shortest decimals that give back its
    float32 values exactly (envs score float32 vectors), so a 500-value vector takes ~5 KB, not ~10 KB."""
    arr = np.asarray(action)
    if arr.dtype.kind in "iu":
        return [int(x) for x in arr.ravel()]
    return [float(np.format_float_positional(x, unique=True)) for x in arr.astype(np.float32).ravel()]


#: how a prompt set's members make one prediction (see :class:`Result`): the rules an agent returns
#: and a submission of the current schema names
COMBINE_RULES = ("mean", "vote")
#: what "vote" meant up to submission schema version 1: the bare weighted histogram of predicted
#: labels, ties to the first label (exact zeros: NLL at the floor). Only re-scoring those files
#: uses it (:func:`promptgym.bench.schema.combine_rule`); agents return "vote".
VOTE_V1 = "vote_v1"


def result_members(result: Result) -> list[tuple[Any, float]]:
    """``(action, weight)`` of every member of ``result``, the weights normalised to sum 1.

    A single-prompt Result is the one member ``(result.action, 1.0)`` (its action may be None: the
    template, or a Result whose prompt is a soft prompt or demonstrations;
    :func:`promptgym.members.member_prompts` turns members into LM prompts).
    """
    if result.members is None:
        return [(result.action, 1.0)]
    w = np.ones(len(result.members)) if result.weights is None else np.asarray(result.weights, dtype=np.float64)
    w = w / w.sum()
    return [(m, float(x)) for m, x in zip(result.members, w)]


def max_members(agent: Any) -> int:
    """The most members ``agent``'s Result can have: its ``max_members`` attribute, else 1.

    An agent returning a prompt set states this bound (from its config) so that the calibration
    option can reserve one call per member out of the budget before the agent starts.
    """
    n = getattr(agent, "max_members", 1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"agent {getattr(agent, 'name', agent)!r}: max_members must be a whole number >= 1, "
                          f"got {n!r}")
    return int(n)


@runtime_checkable
class Agent(Protocol):
    """Anything with a ``name`` and ``learn(env) -> Result`` is an agent.

    The built-in agents take SB3's ``learn(env, callback=None)`` (:mod:`promptgym.callbacks`); the run
    driver hooks a callback around a ``learn(env)`` that takes none, so a minimal agent needs only ``env``.
    """

    name: str

    def learn(self, env: gym.Env) -> Result: ...


def config_dict(config: Any) -> dict:
    return asdict(config) if is_dataclass(config) else dict(config or {})


class DevSelector:
    """Keeps the prompt with the best dev metric among those it was asked to consider.

    A prompt already scored on dev is not scored (nor charged) again: the dev split is fixed, so
    the answer would be the same (agents often re-propose an unchanged argmax prompt). ``checked``
    keeps every ``(action, dev outcome)`` it paid for, in order: a snapshot ensemble builds its set
    from them without paying for the same dev rows twice.
    """

    def __init__(self, env: gym.Env) -> None:
        self.env = env.unwrapped
        self.best_action: Any = None
        self.best_metric = -np.inf
        self.best_reward = -np.inf
        self.curve: list[tuple[int, float]] = []
        self.checked: list[tuple[Any, Any]] = []
        self._seen: dict[tuple | None, float] = {}

    @property
    def dev_metric(self) -> float | None:
        """The best dev metric seen, or None if nothing was checked on dev."""
        return None if self.best_action is None else float(self.best_metric)

    def consider(self, action: Any, train_reward: float = float("nan")) -> float | None:
        """Evaluate ``action`` on dev (one call) if the budget allows; return its dev metric."""
        arr = np.asarray(action)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if action is not None else None
        if key in self._seen:
            return self._seen[key]
        if self.env.budget.remaining < 1:
            return None
        out = self.env.evaluate_dev(action)
        self._seen[key] = out.metric
        self.checked.append((action, out))
        # ties go to the higher dev reward (a smoother signal than 32-example accuracy)
        if (out.metric, out.reward) > (self.best_metric, self.best_reward):
            self.best_action, self.best_metric, self.best_reward = action, out.metric, out.reward
        self.curve.append((self.env.budget.calls, float(self.best_metric)))
        return out.metric

    def result(self, agent: str, fallback: Any, train: TrainCurve, config: Any,
               extra: dict | None = None) -> Result:
        """The Result of a search: the best dev prompt, else ``fallback`` (e.g. the last mean)."""
        action = self.best_action if self.best_action is not None else fallback
        return Result(agent, None if action is None else np.asarray(action),
                      "" if action is None else self.env.prompt_text(action), train.best, self.dev_metric,
                      self.env.budget.calls, self.curve, train.points, config=config_dict(config),
                      extra=dict(extra or {}))


class TrainCurve:
    """Best-so-far train reward vs. calls used."""

    def __init__(self) -> None:
        self.best = -np.inf
        self.best_action: Any = None
        self.points: list[tuple[int, float]] = []

    def update(self, calls: int, actions: Sequence[Any], rewards: Sequence[float]) -> None:
        i = int(np.argmax(rewards))
        if rewards[i] > self.best:
            self.best, self.best_action = float(rewards[i]), actions[i]
        self.points.append((calls, self.best))


# ---------------------------------------------------------------------------------------------- configs
class AgentConfig(TypedConfig):
    """Mixin for agent config dataclasses: every field is type-checked on construction.

    Subclasses are ``@dataclass`` classes whose fields have defaults in the signature and a one-line
    comment each; they add range checks in :meth:`validate` (call :func:`require`). A bad value
    raises :class:`~promptgym.errors.ConfigError` naming the field, before any call is charged.
    The checking itself is :class:`promptgym.typed_config.TypedConfig`'s, shared with the env configs.
    """


class ConfiguredAgent:
    """Base class of the built-in agents: the config default, type check and the seeded reset.

    :param config: an instance of the class's ``config_class`` (None: the defaults)
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = AgentConfig

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} takes a {self.config_class.__name__}, "
                              f"got {type(config).__name__}")
        self.config = config

    def learn(self, env: gym.Env, callback: CallbackLike = None) -> Result:
        """Search for a prompt on ``env`` within its budget (:meth:`search`), with ``callback`` watching every
        charged call and able to stop the search early (:mod:`promptgym.callbacks`, as SB3's ``learn``)."""
        with hooked(env, callback):
            return self.search(env)

    def search(self, env: gym.Env) -> Result:
        """The agent's own search: what a subclass implements (``learn`` wraps it with the callbacks)."""
        raise NotImplementedError(f"{type(self).__name__} must implement search(env)")

    def start(self, env: gym.Env) -> AgentTask:
        """Reset ``env`` with the config's seed and return ``env.unwrapped``: what an agent may use of
        it is :class:`promptgym.task_view.AgentTask` (the scoring methods, the budget, the task)."""
        env.reset(seed=self.config.seed)
        return env.unwrapped


class PromptSetAgent(ConfiguredAgent):
    """Base of the agents whose Result is a set of prompts capped by one config field.

    ``max_members`` (what the runner checks the Result against) reads the field named by
    ``members_field``, so each agent states its cap once instead of repeating the property.
    """

    members_field: ClassVar[str] = "members"

    @property
    def max_members(self) -> int:
        return int(getattr(self.config, self.members_field))


# ---------------------------------------------------------------------------------------------- registry
#: every env kind (from the env classes' ``kind`` attributes)
ALL_KINDS: tuple[str, ...] = tuple(KINDS)


@dataclass(frozen=True)
class AgentSpec:
    """How to build a registered agent and where it may run.

    :param name: registry name (``promptgym train --agent NAME``)
    :param entry_point: ``"module:Class"``; the class is imported on first use
    :param kinds: env kinds it runs on
    :param description: one line for ``promptgym list``
    :param white_box: it back-propagates through the model (a reference, never ranked)
    :param baseline: leaderboards compare every entry with the best baseline
    :param prompt_free: it learns no prompt, so its runs are the same on every env kind of a task
    :param needs_logprobs: it cannot run with ``reward="label_only"``
    :param prompt_position: the placement it requires, if any
    :param fits_label_bias: it fits a label bias itself (so the calibration option is refused)
    :param plugin: the installed distribution that declared it (``promptgym.agents`` entry point), if any
    """

    name: str
    entry_point: str
    kinds: tuple[str, ...] = ALL_KINDS
    description: str = ""
    white_box: bool = False
    baseline: bool = False
    prompt_free: bool = False
    needs_logprobs: bool = False
    prompt_position: str | None = None
    fits_label_bias: bool = False
    plugin: str = ""  # the distribution it came from ("my-agent 0.1"); "" when built in or registered in Python

    def load(self) -> type:
        """The agent class (imported now)."""
        module, _, attr = self.entry_point.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise UnknownAgentError(f"agent {self.name!r}: cannot load {self.entry_point!r}: {exc}") from exc
        return obj

    @property
    def config_class(self) -> type:
        return self.load().config_class


AGENT_REGISTRY: dict[str, AgentSpec] = {}


def register_agent(name: str, entry_point: str, kinds: Sequence[str] = ALL_KINDS, description: str = "",
                   **flags: Any) -> AgentSpec:
    """Register an agent class under ``name`` (see :class:`AgentSpec` for ``flags``)."""
    bad = sorted(set(kinds) - set(ALL_KINDS))
    if bad or not kinds:
        raise ConfigError(f"agent {name!r}: kinds must be a non-empty subset of {ALL_KINDS}, got {list(kinds)}")
    if ":" not in entry_point:
        raise ConfigError(f"agent {name!r}: entry_point must look like 'module:Class', got {entry_point!r}")
    spec = AgentSpec(name, entry_point, tuple(kinds), description, **flags)
    AGENT_REGISTRY[name] = spec
    return spec


def find_agent(name: str) -> AgentSpec | None:
    """The spec of ``name``: a registered agent, else an installed plugin's (loaded and registered now), else None.

    Entry points are read only for a name that is not registered, so built-in names are never shadowed.
    """
    if name in AGENT_REGISTRY:
        return AGENT_REGISTRY[name]
    plugin = the_plugin(AGENTS_GROUP, name) if isinstance(name, str) and name else None
    return None if plugin is None else _register_plugin(plugin)


def agent_spec(name: str) -> AgentSpec:
    """The spec of ``name`` (see :func:`find_agent`), or an :class:`UnknownAgentError` listing the registered names."""
    spec = find_agent(name)
    if spec is None:
        raise UnknownAgentError(f"unknown agent {name!r}; registered agents: {', '.join(AGENT_REGISTRY)}")
    return spec


def is_white_box(name: str) -> bool:
    """Whether ``name`` is a registered white-box agent (it back-propagates: a reference, never ranked)."""
    spec = find_agent(name)
    return spec is not None and spec.white_box


#: class attributes a plugin's agent class may set to fill its :class:`AgentSpec` (defaults: the spec's)
PLUGIN_FLAGS: tuple[str, ...] = ("white_box", "baseline", "prompt_free", "needs_logprobs", "fits_label_bias")


def _register_plugin(plugin: Plugin) -> AgentSpec:
    """Load an agent plugin's class and register it under the entry point's name.

    The class says where it runs the way a registration would: ``kinds`` (default: every kind), ``description``
    (default: its docstring's first line), the flags of :data:`PLUGIN_FLAGS` and ``prompt_position``.
    """
    cls = plugin.load()
    config_class = getattr(cls, "config_class", None)
    if not isinstance(cls, type) or not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise plugin.error("must name an agent class with a config_class (a dataclass deriving "
                           "promptgym.agent.AgentConfig)")
    flags: dict[str, Any] = {}
    for flag in PLUGIN_FLAGS:
        value = getattr(cls, flag, False)
        if not isinstance(value, bool):
            raise plugin.error(f"{cls.__name__}.{flag} must be True or False, got {value!r}")
        flags[flag] = value
    position = getattr(cls, "prompt_position", None)
    if position is not None and position not in PROMPT_POSITIONS:
        raise plugin.error(f"{cls.__name__}.prompt_position must be None or one of {PROMPT_POSITIONS}, "
                           f"got {position!r}")
    kinds = getattr(cls, "kinds", ALL_KINDS)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    description = getattr(cls, "description", None) or (cls.__doc__ or "").strip().split("\n")[0]
    try:
        return register_agent(plugin.name, plugin.value, kinds, str(description), prompt_position=position,
                              plugin=plugin.dist, **flags)
    except ConfigError as exc:
        raise plugin.error(str(exc)) from None


def load_agent_plugins() -> list[str]:
    """Register every installed agent plugin not registered yet (for ``promptgym list``).

    Returns one line per plugin that could not be used (it fails to load, or its name is taken and it is
    ignored); the others are registered.
    """
    def taken(plugin: Plugin) -> str | None:
        spec = AGENT_REGISTRY.get(plugin.name)
        if spec is None or (spec.plugin == plugin.dist and spec.entry_point == plugin.value):
            return None if spec is None else ""
        return f"an agent of that name is already registered ({spec.entry_point})"

    return load_all(AGENTS_GROUP, taken, _register_plugin)


def make_config(name: str, **overrides: Any) -> Any:
    """Agent ``name``'s config with ``overrides`` (validated; unknown fields are refused by name)."""
    cls = agent_spec(name).config_class
    known = [f.name for f in dataclasses.fields(cls)]
    bad = sorted(set(overrides) - set(known))
    if bad:
        raise ConfigError(f"agent {name!r} has no config field(s) {bad}; its {cls.__name__} fields: {', '.join(known)}")
    return cls(**overrides)


def make_agent(name: str, **config_overrides: Any) -> Agent:
    """Build registered agent ``name`` with its default config updated by ``config_overrides``.

    Stable-Baselines3 agents also take ``callbacks=[...]`` (SB3 callbacks run during ``learn``).
    """
    spec = agent_spec(name)
    callbacks = config_overrides.pop("callbacks", None)
    agent = spec.load()(make_config(name, **config_overrides))
    if callbacks is not None:
        if not hasattr(agent, "callbacks"):
            raise ConfigError(f"callbacks= is only for agents that run callbacks (SB3's), not {name!r}")
        agent.callbacks = list(callbacks)
    return agent


def check_kind(name: str, kind: str) -> None:
    """Raise :class:`IncompatibleAgentError` unless agent ``name`` runs on envs of ``kind`` (known from the id,
    so this is checked before an env or model is made)."""
    spec = agent_spec(name)
    if kind not in spec.kinds:
        fitting = [n for n, s in AGENT_REGISTRY.items() if kind in s.kinds]
        needs = " or ".join(f"{k} envs ({kind_pattern(k)})" for k in spec.kinds)
        raise IncompatibleAgentError(f"agent {name!r} runs on {needs}; this is a {kind} env. "
                                     f"Agents for {kind} envs: {', '.join(fitting)}")


def check_compatible(name: str, env: gym.Env) -> None:
    """Raise :class:`IncompatibleAgentError` (saying what would work) unless agent ``name`` can run on ``env``."""
    spec = agent_spec(name)
    check_kind(name, kind_of(env))
    base = env.unwrapped
    if spec.needs_logprobs and base.reward_kind == "label_only":
        raise IncompatibleAgentError(f"agent {name!r} needs label log-probabilities; the env uses "
                                     "reward='label_only'")
    if spec.prompt_position is not None and base.prompt_position != spec.prompt_position:
        raise IncompatibleAgentError(f"agent {name!r} puts its prompt {spec.prompt_position} the input; make the "
                                     f"env with prompt_position={spec.prompt_position!r}")
    if spec.white_box and not base.lm.supports_white_box:
        raise IncompatibleAgentError(f"agent {name!r} is white-box (back-propagation): it needs an in-process "
                                     f"transformers model, not {type(base.lm).__name__}")


def _register_builtins() -> None:
    both = ("discrete", "tokenwise")
    register_agent("bdpl", "agents.bdpl:BDPLAgent", both,
                   "BDPL: variance-reduced policy gradient over candidate distributions")
    register_agent("bbt", "agents.bbt:BBTAgent", ("subspace",), "BBT: CMA-ES in a random subspace")
    register_agent("nevergrad", "agents.nevergrad_search:NevergradAgent", ("discrete", "subspace"),
                   "Nevergrad optimizer by name (NGOpt, CMA, TwoPointsDE, PSO, ...), a population per batched call")
    register_agent("ensemble", "agents.ensemble:EnsembleAgent", ("subspace",),
                   "prompt ensemble: K BBT runs sharing the budget, mean of label distributions", needs_logprobs=True)
    register_agent("snapshot", "agents.snapshot:SnapshotAgent", ("subspace",),
                   "snapshot ensemble: best distinct dev-checked prompts of ONE BBT search, each calibrated",
                   needs_logprobs=True, fits_label_bias=True)
    register_agent("cma_elbo", "agents.cma_elbo:CMAELBOAgent", ("subspace",),
                   "CMA-ELBO: CMA-ES on a diagonal Gaussian over z (variational inference)", needs_logprobs=True)
    register_agent("abc_smc", "agents.abc_smc:ABCSMCAgent", ("subspace",),
                   "ABC-SMC on predicted labels only (likelihood-free), weighted vote")
    register_agent("snpe", "agents.snpe:SNPEAgent", ("subspace",),
                   "SNPE (sbi): neural posterior over z given the best simulated labels (likelihood-free), vote")
    register_agent("random", "agents.random_search:RandomSearchAgent", ALL_KINDS, "random search baseline",
                   baseline=True)
    register_agent("manual", "agents.manual:ManualAgent", ALL_KINDS, "the task's template, no learned prompt",
                   baseline=True, prompt_free=True)
    register_agent("calibrated", "agents.manual:CalibratedAgent", ALL_KINDS,
                   "template + one bias per label fitted on train (1 call)", baseline=True, prompt_free=True,
                   needs_logprobs=True, fits_label_bias=True)
    register_agent("icl", "agents.manual:ICLAgent", ALL_KINDS, "in-context demonstrations from train as a text prefix",
                   baseline=True, prompt_free=True, prompt_position="before")
    register_agent("ppo", "agents.sb3:PPOAgent", ALL_KINDS, "Stable-Baselines3 PPO")
    register_agent("a2c", "agents.sb3:A2CAgent", ALL_KINDS, "Stable-Baselines3 A2C")
    register_agent("sac", "agents.sb3:SACAgent", ("subspace",), "Stable-Baselines3 SAC (continuous actions)")
    register_agent("td3", "agents.sb3:TD3Agent", ("subspace",), "Stable-Baselines3 TD3 (continuous actions)")
    register_agent("ddpg", "agents.sb3:DDPGAgent", ("subspace",), "Stable-Baselines3 DDPG (continuous actions)")
    register_agent("dqn", "agents.sb3:DQNAgent", ("tokenwise",), "Stable-Baselines3 DQN (one candidate per step)")
    register_agent("prompt_tuning", "agents.prompt_tuning:PromptTuningAgent", ALL_KINDS,
                   "WHITE-BOX soft prompt tuning by back-propagation (reference)", white_box=True)


_register_builtins()

__all__ = ["AGENT_REGISTRY", "ALL_KINDS", "COMBINE_RULES", "PLUGIN_FLAGS", "VOTE_V1", "Agent", "AgentConfig",
           "AgentSpec", "ConfiguredAgent", "DevSelector", "PromptSetAgent", "Result", "TrainCurve", "agent_spec",
           "check_compatible", "check_kind", "config_dict", "config_fields", "find_agent", "is_white_box",
           "load_agent_plugins", "make_agent", "make_config", "max_members", "parse_field", "register_agent",
           "require", "result_members"]
