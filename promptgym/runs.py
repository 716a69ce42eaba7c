"""Where runs are written: training run folders and the evaluation protocol's work folders.

A run folder ``<out>/<env>-<agent>-s<split seed>-<agent seed>-<timestamp>/`` (written by
``promptgym train``) holds:

* ``config.json``: env id and kwargs, model and dtype, split seed, budget, agent name and config,
  the calls actually used, fingerprints (LM weights, data files) and package versions, so that the
  run can be repeated and checked.
* ``prompt.json``: the Result (action, prompt text, train reward, dev metric, label bias,
  demonstrations, a prompt set's members, weights and combination rule, the calibration fitted by
  ``--calibrate``, ...); ``soft_prompt.npy`` too for the white-box agent. :func:`load_result` reads it.
* ``prompt.txt``: the same for people: the prompt text (discrete), the z vector (subspace), the
  bias or demonstrations, and the first train example rendered with the prompt.
* ``curve.csv`` / ``curve.png``: best-so-far train reward and dev metric against calls used
  (for the white-box agent, against forward+backward passes).
* ``calls.journal`` while the run is under way (:data:`JOURNAL_FILE`, :mod:`promptgym.journal`): every LM
  answer so far, so ``promptgym train --resume <folder>`` continues a killed run; removed when it ends.

The protocol's per-seed cache lives in :func:`evaluate_workdir` (``runs/evaluate/<env>-<agent>-<tier>``,
``<agent>+calibration`` for a calibrated variant),
the one place that path is built: ``promptgym evaluate``, the benchmark scripts and the README agree.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import Agent, Result, config_dict, result_members
from promptgym.jsonable import finite_or_none, jsonable
from promptgym.progress import fmt

CURVE_HEADER = ("best_train_reward", "best_dev_metric")
#: a run folder's call journal while the run is under way (see promptgym.journal)
JOURNAL_FILE = "calls.journal"
#: the parent of every protocol work folder (relative to the working directory)
EVALUATE_ROOT = Path("runs") / "evaluate"


def evaluate_workdir(env_id: str, agent: str, tier: str, root: str | Path | None = None,
                     calibrate: bool = False, tag: str = "", model: str | None = None) -> Path:
    """The protocol's per-seed cache for ``env_id`` / ``agent`` / ``tier`` (not created here); the
    calibrated variant of an agent (``--calibrate``) has its own, ``<env>-<agent>+calibration-<tier>``.
    ``tag`` names a variant run with non-default agent or env kwargs, ``<env>-<agent>@<tag>-<tier>``: a
    folder is named by env, agent and tier only, so such runs need their own (``promptgym sweep``,
    ``benchmarks/reliability.py``). A model preset other than the default (``model="gemma3-270m"``)
    gets its own folder level, ``<root>/<model>/...``: the same env, agent and tier on another model
    are other runs; a served model (a URL) keeps the default layout (its cached runs are checked
    against the recorded model when reused)."""
    from promptgym.lm import DEFAULT_MODEL, is_served

    name = f"{agent}+calibration" if calibrate else agent
    if tag:
        name += f"@{tag}"
    base = Path(root if root is not None else EVALUATE_ROOT)
    if model is not None and model != DEFAULT_MODEL and not is_served(model):
        base = base / model.replace("/", "--")
    return base / f"{env_id}-{name}-{tier}"


def seed_file(workdir: Path, seed: int) -> Path:
    """One protocol seed's cached run in a work folder."""
    return Path(workdir) / f"seed-{int(seed)}.json"


def seed_journal(workdir: Path, seed: int) -> Path:
    """One protocol seed's call journal while it runs: a killed seed resumes from it (removed once
    :func:`seed_file` is written)."""
    return Path(workdir) / f"seed-{int(seed)}.journal"


