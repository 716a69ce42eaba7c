"""llama.cpp against promptgym's in-process path, on the default model's own GGUF (issue 38).

The SmolLM2 preset de-quantises a Q4_1 GGUF into bf16/fp32 torch weights; llama.cpp (llama-cpp-python)
runs the same file on its own quantised kernels. Two questions a user of ``openai+http://`` asks:

* **Agreement**: do the two give the same answers? The same prompts on the whole SST-2 test split, each row
  the very token ids promptgym lays out (``LocalLM.layout``), scored by llama.cpp's in-process bindings (one
  ``eval`` per row, full-vocabulary logits at the answer) and by ``LocalLM`` in bf16 and fp32: prediction
  agreement, and quantiles of |difference| of the label log-probs (normalised over the vocabulary and over
  the label words). A subset also goes over HTTP (``python -m llama_cpp.server`` behind
  ``openai+http://``) to show the client returns what the engine computes.
* **Speed**: calls/s of a one-prompt SST-2 call (the 32 train rows of seed 13) and of a 20-prompt population
  in one call, through the bindings, over HTTP, and through ``LocalLM`` in bf16 (default fast paths; every
  call a new prompt, so nothing is answered from the memo).

Needs the ``llamacpp`` extra (llama.cpp compiled from source: see pyproject.toml for the build flags) and an
idle machine for the speed table. Usage::

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/llamacpp.py --threads 2 [--http-rows 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

PROMPT_LEN = 10
POSITION = "after"  # before the input, a third of random prompts do not survive the text round trip (README)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


#: prompts are random whole words: random token ids merge into other tokens once a row is text, which a
#: server taking text only (llama.cpp's) cannot be sent (the client refuses such rows)
WORDS = ("movie", "story", "really", "truly", "quite", "overall", "simply", "performance", "direction", "music",
         "plot", "acting", "moment", "scene", "feeling", "review", "honest", "opinion", "summary", "verdict", "the",
         "film", "was", "in", "short", "my", "view", "all", "told", "critic")


def prompts(n: int, seed: int) -> list:
    """``n`` prompts of ``PROMPT_LEN`` random words each (their token ids, SmolLM2's tokenizer)."""
    from promptgym.lm import TokenPrompt, get_lm

    encode = get_lm("smollm2-135m", "bfloat16").encode
    rng = np.random.default_rng(seed)
    return [TokenPrompt(encode(" " + " ".join(rng.choice(WORDS, size=PROMPT_LEN)))) for _ in range(n)]


def requests_for(split, prompt_list) -> list:
    from promptgym.envs.scoring import render_rows
    from promptgym.lm import ScoreRequest
    from promptgym.tasks import get_task

    tpl = get_task("sst2").causal
    segs = render_rows(tpl, split, POSITION, None)
    return [ScoreRequest(p, segs, tpl.verbalizers) for p in prompt_list]


class Bindings:
    """llama.cpp in process: one row per ``eval`` (no batching across rows), logits of the last position."""

    def __init__(self, threads: int) -> None:
        from llama_cpp import Llama

        from promptgym.lm.presets import gguf_path

        self.llm = Llama(model_path=str(gguf_path()), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                         logits_all=False, verbose=False)
        self.n_vocab = int(self.llm.n_vocab())

    def close(self) -> None:
        self.llm.close()

    def label_logprobs(self, lm, requests) -> list[np.ndarray]:
        """Per request: rows x labels log-probs over the full vocabulary (as ``ScoreResult.logprobs``)."""
        from llama_cpp import llama_get_logits_ith

        rows, owners, label_ids = lm.layout.build(requests, lm.encode)
        out = []
        for r, mine in enumerate(owners):
            lp = np.empty((len(mine), len(label_ids[r])), dtype=np.float64)
            for k, i in enumerate(mine):
                self.llm.reset()
                self.llm.eval(list(rows[i].ids))  # without logits_all only the last position's logits exist
                logits = np.ctypeslib.as_array(llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
                logits = logits.astype(np.float64)
                m = logits.max()
                lp[k] = logits[label_ids[r]] - (m + np.log(np.exp(logits - m).sum()))
            out.append(lp)
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def llama_server(threads: int):
    """``python -m llama_cpp.server`` on the default model's GGUF, on 127.0.0.1 (a free port); yields its base
    URL and stops the server after (the real-engine test starts it through this too)."""
    import httpx

    from promptgym.lm.presets import gguf_path

    port = free_port()
    folder = tempfile.mkdtemp(prefix="llama-server-")
    log = open(Path(folder) / "server.log", "w")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--logits_all",
                             "true", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads",
                             str(threads), "--n_threads_batch", str(threads)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama.cpp's server did not start in 3 minutes")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def agreement_row(name: str, ref: list[np.ndarray], other: list[np.ndarray]) -> str:
    """Markdown row: prediction agreement and |Δ| quantiles, vocabulary- and label-normalised."""
    a, b = np.concatenate(ref), np.concatenate(other)
    agree = float(np.mean(a.argmax(1) == b.argmax(1)))

    def label_norm(x):
        m = x.max(1, keepdims=True)
        return x - (m + np.log(np.exp(x - m).sum(1, keepdims=True)))

    dv = np.abs(a - b).ravel()
    dl = np.abs(label_norm(a) - label_norm(b))[:, 0]  # two labels: both columns move alike
    q = lambda d: " / ".join(f"{np.quantile(d, p):.3f}" for p in (0.5, 0.9, 0.99)) + f" / {d.max():.3f}"  # noqa: E731
    return f"| {name} | {len(a)} | {100 * agree:.2f}% | {q(dv)} | {q(dl)} |"


def timed(fn, reps: int) -> float:
    """Seconds per call, best of ``reps`` (each on fresh prompts when ``fn`` takes the repetition)."""
    best = float("inf")
    for r in range(reps):
        t = time.perf_counter()
        fn(r)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads (default: %(default)s)")
    ap.add_argument("--prompts", type=int, default=3, help="random 10-word prompts for the agreement table")
    ap.add_argument("--http-rows", type=int, default=64, help="test rows also scored over HTTP (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the one-prompt call (best taken)")
    args = ap.parse_args()

    import torch

    from promptgym.lm import get_lm
    from promptgym.tasks import load_split

    torch.set_num_threads(args.threads)
    print(f"host: {cpu_model()}, nproc {os.cpu_count()}, torch {torch.__version__} ({args.threads} threads); "
          f"llama.cpp {args.threads} threads; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    test = load_split("sst2", "test")
    bf16, fp32 = get_lm("smollm2-135m", "bfloat16"), get_lm("smollm2-135m", "float32")
    bind = Bindings(args.threads)
    reqs = requests_for(test, prompts(args.prompts, seed=0))

    t = time.perf_counter()
    cpp = bind.label_logprobs(bf16, reqs)
    cpp_s = time.perf_counter() - t
    ours = {}
    for name, lm in (("bf16", bf16), ("fp32", fp32)):
        with lm.fast_paths(memo=False):
            ours[name] = [r.logprobs.astype(np.float64) for r in lm.score(reqs)]
    print(f"\nagreement: {args.prompts} random {PROMPT_LEN}-word prompts (after the input) x {len(test.texts)} SST-2 "
          f"test rows; llama.cpp bindings took {cpp_s:.0f} s")
    print("| pair | rows | prediction agreement | abs(diff) label log-prob over the vocabulary: median / p90 / p99 / "
          "max | over the 2 label words: median / p90 / p99 / max |")
    print("|---|---:|---:|---|---|")
    print(agreement_row("llama.cpp Q4_1 vs in-process fp32", ours["fp32"], cpp))
    print(agreement_row("llama.cpp Q4_1 vs in-process bf16", ours["bf16"], cpp))
    print(agreement_row("in-process bf16 vs fp32 (for scale)", ours["fp32"], ours["bf16"]))

    train = load_split("sst2", "train", seed=13)
    one = lambda r: requests_for(train, prompts(1, seed=100 + r))  # noqa: E731
    pop = requests_for(train, prompts(20, seed=7))
    speed = {}
    speed["bf16 in process (LocalLM)"] = (timed(lambda r: bf16.score(one(r)), args.reps),
                                          timed(lambda r: bf16.score(pop), 1))
    speed["llama.cpp bindings, in process"] = (timed(lambda r: bind.label_logprobs(bf16, one(r)), args.reps),
                                               timed(lambda r: bind.label_logprobs(bf16, pop), 1))
    bind.close()  # one llama.cpp model at a time: the server loads its own
    with llama_server(args.threads) as url:
        http = get_lm(f"openai+{url}?tokenizer=smollm2-135m")
        sub = requests_for(test, prompts(1, seed=0))
        sub = [type(sub[0])(sub[0].prompt, sub[0].segments[:args.http_rows], sub[0].label_words)]
        got = [r.logprobs.astype(np.float64) for r in http.score(sub)]
        print(f"\nHTTP (llama_cpp.server, probed: prompt form {http.prompt_form}, batched {http.batched}, method "
              f"{http.method}, approximate {http.approximate})")
        print("| pair | rows | prediction agreement | abs(diff) over the vocabulary | over the label words |")
        print("|---|---:|---:|---|---|")
        print(agreement_row("HTTP vs llama.cpp bindings", [c[:args.http_rows] for c in cpp[:1]], got))
        speed["llama.cpp over HTTP (openai+http://)"] = (timed(lambda r: http.score(one(r)), args.reps),
                                                         timed(lambda r: http.score(pop), 1))
    base = speed["bf16 in process (LocalLM)"]
    print(f"\nspeed: one call = {len(train.texts)} SST-2 train rows (seed 13), a {PROMPT_LEN}-word prompt after the "
          f"input; one-prompt call best of {args.reps}, a 20-prompt population once")
    print("| path | one-prompt call: s (calls/s) | 20-prompt population: s (prompts/s) | vs bf16 in process |")
    print("|---|---:|---:|---|")
    for name, (s1, s20) in speed.items():
        print(f"| {name} | {s1:.2f} ({1 / s1:.2f}) | {s20:.1f} ({20 / s20:.2f}) | {base[0] / s1:.2f}x / "
              f"{base[1] / s20:.2f}x |")


if __name__ == "__main__":
    main()
