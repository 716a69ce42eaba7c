"""The ``promptgym`` command: list, demo, train, evaluate, submit, leaderboard.

Heavy imports (torch, transformers) happen inside the subcommands, so ``promptgym list`` is quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    from promptgym.envs.registration import KINDS, env_id
    from promptgym.lm.presets import PRESETS
    from promptgym.tasks import TASKS

    print(f"{len(TASKS)} tasks, {len(TASKS) * len(KINDS)} env ids ({', '.join(KINDS)} kinds)\n")
    print(f"{'task':8} {'metric':21} {'labels -> verbalizers':60} env ids")
    for name, spec in TASKS.items():
        pairs = ", ".join(f"{lab}->{w}" for lab, w in zip(spec.labels, spec.causal.verbalizers))
        if len(pairs) > 58:
            pairs = pairs[:55] + "..."
        print(f"{name:8} {spec.metric:21} {pairs:60} {'  '.join(env_id(name, k) for k in KINDS)}")
    print("\nmodel presets:")
    for name, what in PRESETS.items():
        print(f"  {name:20} {what}")
    return 0


def _cmd_zeroshot(args: argparse.Namespace) -> int:
    """Zero-shot test metric of the task's manual template(s) with the default model."""
    from promptgym.lm import ScoreRequest, TokenPrompt, get_lm
    from promptgym.tasks import compute_metric, get_task, load_split

    spec = get_task(args.task)
    lm = get_lm(args.model, args.dtype)
    test = load_split(spec, "test")
    for name in ["causal", *spec.extra_templates]:
        tmpl = spec.template(name)
        segs = tuple(tmpl.render(t, p) for t, p in zip(test.texts, test.text_pairs))
        res = lm.score([ScoreRequest(TokenPrompt(()), segs, tmpl.verbalizers)])[0]
        value = compute_metric(spec.metric, test.labels, res.predictions)
        print(f"{spec.name} test ({len(test)} rows), template {name!r} "
              f"[{tmpl.body + tmpl.cue!r} -> {'/'.join(tmpl.verbalizers)}]: {spec.metric} = {value:.4f}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Train an agent on an env under a budget; write a run folder (see ``promptgym.train``)."""
    from promptgym.train import parse_kv, run_training

    try:
        run = run_training(args.env, args.agent, args.budget, seed=args.seed, split_seed=args.split_seed,
                           model=args.model, dtype=args.dtype, out=args.out, env_kwargs=parse_kv(args.env_kwarg),
                           agent_kwargs=parse_kv(args.agent_kwarg), progress=not args.quiet)
    except (ValueError, TypeError) as exc:  # bad kwargs, agent/env mismatch: say so, no traceback
        print(f"promptgym: error: {exc}", file=sys.stderr)
        return 2
    res = run.result
    metric = run.env.unwrapped.spec_task.metric
    dev = "-" if res.dev_metric is None else f"{res.dev_metric:.4f}"
    print(f"prompt: {res.prompt_text!r}")
    print(f"dev {metric}: {dev} | calls used: {res.calls_used}/{args.budget} | {run.seconds:.1f} s")
    print(f"run folder: {run.run_dir}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """A short real run on SST-2: learn a prompt, then compare it with the manual template on test."""
    from agents import ManualAgent
    from promptgym.train import run_training, test_metric

    print(f"promptgym demo: {args.agent} on PromptSST2-v0 with {args.model}, budget {args.budget} API calls "
          f"(16-shot split {args.split_seed}; search in bf16, test accuracy re-checked in fp32)")
    run = run_training("PromptSST2-v0", args.agent, args.budget, seed=args.seed, split_seed=args.split_seed,
                       model=args.model, dtype="bfloat16", out=args.out, progress=not args.quiet)
    res = run.result
    dev = "-" if res.dev_metric is None else f"{res.dev_metric:.4f}"
    print(f"\nlearned prompt: {res.prompt_text!r}")
    print(f"dev accuracy (32 rows): {dev} | calls used {res.calls_used} | {run.seconds:.0f} s")
    print(f"run folder: {run.run_dir}")
    if args.skip_test:
        return 0
    print("scoring the test split (872 rows) in fp32 ...", flush=True)
    manual = ManualAgent().learn(run.env)
    zero_shot = test_metric(run.env, manual)
    learned = test_metric(run.env, res)
    print(f"test accuracy: manual template {zero_shot:.4f} | learned prompt {learned:.4f} "
          f"({learned - zero_shot:+.4f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list tasks, env ids and model presets")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("zeroshot", help="zero-shot test metric of the manual templates")
    p.add_argument("--task", default="sst2")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.set_defaults(func=_cmd_zeroshot)

    from agents import AGENTS

    p = sub.add_parser("train", help="train an agent on an env under a query budget; write a run folder")
    p.add_argument("--env", required=True, help="env id, e.g. PromptSST2-v0 (see `promptgym list`)")
    p.add_argument("--agent", required=True, choices=list(AGENTS))
    p.add_argument("--budget", type=int, default=8000, help="API calls (default 8000, as BBT/BDPL)")
    p.add_argument("--seed", type=int, default=0, help="the agent's seed")
    p.add_argument("--split-seed", type=int, default=13, help="16-shot split: 13, 21, 42, 87 or 100")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--out", default="runs", help="parent folder of the run folder")
    p.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE", help="env argument (repeatable)")
    p.add_argument("--agent-kwarg", action="append", metavar="KEY=VALUE", help="agent config field (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="a short real run on SST-2 with the default model (~5 min on an idle 2-core CPU)")
    p.add_argument("--agent", default="bdpl", choices=list(AGENTS))
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=13)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--out", default="runs")
    p.add_argument("--skip-test", action="store_true", help="do not score the test split")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)

    from promptgym.bench.commands import add_parsers

    add_parsers(sub)  # evaluate, submit, leaderboard
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in submissions as their command
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        from promptgym.errors import PromptGymError

        if isinstance(exc, PromptGymError):
            print(f"promptgym: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
