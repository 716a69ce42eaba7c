"""Does a task's ranking transfer from one model to another? Two leaderboard columns side by side.

A method's rank on one small model may be a property of that model. This reads the committed
leaderboard entries of one task and tier (every env kind of the task: the discrete, subspace and
tokenwise env ids share their test split), ranks them per model exactly as the pages do
(:func:`promptgym.bench.ranking.rank`: per-seed scores re-derived from the stored predictions, each
row paired with its model's best prompt-free baseline by a bootstrap over seeds and test rows),
and prints one Markdown row per method with each model's mean ± std, its rank among that model's
rows, and its paired difference from that model's best baseline. Nothing is re-run: the numbers are
the leaderboard's, so they are as checked as the entries are.

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/transfer.py --task sst2 --tier lite \\
        --models smollm2-135m,gemma3-270m

The last lines give the methods ranked on both models, Spearman's rho of their two rankings (only
when at least 3 methods are on both), and which rows beat their model's best baseline with a CI that
excludes zero.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import spearmanr

from promptgym.bench.evaluate import test_labels_by_env
from promptgym.bench.ranking import Row, Table, rank, task_of
from promptgym.bench.render import versus_cell
from promptgym.bench.store import load_entries
from promptgym.envs.registration import env_kind
from promptgym.errors import ConfigError


@dataclass(frozen=True)
class Cell:
    """One method on one model: what the leaderboard shows for it."""

    mean: float
    std: float
    rank: int  # among that model's rows of the task (all its env kinds), 1 = best mean
    versus: str  # the page's cell: "+4.2 [+0.9, +7.5]", "≈ -0.7 [-3.3, +1.8]", "best baseline", "—"
    beats_baseline: bool  # above its model's best baseline with a CI that excludes zero


def method_key(row: Row, env_id: str) -> str:
    """A method is an agent (with or without calibration) on an env kind: BBT on the subspace env and BDPL
    on the discrete env are different rows, and so are a baseline on two env kinds (the same prompt)."""
    return f"{row.name} ({env_kind(env_id)})"


def model_cells(tables: Sequence[Table], task: str, tier: str, model: str) -> dict[str, Cell]:
    """The cells of one model: every row of the task's tables at ``tier`` on ``model``, ranked by mean."""
    rows = [(table.env_id, row) for table in tables
            if task_of(table.env_id) == task and table.tier == tier and table.model == model for row in table.rows]
    rows.sort(key=lambda er: -er[1].mean)
    best: dict[str, Row] = {}
    for env_id, row in rows:  # two entries of one method: the better one (sorted first) is the method's row
        best.setdefault(method_key(row, env_id), row)
    cells: dict[str, Cell] = {}
    for i, (key, row) in enumerate(best.items(), start=1):
        cmp = row.versus
        beats = bool(cmp is not None and not cmp.is_self and cmp.distinguishable and cmp.diff > 0)
        cells[key] = Cell(row.mean, row.std, i, versus_cell(row), beats)
    return cells


def transfer_table(tables: Sequence[Table], task: str, tier: str, models: Sequence[str]) -> str:
    """The side-by-side Markdown table, then the rank correlation and the rows that beat their baseline."""
    cells = {m: model_cells(tables, task, tier, m) for m in models}
    methods = sorted({k for c in cells.values() for k in c},
                     key=lambda k: min(c[k].rank if k in c else 10**6 for c in cells.values()))
    head = "| method | " + " | ".join(f"{m}: mean ± std (rank) | {m}: vs best baseline, 95% CI (pp)" for m in models)
    lines = [head + " |", "|---|" + "---:|---|" * len(models)]
    for k in methods:
        parts = []
        for m in models:
            c = cells[m].get(k)
            parts += ["—", "—"] if c is None else [f"{100 * c.mean:.1f} ± {100 * c.std:.1f} ({c.rank})", c.versus]
        lines.append(f"| {k} | " + " | ".join(parts) + " |")
    lines.append("")
    if len(models) == 2:
        both = [k for k in methods if all(k in cells[m] for m in models)]
        lines.append(f"methods on both models: {len(both)}")
        if len(both) >= 3:
            rho = spearmanr([cells[models[0]][k].mean for k in both], [cells[models[1]][k].mean for k in both])
            lines.append(f"Spearman's rho of the two rankings over them: {float(rho.statistic):+.2f}")
    for m in models:
        winners = [k for k, c in cells[m].items() if c.beats_baseline]
        lines.append(f"{m}: rows above the best baseline with a CI excluding 0: {', '.join(winners) or 'none'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="sst2", help="task name, e.g. sst2 (default: sst2)")
    p.add_argument("--tier", default="lite", help="budget tier (default: lite)")
    p.add_argument("--models", default="smollm2-135m,gemma3-270m",
                   help="comma-separated model names as the entries record them (default: smollm2-135m,gemma3-270m)")
    p.add_argument("--root", type=Path, default=Path("."), help="folder holding leaderboards/ (default: .)")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if not models:
        raise ConfigError("--models: name at least one model")
    entries = load_entries(args.root)
    tables = rank(entries, test_labels_by_env(entries))
    if not any(task_of(t.env_id) == args.task and t.tier == args.tier for t in tables):
        raise ConfigError(f"no {args.tier} entries of task {args.task!r} under {args.root / 'leaderboards'}")
    print(transfer_table(tables, args.task, args.tier, models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
