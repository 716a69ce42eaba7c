"""Template study: zero-shot and calibrated test metrics of each task's templates on each model.

Data for the benchmark's design, not a leaderboard: for which (task, model, template) can a
black-box method show anything? Two numbers tell: the gap between the calibrated template and the
white-box soft-prompt reference (room to learn), and whether the zero-shot start is degenerate (one
label for more than 90% of test rows: a label-only or accuracy-reward search then sees a flat signal).

Per (model, task, template) the test split is scored ONCE with the empty prompt (bf16, the dtype
searches run in); the calibrated rows differ only by their label bias, fitted per seed on that
seed's 16-shot train rows exactly as the calibrated agent fits it (``fit_label_bias``, "ce",
l2 1e-3) and applied to the stored test log-probabilities. Each scored cell is cached as JSON under
``--root`` (resumable; delete a file to re-score it).

The templates: each task's manual causal template (the env ids' default), its registered extra
templates, and one alternative written here (same label words as the manual template, so only the
wording around the input changes). The alternatives live in this script, not in the task catalog:
registering one as a default would change an env id's rewards (the versioning rule).

The upper line (``--white-box``, default SST-2 and RTE): the white-box reference, gradient soft-prompt
tuning (the ``prompt_tuning`` agent, 10 epochs over the 32 train rows, dev checked per epoch) of the
task's manual template in its Subspace env, run per seed through the protocol's harness
(``run_seed``: test in fp32 on the full split). It answers "how much is there to learn from this
template on this model?"; the gap to the calibrated template is the room a black-box method has.

Usage::

    PROMPTGYM_DATA_DIR=... python benchmarks/template_study.py --root runs/template_study \
        [--models smollm2-135m,gemma3-270m] [--tasks sst2,rte] [--white-box sst2,rte] [--max-rows 1000] \
        [--threads 2] [--report]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from promptgym.bench.store import write_text_atomic
from promptgym.errors import PromptGymError
from promptgym.tasks.data import stratified_rows
from promptgym.tasks.spec import Template

SEEDS = (13, 21, 42, 87, 100)
DEGENERATE = 0.90  # one label for more than this share of test rows: a degenerate zero-shot start

#: one alternative per task: same label words as the manual template, other wording
ALTERNATIVES: dict[str, Template] = {
    "sst2": Template("Review: {text}", "\nIs this review positive or negative? Answer:", ("terrible", "great")),
    "yelpp": Template("Review: {text}", "\nOverall, the experience was", ("terrible", "great")),
    "agnews": Template("Article: {text}", "\nThe topic of this article is", ("World", "Sports", "Business", "Tech")),
    "dbpedia": Template("Text: {text}", "\nThis text is about a kind of", (
        "Company", "Education", "Artist", "Athlete", "Office", "Transportation", "Building",
        "Natural", "Village", "Animal", "Plant", "Album", "Film", "Written")),
    "mrpc": Template("{text}\n{text_pair}", "\nDo both sentences say the same thing? Answer:", ("No", "Yes")),
    "rte": Template("Premise: {text}\nHypothesis: {text_pair}", "\nIs the hypothesis true? Answer:",
                    ("True", "False")),
    "snli": Template("{text}\nQuestion: {text_pair}", " Yes, No, or Maybe?\nAnswer:", ("Yes", "Maybe", "No")),
    "mnli": Template("{text}\nQuestion: {text_pair}", " Yes, No, or Maybe?\nAnswer:", ("Yes", "Maybe", "No")),
    "qnli": Template("Sentence: {text_pair}\nQuestion: {text}", "\nDoes the sentence answer the question? Answer:",
                     ("Yes", "No")),
    "cola": Template("Sentence: {text}", "\nIs this sentence grammatical English? Answer: it is",
                     ("incorrect", "correct")),
}


def templates(spec) -> dict[str, Template]:
    """The manual template, the task's registered extras, and this study's alternative."""
    out = {"manual": spec.causal, **dict(spec.extra_templates)}
    if spec.name in ALTERNATIVES:
        out["alternative"] = ALTERNATIVES[spec.name]
    return out


def cell_path(root: Path, model: str, task: str, name: str) -> Path:
    return root / model / f"{task}-{name}.json"


def score_cell(lm, spec, name: str, tmpl: Template, max_rows: int | None = None) -> dict:
    """Zero-shot and 5 calibrated test metrics of one template (one test scoring, 5 train scorings)."""
    from promptgym.bench.audit import host_description
    from promptgym.calibration import fit_label_bias
    from promptgym.envs.scoring import Scorer
    from promptgym.lm import TokenPrompt
    from promptgym.tasks import load_split

    scorer = Scorer(lm, spec, tmpl, "before", "ce")
    empty = TokenPrompt(())
    test = load_split(spec, "test")
    rows = stratified_rows(test.labels, max_rows)
    started = time.time()
    zero = scorer.score([empty], test, rows=rows)[0]
    test_s = time.time() - started
    shares = np.bincount(zero.predictions, minlength=spec.num_labels) / len(rows)
    calibrated = {}
    for seed in SEEDS:
        train = scorer.score([empty], load_split(spec, "train", seed))[0]
        bias = fit_label_bias(train.label_logprobs, train.labels, "ce", 1e-3)
        calibrated[str(seed)] = float(scorer.rebias(zero, bias).metric)
    return {"task": spec.name, "template": name, "text": tmpl.body + tmpl.cue, "words": list(tmpl.verbalizers),
            "metric_name": spec.metric, "test_rows": len(rows), "split_rows": len(test),
            "test_sha256": test.sha256, "rows_sha256": hashlib.sha256(rows.astype(np.int64).tobytes()).hexdigest(),
            "zero_shot": float(zero.metric), "label_shares": [float(s) for s in shares],
            "degenerate": bool(shares.max() > DEGENERATE), "calibrated": calibrated,
            "test_seconds": round(test_s, 1), "test_tokens": int(zero.num_tokens),
            "host": host_description()}


def white_box_path(root: Path, model: str, task: str, seed: int) -> Path:
    return root / model / f"{task}-white-box-seed-{seed}.json"


def white_box_env(task: str) -> str:
    from promptgym.tasks import get_task

    return f"{get_task(task).env_name}-Subspace-v0"


def run_white_box(root: Path, models: list[str], tasks: list[str]) -> None:
    """The white-box reference per (model, task, seed), cached like the cells (budget: none is charged)."""
    from promptgym.bench.evaluate import run_seed

    for model in models:
        for task in tasks:
            for seed in SEEDS:
                path = white_box_path(root, model, task, seed)
                if path.is_file():
                    continue
                print(f"{model} {task} white-box seed {seed} ...", flush=True)
                started = time.time()
                out = run_seed(white_box_env(task), "prompt_tuning", seed, 1000, model=model, allow_white_box=True)
                out["extra"]["total_seconds"] = round(time.time() - started, 1)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps(out))
                print(f"  test {out['test']['metric']:.3f} ({out['extra']['total_seconds']} s)", flush=True)


def run(root: Path, models: list[str], tasks: list[str], max_rows: int | None) -> None:
    from promptgym.lm import get_lm
    from promptgym.tasks import get_task

    for model in models:
        lm = None
        for task in tasks:
            spec = get_task(task)
            if spec.hub.test_split is None:
                continue
            for name, tmpl in templates(spec).items():
                path = cell_path(root, model, spec.name, name)
                if path.is_file():
                    continue
                lm = lm or get_lm(model, "bfloat16")
                print(f"{model} {spec.name} {name} ...", flush=True)
                try:
                    cell = score_cell(lm, spec, name, tmpl, max_rows)
                except PromptGymError as exc:  # e.g. two label words sharing a first token on this model
                    cell = {"task": spec.name, "template": name, "error": str(exc)}
                    print(f"  not scorable: {exc}", flush=True)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, json.dumps(cell, indent=1))
                if "error" not in cell:
                    print(f"  zero-shot {cell['zero_shot']:.3f}, calibrated "
                          f"{np.mean(list(cell['calibrated'].values())):.3f} ({cell['test_seconds']} s)", flush=True)


def report(root: Path, models: list[str], tasks: list[str]) -> str:
    """One markdown table: a row per (task, template), a column pair per model."""
    from promptgym.tasks import get_task

    head = "| task | metric | test rows | template | " + " | ".join(
        f"{m}: zero-shot | {m}: calibrated (5 seeds)" for m in models) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * len(models))]
    for task in tasks:
        spec = get_task(task)
        if spec.hub.test_split is None:
            continue
        for name in templates(spec):
            cells, used = [], ""
            for model in models:
                path = cell_path(root, model, spec.name, name)
                if not path.is_file():
                    cells += ["not run", ""]
                    continue
                c = json.loads(path.read_text())
                if "error" in c:
                    cells += ["not scorable", c["error"][:80]]
                    continue
                cal = np.array(list(c["calibrated"].values())) * 100
                whole = c.get("split_rows", c["test_rows"])  # cells scored before subsampling existed: every row
                part = f"{c['test_rows']:,}" + ("" if c["test_rows"] == whole else f" of {whole:,}")
                used = used or part
                flag = " (degenerate: " + f"{100 * max(c['label_shares']):.0f}% one label)" if c["degenerate"] else ""
                cells += [f"{100 * c['zero_shot']:.1f}{flag}", f"{cal.mean():.1f} ± {cal.std(ddof=1):.1f}"]
            lines.append(f"| {spec.name} | {spec.metric} | {used} | {name} | " + " | ".join(cells) + " |")
        lines.append(white_box_line(root, models, spec))
    return "\n".join(line for line in lines if line)


def white_box_line(root: Path, models: list[str], spec) -> str:
    """The upper line of a task: the white-box reference's test metric per model (every seed, full split,
    fp32), or nothing when no model has a seed of it."""
    cells, rows = [], ""
    for model in models:
        runs = [json.loads(p.read_text()) for s in SEEDS if (p := white_box_path(root, model, spec.name, s)).is_file()]
        if not runs:
            cells += ["not run", ""]
            continue
        rows = rows or f"{runs[0]['test']['n']:,}"
        scores = np.array([r["test"]["metric"] for r in runs]) * 100
        seeds = "" if len(runs) == len(SEEDS) else f" ({len(runs)} of {len(SEEDS)} seeds)"
        spread = f" ± {scores.std(ddof=1):.1f}" if len(runs) > 1 else ""
        cells += ["–", f"{scores.mean():.1f}{spread}{seeds}"]
    return (f"| {spec.name} | {spec.metric} | {rows} | **white-box soft prompt** (manual, upper line) | "
            + " | ".join(cells) + " |") if rows else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="runs/template_study", help="cache folder (default: %(default)s)")
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--tasks", default="sst2,rte,mrpc,cola,yelpp,agnews,dbpedia,snli,mnli,qnli")
    ap.add_argument("--white-box", default="sst2,rte",
                    help="tasks that get the white-box upper line, 5 seeds each; empty: none (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    ap.add_argument("--max-rows", type=int, default=1000,
                    help="label-stratified test subsample for larger splits; 0: every row (default: %(default)s)")
    ap.add_argument("--report", action="store_true", help="print the table from cached cells only")
    args = ap.parse_args()
    root, models, tasks = Path(args.root), args.models.split(","), args.tasks.split(",")
    if not args.report:
        import torch

        torch.set_num_threads(args.threads)
        run(root, models, tasks, args.max_rows or None)
        run_white_box(root, models, [t for t in args.white_box.split(",") if t])
    print(report(root, models, tasks))


if __name__ == "__main__":
    main()
