"""Run lite-tier protocol seeds for several agents, one process per stream, resumable.

Each (agent, seed) run is exactly ``promptgym.bench.evaluate.run_seed`` and is cached in the work
folder that ``promptgym evaluate --env ENV --agent AGENT --tier lite`` reads, so the submission is
then assembled (and re-checked) by the ordinary CLI. Interleaving agents by seed lets the
sample-efficiency benchmark (seeds 13, 21, 42) finish first.

    python benchmarks/run_lite.py --env PromptSST2-v0 --plan bdpl:13,random:13,bdpl:21 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

from promptgym.runs import evaluate_workdir, seed_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="PromptSST2-v0")
    ap.add_argument("--plan", required=True, help="comma-separated agent:seed items, run in order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tier", default="lite")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from promptgym.bench.evaluate import run_seed
    from promptgym.bench.schema import TIERS

    for item in args.plan.split(","):
        agent, seed = item.split(":")
        work = evaluate_workdir(args.env, agent, args.tier)
        work.mkdir(parents=True, exist_ok=True)
        path = seed_file(work, int(seed))
        if path.is_file():
            continue
        t = time.time()
        run = run_seed(args.env, agent, int(seed), TIERS[args.tier], allow_white_box=agent == "prompt_tuning")
        path.write_text(json.dumps(run))
        print(f"{agent} seed {seed}: test {run['test']['metric']:.4f} dev {run['extra']['dev_metric']} "
              f"calls {run['calls_used']} wall {time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main()
