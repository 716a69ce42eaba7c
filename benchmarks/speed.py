"""Speed of one API call on the default model: the papers' loop vs promptgym's scoring paths (issue 17).

One run, one table (printed and appended to benchmarks/RESULTS.md). Workload: one-prompt calls
(``score([one request])``, what every ``env.step`` is) with random 10-token TokenPrompts on the
16-shot train split (seed 13) of SST-2 (32 rows) and AG News (64 rows), and the first ``--dbpedia-rows``
rows of DBPedia's (default 32 of 224, to keep the run short). Paths:

* ``papers' loop``: fp32, one prompt per call, all rows of the call in ONE forward (padded to the
  longest row), prompt before the input: what BBT/BDPL's code does. The yardstick.
* ``bf16 plain``: today's batched path (planned chunks, left padding), fast paths off; for both
  prompt placements.
* ``+ shared prefix`` (prompt before): keys/values of the prompt computed once per call, shared by the rows.
* ``+ input cache`` (prompt after): keys/values of every example's text computed in a first call
  (not timed; its cost is shown in the memory table) and reused: a call runs prompt + cue only.
* ``+ memo`` (prompt before, shared prefix on): a sequence of calls where half the prompts repeat
  earlier ones (agents re-propose converged prompts); a repeat runs no forward.

FLOPs = 2 x (non-embedding parameters) x (tokens actually run through the model, padding excluded;
attention scores and the one-row LM head are ignored), divided by the wall time; the peak is the
best of 10 timed 2048^3 bf16 matmuls (``torch.matmul``, default threads), measured before each task
and at the end of the run (the largest is used: the host is shared and its speed drifts).
Speed-ups are ratios of wall times measured in this run, in rounds (each path in turn, repeated
``--rounds`` times, best round kept), so that slow drift of a shared machine hits all paths alike.

Two more sections, each one run and one table (``--section``):

* ``growth``: how the cost of an API call grows with the population size of a batched call
  (1-64 prompts in one ``score``), the prompt length (5-50 tokens) and the input length (AG News
  texts cut to 8-64 tokens), plain vs fast paths, each pair measured side by side.
* ``runs``: real agent runs on SST-2 (BDPL on PromptSST2-v0, BBT on PromptSST2-Subspace-v0, 1,000
  calls each, fast paths on, as users run them), their wall time, and the share of calls the memo
  answered on the agent's own call sequence; then that recorded sequence (the first
  ``--replay-calls`` calls) replayed on two fresh copies of the model, plain path vs fast paths, in
  alternating blocks, so both paths see the same drift of a shared host. "Before" = the run's wall
  time x the replay's plain/fast ratio (an extrapolation when only part of the run is replayed;
  the table says which).

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/speed.py [--calls 3] [--rounds 2] [--no-write]
    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/speed.py --section growth
    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/speed.py --section runs [--run-calls 1000] [--replay-calls 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from promptgym.envs.scoring import render_rows
from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.lm.kv_cache import nbytes_per_token, prompt_key
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import DEFAULT_MODEL, load_model
from promptgym.tasks import get_task, load_split

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TASKS = ("sst2", "agnews", "dbpedia")
FLOORS = {("sst2", "+ input cache"): 3.0, ("agnews", "+ input cache"): 4.0, ("sst2", "+ shared prefix"): 1.15}
OFF = {"input_cache": False, "prefix_cache": False, "memo": False}
# the model measured; a tiny one only to check the script itself (PROMPTGYM_SPEED_MODEL=tiny-random-causal)
MODEL = os.environ.get("PROMPTGYM_SPEED_MODEL", DEFAULT_MODEL)


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best bf16 matmul rate (FLOP/s) of ``size``^3 on this machine, now (after 3 warm-up products)."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best


def non_embedding_params(lm: LocalLM) -> int:
    total = sum(p.numel() for p in lm._model.parameters())
    return int(total - lm._embed.weight.numel())


def prompts(n: int, seed: int, length: int = 10) -> list[TokenPrompt]:
    rng = np.random.default_rng(seed)
    return [TokenPrompt(tuple(int(i) for i in rng.integers(1000, 40000, size=length))) for _ in range(n)]


def run_calls(lm: LocalLM, seq: list[TokenPrompt], segs, words, flags: dict) -> tuple[float, int, list]:
    """(wall seconds, tokens computed, predictions) of one-prompt calls for each prompt of ``seq``."""
    saved = {k: getattr(lm, k) for k in flags}
    for k, v in flags.items():
        setattr(lm, k, v)
    try:
        tokens = lm.tokens_computed
        t = time.perf_counter()
        preds = [lm.score([ScoreRequest(p, segs, words)])[0].predictions for p in seq]
        return time.perf_counter() - t, lm.tokens_computed - tokens, preds
    finally:
        for k, v in saved.items():
            setattr(lm, k, v)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "nproc": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3, help="timed one-prompt calls per path and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dbpedia-rows", type=int, default=32)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--section", choices=("paths", "growth", "runs"), default="paths")
    ap.add_argument("--run-calls", type=int, default=1000, help="runs: API calls of each agent run")
    ap.add_argument("--replay-calls", type=int, default=1000, help="runs: API calls of the recorded sequence replayed")
    args = ap.parse_args(argv)
    if args.section != "paths":
        section = {"growth": growth_section, "runs": runs_section}[args.section]
        text = section(args)
        print(text)
        if not args.no_write:
            with RESULTS.open("a") as fh:
                fh.write("\n" + text)
        return 0
    info = machine()
    peak = matmul_peak()
    bf16 = LocalLM(load_model(MODEL, "bfloat16"))
    fp32 = LocalLM(load_model(MODEL, "float32"), chunk_size=10 ** 6, chunk_overhead=10 ** 9, **OFF)
    n_params = non_embedding_params(bf16)
    peaks = [peak]
    rows_out, mem_out, floors = [], [], []
    for task in args.tasks.split(","):
        peaks.append(matmul_peak())
        split = load_split(task, "train", seed=13)
        tpl = get_task(task).causal
        words = tpl.verbalizers
        n = args.dbpedia_rows if task == "dbpedia" else len(split)
        segs = {pos: render_rows(tpl, split, pos, None)[:n] for pos in ("before", "after")}
        # warm-up: one call per model; the input cache of this task's rows is filled here (timed apart)
        run_calls(fp32, prompts(1, 99), segs["before"], words, {})
        run_calls(bf16, prompts(1, 99), segs["before"], words, OFF)
        bf16.clear_caches()
        fill_s, fill_tok, _ = run_calls(bf16, prompts(1, 98), segs["after"], words,
                                        {"input_cache": True, "prefix_cache": False, "memo": False})
        stored = bf16.kv_store.nbytes
        text_tokens = sum(len(bf16.encode(left)) + len(bf16._prefix) for left, _ in segs["after"])
        mem_out.append((task, n, text_tokens, stored, fill_s))
        base = prompts(args.calls, 1)
        memo_seq = [p for p in prompts(args.calls, 100) for _ in range(2)]  # each prompt twice in a row
        paths = [
            ("papers' loop (fp32, 1 forward)", fp32, "before", {}, base[:1]),  # slow: one call per round
            ("bf16 plain", bf16, "before", OFF, base),
            ("+ shared prefix", bf16, "before", {**OFF, "prefix_cache": True}, base),
            ("+ shared prefix + memo (half repeats)", bf16, "before", {**OFF, "prefix_cache": True, "memo": True},
             memo_seq),
            ("bf16 plain", bf16, "after", OFF, base),
            ("+ input cache", bf16, "after", {**OFF, "input_cache": True}, base),
        ]
        best: dict[int, tuple[float, int]] = {}
        preds: dict[int, list] = {}
        for _ in range(args.rounds):
            bf16.memo_store.clear()
            for k, (_, lm, pos, flags, seq) in enumerate(paths):
                wall, tok, p = run_calls(lm, seq, segs[pos], words, flags)
                if k not in best or wall < best[k][0]:
                    best[k] = (wall, tok)
                preds[k] = p
        plain = {"before": best[1][0] / len(base), "after": best[4][0] / len(base)}
        loop = best[0][0]
        for k, (name, _, pos, _, seq) in enumerate(paths):
            wall, tok = best[k]
            per_call = wall / len(seq)
            flops = 2 * n_params * tok / wall
            ref = 1 if pos == "before" else 4
            agree = float(np.mean([np.mean(a == b) for a, b in zip(preds[k], preds[ref], strict=False)])) \
                if seq[0] is base[0] else float("nan")
            speed = plain[pos] / per_call
            rows_out.append((task, n, pos, name, tok / len(seq), per_call, 1 / per_call, speed, loop / per_call,
                             flops / 1e12, flops / peak, agree))
            if (task, name) in FLOORS:
                floors.append((task, name, speed, FLOORS[(task, name)]))
        print(f"{task}: done", file=sys.stderr, flush=True)
    peaks.append(matmul_peak())
    peak = max(peaks)
    rows_out = [(*r[:9], r[9], r[9] * 1e12 / peak, r[11]) for r in rows_out]
    bpt = nbytes_per_token(bf16._model)
    lines = [
        f"## speed of one call: papers' loop vs plain vs fast paths (issue 17) — {dt.date.today().isoformat()}",
        "",
        f"- machine: {info['cpu']}, {info['nproc']} cores, torch threads {info['torch threads']}; "
        f"python {info['python']}, torch {info['torch']}, transformers {info['transformers']}; "
        f"load average at start {info['load average at start']}, at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- model {MODEL}, {n_params / 1e6:.1f} M non-embedding parameters; measured bf16 matmul peak "
        f"(2048^3, best of 10 after 3 warm-ups; measured before each task and at the end: "
        f"{', '.join(f'{p / 1e12:.3f}' for p in peaks)}; the host is shared, so the largest is used): "
        f"{peak / 1e12:.3f} TFLOP/s",
        "- FLOPs = 2 x non-embedding params x tokens actually run (padding excluded, attention ignored); "
        "% peak = achieved / measured bf16 matmul peak (for the fp32 loop too)",
        f"- one-prompt calls, random 10-token prompts, 16-shot train split seed 13 (DBPedia: first "
        f"{args.dbpedia_rows} rows); best of {args.rounds} rounds of {args.calls} calls per path, papers' loop 1 call "
        f"(memo row: {2 * args.calls} calls, each prompt twice in a row)",
        "- speed-up: vs bf16 plain with the same prompt placement; agree: argmax agreement with it",
        f"- command: `PROMPTGYM_DATA_DIR=../shared/data python benchmarks/speed.py {shlex.join(sys.argv[1:])}`",
        "",
        "| task | rows | prompt | path | tokens run/call | s/call | calls/s | speed-up | vs papers' loop "
        "| TFLOP/s | % peak | agree |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, n, pos, name, tok, sec, cps, sp, vs_loop, tf, frac, agree in rows_out:
        ag = "" if np.isnan(agree) else f"{100 * agree:.1f}%"
        lines.append(f"| {task} | {n} | {pos} | {name} | {tok:,.0f} | {sec:.3f} | {cps:.2f} | {sp:.2f}x | "
                     f"{vs_loop:.2f}x | {tf:.3f} | {100 * frac:.0f}% | {ag} |")
    lines += ["", f"Input cache memory (bf16, {bpt:,} bytes per token; fp32 twice that; default budget 2 GiB):", "",
              "| task | rows | text tokens cached | MB stored | first call (fills the cache), s |",
              "|---|---:|---:|---:|---:|"]
    for task, n, toks, stored, fill in mem_out:
        lines.append(f"| {task} | {n} | {toks:,} | {stored / 2 ** 20:.1f} | {fill:.2f} |")
    lines += ["", "Floors (ratios in this run):", ""]
    for task, name, got, want in floors:
        lines.append(f"- {task} `{name}`: {got:.2f}x vs floor {want:.2f}x: {'met' if got >= want else 'NOT met'}")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as fh:
            fh.write("\n" + text)
    return 0


def header(title: str, args: argparse.Namespace, info: dict[str, str], peak: float) -> list[str]:
    return [
        f"## {title} — {dt.date.today().isoformat()}",
        "",
        f"- machine: {info['cpu']}, {info['nproc']} cores, torch threads {info['torch threads']}; "
        f"python {info['python']}, torch {info['torch']}, transformers {info['transformers']}; "
        f"load average at start {info['load average at start']}, at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- model {MODEL} in bf16; measured bf16 matmul peak {peak / 1e12:.3f} TFLOP/s (best of the "
        "measurements made during the run)",
        f"- command: `PROMPTGYM_DATA_DIR=../shared/data python benchmarks/speed.py {shlex.join(sys.argv[1:])}`",
        "",
    ]


def timed_batch(lm: LocalLM, requests: list[ScoreRequest], flags: dict) -> tuple[float, int]:
    """(wall seconds, tokens computed) of ONE batched ``score`` of ``requests`` with ``flags`` set."""
    with lm.fast_paths(**flags):
        lm.memo_store.clear()
        tokens = lm.tokens_computed
        t = time.perf_counter()
        lm.score(requests)
        return time.perf_counter() - t, lm.tokens_computed - tokens


def growth_section(args: argparse.Namespace) -> str:
    """Cost per API call vs population size, prompt length and input length (plain vs fast, side by side)."""
    info = machine()
    peaks = [matmul_peak()]
    lm = LocalLM(load_model(MODEL, "bfloat16"))
    n_params = non_embedding_params(lm)
    sst2 = load_split("sst2", "train", seed=13)
    tpl = get_task("sst2").causal
    segs = {pos: render_rows(tpl, sst2, pos, None) for pos in ("before", "after")}
    fast_before = {**OFF, "prefix_cache": True}
    fast_after = {**OFF, "input_cache": True}
    rows: list[tuple] = []

    def measure(kind: str, value: str, pos: str, segments, words, reqs_of, fast: dict) -> None:
        # warm-up (fills the input cache for "after"), then rounds alternating plain and fast
        timed_batch(lm, reqs_of(97, segments, words), fast)
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.rounds):
            for name, flags in (("plain", OFF), ("fast", fast)):
                wall, tok = timed_batch(lm, reqs_of(1, segments, words), flags)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, tok)
        n_calls = len(reqs_of(1, segments, words))
        (wp, tp), (wf, tf) = best["plain"], best["fast"]
        rows.append((kind, value, pos, len(segments), n_calls, wp / n_calls, wf / n_calls, wp / wf,
                     2 * n_params * tp / wp, 2 * n_params * tf / wf))

    words = tpl.verbalizers
    for pop in (1, 4, 16, 64):
        measure("population", str(pop), "before", segs["before"], words,
                lambda s, sg, w, pop=pop: [ScoreRequest(p, sg, w) for p in prompts(pop, s)], fast_before)
    peaks.append(matmul_peak())
    for length in (5, 10, 20, 50):
        for pos, fast in (("before", fast_before), ("after", fast_after)):
            lm.clear_caches()
            measure("prompt length", str(length), pos, segs[pos], words,
                    lambda s, sg, w, length=length: [ScoreRequest(p, sg, w) for p in prompts(4, s, length)], fast)
    peaks.append(matmul_peak())
    ag = load_split("agnews", "train", seed=13)
    ag_tpl = get_task("agnews").causal
    for cut in (8, 16, 32, 64):
        texts = [lm.decode(lm.encode(t)[:cut]) for t in ag.texts]
        mean_len = float(np.mean([len(lm.encode(t)) for t in texts]))
        for pos, fast in (("before", fast_before), ("after", fast_after)):
            lm.clear_caches()
            sg = tuple(ag_tpl.render(t, p, position=pos, mask_token=None) for t, p in zip(texts, ag.text_pairs))
            measure("input length", f"{cut} ({mean_len:.0f} mean)", pos, sg, ag_tpl.verbalizers,
                    lambda s, sg, w: [ScoreRequest(p, sg, w) for p in prompts(4, s)], fast)
    peaks.append(matmul_peak())
    peak = max(peaks)
    lines = header("speed: how an API call's cost grows (issue 17)", args, info, peak)
    lines += [
        "- population: P random 10-token prompts scored in ONE batched `score` (what BBT/BDPL do per generation), "
        "SST-2 train split 13 (32 rows), prompt before the input; prompt length: 4 prompts per call, both "
        "placements; input length: AG News train split 13 (64 rows) with every text cut to its first N tokens, "
        "4 prompts of 10 tokens per call",
        f"- fast = shared prefix (prompt before) or input cache (prompt after; filled by a warm-up call, not "
        f"timed); best of {args.rounds} rounds, plain and fast alternating; s/call = wall time / API calls in the "
        "batch; % peak = FLOPs actually computed / measured bf16 matmul peak",
        "",
        "| sweep | value | prompt | rows | API calls in the batch | plain s/call | fast s/call | speed-up "
        "| plain % peak | fast % peak |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, value, pos, n, calls, sp, sf, ratio, fp, ff in rows:
        lines.append(f"| {kind} | {value} | {pos} | {n} | {calls} | {sp:.3f} | {sf:.3f} | {ratio:.2f}x | "
                     f"{100 * fp / peak:.0f}% | {100 * ff / peak:.0f}% |")
    return "\n".join(lines) + "\n"


class Recorder:
    """Wraps an LM's ``score`` to keep every batched call's requests and count what the memo answers."""

    def __init__(self, lm: LocalLM) -> None:
        self.lm, self.calls, self.repeats = lm, [], 0
        self.seen: set = set()
        self.score_plain = lm.score
        lm.score = self.score  # type: ignore[method-assign]  # an instance attribute shadows the method

    def score(self, requests):
        self.calls.append(list(requests))
        for req in requests:
            key = (prompt_key(req.prompt), req.segments)
            self.repeats += key in self.seen
            self.seen.add(key)
        return self.score_plain(requests)

    def detach(self) -> None:
        del self.lm.score


def runs_section(args: argparse.Namespace) -> str:
    """1,000-call BDPL and BBT runs on SST-2 (fast paths on), then their call sequence replayed plain vs fast."""
    import gymnasium as gym

    import promptgym  # noqa: F401  (registers the envs)
    from promptgym.agent import make_agent

    info = machine()
    peaks = [matmul_peak()]
    out = []
    for agent, env_id in (("bdpl", "PromptSST2-v0"), ("bbt", "PromptSST2-Subspace-v0")):
        lm = LocalLM(load_model(MODEL, "bfloat16"))
        env = gym.make(env_id, model=lm, split_seed=13, budget=args.run_calls)
        rec = Recorder(lm)
        t = time.perf_counter()
        make_agent(agent, seed=0).learn(env)
        run_wall = time.perf_counter() - t
        rec.detach()
        api_calls = env.unwrapped.budget.calls
        seq, n = [], 0
        for batch in rec.calls:
            if n >= args.replay_calls:
                break
            seq.append(batch)
            n += len(batch)
        print(f"{agent}: run {run_wall:.0f} s, {api_calls} calls, {rec.repeats} repeats; replaying {n}",
              file=sys.stderr, flush=True)
        plain_lm = LocalLM(load_model(MODEL, "bfloat16"), **OFF)
        fast_lm = LocalLM(load_model(MODEL, "bfloat16"))
        walls = {"plain": 0.0, "fast": 0.0}
        block = max(1, len(seq) // 20)
        for start in range(0, len(seq), block):
            for name, model in (("plain", plain_lm), ("fast", fast_lm)):
                t = time.perf_counter()
                for batch in seq[start:start + block]:
                    model.score(batch)
                walls[name] += time.perf_counter() - t
        ratio = walls["plain"] / walls["fast"]
        full = n >= api_calls
        out.append((agent, env_id, api_calls, run_wall, rec.repeats, n, walls["plain"], walls["fast"], ratio,
                    run_wall * ratio, full))
        peaks.append(matmul_peak())
        del env, lm, plain_lm, fast_lm
    peak = max(peaks)
    lines = header("speed: 1,000-call agent runs before and after the fast paths (issue 17)", args, info, peak)
    lines += [
        "- run: the agent's default config, seed 0, split 13, fast paths on (the default), wall time of "
        "`learn()` including the agent's own work; repeats: calls whose (prompt, rows) had been scored before in "
        "the run (the memo answers them with no forward pass; still charged)",
        "- replay: the run's recorded batched calls, plain path (every fast path off) vs fast paths on, on two fresh "
        "copies of the model, alternating blocks of 1/20 of the sequence; before = run wall time x replay ratio",
        "",
        "| agent | env | API calls | run wall (after), s | calls/s | repeats (memo) | calls replayed "
        "| replay plain, s | replay fast, s | speed-up | before (plain), s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for agent, env_id, calls, wall, reps, n, wp, wf, ratio, before, full in out:
        note = "" if full else " (extrapolated)"
        lines.append(f"| {agent} | {env_id} | {calls:,} | {wall:.0f} | {calls / wall:.2f} | {reps} "
                     f"({100 * reps / max(calls, 1):.1f}%) | {n:,} | {wp:.0f} | {wf:.0f} | {ratio:.2f}x | "
                     f"{before:.0f}{note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