def new_run_dir(out: str | Path, env_id: str, agent: str, seed: int, split_seed: int, create: bool = True) -> Path:
    """A fresh run folder named by env, agent, split seed, agent seed and time (never reused); with
    ``create=False`` only named (the call journal creates it once the run has passed its checks)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{env_id}-{agent}-s{split_seed}-{seed}-{stamp}".replace("/", "_").replace(":", "_")
    run_dir = Path(out) / name
    n = 2
    while run_dir.exists():
        run_dir = Path(out) / f"{name}-{n}"
        n += 1
    if create:
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


def run_config(env_id: str, env: gym.Env, agent: str, learner: Agent, budget: int, seed: int, split_seed: int,
               model: Any, dtype: str, env_kwargs: dict[str, Any] | None, seconds: float,
               calibrate: bool = False) -> dict[str, Any]:
    """Everything needed to repeat and check a run (``config.json``)."""
    base = env.unwrapped
    cands = getattr(base, "candidates", None)
    return {
        "env_id": env_id,
        "env_kind": base.kind,
        "task": base.spec_task.name,
        "env_kwargs": jsonable(env_kwargs or {}),
        "model": base.model_name if not isinstance(model, str) else model,
        "dtype": dtype,
        "split_seed": int(split_seed),
        "budget": int(budget),
        "seed": int(seed),
        "agent": agent,
        "agent_config": jsonable(config_dict(getattr(learner, "config", None))),
        "calibrate": bool(calibrate),
        "budget_used": base.budget.as_dict(),
        "seconds": round(seconds, 2),
        "lm": {"name": base.lm.name, "weights_sha256": base.lm.weights_sha256},
        "data": {"train": base.train.source, "train_sha256": base.train.sha256,
                 "dev": base.dev.source, "dev_sha256": base.dev.sha256},
        "candidates": None if cands is None else {"source": cands.source, "count": len(cands)},
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_run(run_dir: Path, env: gym.Env, result: Result, config: dict[str, Any]) -> None:
    """Write config.json, prompt.json (+ soft_prompt.npy), prompt.txt, curve.csv and curve.png."""
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    record = result_record(env, result)
    if result.soft_prompt is not None:
        np.save(run_dir / "soft_prompt.npy", np.asarray(result.soft_prompt, dtype=np.float32))
        record["soft_prompt_file"] = "soft_prompt.npy"
    (run_dir / "prompt.json").write_text(json.dumps(record, indent=2) + "\n")
    (run_dir / "prompt.txt").write_text(prompt_report(env, result, config))
    rows = curve_rows(result)
    with (run_dir / "curve.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow((result.curve_unit, *CURVE_HEADER))
        for x, train, dev in rows:
            writer.writerow((x, finite_or_none(train), finite_or_none(dev)))
    plot_curve(run_dir / "curve.png", result.curve_unit, rows, env.unwrapped.spec_task.metric,
               title=curve_title(config))


def action_kind(env: gym.Env, result: Result) -> str:
    """How the final prompt is stored: "soft_prompt", "demonstrations", "template", "z" or "candidate_indices"."""
    kind = result.prompt_kind
    if kind != "action":
        return kind
    return "z" if env.unwrapped.kind == "subspace" else "candidate_indices"


def result_record(env: gym.Env, result: Result) -> dict[str, Any]:
    """The Result as prompt.json holds it: :meth:`Result.to_record` ``(full=True)`` with what only the env
    knows, ``action_kind`` after ``action`` and ``metric`` after ``dev_metric`` (the soft prompt goes to
    its own file)."""
    after = {"action": ("action_kind", action_kind(env, result)),
             "dev_metric": ("metric", env.unwrapped.spec_task.metric)}
    record: dict[str, Any] = {}
    for key, value in result.to_record(full=True).items():
        record[key] = value
        if key in after:
            record[after[key][0]] = after[key][1]
    return record


def load_result(run_dir: str | Path) -> Result:
    """The Result stored in a run folder (for re-scoring with :meth:`promptgym.evaluation.Evaluator.score`)."""
    run_dir = Path(run_dir)
    rec = json.loads((run_dir / "prompt.json").read_text())
    result = Result.from_record(rec, full=True)
    if rec.get("soft_prompt_file"):
        result.soft_prompt = np.load(run_dir / rec["soft_prompt_file"])
    return result


def prompt_report(env: gym.Env, result: Result, config: dict[str, Any]) -> str:
    """A readable summary of the learned prompt, with one train example rendered around it."""
    base = env.unwrapped
    metric = base.spec_task.metric
    lines = [f"agent: {result.agent}    env: {config['env_id']}    model: {config['model']}    "
             f"split seed: {config['split_seed']}",
             f"calls used: {result.calls_used} / {config['budget']}",
             f"best train reward: {fmt(result.train_reward)}    dev {metric}: {fmt(result.dev_metric)}", ""]
    kind = action_kind(env, result)
    if kind == "candidate_indices":
        lines += [f"prompt: {result.prompt_text!r}", f"candidate indices: {np.asarray(result.action).tolist()}"]
    elif kind == "z":
        z = np.asarray(result.action, dtype=np.float64)
        lines += [result.prompt_text, f"z ({z.size} values, |z| = {np.linalg.norm(z):.4f}):",
                  np.array2string(z, precision=4, max_line_width=100, threshold=10**6)]
    elif kind == "soft_prompt":
        soft = np.asarray(result.soft_prompt)
        lines += [result.prompt_text, f"soft prompt: {soft.shape[0]} x {soft.shape[1]} vectors in soft_prompt.npy "
                                      "(WHITE-BOX: learned by back-propagation)"]
    elif kind == "demonstrations":
        lines += ["in-context demonstrations (a text prefix, outside the action space):", result.demonstrations or ""]
    else:
        lines += ["prompt: (none: the task's template alone)"]
    if result.is_set:
        weights = [w for _, w in result_members(result)]
        lines += ["", f"a set of {len(weights)} prompts combined by {result.combine!r} "
                      f"(the one above has the largest weight); weights: "
                      + ", ".join(f"{w:.3f}" for w in weights[:20]) + (" ..." if len(weights) > 20 else "")]
    if result.label_bias is not None:
        for row in np.atleast_2d(np.asarray(result.label_bias))[:20]:
            lines.append("label bias: " + ", ".join(f"{w} {b:+.4f}" for w, b in zip(base.template.verbalizers, row)))
    calibration = result.extra.get("calibration")
    if calibration:
        lines.append(f"calibrated after learning ({calibration['calls']} call(s), method {calibration['method']}): "
                     f"train reward {fmt(calibration['uncalibrated_train_reward'])} -> "
                     f"{fmt(calibration['calibrated_train_reward'])}")
    left, right = base.segments("train")[0]
    shown = {"candidate_indices": result.prompt_text, "demonstrations": result.demonstrations,
             "template": ""}.get(kind, "<soft prompt>")
    lines += ["", "first train example with the prompt in [[ ]] and the label words after ->:",
              f"{left}[[{shown}]]{right} -> {' / '.join(base.template.verbalizers)}", ""]
    return "\n".join(lines)


def curve_rows(result: Result) -> list[tuple[int, float | None, float | None]]:
    """``[(cost, best train reward so far, best dev metric so far)]`` merged on cost."""
    dev, train = result.curve, result.train_curve
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
        rows = [(int(result.calls_used), None, finite_or_none(result.dev_metric))]
    return rows


CURVE_MIN_SPAN = 0.1  # the narrowest y range of curve.png: a flat curve is not zoomed into noise


def curve_title(config: dict[str, Any]) -> str:
    """The title of ``curve.png``: which run it is (env, agent, model, split seed, agent seed, call budget)."""
    seed = f", agent seed {config['seed']}" if config.get("seed") is not None else ""
    return (f"{config['agent']} on {config['env_id']} · {config['model']}\n"
            f"split seed {config['split_seed']}{seed} · budget {int(config['budget']):,} calls")


def plot_curve(path: Path, unit: str, rows: list, metric: str, *, title: str) -> None:
    """``curve.png``: best-so-far train reward and dev metric (two panels) against ``unit`` used.

    ``rows`` are (x, best train reward, best dev metric) as from :func:`curve_rows`; ``title``
    names the run (see :func:`curve_title`). The y axes print plain values (no offset or
    scientific notation such as "1e-5−6.938e-1") and span at least :data:`CURVE_MIN_SPAN`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, col, label in ((axes[0], 1, "best train reward"), (axes[1], 2, f"best dev {metric}")):
        pts = [(r[0], r[col]) for r in rows if r[col] is not None and math.isfinite(r[col])]
        if pts:
            ys = [p[1] for p in pts]
            ax.step([p[0] for p in pts], ys, where="post", marker=".")
            lo, hi = min(ys), max(ys)
            if hi - lo < CURVE_MIN_SPAN:
                mid = (lo + hi) / 2
                ax.set_ylim(mid - CURVE_MIN_SPAN / 2, mid + CURVE_MIN_SPAN / 2)
        else:
            ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)
        formatter = ScalarFormatter(useOffset=False)
        formatter.set_scientific(False)
        ax.yaxis.set_major_formatter(formatter)
        ax.set_title(label, fontsize=11)
        ax.grid(alpha=0.3)
    fig.supxlabel("LM calls" if unit == "calls" else f"{unit} (forward+backward passes, white-box)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
