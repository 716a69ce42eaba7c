"""API calls per second of the default model: how long a budget takes on this machine.

One call = one 10-token discrete prompt scored on the 32 SST-2 train examples of split 42 (the
default template); 20 random prompts go in one ``score()`` call, as a BBT/BDPL generation does.
Prints calls/s for each chunk size; run it with ``--threads 1`` and ``--threads 2`` to see what
sharing the two cores costs (another busy process slows torch's threads down a lot).

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/throughput.py --threads 2 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import DEFAULT_MODEL, load_model
from promptgym.tasks import get_task, load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--chunk-sizes", default="32,64,128,256")
    ap.add_argument("--prompts", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = get_task("sst2")
    template = spec.template("causal")
    segments = tuple(template.render(t) for t in load_split(spec, "train", 42).texts)
    lm = LocalLM(load_model(DEFAULT_MODEL, args.dtype))
    rng = np.random.default_rng(0)
    prompts = [TokenPrompt(tuple(int(i) for i in rng.integers(1000, lm.vocab_size, 10))) for _ in range(args.prompts)]
    lm.score([ScoreRequest(prompts[0], segments, template.verbalizers)])  # warm-up
    for cs in (int(c) for c in args.chunk_sizes.split(",")):
        lm.chunk_size = cs
        start = time.perf_counter()
        lm.score([ScoreRequest(p, segments, template.verbalizers) for p in prompts])
        dt = time.perf_counter() - start
        print(f"threads {args.threads} {args.dtype} chunk {cs}: {dt:.2f} s for {len(prompts)} calls "
              f"-> {len(prompts) / dt:.2f} calls/s", flush=True)


if __name__ == "__main__":
    main()
