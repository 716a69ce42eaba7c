"""Reliable prompt tuning: accuracy, calibration and OOD detection of prompt distributions, lite tier.

Every run is exactly a leaderboard protocol run (``promptgym.bench.evaluate.evaluate`` one seed at
a time: the agent learns on the 16-shot split of the seed with agent seed = split seed, under the
lite tier's 1,000 API calls enforced by the env, calibration's calls included; every member of
its final prompt set is scored on the test split in fp32), cached where ``promptgym evaluate``
caches it (``runs/evaluate/<env>-<agent>[+calibration]-lite/seed-N.json``), so the submissions are
then assembled and re-checked by the ordinary CLI, e.g.::

    promptgym evaluate --env PromptSST2-Subspace-v0 --agent bbt --calibrate    # reads the cache

Methods (default model SmolLM2-135M, the tasks' default templates, prompt before the input):

    SST-2, seeds 13/21/42/87/100     RTE, seeds 13/21/42
    calibrated manual (reference)    calibrated manual (reference)
    bbt, bbt + calibration           bbt
    bdpl + calibration (discrete)    ensemble
    ensemble, cma_elbo               abc_smc (reward="label_only")
    abc_smc, snpe (reward="label_only": they see predicted labels only)

    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/reliability.py              # runs what is missing
    PROMPTGYM_DATA_DIR=../shared/data python benchmarks/reliability.py --report     # tables from the cache

The report prints, per task, accuracy, ECE, NLL, AURC and OOD AUROC (max-prob, mean over the
task's OOD pairs) as mean ± std over seeds, and each method's paired accuracy difference from the
calibrated manual prompt with a 95% bootstrap CI over seeds and test rows; a second table pairs
every other row with one BBT prompt on the seeds both ran (accuracy CI over seeds and rows; ECE and
NLL differences with a CI over seeds only, as they are not per-row sums), which answers whether a
method improves calibration over a single BBT prompt at equal budget. ``--only`` picks
methods, ``--seeds`` and ``--budget`` shrink a trial run (``--model tiny-random-causal``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agents.abc_smc import LITE_ADAPTED as ABC_LITE
from agents.cma_elbo import LITE_ADAPTED as CMA_ELBO_LITE
from agents.snpe import LITE_ADAPTED as SNPE_LITE
from promptgym.bench.schema import BENCH_SEEDS, TIERS
from promptgym.runs import evaluate_workdir, seed_file

LABEL_ONLY = {"reward": "label_only"}


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: an agent on an env, optionally calibrated, on some seeds."""

    label: str
    env_id: str
    agent: str
    calibrate: bool = False
    env_kwargs: dict = field(default_factory=dict)
    seeds: tuple[int, ...] = BENCH_SEEDS
    reference: bool = False  # the calibrated manual prompt every row is compared with
    single: bool = False  # one BBT prompt: the equal-budget baseline the calibration / set rows are paired with
    variants: bool = False  # also score the set's sub-variants (members, where the bias is fitted) on test
    agent_kwargs: dict = field(default_factory=dict)  # agent config overrides (e.g. a previous recipe)
    tag: str = ""  # a work-folder suffix that keeps rows of one agent with different configs apart

    @property
    def task(self) -> str:
        return self.env_id.split("-")[0].removeprefix("Prompt")

    @property
    def key(self) -> str:
        return f"{self.task}:{self.agent}{'+calibration' if self.calibrate else ''}{'@' + self.tag if self.tag else ''}"


