"""The promptgym command: list, zeroshot, train, demo, evaluate, sweep, submit, leaderboard, audit, serve, keys.

Every command answers bad input (an unknown env id or agent, a config value of the wrong type,
a missing file) with ONE line on stderr and exit code 2, before anything is loaded, charged or
written. Heavy imports (torch, transformers) happen inside the commands, so ``promptgym list``
is quick. ``audit`` has two more codes, for its verdicts: 3 not reproduced on this host, 4 forged.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from promptgym.errors import ConfigError, InvalidSubmissionError, PromptGymError, ResumeError

DEFAULT_MODEL = "smollm2-135m"
CALIBRATE_HELP = ("after learning, fit one bias per label for each final prompt on train (one call per prompt, "
                  "reserved out of the budget)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), as every other bad input."""

    def error(self, message: str) -> NoReturn:
        print(f"promptgym: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------------------------------------- parsing
def parse_kv(items: Sequence[str] | None) -> dict[str, Any]:
    """``["lr=0.5", "reward=hinge", 'policy_kwargs={"net_arch": [32]}']`` -> dict; values as JSON if they parse."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = {"none": None, "true": True, "false": False}.get(value.lower(), value)
    return out


def parse_env_kwargs(env_id: str, items: Sequence[str] | None) -> dict[str, Any]:
    """``--env-kwarg KEY=VALUE`` items typed by the fields of ``env_id``'s kind's config.

    ``prompt_length=10`` gives an int, ``bound=2`` a float, ``batch_size=none`` None; a choice is checked
    (``reward=mse`` names the choices) and an unknown key names the valid ones. The kwargs are then checked
    together, as the env will (ranges, the driver's own options), so a bad one costs nothing.
    """
    if not items:
        return {}
    from promptgym.envs.registration import env_config_class, env_kind, env_task
    from promptgym.runner import check_env_kwargs

    config_class = env_config_class(env_id)
    names = config_class.kwarg_names()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        if key not in names:
            raise ConfigError(f"{env_id} ({env_kind(env_id)} kind) takes no env kwarg {key!r}; its kwargs: "
                              f"{', '.join(names)}")
        out[key] = config_class.parse(key, value)
    check_env_kwargs(out)
    config_class(task=env_task(env_id), **out)  # ranges and combinations, before anything loads
    return out


def parse_agent_kwargs(agent: str, items: Sequence[str] | None) -> dict[str, Any]:
    """``--agent-kwarg KEY=VALUE`` items typed by the agent config's fields (``lr=abc`` names ``lr`` and float)."""
    from promptgym.agent import agent_spec
    from promptgym.typed_config import parse_field

    config_class = agent_spec(agent).config_class
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_field(config_class, key.strip(), value)
    return out


def parse_seeds(text: str | None) -> tuple[int, ...]:
    from promptgym.bench.schema import BENCH_SEEDS

    if not text:
        return BENCH_SEEDS
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated protocol seeds {BENCH_SEEDS}, got {text!r}") from None


# ---------------------------------------------------------------------------------------------- commands
def _list_agent(name: str) -> int:
    from promptgym.agent import agent_spec
    from promptgym.envs.registration import kind_pattern
    from promptgym.typed_config import config_fields

    spec = agent_spec(name)
    flags = [f for f in ("white_box", "baseline", "prompt_free", "needs_logprobs") if getattr(spec, f)]
    print(f"{name}: {spec.description}")
    print(f"  entry point: {spec.entry_point}" + (f" (plugin: {spec.plugin})" if spec.plugin else ""))
    print(f"  env kinds:   {', '.join(f'{k} ({kind_pattern(k)})' for k in spec.kinds)}")
    if spec.prompt_position:
        flags.append(f"prompt {spec.prompt_position} the input")
    if flags:
        print(f"  notes:       {', '.join(flags)}")
    print(f"  config ({spec.config_class.__name__}; set with --agent-kwarg NAME=VALUE):")
    for field, tp, default, doc in config_fields(spec.config_class):
        print(f"    {field:18} {tp:18} {default!r:12} {doc}")
    return 0


def _list_envs() -> int:
    from promptgym.envs.config import EnvConfig
    from promptgym.envs.registration import KINDS, kind_pattern
    from promptgym.typed_config import config_fields

    def rows(config_class: type, skip: set[str]) -> None:
        for field, tp, default, doc in config_fields(config_class):
            if field not in skip:
                print(f"    {field + '=' + repr(default):28} {tp:28} {doc}")

    common = {name for name, *_ in config_fields(EnvConfig)}
    print("env kwargs (gym.make(ID, **kwargs) or --env-kwarg KEY=VALUE), typed by each kind's config dataclass:")
    print(f"  common to every kind ({EnvConfig.__module__}.{EnvConfig.__name__}; the env id sets task):")
    rows(EnvConfig, {"task"})
    for kind, cls in KINDS.items():
        print(f"  {kind} ({kind_pattern(kind)}, {cls.config_class.__name__}):")
        rows(cls.config_class, common)
    return 0


def _load_plugins() -> None:
    """Register every installed agent and task plugin; one line on stderr for each that cannot be used."""
    from promptgym.agent import load_agent_plugins
    from promptgym.tasks.catalog import load_task_plugins

    for problem in load_agent_plugins() + load_task_plugins():
        print(f"promptgym: warning: {' '.join(problem.split())}", file=sys.stderr)


def _cmd_list(args: argparse.Namespace) -> int:
    from promptgym.agent import AGENT_REGISTRY
    from promptgym.envs.registration import KINDS, env_id
    from promptgym.lm.presets import PRESETS
    from promptgym.tasks.catalog import TASK_PLUGINS, TASKS

    if args.agent:
        return _list_agent(args.agent)
    if args.what == "envs":
        return _list_envs()
    _load_plugins()
    if args.what == "agents":
        for name in AGENT_REGISTRY:
            _list_agent(name)
            print()
        return 0
    print(f"{len(TASKS)} tasks, {len(TASKS) * len(KINDS)} env ids ({', '.join(KINDS)} kinds)\n")
    print(f"{'task':8} {'metric':21} {'labels -> verbalizers':60} env ids")
    for name, spec in TASKS.items():
        pairs = ", ".join(f"{lab}->{w}" for lab, w in zip(spec.labels, spec.causal.verbalizers))
        if len(pairs) > 58:
            pairs = pairs[:55] + "..."
        plugin = f"  (plugin: {TASK_PLUGINS[name]})" if name in TASK_PLUGINS else ""
        print(f"{name:8} {spec.metric:21} {pairs:60} {'  '.join(env_id(name, k) for k in KINDS)}{plugin}")
    print("\nagents (promptgym train --agent NAME):")
    for name, agent in AGENT_REGISTRY.items():
        plugin = f" (plugin: {agent.plugin})" if agent.plugin else ""
        print(f"  {name:14} {'/'.join(agent.kinds):29} {agent.description}{plugin}")
    print("\nmodel presets:")
    for name, what in PRESETS.items():
        print(f"  {name:20} {what}")
    return 0


def _cmd_zeroshot(args: argparse.Namespace) -> int:
    """Zero-shot test metric of the task's manual template(s)."""
    from promptgym.envs.scoring import Scorer
    from promptgym.lm import TokenPrompt, get_lm
    from promptgym.tasks import get_task, load_split

    spec = get_task(args.task)
    lm = get_lm(args.model, args.dtype)
    test = load_split(spec, "test")
    for name in ["causal", *spec.extra_templates]:
        tmpl = spec.template(name)
        value = Scorer(lm, spec, tmpl, "before", "ce").score([TokenPrompt(())], test)[0].metric
        print(f"{spec.name} test ({len(test)} rows), template {name!r} "
              f"[{tmpl.body + tmpl.cue!r} -> {'/'.join(tmpl.verbalizers)}]: {spec.metric} = {value:.4f}")
    return 0


def _train_run(args: argparse.Namespace, env_id: str, env_kwargs: dict[str, Any], agent_kwargs: dict[str, Any],
               run_dir: Path | None = None):
    """Run and write a run folder; every LM answer is journaled in it while the run is under way, so a
    killed run resumes with ``--resume`` (``run_dir``: the killed run's folder)."""
    from promptgym.runner import run_agent
    from promptgym.runs import JOURNAL_FILE, new_run_dir, run_config, write_run
    from promptgym.tracking import TENSORBOARD_DIR, check_tracker

    calibrate = bool(getattr(args, "calibrate", False))
    log = getattr(args, "log", None)
    check_tracker(log)
    if run_dir is None:  # named now, created by the journal once the run has passed its checks
        run_dir = new_run_dir(args.out, env_id, args.agent, args.seed, args.split_seed, create=False)
    journal = run_dir / JOURNAL_FILE
    try:
        run = run_agent(env_id, args.agent, args.budget, seed=args.seed, split_seed=args.split_seed,
                        model=args.model, dtype=args.dtype, env_kwargs=env_kwargs, agent_kwargs=agent_kwargs,
                        progress=not args.no_progress, calibrate=calibrate, journal=journal,
                        tensorboard=run_dir / TENSORBOARD_DIR if log == "tensorboard" else None)
    except KeyboardInterrupt:
        if journal.is_file():
            print(f"promptgym: the run can continue: promptgym train --resume {run_dir}", file=sys.stderr)
        raise
    config = run_config(env_id, run.env, args.agent, run.agent, args.budget, args.seed, args.split_seed, args.model,
                        args.dtype, env_kwargs, run.seconds, calibrate)
    config["resumed_calls"] = run.replayed_calls
    config["threads"] = run.threads
    write_run(run_dir, run.env, run.result, config)
    journal.unlink(missing_ok=True)
    return run, run_dir


def _resume_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Fill ``args`` from a killed run's journal: the run goes on with exactly the settings it began with."""
    from promptgym.journal import journal_identity
    from promptgym.runs import JOURNAL_FILE

    if args.env is not None or args.agent is not None:
        raise ConfigError("--resume takes every setting from the run folder; do not pass --env or --agent with it")
    run_dir = Path(args.resume)
    if (run_dir / "config.json").is_file():
        raise ResumeError(f"{run_dir} holds a finished run (config.json is written); nothing to resume")
    ident = journal_identity(run_dir / JOURNAL_FILE)
    try:
        args.env, args.agent, args.budget = ident["env_id"], ident["agent"], int(ident["budget"])
        args.seed, args.split_seed = int(ident["seed"]), int(ident["split_seed"])
        args.model, args.dtype, args.calibrate = ident["model"], ident["dtype"], bool(ident["calibrate"])
        return dict(ident["env_kwargs"]), dict(ident["agent_config"] or {}), run_dir
    except (KeyError, TypeError, ValueError) as exc:
        raise ResumeError(f"{run_dir / JOURNAL_FILE} has an incomplete header ({exc})") from None


def _cmd_train(args: argparse.Namespace) -> int:
    """Train an agent on an env under a budget; write a run folder (see ``promptgym.runs``)."""
    if args.resume:
        env_kwargs, agent_kwargs, run_dir = _resume_args(args)
        run, run_dir = _train_run(args, args.env, env_kwargs, agent_kwargs, run_dir)
    else:
        if args.env is None or args.agent is None:
            raise ConfigError("train needs --env and --agent (or --resume RUN_DIR)")
        agent_kwargs = parse_agent_kwargs(args.agent, args.agent_kwarg)
        run, run_dir = _train_run(args, args.env, parse_env_kwargs(args.env, args.env_kwarg), agent_kwargs)
    res = run.result
    metric = run.env.unwrapped.spec_task.metric
    dev = "-" if res.dev_metric is None else f"{res.dev_metric:.4f}"
    print(f"prompt: {res.prompt_text!r}")
    print(f"dev {metric}: {dev} | calls used: {res.calls_used}/{args.budget} | {run.seconds:.1f} s")
    if run.replayed_calls:
        print(f"resumed: {run.replayed_calls} call(s) replayed from the journal, none charged twice")
    if res.is_set:
        print(f"a set of {len(res.members or [])} prompts, combined by {res.combine!r} (shown: the largest weight)")
    calibration = res.extra.get("calibration")
    if calibration:
        print(f"calibrated ({calibration['calls']} call(s)): train reward "
              f"{calibration['uncalibrated_train_reward']:.4f} -> {calibration['calibrated_train_reward']:.4f}")
    print(f"run folder: {run_dir}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """A short real run on SST-2: learn a prompt, then compare it with the manual template on test."""
    from promptgym.agent import make_agent
    from promptgym.evaluation import Evaluator

    parse_agent_kwargs(args.agent, [])  # an unknown agent is refused before the model loads
    print(f"promptgym demo: {args.agent} on PromptSST2-v0 with {args.model}, budget {args.budget} API calls "
          f"(16-shot split {args.split_seed}; search in bf16, test accuracy re-checked in fp32)")
    args.dtype = "bfloat16"
    run, run_dir = _train_run(args, "PromptSST2-v0", {}, {})
    res = run.result
    dev = "-" if res.dev_metric is None else f"{res.dev_metric:.4f}"
    print(f"\nlearned prompt: {res.prompt_text!r}")
    print(f"dev accuracy (32 rows): {dev} | calls used {res.calls_used} | {run.seconds:.0f} s")
    print(f"run folder: {run_dir}")
    if args.skip_test:
        return 0
    print("scoring the test split (872 rows) in fp32 ...", flush=True)
    evaluator = Evaluator.for_env(run.env)
    zero_shot = evaluator.score(make_agent("manual").learn(run.env)).metric
    learned = evaluator.score(res).metric
    print(f"test accuracy: manual template {zero_shot:.4f} | learned prompt {learned:.4f} "
          f"({learned - zero_shot:+.4f})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from promptgym.bench.evaluate import check_request, evaluate
    from promptgym.bench.schema import BENCH_SEEDS
    from promptgym.bench.store import dumps_submission, write_text_atomic
    from promptgym.runs import evaluate_workdir

    seeds = parse_seeds(args.seeds)
    env_kwargs = parse_env_kwargs(args.env, args.env_kwarg) or None
    agent_kwargs = parse_agent_kwargs(args.agent, args.agent_kwarg) or None
    check_request(args.env, args.agent, args.tier, seeds, env_kwargs, agent_kwargs,  # before any folder or model
                  args.calibrate)
    from promptgym.tracking import check_tracker

    check_tracker(args.log)
    work = Path(args.workdir) if args.workdir else evaluate_workdir(args.env, args.agent, args.tier,
                                                                    calibrate=args.calibrate, model=args.model)
    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = "promptgym " + shlex.join(argv) if argv[:1] == ["evaluate"] else ""

    def report(run: dict) -> None:
        print(f"seed {run['seed']}: test {run['test']['metric']:.4f}  ECE {run['test']['ece']:.3f}  "
              f"calls {run['calls_used']}", flush=True)

    sub = evaluate(args.env, args.agent, args.tier, args.model, seeds, env_kwargs, agent_kwargs, work,
                   args.submitter, command, progress=not args.no_progress, on_seed=report, calibrate=args.calibrate,
                   log=args.log, score_store=args.score_store)
    if sub is None:
        missing = [s for s in BENCH_SEEDS if s not in seeds]
        print(f"seed runs saved in {work}; a submission needs every seed: run the same command with "
              f"--seeds {','.join(map(str, BENCH_SEEDS))} (or without --seeds) to add {missing} and write it")
        return 0
    out = Path(args.out) if args.out else work / "submission.json"
    write_text_atomic(out, dumps_submission(sub))
    print(f"submission written to {out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    """A grid of protocol seed runs on Ray Tune (``promptgym.bench.sweep``): 0 when every trial finished, 1
    when one failed (re-running the same command retries what is missing, resuming from journals)."""
    from promptgym.bench.sweep import check_resources, describe, import_ray, plan_sweep, run_sweep, summary_lines

    plan = plan_sweep(args.envs, args.agents, args.tier, parse_seeds(args.seeds), args.model, args.agent_kwarg,
                      args.env_kwarg, args.workroot)
    check_resources(args.num_cpus, args.cpus_per_trial, args.address)
    if plan.pending and not args.dry_run:
        import_ray()  # refused in one line before anything starts
    print("\n".join(describe(plan)), flush=True)
    if args.dry_run:
        return 0
    rows, states = run_sweep(plan, args.num_cpus, args.cpus_per_trial, args.address,
                             out=lambda line: print(line, flush=True), score_store=args.score_store)
    print("\n" + "\n".join(summary_lines(plan, rows)))
    unfinished = sum(1 for st in states.values() if st.status != "done")
    if unfinished:
        print(f"{unfinished} trial(s) did not finish; run the same command again to retry them (finished seeds are "
              "skipped, a killed seed resumes from its journal)")
        return 1
    return 0


def _leaderboard_root(args: argparse.Namespace) -> Path:
    root = Path(args.root) if args.root else Path.cwd()
    if not (root / "leaderboards").is_dir():
        raise ConfigError(f"no leaderboards/ folder in {root}: run inside a promptgym checkout or pass --root")
    return root


def _submission_path(name: str) -> Path:
    path = Path(name)
    if path.is_dir():
        raise InvalidSubmissionError(f"{path} is a directory; pass the submission file "
                                     f"(promptgym evaluate writes {path / 'submission.json'})")
    if not path.is_file():
        raise InvalidSubmissionError(f"{path}: no such file")
    return path


def _verified(names: Sequence[str], root: str | Path | None) -> list[tuple[Path, dict]]:
    """Every file parsed, then every one re-scored (``verify``), in one process: a malformed file costs no
    model load, and files sharing a prompt (a template and its calibrated entry) score it once. The first
    bad file ends it with one line naming it."""
    from promptgym.bench.evaluate import verify
    from promptgym.bench.schema import parse_submission

    paths = [_submission_path(name) for name in names]
    subs = []
    for path in paths:
        try:
            subs.append(parse_submission(path.read_bytes()))
        except InvalidSubmissionError as exc:
            raise InvalidSubmissionError(f"{path}: {exc}") from None
    for path, sub in zip(paths, subs):
        print(f"verifying {path} ({sub['env_id']} / {sub['agent']['name']} / {sub['tier']}, model "
              f"{sub['model']['name']}) ...", flush=True)
        try:
            verify(sub, root=root)
        except PromptGymError as exc:
            raise InvalidSubmissionError(f"{path}: {exc}") from None
        print(f"ok: {path}", flush=True)
    return list(zip(paths, subs))


def _check_submissions(names: Sequence[str], root: str | None) -> int:
    """``submit --check``: the checks ``submit`` makes, on several files, writing nothing (what CI runs on the
    entries a pull request adds; ``root``: the board whose trusted keys and entries receipts are checked
    against)."""
    checked = _verified(names, root)
    print(f"{len(checked)} file{'s' if len(checked) > 1 else ''} verified; nothing written")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    """Verify every file, then add them all (or none: a bad file, or one already on the board, adds nothing)."""
    from promptgym.bench.evaluate import test_labels_by_env
    from promptgym.bench.render import write_leaderboard
    from promptgym.bench.store import add_submission, entry_path, load_entries

    if args.check:
        return _check_submissions(args.file, args.root)
    for name in args.file:  # a missing file or a folder is named before the board is looked for
        _submission_path(name)
    root = _leaderboard_root(args)
    checked = _verified(args.file, root)
    targets = [entry_path(root, sub) for _, sub in checked]
    for (path, _), target in zip(checked, targets):
        if target.exists():
            raise InvalidSubmissionError(f"{path}: {target} already exists: this exact submission was already "
                                         "added; nothing written")
    if len(set(targets)) != len(targets):
        raise InvalidSubmissionError("the same submission is given twice; nothing written")
    for _, sub in checked:
        print(f"accepted: {add_submission(root, sub)}")
    if not args.no_render:
        entries = load_entries(root)
        write_leaderboard(root, test_labels_by_env(entries))
        print(f"leaderboard updated: {root / 'leaderboards' / 'README.md'}, {root / 'leaderboards' / 'index.html'}")
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from promptgym.bench.evaluate import test_labels_by_env
    from promptgym.bench.render import write_leaderboard
    from promptgym.bench.store import load_entries

    root = _leaderboard_root(args)
    entries = load_entries(root)
    readme, html = write_leaderboard(root, test_labels_by_env(entries))
    print(f"{len(entries)} entries -> {readme}, {html}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    """Replay one seed of an entry (``promptgym.bench.audit``); the exit code is the verdict's."""
    from promptgym.bench.audit import audit, check_audit_request, find_entry, load_entry

    path = find_entry(args.entry, args.root)
    sub = load_entry(path)
    check_audit_request(sub, args.seed)  # before the model loads
    print(f"auditing seed {args.seed} of {path}: re-running {sub['agent']['name']} on {sub['env_id']} "
          f"({sub['tier']} tier) ...", flush=True)
    report = audit(sub, args.seed, same_cpu=args.same_cpu, progress=not args.no_progress)
    print(report.paragraph)
    return report.exit_code


# ---------------------------------------------------------------------------------------------- the parser
def _add_score_store(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score-store", default=None, metavar="FILE",
                   help="SQLite file keeping every test and OOD score of an in-process model, so a re-started or "
                        "resumed run, and other entries scoring the same prompt, read them back instead of scoring "
                        "again; promptgym submit never reads it (e.g. runs/evaluate/scores.sqlite; default: none)")


def _add_run_options(p: argparse.ArgumentParser, budget: int | None) -> None:
    if budget is not None:
        p.add_argument("--budget", type=int, default=budget, help="API calls for the whole run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the agent's seed (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=13,
                   help="16-shot split: 13, 21, 42, 87 or 100 (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model preset, Hugging Face id, or a served model's URL "
                   "(http://..., openai+http://...) (default: %(default)s)")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default: %(default)s)")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")


def _cmd_serve(args: argparse.Namespace) -> int:
    """Serve a model over HTTP with API keys and quotas (see ``promptgym.serve``)."""
    from promptgym.serve.config import ServerConfig
    from promptgym.serve.keys import KeyStore
    from promptgym.serve.running import serve

    config = ServerConfig(max_body_bytes=args.max_body_bytes, max_requests=args.max_requests, max_rows=args.max_rows,
                          max_prompt_length=args.max_prompt_length, max_array_elements=args.max_array_elements,
                          max_logprob_entries=args.max_logprob_entries, request_timeout_s=args.request_timeout_s,
                          rate_limit=args.rate_limit, embeddings_rate_limit=args.embeddings_rate_limit,
                          batching=not args.no_batching,
                          batch_window_ms=args.batch_window_ms)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    store = KeyStore(args.keys)  # a bad path fails here, before the model loads
    if not store.records():
        print(f"promptgym: warning: {args.keys} holds no key yet; add one with `promptgym keys add NAME --calls N "
              f"--keys {args.keys}`", file=sys.stderr)
    print(f"promptgym: serving {args.model} ({args.dtype}) on http://{args.host}:{args.port} "
          f"(OpenAPI document at /openapi.json, docs at /docs)", file=sys.stderr)
    serve(args.model, store, host=args.host, port=args.port, dtype=args.dtype, config=config,
          log_level=args.log_level)
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    """Add, list or revoke API keys of a server's key store."""
    from promptgym.serve.keys import KeyStore

    store = KeyStore(args.keys)
    if args.keys_command == "add":
        key = store.add(args.name, args.calls)
        print(key)
        print(f"key {args.name!r} with a quota of {args.calls} calls; store it now: only its hash is kept "
              f"(in {args.keys})", file=sys.stderr)
    elif args.keys_command == "revoke":
        store.revoke(args.name)
        print(f"revoked key {args.name!r}")
    elif args.keys_command == "pubkey":
        from promptgym.serve.receipts import ReceiptSigner, signing_key_path

        signer = ReceiptSigner.load_or_create(signing_key_path(args.keys))
        print(signer.public_pem(), end="")
        print(f"signer {signer.fingerprint} (private key: {signer.path}); a leaderboard trusts its receipts once this "
              "is committed as leaderboards/trusted_keys/NAME.pub", file=sys.stderr)
    else:
        records = store.records()
        print(f"{'name':20} {'calls':>10} {'quota':>10} {'remaining':>10}  status")
        for r in records:
            quota = "-" if r.quota is None else str(r.quota)
            left = "-" if r.remaining is None else str(r.remaining)
            print(f"{r.name:20} {r.calls:>10} {quota:>10} {left:>10}  {'revoked' if r.revoked else 'active'}")
    store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    import promptgym

    parser = _Parser(prog="promptgym", description="Gymnasium environments and a benchmark for black-box prompt "
                     "tuning. Commands: list, zeroshot, train, demo, evaluate, sweep, submit, leaderboard, "
                     "audit, serve, keys.")
    parser.add_argument("--version", action="version", version=f"promptgym {promptgym.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("list", help="list tasks, env ids, agents and model presets")
    p.add_argument("what", nargs="?", choices=["all", "agents", "envs"], default="all",
                   help="agents: every agent's config fields; envs: every env kind's kwargs (default: %(default)s)")
    p.add_argument("--agent", default=None, help="show one agent's env kinds and config fields (default: "
                   "none: the lists)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("zeroshot", help="zero-shot test metric of a task's manual templates")
    p.add_argument("--task", default="sst2", help="task name (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model preset or Hugging Face id (default: %(default)s)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="(default: %(default)s)")
    p.set_defaults(func=_cmd_zeroshot)

    p = sub.add_parser("train", help="train an agent on an env under a query budget; write a run folder")
    p.add_argument("--env", default=None,
                   help="env id, e.g. PromptSST2-v0 (see `promptgym list`; default: none, required unless --resume)")
    p.add_argument("--agent", default=None,
                   help="registered agent, e.g. bdpl or bbt (`promptgym list`; default: none, needed unless --resume)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a killed run from its folder's call journal, with the settings it began with "
                   "(default: none: a new run)")
    _add_run_options(p, budget=8000)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="search precision (default: %(default)s)")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="env argument, typed by the env kind's config (repeatable; `promptgym list envs`; "
                        "default: none)")
    p.add_argument("--agent-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="agent config field, typed by the config (repeatable; default: none)")
    p.add_argument("--calibrate", action="store_true", help=CALIBRATE_HELP)
    p.add_argument("--log", default=None, choices=["tensorboard"],
                   help="track the run's curves by API calls: tensorboard events in <run folder>/tensorboard "
                   "(default: none)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="a short real run on SST-2 with the default model (~5 min on an idle 2-core CPU)")
    p.add_argument("--agent", default="bdpl", help="registered agent (default: %(default)s)")
    _add_run_options(p, budget=300)
    p.add_argument("--skip-test", action="store_true", help="do not score the test split")
    p.set_defaults(func=_cmd_demo)

    from promptgym.bench.schema import TIERS

    p = sub.add_parser("evaluate", help="run an agent on the 5 protocol seeds under a budget tier; write a submission")
    p.add_argument("--env", required=True, help="env id (see `promptgym list`)")
    p.add_argument("--agent", required=True, help="registered black-box agent (see `promptgym list`)")
    tiers = ", ".join(f"{k} = {v:,} calls" for k, v in TIERS.items())
    p.add_argument("--tier", default="lite", choices=sorted(TIERS), help=f"budget tier: {tiers} (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model preset, Hugging Face id, or a served model's URL "
                   "(http://..., openai+http://...) (default: %(default)s)")
    p.add_argument("--seeds", default=None, help="comma-separated subset of the protocol seeds, run and cached now "
                                                 "(default: all five; a submission needs all)")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="env argument, typed by the env kind's config (repeatable; `promptgym list envs`; "
                        "default: none)")
    p.add_argument("--agent-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="agent config field, typed by the config (repeatable; default: none)")
    p.add_argument("--workdir", default=None, help="per-seed cache (default: runs/evaluate/<env>-<agent>-<tier>; "
                   "runs/evaluate/<model>/... for a model preset other than the default)")
    p.add_argument("--submitter", default="", help="your name or team, stored in the submission (default: "
                   "empty; the leaderboard needs one)")
    p.add_argument("--out", default=None, help="submission file (default: <workdir>/submission.json)")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
    p.add_argument("--calibrate", action="store_true", help=CALIBRATE_HELP + "; its own work folder and entry")
    p.add_argument("--log", default=None, choices=["tensorboard"],
                   help="track each seed's curves by API calls: tensorboard events in <workdir>/tensorboard/seed-<s> "
                   "(default: none)")
    _add_score_store(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("sweep", help="run a grid of envs x agents x kwargs x protocol seeds on Ray Tune, cached as "
                       "evaluate caches them", description="One trial = one protocol seed run, cached in the work "
                       "folder `promptgym evaluate` uses (a grid point with non-default kwargs: <env>-<agent>@<tag>-"
                       "<tier>), so a re-run skips finished seeds and resumes killed ones, and evaluate assembles "
                       "the submission. Needs the sweep extra (Ray Tune).")
    p.add_argument("--envs", required=True, help="comma-separated env ids")
    p.add_argument("--agents", required=True, help="comma-separated registered black-box agents (pairs of kinds "
                                                   "that do not fit are skipped)")
    p.add_argument("--tier", default="lite", choices=sorted(TIERS), help=f"budget tier: {tiers} (default: %(default)s)")
    p.add_argument("--seeds", default=None, help="comma-separated subset of the protocol seeds (default: all five)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model preset or Hugging Face id, or a served model's URL "
                   "(http://host:port) every trial shares; its key from $PROMPTGYM_API_KEY (default: %(default)s)")
    p.add_argument("--agent-kwarg", action="append", default=[], metavar="[AGENT:]KEY=V1,V2",
                   help="an axis of the grid: an agent config field and its values (commas inside [], {} or \"\" do "
                        "not split); AGENT: scopes it to one agent (repeatable; axes cross; default: none)")
    p.add_argument("--env-kwarg", action="append", default=[], metavar="[ENV:]KEY=V1,V2",
                   help="an axis of the grid: an env argument and its values; ENV: scopes it to one env id "
                        "(repeatable; axes cross; default: none)")
    p.add_argument("--workroot", default=None, help="parent of the work folders (default: runs/evaluate)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all of this machine)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs one trial reserves; also its torch "
                   "threads (default: %(default)s)")
    p.add_argument("--address", default=None, help="join this Ray cluster (e.g. ray://head:10001 or auto) instead "
                   "of starting a local Ray; the nodes must share the work folders' file system (default: none: "
                   "a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (grid points, work folders, seeds to run) "
                   "and stop")
    _add_score_store(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("submit", help="verify a submission (re-scores every prompt) and add it to the leaderboard")
    p.add_argument("file", nargs="+", metavar="FILE", help="the submission JSON(s) written by promptgym evaluate; "
                   "several are verified in one process and added all or none")
    p.add_argument("--check", action="store_true", help="verify the files only, write nothing (exit 2 on the first "
                   "bad one): what CI runs on the entries a pull request adds")
    p.add_argument("--root", default=None, help="folder holding leaderboards/ (default: the working directory)")
    p.add_argument("--no-render", action="store_true", help="do not regenerate the tables")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("leaderboard", help="regenerate leaderboards/README.md and index.html from the entries")
    p.add_argument("--root", default=None, help="folder holding leaderboards/ (default: the working directory)")
    p.set_defaults(func=_cmd_leaderboard)

    p = sub.add_parser("audit", help="re-run an entry's agent on one seed; check it returns the submitted prompt",
                       description="Re-run a built-in agent with the entry's recorded config, env kwargs, tier budget "
                       "and agent seed = split seed (bf16 search), and compare the prompt (every member of a set), "
                       "the calls used and the dev curve with the entry's run; print a one-paragraph verdict. "
                       "A replay is exact on the CPU kind and torch build the entry was made on; across CPU kinds "
                       "bf16 rounding differs and a search may branch (see promptgym/bench/audit.py).",
                       epilog="exit codes: 0 reproduced; 3 not reproduced on this host (the replay took another "
                       "path: inconclusive off the submitter's CPU kind); 4 forged (a mismatch no host difference "
                       "explains); 2 bad input (unknown entry, a seed not in the entry, an agent not registered "
                       "here, other data or model weights)")
    p.add_argument("entry", help="entry file, or the file name of an entry in leaderboards/<env_id>/")
    p.add_argument("--seed", type=int, required=True, help="the protocol seed to replay (13, 21, 42, 87 or 100)")
    p.add_argument("--same-cpu", action="store_true", help="this host is of the CPU kind (and torch build) the entry "
                   "was made on: a replay is exact here, so any mismatch is judged forged")
    p.add_argument("--root", default=None, help="folder holding leaderboards/ (default: the working directory)")
    p.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_audit)

    from promptgym.serve.config import server_defaults

    limits = server_defaults()
    p = sub.add_parser("serve", help="serve a model over HTTP with API keys and per-key call quotas")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model preset or Hugging Face id (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--keys", default="keys.db", help="key store (SQLite) made by `promptgym keys add` "
                                                     "(default: %(default)s)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="(default: %(default)s)")
    for flag, kind, what in (("max-body-bytes", int, "larger bodies answer 413"),
                             ("max-requests", int, "API calls per /v1/score batch"),
                             ("max-rows", int, "examples per score request, prompts per /v1/completions"),
                             ("max-prompt-length", int, "prompt tokens or soft vectors"),
                             ("max-array-elements", int, "elements of one array"),
                             ("max-logprob-entries", int, "log-probs listed in one /v1/completions answer"),
                             ("request-timeout-s", float, "seconds before a request answers 503, uncharged"),
                             ("rate-limit", float, "requests per second per key, None: no limit"),
                             ("embeddings-rate-limit", float, "/v1/embeddings requests per second per key"),
                             ("batch-window-ms", float, "with batching, wait this long for more requests")):
        p.add_argument(f"--{flag}", type=kind, default=limits[flag.replace("-", "_")],
                       help=f"{what} (default: %(default)s)")
    p.add_argument("--no-batching", action="store_true", help="do not score identical concurrent requests once")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="(default: %(default)s)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("keys", help="add, list or revoke the API keys of a server")
    keys = p.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    k = keys.add_parser("add", help="create a key and print it once (only its hash is stored)")
    k.add_argument("name", help="a name for the key (letters, digits, _.@-)")
    k.add_argument("--calls", type=int, required=True, help="the key's call quota")
    k = keys.add_parser("list", help="every key's usage and quota")
    k = keys.add_parser("revoke", help="revoke a key")
    k.add_argument("name", help="the key's name")
    keys.add_parser("pubkey", help="print the public key the server signs usage receipts with (made on first use)")
    for k in keys.choices.values():
        k.add_argument("--keys", default="keys.db", help="key store (default: %(default)s)")
    p.set_defaults(func=_cmd_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2, already reported in one line)
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in submissions as their command
    try:
        return int(args.func(args) or 0)
    except PromptGymError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"promptgym: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("promptgym: interrupted (finished seed runs stay cached)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
