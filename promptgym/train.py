"""One training run, as ``promptgym train`` does it: make the env, run an agent, write a run folder.

A run folder ``<out>/<env>-<agent>-<seed>-<timestamp>/`` holds:

* ``config.json``: env id and kwargs, model and dtype, split seed, budget, agent name and config,
  the calls actually used, fingerprints (LM weights, data files) and package versions, so that the
  run can be repeated and checked.
* ``prompt.json``: the Result (action, prompt text, train reward, dev metric, label bias,
  demonstrations, ...); ``soft_prompt.npy`` too for the white-box agent. :func:`load_result` reads it.
* ``prompt.txt``: the same for people: the prompt text (discrete), the z vector (subspace), the
  bias or demonstrations, and the first train example rendered with the prompt.
* ``curve.csv`` / ``curve.png``: best-so-far train reward and dev metric against calls used
  (from the agent's Result; for the white-box agent, against forward+backward passes).

The live progress bar watches the env's charged scorings through
``PromptEnvBase.score_listeners``: calls used / budget, best train reward and best dev metric seen.

:func:`test_metric` scores a Result on the task's test split, outside any budget: the leaderboard
harness reuses it. Following MISSION.md (search in bf16, report in fp32), it scores with the same
model loaded in fp32 by default.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.lm import DEFAULT_MODEL

CURVE_HEADER = ("best_train_reward", "best_dev_metric")


@dataclass
class TrainRun:
    """What :func:`run_training` returns: the agent's Result, the run folder and the env it used."""

    result: Any
    run_dir: Path
    env: Any
    seconds: float


# ---------------------------------------------------------------------------------------------- parsing
def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """``["lr=0.5", "reward=hinge", "policy_kwargs={\\"net_arch\\": [32]}"]`` -> dict; values as JSON if they parse."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = {"none": None, "true": True, "false": False}.get(value.lower(), value)
    return out


# ---------------------------------------------------------------------------------------------- progress
class LiveMonitor:
    """Listens to the env's charged scorings and keeps a rich progress bar up to date."""

    def __init__(self, base: Any, label: str, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.base = base
        self.best_train = -math.inf
        self.best_dev = -math.inf
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                                 MofNCompleteColumn(), TextColumn("calls  best train {task.fields[train]}  "
                                                                  "best dev {task.fields[dev]}"),
                                 TimeElapsedColumn(), disable=not enabled)
        self.task = self.progress.add_task(label, total=base.budget.max_calls, train="-", dev="-")

    def __call__(self, split: str, outcomes: list) -> None:
        if split == "train":
            self.best_train = max(self.best_train, *(o.reward for o in outcomes))
        else:
            self.best_dev = max(self.best_dev, *(o.metric for o in outcomes))
        self.progress.update(self.task, completed=self.base.budget.calls,
                             train=_fmt(self.best_train), dev=_fmt(self.best_dev))

    def __enter__(self) -> LiveMonitor:
        self.progress.start()
        self.base.score_listeners.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.base.score_listeners.remove(self)
        self.progress.update(self.task, completed=self.base.budget.calls)
        self.progress.stop()


def _fmt(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4f}"


# ---------------------------------------------------------------------------------------------- running
def make_env(env_id: str, budget: int, split_seed: int = 13, model: Any = DEFAULT_MODEL, dtype: str = "bfloat16",
             env_kwargs: dict[str, Any] | None = None):
    import gymnasium as gym

    import promptgym  # noqa: F401  (registers the ids)

    return gym.make(env_id, model=model, dtype=dtype, split_seed=split_seed, budget=budget, **(env_kwargs or {}))


def run_training(env_id: str, agent: str, budget: int, seed: int = 0, split_seed: int = 13,
                 model: Any = DEFAULT_MODEL, dtype: str = "bfloat16", out: str | Path = "runs",
                 env_kwargs: dict[str, Any] | None = None, agent_kwargs: dict[str, Any] | None = None,
                 progress: bool = True) -> TrainRun:
    """Train registered agent ``agent`` on ``env_id`` under ``budget`` calls and write its run folder.

    ``seed`` is the agent's seed (its config's ``seed`` unless ``agent_kwargs`` sets one);
    ``split_seed`` picks the 16-shot split.
    """
    from agents import AGENTS, check_compatible, make_agent

    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; registered agents: {', '.join(AGENTS)}")
    agent_kwargs = dict(agent_kwargs or {})
    agent_kwargs.setdefault("seed", int(seed))
    learner = make_agent(agent, **agent_kwargs)   # config errors surface before the model loads
    env = make_env(env_id, budget, split_seed, model, dtype, env_kwargs)
    check_compatible(agent, env)
    base = env.unwrapped
    started = time.time()
    with LiveMonitor(base, agent, enabled=progress):
        result = learner.learn(env)
    seconds = time.time() - started
    run_dir = _new_run_dir(Path(out), env_id, agent, seed)
    config = run_config(env_id, env, agent, learner, budget, seed, split_seed, model, dtype, env_kwargs, seconds)
    write_run(run_dir, env, result, config)
    return TrainRun(result, run_dir, env, seconds)


