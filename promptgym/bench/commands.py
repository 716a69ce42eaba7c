"""The leaderboard subcommands of ``promptgym``: evaluate, submit, leaderboard.

Kept apart from ``promptgym.cli`` so that the command-line parser stays a thin table of commands.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from promptgym.bench.schema import TIERS


def default_root() -> Path:
    """The folder that holds ``leaderboards/`` (the project checkout, i.e. the working directory)."""
    return Path.cwd()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from promptgym.train import parse_kv

    p = sub.add_parser("evaluate", help="run an agent on the 5 protocol seeds under a budget tier; write a submission")
    p.add_argument("--env", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--tier", default="lite", choices=sorted(TIERS))
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seeds", default=None, help="comma-separated subset (default: all five; submissions need all)")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--agent-kwarg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workdir", default=None, help="per-seed cache (default runs/evaluate/<env>-<agent>-<tier>)")
    p.add_argument("--submitter", default="")
    p.add_argument("--out", default=None, help="submission file (default <workdir>/submission.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate, parse_kv=parse_kv)

    p = sub.add_parser("submit", help="verify a submission (re-scores every prompt) and add it to the leaderboard")
    p.add_argument("file")
    p.add_argument("--root", default=None, help="folder holding leaderboards/ (default: the working directory)")
    p.add_argument("--no-render", action="store_true")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("leaderboard", help="regenerate leaderboards/README.md and index.html from the entries")
    p.add_argument("--root", default=None, help="folder holding leaderboards/ (default: the working directory)")
    p.set_defaults(func=cmd_leaderboard)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from promptgym.bench.evaluate import evaluate
    from promptgym.bench.schema import BENCH_SEEDS
    from promptgym.bench.store import dumps_submission

    seeds = BENCH_SEEDS if not args.seeds else tuple(int(s) for s in args.seeds.split(","))
    work = Path(args.workdir) if args.workdir else Path("runs") / "evaluate" / f"{args.env}-{args.agent}-{args.tier}"
    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = "promptgym " + shlex.join(argv) if argv[:1] == ["evaluate"] else ""
    sub = evaluate(args.env, args.agent, args.tier, args.model, seeds, args.parse_kv(args.env_kwarg) or None,
                   args.parse_kv(args.agent_kwarg) or None, work, args.submitter, command,
                   progress=not args.no_progress)
    out = Path(args.out) if args.out else work / "submission.json"
    out.write_text(dumps_submission(sub))
    for run in sub["runs"]:
        print(f"seed {run['seed']}: test {sub['metric']} {run['test']['metric']:.4f}  ECE {run['test']['ece']:.3f}  "
              f"calls {run['calls_used']}")
    print(f"submission written to {out}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from promptgym.bench.evaluate import test_labels_by_env, verify
    from promptgym.bench.render import write_leaderboard
    from promptgym.bench.schema import parse_submission
    from promptgym.bench.store import add_submission, load_entries
    from promptgym.errors import InvalidSubmissionError

    root = Path(args.root) if args.root else default_root()
    path = Path(args.file)
    if not path.is_file():
        raise InvalidSubmissionError(f"{path}: no such file")
    sub = parse_submission(path.read_bytes())
    print(f"verifying {sub['env_id']} / {sub['agent']['name']} / {sub['tier']} with model {sub['model']['name']} ...")
    verify(sub)
    try:
        dest = add_submission(root, sub)
    except FileExistsError as exc:
        raise InvalidSubmissionError(str(exc)) from exc
    print(f"accepted: {dest}")
    if not args.no_render:
        entries = load_entries(root)
        write_leaderboard(root, test_labels_by_env(entries))
        print(f"leaderboard updated: {root / 'leaderboards' / 'README.md'}, {root / 'leaderboards' / 'index.html'}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from promptgym.bench.evaluate import test_labels_by_env
    from promptgym.bench.render import write_leaderboard
    from promptgym.bench.store import load_entries

    root = Path(args.root) if args.root else default_root()
    (root / "leaderboards").mkdir(parents=True, exist_ok=True)
    entries = load_entries(root)
    readme, html = write_leaderboard(root, test_labels_by_env(entries))
    print(f"{len(entries)} entries -> {readme}, {html}")
    return 0