RTE_SEEDS = BENCH_SEEDS[:3]
METHODS: list[Method] = [
    Method("calibrated manual prompt", "PromptSST2-v0", "calibrated", reference=True),
    Method("BBT", "PromptSST2-Subspace-v0", "bbt", single=True),
    Method("BBT + calibration", "PromptSST2-Subspace-v0", "bbt", calibrate=True),
    Method("BDPL + calibration", "PromptSST2-v0", "bdpl", calibrate=True),
    Method("ensemble", "PromptSST2-Subspace-v0", "ensemble"),
    Method("snapshot ensemble (one BBT search, 5 calibrated members)", "PromptSST2-Subspace-v0", "snapshot",
           variants=True),
    # the same set with each member's bias fitted on the dev rows it was selected on: nothing is reserved, so
    # its search is BBT's to the call (run after BBT in one process it costs only the members' test scoring)
    Method("snapshot ensemble, biases fitted on dev", "PromptSST2-Subspace-v0", "snapshot",
           agent_kwargs={"calibrate_on": "dev"}, tag="dev"),
    Method("CMA-ELBO (previous lite recipe)", "PromptSST2-Subspace-v0", "cma_elbo", agent_kwargs=CMA_ELBO_LITE),
    Method("ABC-SMC (labels only, previous lite recipe)", "PromptSST2-Subspace-v0", "abc_smc", env_kwargs=LABEL_ONLY,
           agent_kwargs=ABC_LITE),
    Method("SNPE (labels only, previous lite recipe)", "PromptSST2-Subspace-v0", "snpe", env_kwargs=LABEL_ONLY,
           agent_kwargs=SNPE_LITE),
    Method("CMA-ELBO (reference recipe)", "PromptSST2-Subspace-v0", "cma_elbo", tag="reference"),
    Method("ABC-SMC (labels only, reference recipe)", "PromptSST2-Subspace-v0", "abc_smc", env_kwargs=LABEL_ONLY,
           tag="reference"),
    Method("SNPE (labels only, reference recipe)", "PromptSST2-Subspace-v0", "snpe", env_kwargs=LABEL_ONLY,
           tag="reference"),
    Method("calibrated manual prompt", "PromptRTE-v0", "calibrated", seeds=RTE_SEEDS, reference=True),
    Method("BBT", "PromptRTE-Subspace-v0", "bbt", seeds=RTE_SEEDS, single=True),
    Method("ensemble", "PromptRTE-Subspace-v0", "ensemble", seeds=RTE_SEEDS),
    Method("ABC-SMC (labels only, previous lite recipe)", "PromptRTE-Subspace-v0", "abc_smc", env_kwargs=LABEL_ONLY,
           seeds=RTE_SEEDS, agent_kwargs=ABC_LITE),
]


#: the search LM's memo, in requests: a whole standard-tier search (8,000 calls and its dev checks). The
#: snapshot ensemble's search is BBT's (same seed, same CMA-ES stream, 5 calls shorter), so run after BBT
#: in one process it is answered from the memo without forward passes; every call is still charged to
#: its own run's budget, and the answers are the stored ones bit for bit.
MEMO_SIZE = 20_000


def keep_search_answers(model: str, size: int) -> None:
    """Let the shared bf16 search LM of ``model`` remember ``size`` requests (served models: no-op)."""
    from promptgym.lm import get_lm, is_served

    if not is_served(model):
        get_lm(model, "bfloat16").memo_store.max_entries = int(size)


def memo_hits(model: str) -> int:
    """Requests the shared bf16 search LM answered from its memo so far (served models: 0)."""
    from promptgym.lm import get_lm, is_served

    return 0 if is_served(model) else get_lm(model, "bfloat16").memo_store.hits


def cache_path(m: Method, seed: int, tier: str, root: Path | None) -> Path:
    work = evaluate_workdir(m.env_id, m.agent, tier, root=root, calibrate=m.calibrate)
    if m.tag:
        work = work.with_name(work.name.removesuffix(f"-{tier}") + f"@{m.tag}-{tier}")
    return seed_file(work, seed)