def _new_run_dir(out: Path, env_id: str, agent: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{env_id}-{agent}-{seed}-{stamp}".replace("/", "_").replace(":", "_")
    run_dir = out / name
    n = 2
    while run_dir.exists():
        run_dir = out / f"{name}-{n}"
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import promptgym

    out = {"promptgym": promptgym.__version__, "python": platform.python_version()}
    for pkg in ("gymnasium", "stable-baselines3", "torch", "transformers", "numpy", "cma"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_config(env_id: str, env: Any, agent: str, learner: Any, budget: int, seed: int, split_seed: int,
               model: Any, dtype: str, env_kwargs: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    from agents import config_dict, env_kind_of

    base = env.unwrapped
    cands = getattr(base, "candidates", None)
    return {
        "env_id": env_id,
        "env_kind": env_kind_of(env),
        "task": base.spec_task.name,
        "env_kwargs": _jsonable(env_kwargs or {}),
        "model": base.model_name if not isinstance(model, str) else model,
        "dtype": dtype,
        "split_seed": int(split_seed),
        "budget": int(budget),
        "seed": int(seed),
        "agent": agent,
        "agent_config": _jsonable(config_dict(getattr(learner, "config", None))),
        "budget_used": base.budget.as_dict(),
        "seconds": round(seconds, 2),
        "lm": {"name": getattr(base.lm, "name", None), "weights_sha256": getattr(base.lm, "weights_sha256", None)},
        "data": {"train": base.train.source, "train_sha256": base.train.sha256,
                 "dev": base.dev.source, "dev_sha256": base.dev.sha256},
        "candidates": None if cands is None else {"source": cands.source, "count": len(cands)},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ---------------------------------------------------------------------------------------------- run files
def write_run(run_dir: Path, env: Any, result: Any, config: dict[str, Any]) -> None:
    """Write config.json, prompt.json (+ soft_prompt.npy), prompt.txt, curve.csv and curve.png."""
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    record = result_record(env, result)
    soft = result.extra.get("soft_prompt")
    if soft is not None:
        np.save(run_dir / "soft_prompt.npy", np.asarray(soft, dtype=np.float32))
        record["soft_prompt_file"] = "soft_prompt.npy"
    (run_dir / "prompt.json").write_text(json.dumps(record, indent=2) + "\n")
    (run_dir / "prompt.txt").write_text(prompt_report(env, result, config))
    unit, rows = curve_rows(result)
    with (run_dir / "curve.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow((unit, *CURVE_HEADER))
        for x, train, dev in rows:
            writer.writerow((x, _num(train), _num(dev)))
    plot_curve(run_dir / "curve.png", unit, rows, f"{config['agent']} on {config['env_id']}",
               env.unwrapped.spec_task.metric)


def result_record(env: Any, result: Any) -> dict[str, Any]:
    """The Result as JSON (NaN -> null; arrays -> lists; the soft prompt goes to its own file)."""
    base = env.unwrapped
    action = None if result.action is None else np.asarray(result.action).tolist()
    extra = {k: v for k, v in result.extra.items() if k != "soft_prompt"}
    return {
        "agent": result.agent,
        "action": action,
        "action_kind": _action_kind(env, result),
        "prompt_text": result.prompt_text,
        "train_reward": _num(result.train_reward),
        "dev_metric": _num(result.dev_metric),
        "metric": base.spec_task.metric,
        "calls_used": int(result.calls_used),
        "label_bias": None if result.label_bias is None else np.asarray(result.label_bias).tolist(),
        "demonstrations": result.demonstrations,
        "curve": [list(p) for p in result.curve],
        "train_curve": [list(p) for p in result.train_curve],
        "config": _jsonable(result.config),
        "extra": _jsonable(extra),
    }


def load_result(run_dir: str | Path):
    """The Result stored in a run folder (for re-evaluation with :func:`test_metric`)."""
    from agents.base import Result

    run_dir = Path(run_dir)
    rec = json.loads((run_dir / "prompt.json").read_text())
    extra = dict(rec.get("extra") or {})
    if rec.get("soft_prompt_file"):
        extra["soft_prompt"] = np.load(run_dir / rec["soft_prompt_file"])
    return Result(rec["agent"], None if rec["action"] is None else np.asarray(rec["action"]), rec["prompt_text"],
                  _float(rec["train_reward"]), rec["dev_metric"], rec["calls_used"],
                  [tuple(p) for p in rec["curve"]], [tuple(p) for p in rec["train_curve"]],
                  None if rec["label_bias"] is None else np.asarray(rec["label_bias"], dtype=np.float32),
                  rec["demonstrations"], rec["config"], extra)


def _action_kind(env: Any, result: Any) -> str:
    from agents import env_kind_of

    if result.extra.get("soft_prompt") is not None:
        return "soft_prompt"
    if result.demonstrations is not None:
        return "demonstrations"
    if result.action is None:
        return "template"
    return "z" if env_kind_of(env) == "subspace" else "candidate_indices"


def prompt_report(env: Any, result: Any, config: dict[str, Any]) -> str:
    """A readable summary of the learned prompt, with one train example rendered around it."""
    base = env.unwrapped
    metric = base.spec_task.metric
    lines = [f"agent: {result.agent}    env: {config['env_id']}    model: {config['model']}    "
             f"split seed: {config['split_seed']}",
             f"calls used: {result.calls_used} / {config['budget']}",
             f"best train reward: {_fmt(result.train_reward)}    dev {metric}: {_fmt(result.dev_metric)}", ""]
    kind = _action_kind(env, result)
    if kind == "candidate_indices":
        lines += [f"prompt: {result.prompt_text!r}", f"candidate indices: {np.asarray(result.action).tolist()}"]
    elif kind == "z":
        z = np.asarray(result.action, dtype=np.float64)
        lines += [result.prompt_text, f"z ({z.size} values, |z| = {np.linalg.norm(z):.4f}):",
                  np.array2string(z, precision=4, max_line_width=100, threshold=10**6)]
    elif kind == "soft_prompt":
        soft = np.asarray(result.extra["soft_prompt"])
        lines += [result.prompt_text, f"soft prompt: {soft.shape[0]} x {soft.shape[1]} vectors in soft_prompt.npy "
                                      "(WHITE-BOX: learned by back-propagation)"]
    elif kind == "demonstrations":
        lines += ["in-context demonstrations (a text prefix, outside the action space):", result.demonstrations]
    else:
        lines += ["prompt: (none: the task's template alone)"]
    if result.label_bias is not None:
        lines.append("label bias: " + ", ".join(f"{w} {b:+.4f}" for w, b in
                                                zip(base.template.verbalizers, np.asarray(result.label_bias))))
    left, right = base._segments["train"][0]
    shown = {"candidate_indices": result.prompt_text, "demonstrations": result.demonstrations,
             "template": ""}.get(kind, "<soft prompt>")
    lines += ["", "first train example with the prompt in [[ ]] and the label words after ->:",
              f"{left}[[{shown}]]{right} -> {' / '.join(base.template.verbalizers)}", ""]
    return "\n".join(lines)


def curve_rows(result: Any) -> tuple[str, list[tuple[int, float | None, float | None]]]:
    """``(unit, [(x, best train reward so far, best dev metric so far)])`` merged on x."""
    if result.extra.get("white_box") and not result.curve:
        unit, dev, train = "passes", result.extra.get("curve", []), result.extra.get("train_curve", [])
    else:
        unit, dev, train = "calls", result.curve, result.train_curve
    xs = sorted({int(x) for x, _ in dev} | {int(x) for x, _ in train})
    rows: list[tuple[int, float | None, float | None]] = []
    best_t: float | None = None
    best_d: float | None = None
    ti = di = 0
    train_s, dev_s = sorted(train), sorted(dev)
    for x in xs:
        while ti < len(train_s) and train_s[ti][0] <= x:
            v = float(train_s[ti][1])
            best_t = v if best_t is None or v > best_t else best_t
            ti += 1
        while di < len(dev_s) and dev_s[di][0] <= x:
            v = float(dev_s[di][1])
            best_d = v if best_d is None or v > best_d else best_d
            di += 1
        rows.append((x, best_t, best_d))
    if not rows:
        rows = [(int(result.calls_used), None, _float_or_none(result.dev_metric))]
    return unit, rows


def plot_curve(path: Path, unit: str, rows: list, title: str, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, col, label in ((axes[0], 1, "best train reward"), (axes[1], 2, f"best dev {metric}")):
        pts = [(r[0], r[col]) for r in rows if r[col] is not None and math.isfinite(r[col])]
        if pts:
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", marker=".")
        else:
            ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(unit + (" (API calls)" if unit == "calls" else " (white-box)"))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- test split
def _scoring_lm(base: Any, dtype: str | None):
    """The env's model in ``dtype`` (a LocalLM is reloaded through the shared cache); other LMs as they are."""
    from promptgym.lm import get_lm
    from promptgym.lm.local import LocalLM

    if dtype is None or not isinstance(base.lm, LocalLM):
        return base.lm
    import torch

    want = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if want is None:
        raise ValueError(f"dtype must be 'float32', 'bfloat16' or None, got {dtype!r}")
    return base.lm if base.lm.dtype == want else get_lm(base.lm.name, dtype)


def result_prompt(base: Any, result: Any, lm: Any):
    """The LM prompt a Result stands for: soft prompt, demonstrations, the action's prompt, or none."""
    from promptgym.lm.base import SoftPrompt, TokenPrompt

    soft = result.extra.get("soft_prompt") if result.extra else None
    if soft is not None:
        return SoftPrompt(np.asarray(soft, dtype=np.float32))
    if result.demonstrations:
        return TokenPrompt(tuple(lm.encode(result.demonstrations)))
    if result.action is None:
        return TokenPrompt(())
    return base._prompt_of(base._validate_prompt(result.action))


def test_metric(env: Any, result: Any, dtype: str | None = "float32") -> float:
    """The task metric of ``result``'s prompt on the test split (not charged to any budget).

    Handles every kind of Result: an action of the env, a label bias (added to the label scores
    before the argmax), in-context demonstrations and a white-box soft prompt. ``dtype`` "float32"
    (default) re-checks bf16 searches in fp32 as MISSION.md asks; None scores with the env's own LM.
    """
    from promptgym.lm.base import ScoreRequest
    from promptgym.tasks import compute_metric, load_split

    base = env.unwrapped
    lm = _scoring_lm(base, dtype)
    test = load_split(base.spec_task, "test", None, base.data_dir)
    prompt = result_prompt(base, result, lm)
    key = (id(lm), getattr(lm, "name", ""), test.sha256, base.template, base.prompt_position, _prompt_key(prompt))
    cached = _TEST_SCORES.get(key)
    res = cached[1] if cached is not None and cached[0] is lm else None  # the LM is kept: ids are not reused
    if res is None:
        mask = getattr(lm, "mask_token", None)
        segments = tuple(base.template.render(t, p, position=base.prompt_position, mask_token=mask)
                         for t, p in zip(test.texts, test.text_pairs))
        res = lm.score([ScoreRequest(prompt, segments, base.template.verbalizers)])[0]
        if len(_TEST_SCORES) >= 8:
            _TEST_SCORES.pop(next(iter(_TEST_SCORES)))
        _TEST_SCORES[key] = (lm, res)
    preds = res.predictions
    if result.label_bias is not None:
        preds = np.argmax(np.asarray(res.label_logprobs) + np.asarray(result.label_bias), axis=1)
    return float(compute_metric(base.spec_task.metric, test.labels, preds))


# the test scores of the last few prompts: a calibrated Result shares the manual template's scores
# (only the bias differs), so comparing the two costs one pass over the test split, not two
_TEST_SCORES: dict[tuple, Any] = {}


def _prompt_key(prompt: Any) -> tuple:
    from promptgym.lm.base import SoftPrompt

    if isinstance(prompt, SoftPrompt):
        arr = np.ascontiguousarray(prompt.embeds, dtype=np.float32)
        return ("soft", arr.shape, arr.tobytes())
    return ("tokens", tuple(prompt.ids))


test_metric.__test__ = False  # not a pytest test, despite its name


# ---------------------------------------------------------------------------------------------- json helpers
def _num(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _float_or_none(x: Any) -> float | None:
    return None if x is None else _num(x)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)
