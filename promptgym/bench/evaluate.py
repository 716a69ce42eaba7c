"""The evaluation protocol: run an agent on every data seed, score its prompt on test, re-check.

``evaluate`` is what ``promptgym evaluate`` runs: for each seed of the protocol (13, 21, 42, 87,
100) it builds the env on that seed's 16-shot split with the tier's budget (the env's meter
enforces it), lets the agent learn (search in bf16), scores the returned prompt on the test split
in **fp32** (bf16 moves single logits by up to ~0.3, so final figures are re-checked in fp32), and
writes one JSON per seed into a work folder (an interrupted evaluation resumes from there). The
submission file gathers the runs with the env, agent, model and data fingerprints.

``verify`` is what ``promptgym submit`` runs before accepting a file: the schema and budget tier,
the data hashes and model weight hash against the local ones, and every submitted prompt is
re-scored on the test split with the stated model; a score that differs beyond tolerance rejects
the file.

Against ``promptgym serve`` (``model="http://..."``, one fresh key per seed) each run also records
the server's signed usage receipt (:mod:`promptgym.lm.receipts`): its number of calls when the
search ended, and the calls after it (the test and OOD scoring of the submitted prompts), which
``verify`` checks against the leaderboard's trusted keys (:mod:`promptgym.bench.receipts`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import promptgym
from promptgym.agent import VOTE_V1, Result, agent_spec, check_kind, config_dict, is_white_box, make_config
from promptgym.bench.receipts import check_prompts, check_receipts, check_unused, trusted_keys
from promptgym.bench.schema import (
    BENCH_SEEDS,
    SCHEMA_VERSION,
    TIERS,
    check_budget,
    combine_rule,
    protocol_test_rows,
    validate_submission,
)
from promptgym.envs.registration import check_env_id, env_kind, env_task
from promptgym.errors import ConfigError, InvalidActionError, InvalidSubmissionError, PromptGymError, UnknownEnvError
from promptgym.evaluation import Evaluator, TestScore
from promptgym.host import current_host
from promptgym.jsonable import jsonable
from promptgym.lm import DEFAULT_MODEL, get_lm, is_served, parse_served
from promptgym.lm.receipts import Entry, rows_sha256, run_proof
from promptgym.metrics import compute_metric
from promptgym.metrics.registry import UNCERTAINTY_TOLERANCE, recorded_specs
from promptgym.metrics.stats import decode_predictions, encode_predictions
from promptgym.runner import check_calibration_request, check_env_kwargs, make_env, run_agent
from promptgym.runs import evaluate_workdir, seed_file, seed_journal
from promptgym.score_store import ScoreStore, open_store
from promptgym.tasks import data_fingerprint, get_task, load_split
from promptgym.tasks.data import rows_fingerprint
from promptgym.tracking import TENSORBOARD_DIR, check_tracker, log_values

#: Re-scoring tolerance: fp32 scores are reproducible on one machine; across CPUs a few near-ties
#: may flip. A submission passes when its metric is within METRIC_TOL and >= AGREEMENT of its
#: test predictions are reproduced. The other recorded metrics (ECE, NLL, ...) are re-checked within
#: their own tolerance, stated with them in promptgym.metrics.registry.
METRIC_TOL = 0.005
AGREEMENT = 0.99


def prompt_record(result: Result) -> dict[str, Any]:
    """A Result's final prompt(s) as a submission's ``prompt``: :meth:`~promptgym.agent.Result.to_record`."""
    return result.to_record()


def curve_record(result: Result) -> list[list[int | float]]:
    """A Result's best-so-far dev curve as a run records it (``run_seed``, and the audit's replay compares
    with it): the protocol's curve counts API calls; a white-box reference's counts passes (kept out)."""
    if result.curve_unit != "calls":
        return []
    return [[int(c), float(v)] for c, v in result.curve if np.isfinite(v)]


def test_record(env: Any, result: Result, test: TestScore, test_rows: np.ndarray | None = None,
                store: ScoreStore | None = None) -> dict[str, Any]:
    """A run's ``test`` record: the task metric, the predictions, every recorded metric of the
    registry (:func:`~promptgym.metrics.registry.recorded_specs`: ECE, NLL, ...), OOD detection, and
    which rows were scored when not all of them (``subsample``: :func:`~promptgym.bench.schema.protocol_test_rows`)."""
    rec: dict[str, Any] = {"metric": float(test.metric), "n": int(test.n),
                           "predictions": encode_predictions(test.predictions)}
    rec.update({spec.name: float(test.metrics[spec.name]) for spec in recorded_specs() if spec.name in test.metrics})
    ood = _ood_metrics(env, result, test.probs, store=store)
    if ood:
        rec["ood"] = {task: {k: float(v) for k, v in scores.items()} for task, scores in ood.items()}
    if test_rows is not None:
        split_rows = len(load_split(env.unwrapped.spec_task, "test", None, env.unwrapped.data_dir))
        rec["subsample"] = {"of": split_rows, "sha256": rows_fingerprint(test_rows)}
    return rec


test_record.__test__ = False  # type: ignore[attr-defined]


def _ood_metrics(env: Any, result: Result, probs_in: np.ndarray | None,
                 tasks: Sequence[str] | None = None, store: ScoreStore | None = None) -> dict[str, dict[str, float]]:
    from promptgym.bench.ood import ood_metrics  # imported when needed

    return ood_metrics(env, result, "float32", probs_in=probs_in, tasks=tasks, store=store)


def check_protocol_agent(agent: str, allow_white_box: bool = False) -> None:
    """A registered agent that may enter the protocol (white-box agents only for benchmarks)."""
    agent_spec(agent)
    if is_white_box(agent) and not allow_white_box:
        raise ConfigError(f"agent {agent!r} is white-box (it back-propagates through the model); "
                          "leaderboards rank black-box agents only")


def run_seed(env_id: str, agent: str, seed: int, budget: int, model: str = DEFAULT_MODEL,
             env_kwargs: dict | None = None, agent_kwargs: dict | None = None, progress: bool = False,
             allow_white_box: bool = False, calibrate: bool = False, journal: Path | None = None,
             tensorboard: Path | None = None, receipt: bool = True, test_rows: np.ndarray | None = None,
             store: ScoreStore | None = None) -> dict:
    """One protocol run: learn on split ``seed`` (agent seed = split seed), score on test in fp32.

    ``allow_white_box`` lets the agents benchmark run the back-propagation reference through the
    same harness; its runs can never become submissions (``verify`` rejects white-box agents).
    ``calibrate`` fits a label bias per final prompt after learning, within the same budget.
    ``journal``: the seed's call journal; a seed killed while it learned resumes from it (see
    :mod:`promptgym.journal`), so a standard-tier seed is never lost to an interruption.
    ``tensorboard``: the seed's TensorBoard folder (curves by calls, then its test metric and ECE).
    ``receipt``: record the served key's usage receipt (False: its key had made calls before this run).
    ``test_rows``: the test rows scored (None: all; the lite tier's subsample of a large split,
    :func:`~promptgym.bench.schema.protocol_test_rows`).
    ``store``: keep the test and OOD scores on disk (:mod:`promptgym.score_store`); a served model's never are.
    """
    check_protocol_agent(agent, allow_white_box)
    kwargs = {"seed": int(seed), **(agent_kwargs or {})}
    run = run_agent(env_id, agent, budget, int(seed), int(seed), model, "bfloat16", env_kwargs, kwargs,
                    progress=progress, label=f"{agent}{' + calibration' if calibrate else ''} seed {seed}",
                    calibrate=calibrate, journal=journal, tensorboard=tensorboard)
    result, base = run.result, run.env.unwrapped
    search = search_receipt(base.lm) if receipt else None  # the key's calls when the search ended (served only)
    started, stored = time.time(), 0 if store is None else store.hits
    test = Evaluator.for_env(run.env, test_rows=test_rows, store=store).score(result, dtype="float32")
    if tensorboard is not None:
        log_values(tensorboard, {f"test/{base.spec_task.metric}": test.metric, "test/ece": test.ece,
                                 "final/dev_metric": result.dev_metric}, base.budget.calls)
    test_rec = test_record(run.env, result, test, test_rows, store)
    record = {
        "seed": int(seed), "calls_used": int(base.budget.calls), "wall_seconds": round(run.seconds, 3),
        "prompt": prompt_record(result),
        "curve": curve_record(result),
        "test": test_rec,
        # the thread settings the search ran under: another count rounds otherwise, so an audit replays under them
        "threads": {k: v for k, v in (run.threads or {}).items() if v is not None},
        # the CPU kind and torch build the LM ran on: a bf16 search is repeated bit for bit only on the same
        # kind (a served model's host is the server's, which this process cannot see: not recorded)
        **({} if is_served(model) else {"host": current_host()}),
        "extra": {"train_reward": float(result.train_reward), "dev_metric": result.dev_metric,
                  "passes": {k: result.extra[k] for k in ("forward_passes", "backward_passes") if k in result.extra},
                  # the agent's own scalar reports (ABC generations reached, CMA-ELBO's dev NLL, SNPE's
                  # rounds...): why a set came out as it did is then readable from the run file
                  "diagnostics": {k: jsonable(v) for k, v in result.extra.items()
                                  if k not in ("calibration", "forward_passes", "backward_passes")
                                  and (_scalarish(v) or isinstance(v, np.generic))},
                  "test_wall_seconds": round(time.time() - started, 3),
                  # test and OOD requests answered from the score store (its seconds are not scoring speed)
                  **({} if store is None else {"stored_answers": int(store.hits - stored)}),
                  "approximate": bool(test.approximate), "calibrate": bool(calibrate),
                  # calls answered from the journal of a killed attempt (wall_seconds counts the last attempt only)
                  "resumed_calls": int(run.replayed_calls),
                  # the scoring rules the test record follows (a cached "vote" run of version 1 is re-scored)
                  "schema_version": SCHEMA_VERSION,
                  "calibration": jsonable(result.extra.get("calibration")),
                  # what reproduces this run from its file alone (not part of a submission)
                  "env_id": env_id, "env_kwargs": jsonable(env_kwargs or {}), "model": model,
                  "agent": agent, "agent_config": jsonable(config_dict(getattr(run.agent, "config", None)))},
    }
    if search is not None:  # the whole chain, test and OOD scoring included: what the submission proves
        final = base.lm.receipt(after=0)
        record["receipt"] = run_proof(final.model_dump(by_alias=True), search.receipt.calls)
        record["extra"]["search_receipt"] = search.model_dump(by_alias=True, exclude_none=True)
        record["extra"]["receipt_requests"] = [Entry(*e[:3]).request_sha256 for e in final.log.entries]
    return record


def search_receipt(lm: Any) -> Any:
    """The signed receipt of a ``promptgym serve`` key (a :class:`~promptgym.lm.wire.Receipt`), or None
    for a model that is not served so (in process, an OpenAI-compatible server, a server without receipts)."""
    from promptgym.lm.remote import RemoteLM

    if not isinstance(lm, RemoteLM):
        return None
    try:
        return lm.receipt()
    except PromptGymError as exc:
        if getattr(exc, "status", None) == 404:
            return None
        raise


def used_key_warning(model: str, seed: int) -> str | None:
    """Why seed ``seed`` cannot carry a usage receipt, or None: a run's receipt counts every call of its key,
    so a budget-verified run needs a key of its own. A used key does not stop the run (it is a valid run, as
    against any other server); it only records no receipt. A killed seed resuming from its journal
    continues on the key it began with and is not checked."""
    if not is_served(model) or parse_served(model)[0] != "native":
        return None
    lm = get_lm(model)
    receipt = search_receipt(lm)
    lm.close()
    if receipt is not None and receipt.receipt.calls:
        return (f"seed {seed}: key {receipt.receipt.key!r} has made {receipt.receipt.calls} calls already, so this "
                "seed's run carries no usage receipt (not budget verified); for a budget-verified entry give each "
                "seed a fresh key (`promptgym keys add NAME --calls N` on the server)")
    return None


def check_request(env_id: str, agent: str, tier: str, seeds: Sequence[int], env_kwargs: dict | None,
                  agent_kwargs: dict | None, calibrate: bool = False) -> None:
    """Everything about a protocol request that can be refused before any folder, model or call."""
    check_env_id(env_id)
    if tier not in TIERS:
        raise ConfigError(f"unknown tier {tier!r}; tiers: {', '.join(f'{k} ({v} calls)' for k, v in TIERS.items())}")
    check_protocol_agent(agent)
    check_kind(agent, env_kind(env_id))
    bad = [s for s in seeds if s not in BENCH_SEEDS]
    if bad or not seeds:
        raise ConfigError(f"seeds must be a non-empty subset of the protocol seeds {BENCH_SEEDS}, got {list(seeds)}")
    check_env_kwargs(env_kwargs)
    if "seed" in (agent_kwargs or {}):
        raise ConfigError("the protocol sets the agent's seed to each split seed; do not pass seed as an agent kwarg")
    make_config(agent, **{"seed": int(seeds[0]), **(agent_kwargs or {})})
    if calibrate:
        check_calibration_request(agent, env_kwargs)


def evaluate(env_id: str, agent: str, tier: str = "lite", model: str = DEFAULT_MODEL,
             seeds: Sequence[int] = BENCH_SEEDS, env_kwargs: dict | None = None,
             agent_kwargs: dict | None = None, workdir: str | Path | None = None,
             submitter: str = "", command: str = "", progress: bool = False,
             on_seed: Callable[[dict], None] | None = None, calibrate: bool = False,
             log: str | None = None, score_store: str | Path | None = None) -> dict | None:
    """Run the protocol (runs cached per seed in ``workdir``); return a validated submission.

    Returns None when ``seeds`` is a strict subset of the protocol's: the runs are cached and a
    later call with every seed assembles the submission. ``on_seed`` sees each run as it is ready.
    ``calibrate`` evaluates the agent's calibrated variant (its own work folder and entry).
    ``log="tensorboard"`` tracks each seed run in ``<workdir>/tensorboard/seed-<s>``.
    ``score_store``: a SQLite file keeping every test and OOD score of an in-process model, so a
    re-started evaluation, or another entry scoring the same prompt (a calibrated template), reads them
    back (:mod:`promptgym.score_store`; None: in memory only).
    """
    check_request(env_id, agent, tier, seeds, env_kwargs, agent_kwargs, calibrate)
    check_tracker(log)
    store = open_store(score_store)
    budget = TIERS[tier]
    work = Path(workdir) if workdir else evaluate_workdir(env_id, agent, tier, calibrate=calibrate, model=model)
    test_rows = protocol_test_rows(env_task(env_id), tier)
    runs = []
    for seed in seeds:
        path = seed_file(work, seed)
        if path.is_file():
            run = json.loads(path.read_text())
            check_cached_run(path, run, env_kwargs, calibrate, model)
            check_cached_config(path, run, agent, agent_kwargs, seed)
            check_cached_rows(path, run, test_rows)
            if not has_uncertainty(run):  # cached before the protocol reported uncertainty: add it, uncharged
                run = complete_run(env_id, run, model, env_kwargs, test_rows, store)
                _write_atomic(path, run)
        else:
            journal = seed_journal(work, seed)
            warning = None if journal.is_file() else used_key_warning(model, seed)
            if warning:
                print(f"promptgym: warning: {warning}", file=sys.stderr, flush=True)
            run = run_seed(env_id, agent, seed, budget, model, env_kwargs, agent_kwargs, progress,
                           calibrate=calibrate, journal=journal, receipt=warning is None, test_rows=test_rows,
                           store=store,
                           tensorboard=work / TENSORBOARD_DIR / f"seed-{seed}" if log == "tensorboard" else None)
            work.mkdir(parents=True, exist_ok=True)
            _write_atomic(path, run)
            journal.unlink(missing_ok=True)
        if on_seed is not None:
            on_seed(run)
        runs.append(run)
    if sorted(seeds) != sorted(BENCH_SEEDS):
        return None
    return assemble(env_id, agent, tier, model, runs, env_kwargs, agent_kwargs, submitter, command, calibrate)


def _write_atomic(path: Path, run: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run))
    tmp.replace(path)


def check_cached_run(path: Path, run: dict, env_kwargs: dict | None, calibrate: bool,
                     model: str = DEFAULT_MODEL) -> None:
    """Refuse a cached seed run made with other env kwargs, the other calibration setting or another
    model preset (a work folder is named by env, agent and tier; runs cached before the model was
    recorded are the default model's). A served model (a URL) is not compared by name: the same
    weights may be served at any address."""
    extra = run.get("extra", {})
    cached_model = str(extra.get("model", DEFAULT_MODEL))
    if not is_served(cached_model) and not is_served(model) and cached_model != model:
        raise ConfigError(f"{path} was run on model {cached_model!r}, not {model!r}; use another --workdir")
    if bool(extra.get("calibrate", False)) != calibrate:
        raise ConfigError(f"{path} holds a run {'without' if calibrate else 'with'} calibration; use another "
                          "--workdir for the other variant")
    if "env_kwargs" in extra and extra["env_kwargs"] != jsonable(env_kwargs or {}):
        raise ConfigError(f"{path} was run with env kwargs {extra['env_kwargs']}, not {env_kwargs or {}}; use "
                          "another --workdir")


def check_cached_config(path: Path, run: dict, agent: str, agent_kwargs: dict | None, seed: int) -> None:
    """Refuse a cached seed run whose agent config differs from the requested one on any field both know
    (a work folder is named by env, agent and tier only: a run of other ``--agent-kwarg`` values would
    otherwise be reported under this config; fields added to a config after the run are not compared)."""
    cached = run.get("extra", {}).get("agent_config") or {}
    want = jsonable(config_dict(make_config(agent, **{**(agent_kwargs or {}), "seed": int(seed)})))
    for key in sorted(set(cached) & set(want)):
        if cached[key] != want[key]:
            raise ConfigError(f"{path} was run with {key}={cached[key]!r}, not {want[key]!r}; a work folder holds "
                              "one agent config: use another --workdir")


def check_cached_rows(path: Path, run: dict, test_rows: np.ndarray | None) -> None:
    """Refuse a cached seed run scored on other test rows than the protocol's for its tier (e.g. a full
    large split cached before the lite tier's subsample): mixing them would make one entry of two row sets."""
    claimed = (run["test"].get("subsample") or {}).get("sha256")
    wanted = None if test_rows is None else rows_fingerprint(test_rows)
    if claimed != wanted:
        raise ConfigError(f"{path}: cached run scored on {'a subsample' if claimed else 'every row'} of the test "
                          f"split, the protocol scores {'a subsample' if wanted else 'every row'}; delete it to re-run")


def has_uncertainty(run: dict) -> bool:
    """Whether a cached seed run carries every metric runs record now (runs cached before one was
    recorded do not, nor a "vote" set scored by the bare histogram of schema version 1)."""
    return all(spec.name in run["test"] for spec in recorded_specs()) and not _bare_vote_run(run)


def _run_version(run: dict) -> int:
    return int(run.get("extra", {}).get("schema_version", 1))  # runs cached before version 2 have no mark


def _bare_vote_run(run: dict) -> bool:
    return combine_rule(run["prompt"].get("combine"), _run_version(run)) == VOTE_V1


def complete_run(env_id: str, run: dict, model: str = DEFAULT_MODEL, env_kwargs: dict | None = None,
                 test_rows: np.ndarray | None = None, store: ScoreStore | None = None) -> dict:
    """A cached seed run with its uncertainty metrics and OOD AUROCs added by re-scoring its stored
    prompt on test (uncharged; the prompt, predictions and metric must come out as stored).

    A "vote" set cached under schema version 1 is checked against that version's rule (the bare
    histogram), then its whole test record (predictions and metric too: ties now break otherwise)
    is the current rule's, and the run is marked with the current version.
    """
    env = make_env(env_id, 1, run["seed"], model, "bfloat16", env_kwargs)
    task = env.unwrapped.spec_task
    sub = {"schema_version": _run_version(run), "agent": {"name": run.get("extra", {}).get("agent", "cached")},
           "runs": [run]}
    result = replay_result(sub, 0, env, task.num_labels)
    evaluator = Evaluator.for_env(env, test_rows=test_rows, store=store)
    test = evaluator.score(result, dtype="float32")
    if abs(test.metric - run["test"]["metric"]) > METRIC_TOL:
        raise PromptGymError(f"seed {run['seed']}: the cached prompt now scores {test.metric:.4f}, not the cached "
                             f"{run['test']['metric']:.4f}; re-run it")
    if result.combine == VOTE_V1:  # the members' scores are cached: the current rule costs no LM call
        result = replay_result({**sub, "schema_version": SCHEMA_VERSION}, 0, env, task.num_labels)
        test = evaluator.score(result, dtype="float32")
        return {**run, "test": test_record(env, result, test, test_rows, store),
                "extra": {**run.get("extra", {}), "schema_version": SCHEMA_VERSION}}
    return {**run, "test": {**test_record(env, result, test, test_rows, store),
                            "predictions": run["test"]["predictions"], "metric": run["test"]["metric"]}}


def assemble(env_id: str, agent: str, tier: str, model: str, runs: list[dict], env_kwargs: dict | None,
             agent_kwargs: dict | None, submitter: str = "", command: str = "", calibrate: bool = False) -> dict:
    """The submission of the runs of every protocol seed (refused if a backend flagged its scores approximate)."""
    flagged = [r["seed"] for r in runs if r.get("extra", {}).get("approximate")]
    if flagged:
        raise InvalidSubmissionError(f"seeds {flagged}: the backend flagged its test scores approximate (e.g. "
                                     "top-k log-probs only); such runs cannot be verified or ranked")
    all_receipts = all("receipt" in r for r in runs)
    if not all_receipts and any("receipt" in r for r in runs):
        print("promptgym: warning: only some seeds carry a usage receipt; the entry is written without "
              "receipts (not budget verified)", file=sys.stderr, flush=True)
    env = make_env(env_id, 1, runs[0]["seed"], model, "bfloat16", env_kwargs)
    base = env.unwrapped
    lm = get_lm(model, "float32")  # a served model: the server's name and weights (a verifier loads them)
    config = config_dict(make_config(agent, **(agent_kwargs or {})))
    config.pop("seed", None)  # the protocol sets it to the split seed
    sub = {
        "schema_version": SCHEMA_VERSION, "env_id": env_id, "env_kwargs": dict(env_kwargs or {}),
        "agent": {"name": agent, "config": {k: v for k, v in config.items() if _scalarish(v)}},
        "submitter": submitter[:100], "promptgym_version": promptgym.__version__,
        "model": {"name": str(lm.name) if is_served(model) else model, "weights_sha256": lm.weights_sha256},
        "data_sha256": data_fingerprint(base.spec_task, data_dir_path=base.data_dir),
        "tier": tier, "budget_calls": TIERS[tier], "metric": base.spec_task.metric,
        # receipts prove the budget of a whole entry or of nothing: a run without one makes the entry unverified
        "runs": [{k: v for k, v in r.items() if k != "extra" and (k != "receipt" or all_receipts)} for r in runs],
        "command": command[:1000], "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
    if calibrate:
        sub["calibration"] = True
    return validate_submission(sub)


def _scalarish(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v))


def replay_result(sub: dict, i: int, env: Any, num_labels: int) -> Result:
    """The Result a submitted run's ``prompt`` stands for, every action checked against the env; its
    ``combine`` rule is the one of the file's schema version (a version 1 "vote" is the bare histogram;
    without ``schema_version``, the current one)."""
    p = sub["runs"][i]["prompt"]
    where = f"runs[{i}].prompt"
    actions = [("action", p["action"])] + [(f"members[{k}]", m) for k, m in enumerate(p.get("members") or [])]
    for name, action in actions:
        if action is not None:
            try:
                env.unwrapped.validate_action(action)
            except InvalidActionError as exc:
                raise InvalidSubmissionError(f"{where}.{name}: not a valid action of the env: {exc}") from exc
    bias = p["label_bias"]
    if bias is not None and np.shape(bias)[-1] != num_labels:
        raise InvalidSubmissionError(f"{where}.label_bias: needs {num_labels} values per bias")
    if p.get("members") is not None and p["action"] is None:
        raise InvalidSubmissionError(f"{where}.action: a prompt set's action is its member of largest weight")
    try:
        return Result.from_record(p, sub["agent"]["name"],
                                  combine=combine_rule(p.get("combine"), sub.get("schema_version", SCHEMA_VERSION)))
    except ConfigError as exc:
        raise InvalidSubmissionError(f"{where}: {exc}") from None


def metric_close(claimed: float, got: float) -> bool:
    """Whether a re-scored OOD AUROC reproduces the claimed one, within the uncertainty metrics' tolerance
    (:data:`~promptgym.metrics.registry.UNCERTAINTY_TOLERANCE`: near-ties flip across CPUs)."""
    return UNCERTAINTY_TOLERANCE.close(claimed, got)


def verify(sub: dict, log=print, root: str | Path | None = None) -> list[dict]:
    """Re-check a validated submission against the local data and model; raise on any mismatch.

    Every member of every run's prompt is re-scored on the test split; the claimed metric, the
    predictions, the uncertainty metrics and the OOD AUROCs must be reproduced. The OOD AUROCs are
    re-scored on exactly the OOD tasks a run claims, which must be the pair set of one protocol
    version (:func:`check_ood_claim`): entries recorded with version 1's single pair still verify.
    Scores a backend flags approximate cannot be checked, so they are refused. Usage receipts, when
    the runs carry them, are checked against the trusted keys of the leaderboard in ``root`` (the
    folder holding ``leaderboards/``; default: the working directory, as the CLI's ``--root``) and
    must not sign an entry already on it (:mod:`promptgym.bench.receipts`). Returns one dict per run
    with the claimed and re-scored metric, and whether its budget was verified.
    """
    sub = validate_submission(sub)
    check_budget(sub)
    if is_white_box(sub["agent"]["name"]):
        raise InvalidSubmissionError("agent.name: white-box agents are not ranked")
    try:
        task = get_task(env_task(sub["env_id"]))
    except UnknownEnvError as exc:
        raise InvalidSubmissionError(f"env_id: {exc}") from None
    if sub["metric"] != task.metric:
        raise InvalidSubmissionError(f"metric: {task.name} is scored by {task.metric}, not {sub['metric']}")
    for i, run in enumerate(sub["runs"]):  # before any scoring: an OOD key set no protocol version had is refused
        if "ood" in run["test"]:
            check_ood_claim(i, task.name, run["test"]["ood"])
    receipts = None
    if any("receipt" in run for run in sub["runs"]):
        from promptgym.bench.store import load_entries

        board = Path.cwd() if root is None else Path(root)
        receipts = check_receipts(sub, trusted_keys(board))
        check_unused(sub, load_entries(board))
    local = data_fingerprint(task)
    if sub["data_sha256"] != local:
        diff = sorted(k for k in set(local) | set(sub["data_sha256"]) if local.get(k) != sub["data_sha256"].get(k))
        raise InvalidSubmissionError(f"data_sha256: does not match the local data for {diff[:5]}")
    model = sub["model"]["name"]
    try:
        lm = get_lm(model, "float32")
    except PromptGymError as exc:
        raise InvalidSubmissionError(f"model.name: cannot load {model!r}: {exc}") from exc
    if lm.weights_sha256 != sub["model"]["weights_sha256"]:
        raise InvalidSubmissionError("model.weights_sha256: does not match the local weights of " + model)
    if lm.approximate:
        raise InvalidSubmissionError(f"model.name: the backend of {model!r} gives approximate scores; "
                                     "submissions are verified with exact ones")
    test_rows = protocol_test_rows(task.name, sub["tier"])
    gold = load_split(task, "test").labels
    if test_rows is not None:
        gold = np.asarray(gold)[test_rows]
    report = []
    for i, run in enumerate(sub["runs"]):
        check_subsample(i, run["test"], test_rows, len(load_split(task, "test").labels))
        env = make_env(sub["env_id"], 1, run["seed"], model, "bfloat16", sub["env_kwargs"])
        replay = replay_result(sub, i, env, task.num_labels)
        if receipts is not None:
            _check_receipt_prompts(sub, i, receipts[i], env, replay, test_rows)
        got = Evaluator.for_env(env, test_rows=test_rows).score(replay, dtype="float32")
        if got.approximate:
            raise InvalidSubmissionError(f"runs[{i}].prompt: the backend flagged its scores approximate; they "
                                         "cannot be verified")
        claimed = run["test"]
        if claimed["n"] != got.n:
            raise InvalidSubmissionError(f"runs[{i}].test.n: the test split has {got.n} rows, not {claimed['n']}")
        agree = float(np.mean(decode_predictions(claimed["predictions"]) == got.predictions))
        claimed_metric = compute_metric(task.metric, gold, decode_predictions(claimed["predictions"]))
        members = len(replay.members) if replay.is_set else 1
        log(f"seed {run['seed']}: claimed {claimed['metric']:.4f}, re-scored {got.metric:.4f} "
            f"({members} member{'s' if members > 1 else ''}), predictions agree {agree:.2%}")
        if abs(claimed_metric - claimed["metric"]) > 1e-6:
            raise InvalidSubmissionError(f"runs[{i}].test.metric: {claimed['metric']:.4f} is not the metric of the "
                                         f"submitted predictions ({claimed_metric:.4f})")
        if abs(got.metric - claimed["metric"]) > METRIC_TOL or agree < AGREEMENT:
            raise InvalidSubmissionError(
                f"runs[{i}].test.metric: claimed {claimed['metric']:.4f} but the prompt scores {got.metric:.4f} "
                f"(predictions agree {agree:.1%}); tolerance {METRIC_TOL} and {AGREEMENT:.0%} agreement")
        for spec in recorded_specs():  # a file from before a metric was recorded lacks it: nothing to check
            key = spec.name
            if key in claimed and spec.verify is not None and not spec.verify.close(claimed[key], got.metrics[key]):
                raise InvalidSubmissionError(f"runs[{i}].test.{key}: claimed {claimed[key]:.4f} but the prompt's "
                                             f"predictive distribution gives {got.metrics[key]:.4f}")
        if "ood" in claimed:  # exactly the OOD tasks the run claims (checked above): version 1 entries have fewer
            _verify_ood(i, claimed["ood"], _ood_metrics(env, replay, got.probs, tuple(claimed["ood"])))
        report.append({"seed": run["seed"], "claimed": claimed["metric"], "rescored": got.metric, "agree": agree,
                       "budget_verified": receipts is not None})
    if receipts is not None:
        log(f"budget verified: {', '.join(str(r.search_calls) for r in receipts)} search calls per seed, signed by "
            f"{receipts[0].body['signer'][:16]}...")
    return report


def check_subsample(i: int, claimed: dict[str, Any], test_rows: np.ndarray | None, split_rows: int) -> None:
    """Refuse run ``i`` unless it claims exactly the test rows its tier scores (:func:`protocol_test_rows`):
    every row, or the lite tier's subsample of a large split, named by its sha256. Costs no LM call."""
    got = claimed.get("subsample")
    if test_rows is None:
        if got is not None:
            raise InvalidSubmissionError(f"runs[{i}].test.subsample: this tier scores every test row")
        return
    want = {"of": split_rows, "sha256": rows_fingerprint(test_rows)}
    if got != want:
        raise InvalidSubmissionError(f"runs[{i}].test.subsample: this tier scores the fixed {len(test_rows)}-row "
                                     f"subsample of the {split_rows}-row test split (sha256 {want['sha256'][:12]}...)")


def _check_receipt_prompts(sub: dict, i: int, receipt: Any, env: Any, replay: Result,
                           test_rows: np.ndarray | None = None) -> None:
    """Refuse run ``i`` unless its prompts, rebuilt as the server received them (soft prompts from the
    model in the server's dtype), were scored on this verifier's test rows under its receipt."""
    dtype = receipt.body["dtype"]
    if dtype not in ("bfloat16", "float32"):
        raise InvalidSubmissionError(f"runs[{i}].receipt.body.dtype: the server scored in {dtype!r}; prompts are "
                                     "rebuilt in bfloat16 or float32")
    if dtype != "bfloat16":  # env is the protocol's bf16 one
        env = make_env(sub["env_id"], 1, sub["runs"][i]["seed"], sub["model"]["name"], dtype, sub["env_kwargs"])
    requests = Evaluator.for_env(env, test_rows=test_rows).requests(replay)
    first = requests[0]
    check_prompts(receipt, [r.prompt for r in requests], rows_sha256(first.segments, first.label_words,
                                                                     first.label_only))


def check_ood_claim(i: int, task: str, claimed: dict[str, Any]) -> None:
    """Refuse run ``i``'s ``test.ood`` unless its keys are exactly the OOD pair set of one protocol
    version for ``task`` (:func:`promptgym.bench.ood.ood_pair_sets`): version 1 entries carry their
    one pair, new runs every current pair; a key that is no known pair of the task, or a set picked
    from the pairs (the favourable ones only), is refused. Costs no LM call."""
    from promptgym.bench.ood import known_ood_tasks, ood_pair_sets

    known = known_ood_tasks(task)
    unknown = sorted(t for t in claimed if t not in known)
    if unknown:
        raise InvalidSubmissionError(f"runs[{i}].test.ood: {', '.join(unknown)} is not an OOD task of {task} "
                                     f"(its OOD tasks: {', '.join(known) or 'none'})")
    sets = ood_pair_sets(task)
    if frozenset(claimed) not in sets:
        allowed = " or ".join("{" + ", ".join(sorted(s)) + "}" for s in sets)
        raise InvalidSubmissionError(f"runs[{i}].test.ood: claims {{{', '.join(sorted(claimed))}}}; a run records "
                                     f"every OOD task of one protocol version: {allowed}")


def _verify_ood(i: int, claimed: dict[str, dict[str, float]], got: dict[str, dict[str, float]]) -> None:
    if set(claimed) != set(got):
        raise InvalidSubmissionError(f"runs[{i}].test.ood: claims tasks {sorted(claimed)}, the protocol's OOD "
                                     f"tasks are {sorted(got)}")
    for task, scores in claimed.items():
        for key, value in scores.items():
            if not metric_close(value, got[task][key]):
                raise InvalidSubmissionError(f"runs[{i}].test.ood.{task}.{key}: claimed {value:.4f} but "
                                             f"re-scoring gives {got[task][key]:.4f}")


def test_labels_by_env(entries: Sequence[dict]) -> dict[str, np.ndarray]:
    """Gold test labels for every env id in ``entries`` (for the leaderboard's bootstrap)."""
    out = {}
    for e in entries:
        env_id = e["env_id"]
        if env_id in out:
            continue
        try:
            task = env_task(env_id)
        except UnknownEnvError:
            continue
        out[env_id] = np.asarray(load_split(task, "test").labels)
    return out


test_labels_by_env.__test__ = False
