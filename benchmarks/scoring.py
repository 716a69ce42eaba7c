"""Scoring speed: a naive user loop vs promptgym's batched scoring, on the default model.

The workload is one generation of a population method: 20 discrete prompts (random 10-token
TokenPrompts, seeded) scored on the 32 examples of the real SST-2 16-shot train split (seed 42),
with the default template ("<s> It was" -> " terrible"/" great"), prompt before the input.

(a) naive      fp32, one prompt at a time, one example at a time, in data order, a plain
               ``model(input_ids)`` forward returning the logits of every position (what a user
               writes first). Written here on purpose, not with our backend. Its cost is linear
               in rows (no batching), so its rate is measured on the first ``--naive-prompts``
               prompts (default 5 of the 20, i.e. 160 forwards per round) to keep rounds short.
(b) promptgym  ``LocalLM`` in bf16 scoring all 20 x 32 rows in ONE ``score()`` call
               (length-sorted chunks, left padding, last-position logits only).
(c) promptgym  the same in fp32, for reference.

The paths run in rounds, (a) (b) (c) in turn, and each figure pools its rounds, so that slow
drift of a shared machine hits all three alike; the share of the CPUs used by other processes
during the rounds is recorded with the figures. (a) and (c) must agree (same fp32 numbers); the
script checks it. Prints a markdown table and appends it to benchmarks/RESULTS.md.

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/scoring.py [--rounds 2] [--chunk-sizes 16,32,64]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import DEFAULT_MODEL, load_model
from promptgym.tasks import get_task, load_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import machine  # noqa: E402  (one description of the host for every timing benchmark)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
FLOOR = 4.0  # (b) must be at least this many times faster than (a)


def make_prompts(n: int, length: int, low: int, high: int, seed: int) -> list[TokenPrompt]:
    rng = np.random.default_rng(seed)
    return [TokenPrompt(tuple(int(i) for i in rng.integers(low, high, size=length))) for _ in range(n)]


def naive_scores(model, tokenizer, prompts, segments, words) -> np.ndarray:
    """What a user writes first: a Python loop over prompts and examples, full logits, fp32."""
    label_ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]
    out = np.empty((len(prompts), len(segments), len(words)), dtype=np.float32)
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            for e, (left, right) in enumerate(segments):
                ids = (tokenizer(left, add_special_tokens=False)["input_ids"] + list(prompt.ids)
                       + tokenizer(right, add_special_tokens=False)["input_ids"])
                logits = model(input_ids=torch.tensor([ids])).logits  # (1, length, vocab)
                logprobs = torch.log_softmax(logits[0, -1].float(), dim=-1)
                out[p, e] = logprobs[label_ids].numpy()
    return out


def batched_scores(lm: LocalLM, prompts, segments, words) -> np.ndarray:
    calls = lm.batch_calls
    results = lm.score([ScoreRequest(p, segments, words) for p in prompts])
    assert lm.batch_calls == calls + 1
    return np.stack([r.logprobs for r in results])


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def cpu_busy_seconds() -> float | None:
    """CPU-seconds spent busy by everything on the machine so far (Linux /proc/stat), or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Contention:
    """How busy the CPUs were with *other* processes while we measured (2 cores are shared)."""

    def __enter__(self):
        self.busy, self.own, self.wall = cpu_busy_seconds(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy = cpu_busy_seconds()
        wall = time.perf_counter() - self.wall
        if busy is None or self.busy is None:
            self.others = float("nan")
        else:
            others = (busy - self.busy) - (_own_cpu() - self.own)
            self.others = max(0.0, others / (wall * (os.cpu_count() or 1)))


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def command() -> str:
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ("PROMPTGYM_DATA_DIR", "PROMPTGYM_CACHE")
                   if os.environ.get(k))
    cmd = shlex.join(["python", *sys.argv])
    return f"{env} {cmd}".strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--prompt-length", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    ap.add_argument("--naive-prompts", type=int, default=5, help="prompts timed on the naive path (a)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (a) (b) (c); figures pool the rounds")
    ap.add_argument("--chunk-sizes", default="", help="also time (b) with these chunk sizes, e.g. 16,32,64,128")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    ap.add_argument("--no-write", action="store_true", help=f"do not append to {RESULTS.name}")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_task("sst2")
    split = load_split(spec, "train", 42)
    template = spec.template("causal")
    segments = tuple(template.render(t) for t in split.texts)
    words = template.verbalizers

    loaded32 = load_model(DEFAULT_MODEL, "float32")
    lm32 = LocalLM(loaded32)  # (c); its model is also the plain model of (a)
    lm16 = LocalLM(load_model(DEFAULT_MODEL, "bfloat16"))
    prompts = make_prompts(args.prompts, args.prompt_length, 1000, lm16.vocab_size, args.seed)
    n_rows = len(prompts) * len(segments)
    naive_prompts = prompts[: max(1, min(args.naive_prompts, len(prompts)))]
    n_naive = len(naive_prompts) * len(segments)
    print(f"workload: {len(prompts)} prompts x {len(segments)} examples = {n_rows} rows; "
          f"chunk_size={lm16.chunk_size}", flush=True)

    # warm-up: tokenizer caches, allocator, oneDNN kernels (all paths alike)
    naive_scores(loaded32.model, loaded32.tokenizer, prompts[:1], segments[:2], words)
    batched_scores(lm16, prompts[:2], segments, words)
    batched_scores(lm32, prompts[:2], segments, words)

    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    with Contention() as contention:
        for r in range(args.rounds):
            naive, t = timed(lambda: naive_scores(loaded32.model, loaded32.tokenizer, naive_prompts, segments, words))
            times["a"].append(t)
            bf16, t = timed(lambda: batched_scores(lm16, prompts, segments, words))
            times["b"].append(t)
            fp32, t = timed(lambda: batched_scores(lm32, prompts, segments, words))
            times["c"].append(t)
            print(f"round {r + 1}: " + ", ".join(f"({k}) {v[-1]:.2f}s" for k, v in times.items()), flush=True)
            # correctness of the comparison: (a) and (c) compute the same fp32 numbers
            diff = float(np.max(np.abs(naive - fp32[: len(naive_prompts)])))
            assert diff < 1e-3, f"naive and batched fp32 scores differ by {diff}"
            agree = float(np.mean(np.argmax(bf16, -1) == np.argmax(fp32, -1)))

    sizes = [int(c) for c in args.chunk_sizes.split(",") if c.strip()]
    sweep_times: dict[int, list[float]] = {cs: [] for cs in sizes}
    default = lm16.chunk_size
    for _ in range(args.rounds if sizes else 0):  # interleaved, like the rounds above
        for cs in sizes:
            lm16.chunk_size = cs
            sweep_times[cs].append(timed(lambda: batched_scores(lm16, prompts, segments, words))[1])
    lm16.chunk_size = default
    sweep = [(cs, n_rows * len(ts) / sum(ts)) for cs, ts in sweep_times.items()]

    rows_per_round = {"a": n_naive, "b": n_rows, "c": n_rows}
    rate = {k: rows_per_round[k] * len(v) / sum(v) for k, v in times.items()}
    rows = [
        (f"(a) naive: 1 prompt x 1 example per forward, full logits ({n_naive} rows)", "fp32", n_naive, rate["a"]),
        (f"(b) promptgym LocalLM, {len(prompts)} prompts in one score() call ({n_rows} rows)", "bf16", 1, rate["b"]),
        (f"(c) promptgym LocalLM, {len(prompts)} prompts in one score() call ({n_rows} rows)", "fp32", 1, rate["c"]),
    ]
    table = ["| path | dtype | LM calls / round | examples/s | x naive |", "|---|---|---:|---:|---:|"]
    for (name, dtype, calls, r), key in zip(rows, "abc", strict=True):
        secs = " / ".join(f"{t:.1f}" for t in times[key])
        table.append(f"| {name} (s per round: {secs}) | {dtype} | {calls} | {r:.1f} | {r / rate['a']:.2f} |")
    ratio = rate["b"] / rate["a"]
    verdict = f"(b)/(a) = {ratio:.2f}x; floor {FLOOR:.0f}x: {'met' if ratio >= FLOOR else 'NOT met'}"
    notes = [verdict,
             f"(a) vs (c) max |logprob diff| = {diff:.2e}; bf16 vs fp32 argmax agreement {agree:.1%}",
             f"other processes kept {contention.others:.0%} of the CPUs busy during the rounds "
             "(shared machine: absolute figures drop sharply with contention)"]
    if sweep:
        notes.append("(b) by chunk_size: " + ", ".join(f"{cs}: {r:.1f} ex/s" for cs, r in sweep))

    info = machine()
    text = "\n".join([
        f"## scoring — {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"- machine: nproc {info['nproc']}, CPU {info['cpu']}, torch {info['torch']} "
        f"({info['torch threads']} threads), Python {info['python']}",
        f"- workload: SST-2 16-shot train seed 42 ({len(segments)} examples) x {len(prompts)} random "
        f"{args.prompt_length}-token prompts (seed {args.seed}) = {n_rows} rows per round for (b) and (c), "
        f"the first {len(naive_prompts)} prompts ({n_naive} rows) for (a); {args.rounds} rounds; "
        f"LocalLM chunk_size {lm16.chunk_size}",
        f"- command: `{command()}`",
        "",
        *table,
        "",
        *[f"- {n}" for n in notes],
        "",
    ])
    print()
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as fh:
            if RESULTS.stat().st_size == 0:
                fh.write("# Benchmark results\n\nAppended by the scripts in this folder; newest last.\n\n")
            fh.write(text + "\n")
        print(f"appended to {RESULTS}")
    return 0 if ratio >= FLOOR else 1


if __name__ == "__main__":
    raise SystemExit(main())