def run_missing(methods: list[Method], seeds: list[int] | None, tier: str, model: str, root: Path | None,
                score_store: Path | None = None) -> None:
    """Run every missing (method, seed), seed by seed so that every method has early seeds first.

    A run cached before the protocol reported uncertainty is completed by ``evaluate`` (its stored
    prompt re-scored on test, uncharged); a complete cached run is only read. ``score_store``: a SQLite
    file keeping every test and OOD score (:mod:`promptgym.score_store`), so a set's scoring cut by a
    session's end resumes.
    """
    from promptgym.bench.evaluate import evaluate, has_uncertainty

    order = sorted({s for m in methods for s in m.seeds if seeds is None or s in seeds}, key=BENCH_SEEDS.index)
    for seed in order:
        for m in methods:
            path = cache_path(m, seed, tier, root)
            if seed not in m.seeds or path.is_file() and has_uncertainty(json.loads(path.read_text())):
                continue
            started, hits = time.time(), memo_hits(model)
            print(f"{m.label} on {m.env_id}, seed {seed}{' (completing a cached run)' if path.is_file() else ''} ...",
                  flush=True)
            evaluate(m.env_id, m.agent, tier, model, (seed,), m.env_kwargs or None, m.agent_kwargs or None,
                     workdir=path.parent,
                     calibrate=m.calibrate, score_store=score_store)
            run = json.loads(cache_path(m, seed, tier, root).read_text())
            t = run["test"]
            print(f"  acc {t['metric']:.4f}  ECE {t['ece']:.3f}  NLL {t.get('nll', float('nan')):.3f}  "
                  f"calls {run['calls_used']}  memo hits {memo_hits(model) - hits}  {time.time() - started:.0f} s",
                  flush=True)
        for m in methods:
            vpath = variants_path(m, seed, tier, root)
            if m.variants and seed in m.seeds and cache_path(m, seed, tier, root).is_file() and not vpath.is_file():
                score_variants(m, seed, tier, model, root, score_store)


def variants_path(m: Method, seed: int, tier: str, root: Path | None) -> Path:
    return cache_path(m, seed, tier, root).with_name(f"variants-{seed}.json")


#: a snapshot set's sub-variants: the first k members (best dev first; k = 1 is BBT's own prompt when the
#: search matched BBT's) with each member's bias fitted nowhere, on train, on dev or on both
VARIANT_MEMBERS = (1, 3, 5)
VARIANT_BIAS = ("none", "train", "dev", "both")


def score_variants(m: Method, seed: int, tier: str, model: str, root: Path | None,
                   score_store: Path | None = None) -> None:
    """Test metrics of the sub-variants of a cached snapshot run, written beside its seed file.

    The members' train and dev outcomes are re-scored on a fresh env of the same split (bf16, as the
    search; a few calls outside the run's budget: analysis, not a run) and every variant is scored on
    test in fp32 by one :class:`~promptgym.evaluation.Evaluator`, whose per-prompt cache makes each
    variant after the first free.
    """
    from agents.snapshot import member_bias
    from promptgym.agent import Result
    from promptgym.evaluation import Evaluator
    from promptgym.runner import make_env
    from promptgym.score_store import open_store

    run = json.loads(cache_path(m, seed, tier, root).read_text())
    members = [np.asarray(a, dtype=np.float32) for a in run["prompt"]["members"]]
    env = make_env(m.env_id, 4 * len(members), seed, model, "bfloat16", m.env_kwargs or None)
    base = env.unwrapped
    evaluator = Evaluator.for_env(env, store=open_store(score_store))
    train_outs = base.score_actions(members, "train")
    dev_outs = base.score_actions(members, "dev")
    out: dict = {"seed": seed, "variants": []}
    for k in VARIANT_MEMBERS:
        if k > len(members):
            continue
        for where in VARIANT_BIAS:
            biases = [member_bias(t, d, where) for t, d in zip(train_outs[:k], dev_outs[:k])]
            bias = None if where == "none" else np.stack(biases).astype(np.float32)
            result = Result("snapshot", None, "", float("nan"), None, 0, members=members[:k], label_bias=bias)
            t = evaluator.score(result, dtype="float32")
            out["variants"].append({"members": k, "bias": where, "metric": float(t.metric), "ece": float(t.ece),
                                    "nll": float(t.metrics["nll"])})
            print(f"  variant k={k} bias={where}: acc {t.metric:.4f} ECE {t.ece:.3f}", flush=True)
    variants_path(m, seed, tier, root).write_text(json.dumps(out, indent=1))


def load_runs(m: Method, tier: str, root: Path | None) -> dict[int, dict]:
    out = {}
    for seed in m.seeds:
        path = cache_path(m, seed, tier, root)
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


