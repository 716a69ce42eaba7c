"""Nevergrad's derivative-free optimizers beside BBT's CMA-ES: SST-2, subspace env, lite tier, seeds 13, 21, 42.

Why: BBT hand-picked CMA-ES for the 500-dim subspace; Nevergrad's general-purpose optimizers (NGOpt,
which picks one from the space, budget and parallelism, and the classics it chooses among) are the
baselines that choice should beat at equal budget. Every row runs the ``nevergrad`` agent on BBT's
schedule (``batch`` 20 = BBT's popsize: the LM sees the same batched calls), so a difference is the
optimizer's.

Every run is a leaderboard protocol run (``promptgym.bench.evaluate.evaluate``, one seed at a time:
the agent learns on the seed's 16-shot split with agent seed = split seed, the env's meter enforcing
the lite tier's 1,000 calls; its prompt is scored on the 872 test rows in fp32), cached per seed:
BBT where ``promptgym evaluate`` caches it (``runs/evaluate/PromptSST2-Subspace-v0-bbt-lite/``,
shared with ``benchmarks/reliability.py``), each optimizer in its own folder
(``PromptSST2-Subspace-v0-nevergrad@<Optimizer>-lite/``). An interrupted benchmark resumes where it
stopped (a seed killed mid-run from its call journal); ``--report`` prints the table from the cache.

    PROMPTGYM_DATA_DIR=../shared/data nice .venv/bin/python benchmarks/nevergrad_dfo.py            # ~4.5 h on 2 cores
    PROMPTGYM_DATA_DIR=../shared/data .venv/bin/python benchmarks/nevergrad_dfo.py --report        # the table only

Cost: ~13 min per 1,000-call run on a 2-core CPU (BBT: 767 s), 7 rows x 3 seeds. The table: test
accuracy, mean over seeds with a 95% bootstrap CI over seeds and test rows; the paired difference
from BBT on the same seeds with its CI (``promptgym.metrics.stats.paired_difference_ci``); calls used;
and where a search stopped early. Known before running: in Nevergrad 1.0.12 (pycma 4) the CMA family,
and NGOpt, which picks a CMA-based optimizer on this box, fail under parallel asks at d >= 300
(Nevergrad issue #1690); the agent then stops (~450 calls in a dry run on the tiny model) and keeps
its best dev prompt, so those rows measure the stopped search until Nevergrad fixes it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from promptgym.bench.schema import TIERS
from promptgym.runs import evaluate_workdir, seed_file

ENV_ID = "PromptSST2-Subspace-v0"
SEEDS = (13, 21, 42)
BATCH = 20  # BBT's popsize
OPTIMIZERS = ("NGOpt", "CMA", "TwoPointsDE", "PSO", "OnePlusOne", "TBPSA")


@dataclass(frozen=True)
class Method:
    """One row: BBT, or the nevergrad agent with one optimizer (its own work folder, by ``tag``)."""

    label: str
    agent: str
    agent_kwargs: dict = field(default_factory=dict)
    tag: str = ""

    def workdir(self, tier: str, root: Path | None) -> Path:
        work = evaluate_workdir(ENV_ID, self.agent, tier, root=root)
        return work.with_name(f"{ENV_ID}-{self.agent}@{self.tag}-{tier}") if self.tag else work


BBT = Method("BBT (pycma CMA-ES, popsize 20)", "bbt")
METHODS = [BBT] + [Method(f"Nevergrad {name}", "nevergrad", {"optimizer": name, "batch": BATCH}, name)
                   for name in OPTIMIZERS]


def load_run(m: Method, seed: int, tier: str, root: Path | None) -> dict | None:
    """A cached seed run of ``m``, checked to be of ``m``'s config (a work folder only names env, agent, tier)."""
    path = seed_file(m.workdir(tier, root), seed)
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    config = run.get("extra", {}).get("agent_config", {})
    wrong = {k: (config.get(k), v) for k, v in m.agent_kwargs.items() if config.get(k) != v}
    if wrong:
        raise SystemExit(f"{path} was run with another config (cached, wanted): {wrong}; move it away")
    return run


def run_missing(methods: list[Method], seeds: tuple[int, ...], tier: str, model: str, root: Path | None) -> None:
    """Every missing (method, seed), seed by seed, so that every row has its early seeds first."""
    from promptgym.bench.evaluate import evaluate

    for seed in seeds:
        for m in methods:
            if load_run(m, seed, tier, root) is not None:
                continue
            started = time.time()
            print(f"{m.label}, seed {seed} ...", flush=True)
            evaluate(ENV_ID, m.agent, tier, model, (seed,), None, m.agent_kwargs or None,
                     workdir=m.workdir(tier, root))
            run = load_run(m, seed, tier, root) or {}
            stop = run.get("extra", {}).get("diagnostics", {}).get("stopped_at_calls")
            print(f"  acc {run['test']['metric']:.4f}  calls {run['calls_used']}"
                  f"{f'  (optimizer stopped at {stop} calls)' if stop else ''}  {time.time() - started:.0f} s",
                  flush=True)


