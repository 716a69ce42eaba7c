"""What serving costs: one-prompt SST-2 calls in process vs over HTTP, and many clients at once (issue 14).

One run, same machine, one table per section (printed; ``--write`` appends them to benchmarks/RESULTS.md).
Workload: one-prompt calls (``score([one request])``, what every ``env.step`` is) with random 10-token
TokenPrompts, all distinct (so no memo ever answers), on the 16-shot train split (seed 13) of SST-2
(32 rows), prompt before the input, the causal template's label words.

* **Latency.** The same calls in process (a ``LocalLM`` in this process), over HTTP with our native
  protocol (``RemoteLM``), and over the OpenAI-compatible ``/v1/completions`` (``OpenAICompatLM``,
  one prompt per row, scored by ``logprob_token_ids``; our server charges it one call per row). The
  server is ``promptgym serve`` in a subprocess, with the same model, dtype and fast paths. The
  paths take turns in rounds (each path ``--calls`` calls per round, ``--rounds`` rounds), so that
  the drift of a shared machine hits all alike; calls/s = all calls / all their wall time. Floor:
  the native protocol adds at most 10% to a call (ratio of the per-call times of this run).
* **Concurrency.** 1, 4 and 8 clients (threads, each with its own ``RemoteLM``) each make
  ``--concurrent-calls`` one-prompt calls at once; aggregate calls/s = all calls / wall time, with the
  server's batching on and off (a fresh server each). Usage must grow by exactly the calls made and
  no call may fail. The server's batching scores *identical* concurrent requests once and never merges
  distinct ones (merging changes bf16 scores by rounding), so on distinct prompts it should not
  change throughput; the model runs on one worker thread, so more clients do not add compute.

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/serving.py [--calls 10] [--rounds 3] [--write]
    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/serving.py --quick   # a check: tiny model, few calls
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from promptgym.envs.scoring import render_rows
from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.openai_compat import OpenAICompatLM
from promptgym.lm.presets import load_model
from promptgym.lm.remote import RemoteLM
from promptgym.serve.keys import KeyStore
from promptgym.tasks import get_task, load_split

RESULTS = Path(__file__).with_name("RESULTS.md")
CLIENTS = (1, 4, 8)
FLOOR = 1.10  # HTTP (native) per-call time at most 10% over in process


def prompts(n: int, seed: int, length: int = 10) -> list[TokenPrompt]:
    rng = np.random.default_rng(seed)
    return [TokenPrompt(tuple(int(i) for i in rng.integers(1000, 40000, size=length))) for _ in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``promptgym serve`` in a subprocess (its own interpreter and torch threads), stopped on exit."""

    def __init__(self, model: str, dtype: str, keys: Path, batching: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", "import sys; from promptgym.cli import main; sys.exit(main())", "serve",
               "--model", model, "--dtype", dtype, "--port", str(self.port), "--keys", str(keys),
               "--log-level", "warning"] + ([] if batching else ["--no-batching"])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start within 300 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def timed(lm, seq: list[TokenPrompt], segs, words) -> float:
    """Wall seconds of one-prompt calls for each prompt of ``seq``."""
    t = time.perf_counter()
    for p in seq:
        lm.score([ScoreRequest(p, segs, words)])
    return time.perf_counter() - t


def latency_section(args, lm: LocalLM, url: str, key: str, segs, words) -> tuple[list[str], float]:
    native = RemoteLM(url, key)
    openai = OpenAICompatLM(url, key)
    paths = {"in process": lm, "HTTP, native protocol": native, f"HTTP, OpenAI-compatible ({openai.method})": openai}
    for i, client in enumerate(paths.values()):  # warm-up, untimed
        timed(client, prompts(1, 900 + i), segs, words)
    seconds = dict.fromkeys(paths, 0.0)
    seed = 0
    for _ in range(args.rounds):
        for name, client in paths.items():
            seed += 1
            seconds[name] += timed(client, prompts(args.calls, seed), segs, words)
    n = args.calls * args.rounds
    base = seconds["in process"] / n
    lines = ["| path | calls | s per call | calls/s | time vs in process |", "|---|---:|---:|---:|---:|"]
    for name, total in seconds.items():
        lines.append(f"| {name} | {n} | {total / n:.3f} | {n / total:.2f} | {total / n / base:.3f}x |")
    ratio = seconds["HTTP, native protocol"] / seconds["in process"]
    return lines, ratio


def client_calls(client, seq, segs, words, errors: list) -> None:
    try:
        timed(client, seq, segs, words)
    except Exception as exc:  # counted and reported in the table
        errors.append(exc)


def concurrency_rows(args, url: str, key: str, segs, words, batching: bool) -> list[str]:
    rows = []
    seed = 10_000 if batching else 20_000
    for k in CLIENTS:
        clients = [RemoteLM(url, key) for _ in range(k)]
        seqs = [prompts(args.concurrent_calls, seed + 100 * k + i) for i in range(k)]
        before = clients[0].remaining_calls(), clients[0].usage.calls
        errors: list[BaseException] = []

        threads = [threading.Thread(target=client_calls, args=(c, s, segs, words, errors))
                   for c, s in zip(clients, seqs, strict=True)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        clients[0].remaining_calls()
        calls = k * args.concurrent_calls
        charged = clients[0].usage.calls - before[1]
        rows.append(f"| {'on' if batching else 'off'} | {k} | {calls} | {wall:.1f} | {calls / wall:.2f} | "
                    f"{len(errors)} | {charged} |")
        if errors:
            print(f"client errors ({len(errors)}): {errors[0]!r}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--calls", type=int, default=10, help="one-prompt calls per path and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrent-calls", type=int, default=8, help="calls per client in the concurrency section")
    ap.add_argument("--quick", action="store_true", help="a check: tiny-random-causal, 2 calls x 1 round, 2 per client")
    ap.add_argument("--write", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.model, args.calls, args.rounds, args.concurrent_calls = "tiny-random-causal", 2, 1, 2
    split = load_split("sst2", "train", seed=13)
    tpl = get_task("sst2").causal
    segs, words = render_rows(tpl, split, "before", None), tpl.verbalizers
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lm = LocalLM(load_model(args.model, args.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys.db"
        store = KeyStore(keys)
        key = store.add("bench", None)
        store.close()
        with Server(args.model, args.dtype, keys, batching=True) as server:
            latency, ratio = latency_section(args, lm, server.url, key, segs, words)
            del lm  # the concurrency section measures the server alone
            conc = ["| server batching | clients | calls | wall s | aggregate calls/s | errors | calls charged |",
                    "|---|---:|---:|---:|---:|---:|---:|"]
            conc += concurrency_rows(args, server.url, key, segs, words, batching=True)
        with Server(args.model, args.dtype, keys, batching=False) as server:
            conc += concurrency_rows(args, server.url, key, segs, words, batching=False)
    verdict = "met" if ratio <= FLOOR else "NOT met"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"## Serving: in process vs HTTP ({when})",
        "",
        f"`python benchmarks/serving.py {shlex.join(sys.argv[1:] if argv is None else argv)}` - model {args.model} "
        f"({args.dtype}), SST-2 train seed 13 (32 rows), one random 10-token prompt per call; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}, load average at start {load}.",
        "",
        *latency,
        "",
        f"Floor: HTTP (native) adds at most 10% to a one-prompt call: measured {100 * (ratio - 1):+.1f}% ({verdict}).",
        "",
        *conc,
        "",
    ])
    print(text)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write("\n" + text)
    return 0 if ratio <= FLOOR or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