def ood_maxprob(run: dict, task: str) -> float:
    """OOD AUROC by max-probability, mean over the task's first-version OOD pairs (SST-2: RTE alone), the
    pairs every run of this table has (nan without them); the full panel is ``benchmarks/ood_panel.py``'s."""
    from promptgym.bench.ood import OOD_PAIRS_V1

    ood = run["test"].get("ood") or {}
    keys = [k for k in OOD_PAIRS_V1.get(task, ()) if k in ood]
    return float(np.mean([ood[k]["auroc_maxprob"] for k in keys])) if keys else float("nan")


def ood_panel(runs: list[dict]) -> str:
    """OOD AUROC by max-probability over every OOD task the runs were scored on: the mean over tasks (each a
    mean over seeds), the lowest-highest task in brackets and the number of tasks after the slash. One pair
    cannot rank prompts (the protocol's point 4), so the spread is shown beside the mean."""
    by_task: dict[str, list[float]] = {}
    for r in runs:
        for task, v in (r["test"].get("ood") or {}).items():
            by_task.setdefault(task, []).append(float(v["auroc_maxprob"]))
    means = [float(np.mean(v)) for t, v in sorted(by_task.items()) if len(v) == len(runs)]  # tasks every seed has
    if not means:
        return "–"
    if len(means) == 1:
        return f"{means[0]:.3f} /1"
    return f"{np.mean(means):.3f} [{min(means):.2f}–{max(means):.2f}] /{len(means)}"


#: two-sided 95% quantiles of Student's t by degrees of freedom (n seeds - 1), for the paired seed CIs
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """A t-interval of the mean of per-seed differences: at 3-5 seeds wider, and more honest, than a
    percentile bootstrap over the same few values (which cannot reach past their range)."""
    a = np.asarray(diffs, dtype=np.float64)
    half = T95.get(a.size - 1, 1.96) * a.std(ddof=1) / np.sqrt(a.size)
    return float(a.mean() - half), float(a.mean() + half)


def mean_std(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    a = np.asarray(values, dtype=np.float64) * scale
    a = a[np.isfinite(a)]
    if a.size == 0:
        return "–"
    if a.size == 1:
        return f"{a[0]:.{digits}f}"  # one seed: no spread to report
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1):.{digits}f}"