def report(methods: list[Method], seeds: tuple[int, ...], tier: str, root: Path | None) -> str:
    """The markdown table (accuracy in percentage points)."""
    from promptgym.metrics.stats import bootstrap_ci, decode_predictions, distinguishable, paired_difference_ci
    from promptgym.tasks import get_task, load_split

    labels = np.asarray(load_split(get_task("sst2"), "test").labels)
    base = {s: r for s in seeds if (r := load_run(BBT, s, tier, root)) is not None}
    lines = [f"### SST-2 ({ENV_ID}), {tier} tier ({TIERS[tier]:,} calls), seeds {', '.join(map(str, seeds))}", "",
             "| method | seeds | test acc. (%), 95% CI | Δ vs BBT, paired 95% CI (pp) | calls | stopped early |",
             "|---|---:|---|---|---:|---|"]
    for m in methods:
        runs = {s: r for s in seeds if (r := load_run(m, s, tier, root)) is not None}
        if not runs:
            lines.append(f"| {m.label} | 0 | not run | | | |")
            continue
        preds = [decode_predictions(r["test"]["predictions"]) for r in runs.values()]
        acc = np.mean([r["test"]["metric"] for r in runs.values()])
        lo, hi = bootstrap_ci(preds, labels, "accuracy")
        diff = ""
        shared = [s for s in runs if s in base]
        if m is not BBT and shared:
            delta = np.mean([runs[s]["test"]["metric"] - base[s]["test"]["metric"] for s in shared])
            dlo, dhi = paired_difference_ci([decode_predictions(runs[s]["test"]["predictions"]) for s in shared],
                                            [decode_predictions(base[s]["test"]["predictions"]) for s in shared],
                                            labels, "accuracy")
            mark = " (excludes 0)" if distinguishable((dlo, dhi)) else ""
            diff = f"{100 * delta:+.1f} [{100 * dlo:+.1f}, {100 * dhi:+.1f}]{mark} on {len(shared)} seeds"
        stops = [f"seed {s}: {r['extra']['diagnostics']['stopped_at_calls']}" for s, r in runs.items()
                 if r.get("extra", {}).get("diagnostics", {}).get("stopped_at_calls")]
        lines.append(f"| {m.label} | {len(runs)} | {100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | {diff} | "
                     f"{np.mean([r['calls_used'] for r in runs.values()]):.0f} | {'; '.join(stops) or '-'} |")
    lines += ["", "CI of the accuracy: percentile bootstrap over seeds and test rows (1,000 replicates); Δ: the same "
              "draws for both rows. Stopped early: the optimizer raised after that many calls and the run kept "
              "its best dev prompt so far (see agents/nevergrad_search.py)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", action="store_true", help="print the table from cached runs only")
    ap.add_argument("--only", default=None, help="comma-separated optimizers (and/or bbt) to run and show")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated (default: %(default)s)")
    ap.add_argument("--budget", type=int, default=None, help="a trial budget instead of the lite tier's (own tier)")
    ap.add_argument("--model", default="smollm2-135m", help="model (default: %(default)s)")
    ap.add_argument("--root", default=None, help="parent of the work folders (default: runs/evaluate)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = ap.parse_args()
    tier = "lite"
    if args.budget is not None:
        tier = f"trial{args.budget}"
        TIERS[tier] = args.budget
    methods = METHODS
    if args.only:
        keys = {k.strip().lower() for k in args.only.split(",")}
        methods = [m for m in METHODS if (m.tag or m.agent).lower() in keys]
        unknown = keys - {(m.tag or m.agent).lower() for m in METHODS}
        if unknown:
            raise SystemExit(f"unknown rows {sorted(unknown)}; known: bbt, {', '.join(OPTIMIZERS)}")
        if BBT not in methods:
            methods = [BBT, *methods]  # the paired column needs BBT's runs
    seeds = tuple(int(s) for s in args.seeds.split(","))
    root = Path(args.root) if args.root else None
    if not args.report:
        import torch

        torch.set_num_threads(args.threads)
        run_missing(methods, seeds, tier, args.model, root)
    print(report(methods, seeds, tier, root))


if __name__ == "__main__":
    main()
