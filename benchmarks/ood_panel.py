"""OOD detection on the whole panel: re-score committed run files on every OOD task of their task.

A run file (``seed-N.json`` of a work folder, as ``promptgym evaluate`` and
``benchmarks/reliability.py`` write them) carries the OOD AUROCs of the protocol version it was
scored under; runs of version 1 have one OOD pair (SST-2 -> RTE). This script rebuilds each run's
final prompt(s) from the file (:func:`promptgym.bench.evaluate.replay_result`, every action checked
against the env), scores them on every OOD task of the current panel
(:func:`promptgym.bench.ood.ood_metrics`, fp32, uncharged) and prints a markdown table, one row per
work folder (entry) and one column per OOD task: the max-prob AUROC, mean ± standard deviation over
the seeds found; then the mean over the OOD tasks with their range, and which pairs of entries keep
their order on every OOD task (the only OOD ranking the protocol supports, see
``leaderboards/PROTOCOL.md``). Nothing is written into the run files.

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/ood_panel.py \\
        runs/reliability/PromptSST2-v0-calibrated-lite runs/reliability/PromptSST2-Subspace-v0-bbt-lite

Cost: every member of a run's prompt scores the in-domain test split once and every OOD task's
(capped) rows once — for SST-2 872 + 277 + 3 x 500 rows per member and seed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import promptgym  # noqa: F401  (registers the envs)
from promptgym.bench.evaluate import replay_result
from promptgym.bench.ood import ood_metrics, ood_tasks
from promptgym.envs.registration import env_task
from promptgym.lm import DEFAULT_MODEL
from promptgym.metrics.stats import seed_summary
from promptgym.runner import make_env
from promptgym.tasks import get_task

SCORE = "auroc_maxprob"


def load_runs(folder: str | Path) -> list[dict]:
    """The seed runs of a work folder (``seed-*.json``), by seed."""
    paths = sorted(Path(folder).glob("seed-*.json"))
    if not paths:
        raise SystemExit(f"{folder}: no seed-*.json run files")
    runs = [json.loads(p.read_text()) for p in paths]
    return sorted(runs, key=lambda r: int(r["seed"]))


def rescore_run(run: Mapping, model: str | None = None, dtype: str = "float32") -> dict[str, float]:
    """``{ood_task: max-prob AUROC}`` of one run's stored prompt(s) on every OOD task of the current
    panel of its task. The env, its kwargs and the model are the run's own (``extra``) unless
    ``model`` is given."""
    extra = run.get("extra", {})
    env_id = extra["env_id"]
    env = make_env(env_id, 1, int(run["seed"]), model or extra.get("model", DEFAULT_MODEL), "bfloat16",
                   extra.get("env_kwargs") or None)
    sub = {"schema_version": int(extra.get("schema_version", 1)), "agent": {"name": extra.get("agent", "cached")},
           "runs": [run]}
    result = replay_result(sub, 0, env, get_task(env_task(env_id)).num_labels)
    return {task: float(scores[SCORE]) for task, scores in ood_metrics(env, result, dtype).items()}


def rescore_folders(folders: Sequence[str | Path], model: str | None = None,
                    log=print) -> tuple[dict[str, dict[str, list[float]]], tuple[str, ...]]:
    """Re-score every run of every folder: ``({entry: {ood_task: [AUROC per seed]}}, OOD tasks)``;
    an entry is named by its folder. All folders must be of one task (one panel)."""
    scores: dict[str, dict[str, list[float]]] = {}
    first: str | None = None
    for folder in folders:
        runs = load_runs(folder)
        task = env_task(runs[0]["extra"]["env_id"])
        if first is not None and task != first:
            raise SystemExit(f"{folder}: a {task} entry, the first folder a {first} one (one task per table)")
        first = task
        panel = ood_tasks(task)
        entry = Path(folder).name
        per_task: dict[str, list[float]] = {t: [] for t in panel}
        for run in runs:
            got = rescore_run(run, model)
            log(f"{entry} seed {run['seed']}: " + ", ".join(f"{t} {v:.3f}" for t, v in got.items()))
            for t in panel:
                per_task[t].append(got[t])
        scores[entry] = per_task
    return scores, ood_tasks(first) if first else ()


def _cell(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean, std = seed_summary(values)
    return f"{mean:.3f} ± {std:.3f}"


def panel_table(scores: Mapping[str, Mapping[str, Sequence[float]]], tasks: Sequence[str]) -> str:
    """A markdown table entry × OOD task of max-prob AUROCs, mean ± std over seeds (sample std,
    0 for one seed), then the mean over the OOD tasks of the per-task means and their range.
    ``scores``: ``{entry: {ood_task: [AUROC per seed]}}``; a task an entry lacks shows –, and its
    mean over tasks then covers the tasks it has (the range says how many)."""
    head = ["entry", "seeds", *tasks, "mean over OOD tasks", "range over OOD tasks"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(tasks) + 2)]
    for entry, per_task in scores.items():
        means = [float(np.mean(per_task[t])) for t in tasks if per_task.get(t)]
        seeds = max((len(v) for v in per_task.values()), default=0)
        over = f"{np.mean(means):.3f}" if means else "–"
        count = f"{len(means)} task{'s' if len(means) > 1 else ''}"
        spread = f"{min(means):.3f}–{max(means):.3f} ({count})" if means else "–"
        lines.append("| " + " | ".join([entry, str(seeds), *(_cell(per_task.get(t, ())) for t in tasks), over, spread])
                     + " |")
    return "\n".join(lines) + "\n"


def orders(scores: Mapping[str, Mapping[str, Sequence[float]]], tasks: Sequence[str]) -> list[str]:
    """For every pair of entries: better on every OOD task (by the mean over seeds), or an order that
    flips between OOD tasks (then which tasks go which way). Ties count as neither better."""
    out = []
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = [t for t in tasks if scores[a].get(t) and scores[b].get(t)]
            if not shared:
                continue
            diff = {t: float(np.mean(scores[a][t]) - np.mean(scores[b][t])) for t in shared}
            up = [t for t in shared if diff[t] > 0]
            down = [t for t in shared if diff[t] < 0]
            if len(up) == len(shared):
                out.append(f"{a} > {b} on every OOD task ({', '.join(shared)})")
            elif len(down) == len(shared):
                out.append(f"{b} > {a} on every OOD task ({', '.join(shared)})")
            else:
                out.append(f"{a} vs {b}: no order (higher on {', '.join(up) or 'none'}; "
                           f"lower on {', '.join(down) or 'none'})")
    return out


def report(scores: Mapping[str, Mapping[str, Sequence[float]]], tasks: Sequence[str]) -> str:
    """The table and the pairwise orders, as markdown."""
    lines = [f"- {line}" for line in orders(scores, tasks)]
    return panel_table(scores, tasks) + ("\n" + "\n".join(lines) + "\n" if lines else "")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="work folders holding seed-*.json run files (one task)")
    ap.add_argument("--model", default=None, help="score with this model preset instead of each run's own")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    scores, tasks = rescore_folders(args.folders, args.model)
    text = report(scores, tasks)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