def report(methods: list[Method], tier: str, root: Path | None) -> str:
    """Markdown tables per task, with the paired comparison against the task's reference row."""
    from promptgym.envs.registration import env_task
    from promptgym.metrics.stats import decode_predictions, distinguishable, paired_difference_ci
    from promptgym.tasks import get_task, load_split

    lines: list[str] = []
    for task in dict.fromkeys(m.task for m in methods):
        rows = [m for m in methods if m.task == task]
        ref = next((m for m in rows if m.reference), None)
        ref_runs = load_runs(ref, tier, root) if ref else {}
        spec = get_task(env_task(rows[0].env_id))
        labels = np.asarray(load_split(spec, "test").labels)
        lines += [f"### {task} ({spec.metric}, {len(labels)} test rows), {tier} tier", "",
                  f"| method | env | seeds | {spec.metric} (%) | ECE | NLL | AURC | OOD AUROC (max-prob, v1 pairs) | "
                  f"OOD AUROC panel: mean [range] /tasks | Δ {spec.metric} vs calibrated manual, 95% CI (pp) | calls |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for m in rows:
            runs = load_runs(m, tier, root)
            env_cell = m.env_id + (" " + json.dumps(m.env_kwargs) if m.env_kwargs else "")
            if not runs:
                lines.append(f"| {m.label} | {env_cell} | 0 | not run | | | | | | | |")
                continue
            rs = [runs[s] for s in sorted(runs, key=BENCH_SEEDS.index)]
            diff = ""
            shared = [s for s in runs if s in ref_runs]
            if ref is not None and m is not ref and shared:
                a = [decode_predictions(runs[s]["test"]["predictions"]) for s in shared]
                b = [decode_predictions(ref_runs[s]["test"]["predictions"]) for s in shared]
                delta = np.mean([runs[s]["test"]["metric"] - ref_runs[s]["test"]["metric"] for s in shared])
                lo, hi = paired_difference_ci(a, b, labels, spec.metric)
                mark = " (excludes 0)" if distinguishable((lo, hi)) else ""
                diff = f"{100 * delta:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}"
            lines.append(
                f"| {m.label} | {env_cell} | {len(rs)} | "
                f"{mean_std([r['test']['metric'] for r in rs], 100, 1)} | "
                f"{mean_std([r['test']['ece'] for r in rs])} | "
                f"{mean_std([r['test'].get('nll', np.nan) for r in rs])} | "
                f"{mean_std([r['test'].get('aurc', np.nan) for r in rs])} | "
                f"{mean_std([ood_maxprob(r, spec.name) for r in rs])} | {ood_panel(rs)} | {diff} | "
                f"{np.mean([r['calls_used'] for r in rs]):.0f} |")
        lines.append("")
        lines += per_seed_table(rows, tier, root, spec.metric)
        single = next((m for m in rows if m.single), None)
        if single is not None:
            lines += paired_with_single(rows, single, tier, root, labels, spec.metric)
        for m in rows:
            if m.variants:
                lines += variants_table(m, tier, root)
    return "\n".join(lines)


def per_seed_table(rows: list[Method], tier: str, root: Path | None, metric: str) -> list[str]:
    """Markdown: each method's test metric / ECE per seed, a column per seed (what a mean hides: which
    seeds a difference comes from)."""
    found = {m.key: load_runs(m, tier, root) for m in rows}
    seeds = [s for s in BENCH_SEEDS if any(s in runs for runs in found.values())]
    if not seeds:
        return []
    lines = [f"Per seed: {metric} (%) / ECE", "", "| method | " + " | ".join(map(str, seeds)) + " |",
             "|---|" + "---|" * len(seeds)]
    for m in rows:
        runs = found[m.key]
        if runs:
            lines.append(f"| {m.label} | " + " | ".join(
                f"{100 * runs[s]['test']['metric']:.1f} / {runs[s]['test']['ece']:.3f}" if s in runs else "–"
                for s in seeds) + " |")
    return lines + [""]


def variants_table(m: Method, tier: str, root: Path | None) -> list[str]:
    """Markdown: a set's sub-variants (members kept, where each bias is fitted), mean ± std over seeds."""
    found = {}
    for seed in m.seeds:
        path = variants_path(m, seed, tier, root)
        if path.is_file():
            found[seed] = json.loads(path.read_text())["variants"]
    if not found:
        return []
    cells: dict[tuple[int, str], list[dict]] = {}
    for rows in found.values():
        for v in rows:
            cells.setdefault((v["members"], v["bias"]), []).append(v)
    lines = [f"Sub-variants of {m.label} on seeds {sorted(found, key=BENCH_SEEDS.index)} (test, fp32; the first k "
             "members by dev metric; each member's bias fitted on nothing, train, dev or both): "
             "accuracy (%) / ECE, mean ± std over seeds", "",
             "| members | no bias | bias on train | bias on dev | bias on train + dev |", "|---:|---|---|---|---|"]
    for k in VARIANT_MEMBERS:
        row = [f"{mean_std([v['metric'] for v in cells.get((k, b), [])], 100, 1)} / "
               f"{mean_std([v['ece'] for v in cells.get((k, b), [])])}" for b in VARIANT_BIAS]
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    lines.append("")
    return lines


def paired_with_single(rows: list[Method], single: Method, tier: str, root: Path | None, labels: np.ndarray,
                       metric: str) -> list[str]:
    """Markdown rows: each method minus one BBT prompt on their shared seeds (negative ECE/NLL: better)."""
    from promptgym.metrics.stats import decode_predictions, distinguishable, paired_difference_ci, seed_bootstrap_ci

    base = load_runs(single, tier, root)
    lines = [f"Paired with one {single.label} prompt ({single.env_id}) on the seeds both ran; ECE and NLL: mean of "
             "the per-seed differences, 95% CI over seeds only (3+ seeds): a percentile bootstrap, then in "
             "braces a t-interval, wider at a few seeds (read a difference as established only when both "
             "exclude 0); negative is better calibrated.", "",
             f"| method | paired seeds | Δ {metric} vs {single.label}, 95% CI (pp) | Δ ECE, 95% CI | Δ NLL, 95% CI |",
             "|---|---:|---|---|---|"]

    def seed_ci(diffs: list[float], digits: int = 3) -> str:
        if len(diffs) < 3:  # a bootstrap over one or two seeds says nothing
            return f"{np.mean(diffs):+.{digits}f} (no CI: {len(diffs)} seed{'s' if len(diffs) > 1 else ''})"
        lo, hi = seed_bootstrap_ci(diffs)
        t_lo, t_hi = t_interval(diffs)
        mark = " (excludes 0)" if distinguishable((lo, hi)) else ""
        t_mark = " (excludes 0)" if distinguishable((t_lo, t_hi)) else ""
        return (f"{np.mean(diffs):+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{mark} "
                f"{{t: {t_lo:+.{digits}f}, {t_hi:+.{digits}f}{t_mark}}}")

    for m in rows:
        if m is single:
            continue
        runs = load_runs(m, tier, root)
        shared = [s for s in sorted(runs, key=BENCH_SEEDS.index) if s in base]
        if not shared:
            continue
        a = [decode_predictions(runs[s]["test"]["predictions"]) for s in shared]
        b = [decode_predictions(base[s]["test"]["predictions"]) for s in shared]
        delta = np.mean([runs[s]["test"]["metric"] - base[s]["test"]["metric"] for s in shared])
        lo, hi = paired_difference_ci(a, b, labels, metric)
        mark = " (excludes 0)" if distinguishable((lo, hi)) else ""
        d_ece = [runs[s]["test"]["ece"] - base[s]["test"]["ece"] for s in shared]
        d_nll = [runs[s]["test"]["nll"] - base[s]["test"]["nll"] for s in shared]
        lines.append(f"| {m.label} | {len(shared)} | {100 * delta:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark} | "
                     f"{seed_ci(d_ece)} | {seed_ci(d_nll)} |")
    lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", action="store_true", help="print the tables from cached runs only")
    ap.add_argument("--only", default=None, help="comma-separated method keys, e.g. SST2:bbt+calibration,RTE:bbt")
    ap.add_argument("--seeds", default=None, help="comma-separated subset of the seeds to run now")
    ap.add_argument("--tier", default="lite", help="budget tier (default: %(default)s)")
    ap.add_argument("--budget", type=int, default=None, help="a trial budget: registers a tier 'trial<N>'")
    ap.add_argument("--model", default="smollm2-135m", help="model (default: %(default)s)")
    ap.add_argument("--root", default=None, help="parent of the work folders (default: runs/evaluate)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    ap.add_argument("--score-store", type=Path, default=None,
                    help="SQLite file keeping test and OOD scores across processes (default: none)")
    ap.add_argument("--memo-size", type=int, default=MEMO_SIZE,
                    help="requests the search LM's memo keeps (default: %(default)s; see MEMO_SIZE)")
    args = ap.parse_args()
    tier = args.tier
    if args.budget is not None:
        tier = f"trial{args.budget}"
        TIERS[tier] = args.budget
    methods = METHODS
    if args.only:
        keys = set(args.only.split(","))
        methods = [m for m in METHODS if m.key in keys or m.reference and m.task in {k.split(":")[0] for k in keys}]
        unknown = keys - {m.key for m in METHODS}
        if unknown:
            raise SystemExit(f"unknown method keys {sorted(unknown)}; known: {[m.key for m in METHODS]}")
    root = Path(args.root) if args.root else None
    if not args.report:
        import torch

        torch.set_num_threads(args.threads)
        keep_search_answers(args.model, args.memo_size)
        seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
        run_missing(methods, seeds, tier, args.model, root, args.score_store)
    print(report(methods, tier, root))


if __name__ == "__main__":
    main()
