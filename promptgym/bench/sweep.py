"""``promptgym sweep``: many protocol runs at once on Ray Tune, cached exactly as ``evaluate`` caches them.

A sweep is the cross product of env ids, agents, agent/env kwarg grids and protocol seeds. One Tune
trial is one protocol seed run, and it runs through :func:`promptgym.bench.evaluate.evaluate` itself
(one seed, the grid point's work folder), not through a copy of it: so a trial writes exactly the
``seed-<s>.json`` that ``promptgym evaluate`` would have written, journals its calls to
``seed-<s>.journal`` while it learns, resumes from that journal when it was killed, and checks a
served model's key as ``evaluate`` does. Re-running a sweep therefore skips the finished seeds (they
never reach Ray), resumes the killed ones, and ``promptgym evaluate`` / ``submit`` assemble and verify
a grid point's runs afterwards without running anything again.

Why Ray Tune and not a process pool: the same command runs on a laptop (``ray.init(num_cpus=...)``)
and on a cluster (``--address``), Tune schedules trials by their CPU needs and reuses a trial's
worker process for the next trial (``reuse_actors``), so the in-process model cache of
:func:`promptgym.lm.get_lm` loads a model once per worker rather than once per trial. Tune's own
experiment state is written to a temporary folder and dropped: the work folders are the sweep's
state, and the only one.

Work folders are :func:`promptgym.runs.evaluate_workdir`: a grid point at the agent's default config
and no env kwargs uses the folder ``promptgym evaluate`` uses; any other point gets a ``@tag`` of its
non-default values (``<env>-bbt@popsize=10-lite``), because a work folder is named by env, agent and
tier only and must never mix configs. Everything that can be refused is refused by :func:`plan_sweep`
before Ray starts or a file is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptgym.agent import agent_spec, check_kind, config_dict, make_config
from promptgym.bench.evaluate import check_cached_config, check_cached_run, check_request, has_uncertainty
from promptgym.bench.schema import BENCH_SEEDS, TIERS
from promptgym.envs.registration import check_env_id, env_config_class, env_kind, env_task
from promptgym.errors import ConfigError, IncompatibleAgentError
from promptgym.jsonable import jsonable
from promptgym.lm import DEFAULT_MODEL, is_served, parse_served
from promptgym.metrics.stats import seed_summary
from promptgym.runs import EVALUATE_ROOT, evaluate_workdir, seed_file, seed_journal
from promptgym.typed_config import parse_field

#: what to run when Ray is missing (an optional extra: only sweeps need it)
RAY_INSTALL = 'pip install "promptgym[sweep]"  (or: .venv/bin/pip install "ray[tune]")'
#: the longest readable tag; a longer one, or one with characters unsafe in a folder name, is hashed
TAG_MAX = 80
TAG_SAFE = re.compile(r"[A-Za-z0-9._=,+-]+")
#: environment variables a trial needs that name paths: sent as absolute paths (Tune's workers may run
#: in another working directory, or on another machine that shares the file system)
PATH_VARS = ("PROMPTGYM_DATA_DIR", "PROMPTGYM_CACHE")
API_KEY_VAR = "PROMPTGYM_API_KEY"
#: seconds between two "still running" lines of the live report
HEARTBEAT_S = 60.0
#: Tune's newer console output prints its configuration box and the path of its (here temporary) results
#: folder even at verbose=0; the legacy output is silent at verbose=0 (the sweep has its own report)
QUIET_TUNE = ("RAY_AIR_NEW_OUTPUT", "0")


# ---------------------------------------------------------------------------------------------- grids
def split_values(text: str) -> list[str]:
    """``"10,20"`` -> ``["10", "20"]``. Commas inside ``[...]``, ``{...}`` or ``"..."`` do not split, so
    ``[32,32],[64]`` is two JSON lists and ``"a, b"`` one string."""
    values, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth < 0:
                break
        elif c == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
        i += 1
    if quoted or depth != 0:
        raise ConfigError(f"unbalanced brackets or quotes in {text!r}")
    values.append(text[start:].strip())
    if not all(values):
        raise ConfigError(f"empty value in {text!r}: give comma-separated values such as 10,20")
    return values


@dataclass(frozen=True)
class GridItem:
    """One ``[SCOPE:]KEY=V1,V2,...`` option: a key, its raw values, and the agent or env id it is for
    (None: every agent or env of the sweep)."""

    scope: str | None
    key: str
    values: tuple[str, ...]
    text: str


def parse_grid_items(items: Sequence[str] | None, flag: str) -> list[GridItem]:
    """``--agent-kwarg`` / ``--env-kwarg`` items as :class:`GridItem`; a key given twice for one scope is refused."""
    out: list[GridItem] = []
    seen: set[tuple[str | None, str]] = set()
    for item in items or []:
        head, sep, rest = item.partition("=")
        scope, _, key = head.strip().rpartition(":")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} takes [SCOPE:]KEY=VALUE[,VALUE...], got {item!r}")
        if (scope or None, key) in seen:
            raise ConfigError(f"{flag} {key} is given twice{f' for {scope}' if scope else ''}; list every value "
                              f"in one item: {key}=A,B")
        seen.add((scope or None, key))
        out.append(GridItem(scope.strip() or None, key, tuple(split_values(rest)), item))
    return out


def _check_scopes(items: list[GridItem], names: Sequence[str], flag: str, what: str) -> None:
    for it in items:
        if it.scope is not None and it.scope not in names:
            raise ConfigError(f"{flag} {it.text!r} is scoped to {it.scope!r}, which is not one of the sweep's {what}: "
                              f"{', '.join(names)}")


def _distinct(key: str, values: list[Any], text: str) -> list[Any]:
    canon = [json.dumps(jsonable(v), sort_keys=True) for v in values]
    if len(set(canon)) != len(canon):
        raise ConfigError(f"{text!r} lists a value of {key} twice (after typing: {values})")
    return values


def _product(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def agent_grid(agent: str, items: list[GridItem]) -> list[dict[str, Any]]:
    """Every agent-kwargs dict of ``agent``'s grid, values typed by its config's fields (``popsize=10,20``
    -> ``[{"popsize": 10}, {"popsize": 20}]``; no items -> ``[{}]``). ``seed`` is refused: the protocol
    sets the agent seed to the split seed (sweep the split seeds with ``--seeds``)."""
    config_class = agent_spec(agent).config_class
    grid: dict[str, list[Any]] = {}
    for it in items:
        if it.scope not in (None, agent):
            continue
        if it.key == "seed":
            raise ConfigError("--agent-kwarg seed: the protocol sets the agent seed to the split seed; sweep the "
                              "split seeds with --seeds")
        fields = [f.name for f in dataclasses.fields(config_class)]
        if it.key not in fields:
            hint = "" if it.scope else f"; scope an option to one agent as --agent-kwarg AGENT:{it.key}=..."
            raise ConfigError(f"agent {agent!r} has no config field {it.key!r} (its fields: {', '.join(fields)}){hint}")
        grid[it.key] = _distinct(it.key, [parse_field(config_class, it.key, v) for v in it.values], it.text)
    return _product(grid)


def env_kwarg_names(env_id: str) -> set[str]:
    """The keyword arguments the env of ``env_id`` takes (its kind's config fields but ``task``)."""
    return set(env_config_class(env_id).kwarg_names())


def env_grid(env_id: str, items: list[GridItem]) -> list[dict[str, Any]]:
    """Every env-kwargs dict of ``env_id``'s grid, values typed by the kind's config fields as ``--env-kwarg``
    types them; a kwarg the env's kind does not take is refused by name."""
    config_class = env_config_class(env_id)
    grid: dict[str, list[Any]] = {}
    for it in items:
        if it.scope not in (None, env_id):
            continue
        if it.key not in env_kwarg_names(env_id):
            hint = "" if it.scope else f"; scope it to one env as --env-kwarg ENV_ID:{it.key}=..."
            raise ConfigError(f"{env_id} ({env_kind(env_id)} kind) takes no env kwarg {it.key!r}{hint} "
                              "(`promptgym list envs` lists them)")
        grid[it.key] = _distinct(it.key, [config_class.parse(it.key, v) for v in it.values], it.text)
    return _product(grid)


def _tag_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(jsonable(v), separators=(",", ":"))


def point_tag(agent: str, agent_kwargs: dict[str, Any], env_kwargs: dict[str, Any]) -> str:
    """The work-folder tag of a grid point: its agent kwargs that differ from the agent's defaults and
    every env kwarg (``env.`` prefix), as ``key=value`` joined by commas; "" for the defaults (the folder
    ``promptgym evaluate`` uses). A tag too long or unsafe as a folder name becomes ``kw-<sha256[:10]>``."""
    default = jsonable(config_dict(make_config(agent)))
    changed = {k: v for k, v in sorted(agent_kwargs.items()) if jsonable(v) != default.get(k)}
    parts = [f"{k}={_tag_value(v)}" for k, v in changed.items()]
    parts += [f"env.{k}={_tag_value(v)}" for k, v in sorted(env_kwargs.items())]
    tag = ",".join(parts)
    if tag and (len(tag) > TAG_MAX or not TAG_SAFE.fullmatch(tag)):
        canon = json.dumps([jsonable(changed), jsonable(env_kwargs)], sort_keys=True)
        tag = "kw-" + hashlib.sha256(canon.encode()).hexdigest()[:10]
    return tag


# ---------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class GridPoint:
    """One (env, agent, kwargs) combination and the work folder its seed runs are cached in."""

    env_id: str
    agent: str
    agent_kwargs: dict[str, Any]
    env_kwargs: dict[str, Any]
    tag: str
    workdir: Path

    @property
    def kwargs_text(self) -> str:
        parts = [f"{k}={_tag_value(v)}" for k, v in sorted(self.agent_kwargs.items())]
        parts += [f"env.{k}={_tag_value(v)}" for k, v in sorted(self.env_kwargs.items())]
        return " ".join(parts) or "(defaults)"

    def evaluate_command(self, tier: str, model: str, default_root: bool) -> str:
        """The ``promptgym evaluate`` command that assembles this point's submission from its cache."""
        import shlex

        words = ["promptgym", "evaluate", "--env", self.env_id, "--agent", self.agent, "--tier", tier]
        if model != DEFAULT_MODEL:
            words += ["--model", model]
        for k, v in sorted(self.agent_kwargs.items()):
            words += ["--agent-kwarg", f"{k}={_tag_value(v)}"]
        for k, v in sorted(self.env_kwargs.items()):
            words += ["--env-kwarg", f"{k}={_tag_value(v)}"]
        if self.tag or not default_root:
            words += ["--workdir", str(self.workdir)]
        return shlex.join(words)


@dataclass
class SweepPlan:
    """What a sweep will do: its grid points, the seeds, and which (point, seed) runs are to run."""

    points: list[GridPoint]
    seeds: tuple[int, ...]
    tier: str
    model: str
    root: Path
    pending: list[tuple[int, int]] = field(default_factory=list)  # (point index, seed), seed-major
    resuming: set[tuple[int, int]] = field(default_factory=set)  # pending runs with a journal on disk
    cached: set[tuple[int, int]] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)  # (env, agent) pairs of incompatible kinds

    @property
    def budget(self) -> int:
        return TIERS[self.tier]


