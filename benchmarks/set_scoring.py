"""Test-scoring time of a prompt set per member against one prompt, on committed reliability runs.

Why: the set methods' seed files record 130-196 s of test + OOD scoring per member, against 75-97 s
for one BBT prompt, but those runs shared the machine. This re-times ``Evaluator.score`` (test split
only, fp32, no OOD) on an idle machine for one BBT prompt and for a set, from the seed files in
``runs/reliability``, and checks the re-scored accuracy equals the recorded one::

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/set_scoring.py --seed 13 --set ensemble
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from promptgym.bench.evaluate import replay_result
from promptgym.evaluation import Evaluator
from promptgym.runner import make_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="runs/reliability", help="folder of the reliability seed files")
    ap.add_argument("--env", default="PromptSST2-Subspace-v0", help="env id (default: %(default)s)")
    ap.add_argument("--set", default="ensemble", help="set agent whose run to time (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=13, help="split seed of both runs (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env = make_env(args.env, 1000, args.seed)
    timings = []
    for agent in ("bbt", args.set):  # the single prompt first: the set's members are then not cached
        run = json.loads((Path(args.root) / f"{args.env}-{agent}-lite" / f"seed-{args.seed}.json").read_text())
        result = replay_result({"runs": [run], "agent": {"name": agent}}, 0, env, env.unwrapped.spec_task.num_labels)
        started = time.perf_counter()
        score = Evaluator.for_env(env).score(result)
        seconds = time.perf_counter() - started
        members = len(result.members) if result.is_set else 1
        timings.append(seconds / members)
        print(f"{agent}: {members} member(s), {seconds:.1f} s = {seconds / members:.1f} s per member, "
              f"accuracy {score.metric:.4f} (recorded {run['test']['metric']:.4f})", flush=True)
    print(f"per-member time of the set / one prompt: {timings[1] / timings[0]:.2f}")


if __name__ == "__main__":
    main()
