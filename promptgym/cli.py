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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