def _split_names(text: str | Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or not all(names):
        raise ConfigError(f"--{what} takes comma-separated names, got {text!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--{what} names one twice: {text!r}")
    return names


def plan_sweep(envs: str | Sequence[str], agents: str | Sequence[str], tier: str = "lite",
               seeds: Sequence[int] = BENCH_SEEDS, model: str = DEFAULT_MODEL,
               agent_kwargs: Sequence[str] | None = None, env_kwargs: Sequence[str] | None = None,
               root: str | Path | None = None) -> SweepPlan:
    """Check a sweep request and plan it; nothing is started, loaded or written.

    ``agent_kwargs`` / ``env_kwargs`` are ``[SCOPE:]KEY=V1,V2`` strings (see :func:`split_values`): each
    key's values form one axis of the grid, the axes cross. An unscoped agent kwarg must be a field of
    every agent of the sweep (``bbt:popsize=10,20`` scopes it to one); an env kwarg must be taken by
    every env (or be scoped to one env id). An (env, agent) pair of kinds that do not fit is skipped and
    listed in ``plan.skipped``; a sweep left with nothing to run is refused. Every point is checked as
    ``evaluate`` checks a request, and every cached seed file it would reuse must be of the same config.
    """
    env_ids, agent_names = _split_names(envs, "envs"), _split_names(agents, "agents")
    for env_id in env_ids:
        check_env_id(env_id)
    for agent in agent_names:
        agent_spec(agent)
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds names a seed twice: {list(seeds)}")
    a_items, e_items = parse_grid_items(agent_kwargs, "--agent-kwarg"), parse_grid_items(env_kwargs, "--env-kwarg")
    _check_scopes(a_items, agent_names, "--agent-kwarg", "agents")
    _check_scopes(e_items, env_ids, "--env-kwarg", "envs")
    if is_served(model):
        parse_served(model)  # a malformed URL is refused here, without a network call
    base = Path(root) if root is not None else EVALUATE_ROOT
    plan = SweepPlan([], seeds, tier, model, base)
    for env_id in env_ids:
        for agent in agent_names:
            try:
                check_kind(agent, env_kind(env_id))
            except IncompatibleAgentError:
                plan.skipped.append(f"{agent} on {env_id} (agent for {'/'.join(agent_spec(agent).kinds)} envs)")
                continue
            for e_kw in env_grid(env_id, e_items):
                for a_kw in agent_grid(agent, a_items):
                    check_request(env_id, agent, tier, seeds, e_kw or None, a_kw or None)
                    tag = point_tag(agent, a_kw, e_kw)
                    work = evaluate_workdir(env_id, agent, tier, root=base, tag=tag, model=model)
                    plan.points.append(GridPoint(env_id, agent, a_kw, e_kw, tag, work))
    if not plan.points:
        raise ConfigError("no agent of the sweep runs on any of its envs: " + "; ".join(plan.skipped))
    folders = [p.workdir for p in plan.points]
    twice = sorted({str(f) for f in folders if folders.count(f) > 1})
    if twice:  # two values that read alike (e.g. "10" and 10 for a field taking both) would share a folder
        raise ConfigError(f"two grid points would share the work folder {twice[0]}; give values that differ")
    for seed in seeds:  # seed-major: a partial sweep has every point's first seeds
        for i, point in enumerate(plan.points):
            path = seed_file(point.workdir, seed)
            if path.is_file():
                try:
                    run = json.loads(path.read_text())
                except ValueError:
                    raise ConfigError(f"{path} is not a seed run (bad JSON); move it away") from None
                check_cached_run(path, run, point.env_kwargs or None, False, model)
                check_cached_config(path, run, point.agent, point.agent_kwargs, seed)
                if has_uncertainty(run):
                    plan.cached.add((i, seed))
                    continue
            plan.pending.append((i, seed))  # an older cached run is completed by evaluate (uncharged)
            if seed_journal(point.workdir, seed).is_file():
                plan.resuming.add((i, seed))
    return plan


def check_resources(num_cpus: int | None, cpus_per_trial: float, address: str | None) -> None:
    """Refuse Ray resources that cannot work: a trial that could never be scheduled would wait forever."""
    if not cpus_per_trial > 0 or not math.isfinite(cpus_per_trial):
        raise ConfigError(f"--cpus-per-trial must be > 0, got {cpus_per_trial}")
    if address is not None and num_cpus is not None:
        raise ConfigError("--num-cpus is for a local Ray; a cluster (--address) has the CPUs its nodes bring")
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus must be >= 1, got {num_cpus}")
    if address is None and cpus_per_trial > (num_cpus or os.cpu_count() or 1):
        raise ConfigError(f"--cpus-per-trial {cpus_per_trial} is more than the {num_cpus or os.cpu_count()} CPUs "
                          "of the local Ray: no trial could start")


def import_ray() -> Any:
    """``ray`` with Tune, or a one-line ConfigError saying how to install it."""
    try:
        import ray
        import ray.tune  # noqa: F401
    except ImportError:
        raise ConfigError(f"promptgym sweep needs Ray Tune, which is not installed: {RAY_INSTALL}") from None
    return ray


def describe(plan: SweepPlan) -> list[str]:
    """The plan as lines for people: what runs, what is cached, what resumes, what was skipped."""
    n = len(plan.points) * len(plan.seeds)
    lines = [f"sweep: {len(plan.points)} grid point(s) x {len(plan.seeds)} seed(s) = {n} run(s) on tier {plan.tier} "
             f"({plan.budget:,} calls each), model {plan.model}: {len(plan.pending)} to run"
             f"{f' ({len(plan.resuming)} resume from a journal)' if plan.resuming else ''}, "
             f"{len(plan.cached)} cached"]
    for i, p in enumerate(plan.points):
        todo = [s for j, s in plan.pending if j == i]
        lines.append(f"  {p.env_id} / {p.agent} / {p.kwargs_text} -> {p.workdir}"
                     + (f"  (to run: seeds {','.join(map(str, todo))})" if todo else "  (all cached)"))
    lines += [f"  skipped: {s}" for s in plan.skipped]
    return lines


# ---------------------------------------------------------------------------------------------- the trial
def _use_tier(tier: str, budget: int) -> None:
    """Make a trial's worker agree with the driver on the tier's budget. A tier the worker lacks (one a
    test added on the driver) is added; a tier with another budget (another promptgym on a cluster node)
    is refused rather than run at a budget the plan did not state."""
    have = TIERS.get(tier)
    if have is None:
        TIERS[tier] = int(budget)
    elif have != budget:
        raise ConfigError(f"tier {tier!r} is {have} calls on this Ray node but {budget} on the driver: install the "
                          "same promptgym on every node")


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """One protocol seed run of a grid point through ``evaluate`` (its cache, journal and checks); returns
    what the live table shows. Runs in a Ray worker; usable in process too."""
    from promptgym.bench.evaluate import evaluate

    for name, value in spec["environ"].items():
        os.environ[name] = value
    _use_tier(spec["tier"], spec["budget"])
    import torch

    torch.set_num_threads(int(spec["threads"]))
    work = Path(spec["workdir"])
    seed = int(spec["seed"])
    evaluate(spec["env_id"], spec["agent"], spec["tier"], spec["model"], (seed,), spec["env_kwargs"] or None,
             spec["agent_kwargs"] or None, workdir=work, progress=False, score_store=spec.get("score_store"))
    run = json.loads(seed_file(work, seed).read_text())
    return {"test_metric": float(run["test"]["metric"]), "calls_used": int(run["calls_used"]),
            "resumed_calls": int(run.get("extra", {}).get("resumed_calls", 0))}


def _tune_trial(config: dict[str, Any]) -> dict[str, Any]:
    return run_trial(config["spec"])  # a function trainable's returned dict is its final result (every Ray >= 2.0)


def _run_config_class() -> Any:
    """Tune's RunConfig: ``ray.tune.RunConfig`` since Ray 2.40ish, ``ray.train.RunConfig`` before (the extra
    allows Ray >= 2.9)."""
    from ray import tune

    if hasattr(tune, "RunConfig"):
        return tune.RunConfig
    from ray import train

    return train.RunConfig


def trial_specs(plan: SweepPlan, cpus_per_trial: float,
                score_store: str | Path | None = None) -> list[dict[str, Any]]:
    """One spec per pending run (what a Tune trial's config carries: no secrets, absolute paths)."""
    store = None if score_store is None else str(Path(score_store).expanduser().resolve())
    environ = {name: str(Path(os.environ[name]).expanduser().resolve()) for name in PATH_VARS if os.environ.get(name)}
    specs = []
    for n, (i, seed) in enumerate(plan.pending):
        p = plan.points[i]
        specs.append({"index": n, "point": i, "env_id": p.env_id, "agent": p.agent, "seed": int(seed),
                      "tier": plan.tier, "budget": plan.budget, "model": plan.model,
                      "agent_kwargs": dict(p.agent_kwargs), "env_kwargs": dict(p.env_kwargs),  # typed, as planned
                      "workdir": str(p.workdir.resolve()), "environ": environ,
                      "threads": max(1, int(cpus_per_trial)), "score_store": store,
                      "label": f"{p.env_id} / {p.agent} / {p.kwargs_text} / seed {seed}"})
    return specs


# ---------------------------------------------------------------------------------------------- reporting
@dataclass
class TrialState:
    """A trial as the live table and the summary know it."""

    label: str
    status: str = "pending"  # pending, running, done, failed
    started: float | None = None
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _trial_error(trial: Any) -> tuple[str, str]:
    """A failed trial's error as one line (the exception and its message; a promptgym error by its class
    name alone) and its whole traceback text."""
    get = getattr(trial, "get_error", None)  # Ray >= 2.10; before, the traceback was only in error_file
    text = get() if callable(get) else None
    path = getattr(trial, "error_file", None)
    if not text and path and Path(path).is_file():
        text = Path(path).read_text()
    text = str(text or "")
    return _last_line(text).removeprefix("promptgym.errors."), text


def _make_reporter(states: dict[int, TrialState], out: Callable[[str], None]) -> Any:
    """A Tune callback printing one line per trial event (start, done, failed) with the sweep's counts,
    and the running trials once a minute: a concise live table that stays readable in a log file."""
    from ray.tune import Callback

    class Reporter(Callback):
        def __init__(self) -> None:
            self.last_beat = time.time()

        def _counts(self) -> str:
            n = len(states)
            by = {s: sum(1 for t in states.values() if t.status == s) for s in ("done", "running", "failed")}
            return f"[{by['done']:>3}/{n} done, {by['running']} running, {by['failed']} failed]"

        @staticmethod
        def _state(trial: Any) -> TrialState:
            return states[int(trial.config["spec"]["index"])]

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            st = self._state(trial)
            st.status, st.started = "running", time.time()
            out(f"{self._counts()} start   {st.label}")

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self._state(trial).result = dict(result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            st = self._state(trial)
            st.status, st.seconds = "done", time.time() - (st.started or time.time())
            r = st.result or dict(trial.last_result or {})
            resumed = f", {r['resumed_calls']} replayed from the journal" if r.get("resumed_calls") else ""
            metric = r.get("test_metric", float("nan"))
            out(f"{self._counts()} done    {st.label}: test {metric:.4f}, {r.get('calls_used', '?')} calls{resumed}, "
                f"{st.seconds:.0f} s")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            st = self._state(trial)
            st.status, st.seconds = "failed", time.time() - (st.started or time.time())
            st.error, trace = _trial_error(trial)
            if "promptgym.errors." not in _last_line(trace):  # not an error promptgym raised on purpose: a bug's
                out(trace.rstrip())                            # traceback is the only way to find it
            out(f"{self._counts()} FAILED  {st.label}: {st.error}")

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            now = time.time()
            if now - self.last_beat < HEARTBEAT_S:
                return
            self.last_beat = now
            running = [f"{t.label} ({now - (t.started or now):.0f} s)" for t in states.values()
                       if t.status == "running"]
            if running:
                out(f"{self._counts()} running: " + "; ".join(running))

    return Reporter()


@dataclass
class PointSummary:
    """A grid point after the sweep, read from its work folder (the cache is the truth)."""

    point: GridPoint
    metric_name: str
    seeds_done: list[int]
    seeds_wanted: int
    metric_mean: float | None
    metric_std: float | None
    calls: int
    wall_seconds: float
    failed: list[int]


def summarize(plan: SweepPlan, states: dict[int, TrialState] | None = None) -> list[PointSummary]:
    """Per grid point: seeds done (of those swept), mean ± std test metric, calls used and wall time (learning
    and test scoring) summed over those seeds' files, and the seeds whose trial failed."""
    from promptgym.tasks import get_task

    failed: dict[int, list[int]] = {}
    for n, st in (states or {}).items():
        if st.status == "failed":
            i, seed = plan.pending[n]
            failed.setdefault(i, []).append(seed)
    rows = []
    for i, p in enumerate(plan.points):
        files = [seed_file(p.workdir, s) for s in plan.seeds]
        runs = [json.loads(f.read_text()) for f in files if f.is_file()]
        metrics = [float(r["test"]["metric"]) for r in runs]
        mean, std = seed_summary(metrics) if metrics else (None, None)
        wall = sum(float(r.get("wall_seconds", 0)) + float(r.get("extra", {}).get("test_wall_seconds", 0))
                   for r in runs)
        rows.append(PointSummary(p, get_task(env_task(p.env_id)).metric, [int(r["seed"]) for r in runs],
                                 len(plan.seeds), mean, std, sum(int(r["calls_used"]) for r in runs), wall,
                                 sorted(failed.get(i, []))))
    return rows


def summary_lines(plan: SweepPlan, rows: list[PointSummary]) -> list[str]:
    """The end-of-sweep table, then the ``promptgym evaluate`` command of every point whose five protocol
    seeds are all cached (it assembles the submission from them, running nothing)."""
    head = ("env", "agent", "grid point", "seeds", "test metric (mean ± std)", "calls", "wall")
    table = [head]
    for r in rows:
        metric = "-" if r.metric_mean is None else f"{r.metric_name} {r.metric_mean:.4f} ± {r.metric_std:.4f}"
        seeds = f"{len(r.seeds_done)}/{r.seeds_wanted}" + (f" ({len(r.failed)} failed)" if r.failed else "")
        table.append((r.point.env_id, r.point.agent, r.point.kwargs_text, seeds, metric, f"{r.calls:,}",
                      f"{r.wall_seconds:.0f} s"))
    widths = [max(len(row[c]) for row in table) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    default_root = plan.root == EVALUATE_ROOT
    complete = [r for r in rows if all(seed_file(r.point.workdir, s).is_file() for s in BENCH_SEEDS)]
    if complete:
        lines.append("every protocol seed cached; each command writes its submission without running anything:")
        lines += [f"  {r.point.evaluate_command(plan.tier, plan.model, default_root)}" for r in complete]
    return lines


# ---------------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune's console output off while the sweep's own report runs: its configuration box and temporary
    results path (:data:`QUIET_TUNE`), and its logged trial tracebacks (the report prints a failed trial's
    error itself, the whole traceback when it is not a promptgym error)."""
    import logging

    previous = os.environ.get(QUIET_TUNE[0])
    os.environ[QUIET_TUNE[0]] = QUIET_TUNE[1]
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        tune_log.setLevel(level)
        if previous is None:
            os.environ.pop(QUIET_TUNE[0], None)
        else:
            os.environ[QUIET_TUNE[0]] = previous


def _served_native(model: str) -> bool:
    return is_served(model) and parse_served(model)[0] == "native"


def run_sweep(plan: SweepPlan, num_cpus: int | None = None, cpus_per_trial: float = 1.0, address: str | None = None,
              out: Callable[[str], None] = print,
              score_store: str | Path | None = None) -> tuple[list[PointSummary], dict[int, TrialState]]:
    """Run the plan's pending trials on Ray Tune; return the per-point summary and every trial's state.

    A local Ray (``num_cpus``, default all CPUs; no dashboard) is started and shut down here; with
    ``address`` the sweep joins that cluster, whose nodes must share the work folders' and data's file
    system (the trials write where the driver reads). A Ray session the caller already started is used
    as it is and left running. Against ``promptgym serve`` (``http://``) trials run one at a time: the
    protocol checks that each seed starts on an unused key (its usage receipt must count that seed's
    calls only), which concurrent trials on one ``$PROMPTGYM_API_KEY`` would race past.
    ``score_store``: one SQLite file every trial keeps its test and OOD scores in
    (:mod:`promptgym.score_store`), so a resumed sweep and the entries that share a prompt (a template
    and its calibrated variant) score it once. One host's trials only: on a cluster give each node a
    local file (SQLite's write-ahead log does not work on a network file system).
    """
    check_resources(num_cpus, cpus_per_trial, address)
    states: dict[int, TrialState] = {}
    if not plan.pending:
        return summarize(plan), states
    ray = import_ray()
    import logging

    from ray import tune

    specs = trial_specs(plan, cpus_per_trial, score_store)
    states.update({s["index"]: TrialState(s["label"]) for s in specs})
    own = not ray.is_initialized()
    if own and address is not None:
        # a cluster's workers do not inherit the driver's environment: a served model's key goes with the job
        # (in its runtime env, not in the trials' configs, which Tune records)
        key = os.environ.get(API_KEY_VAR)
        env_vars = {API_KEY_VAR: key} if key and is_served(plan.model) else {}
        try:
            ray.init(address=address, runtime_env={"env_vars": env_vars}, logging_level=logging.WARNING,
                     log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address!r}: {_last_line(str(exc))}") from None
    elif own:
        # ERROR: the local Ray's start-up notices (its token authentication, ...) are not the user's to act on
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="promptgym-sweep-")
    try:
        tuner = tune.Tuner(
            tune.with_resources(_tune_trial, {"cpu": cpus_per_trial}),
            param_space={"spec": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(
                reuse_actors=True, max_concurrent_trials=1 if _served_native(plan.model) else None,
                trial_name_creator=lambda t: f"trial-{t.config['spec']['index']}",
                trial_dirname_creator=lambda t: f"trial-{t.config['spec']['index']}"),
            run_config=_run_config_class()(name="sweep", storage_path=storage, verbose=0,
                                           callbacks=[_make_reporter(states, out)]),
        )
        with _quiet_tune():
            tuner.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if own:
            ray.shutdown()
    return summarize(plan, states), states
