"""Replay audit: re-run a built-in agent as an entry records it and check it returns the submitted prompt.

``verify`` (``promptgym submit``) proves that every submitted prompt earns its claimed scores, not
that the named agent found it within the tier's budget: a prompt tuned with ten times the calls, or
by hand, re-scores just as well. For a registered agent the entry records everything a run depends
on (env id and kwargs, agent config, model, tier, calibration; agent seed = split seed), so the
protocol run can simply be repeated: :func:`audit` runs it again (bf16 search, the tier's budget
enforced by the env's meter) and compares the returned prompt, every member, weight and label bias
of a set, the calls used and the best-so-far dev curve with the entry's run. A user's own agent can be
audited from Python once it is registered (``promptgym.register_agent``) in the auditing process.

**Where a replay is exact.** An agent is a deterministic function of its seed and of the LM's
answers, and the search runs in bf16, whose matmul rounding depends on the CPU's kernels: a replay
is bit for bit the submitted run on a host of the same CPU kind with the same torch build and
promptgym version (an AMD EPYC host with AVX512-BF16 replays an AMD EPYC run). Across CPU kinds (AMD
EPYC vs an Intel host with AMX) single rewards move in their last bits, and a CMA-ES search, which
ranks candidates by reward, branches on differences that small: from there the replay is another,
equally legitimate run. Each run of an entry records the host kind its LM ran on (CPU model, bf16
instruction sets, torch build: :mod:`promptgym.host`); entries made before they did, and runs against
a served model, do not, and then the auditor states it (``same_cpu``). Exactness is shown by the tests
on the tiny model only, not yet on a SmolLM2 entry.

**What a mismatch means**, hence three verdicts (and exit codes of ``promptgym audit``):

* ``reproduced`` (0): same prompt, calls and curve.
* ``not reproduced on this host`` (3): the replay took another path. The report gives the first
  call where the dev curves part (the curve records dev checks only, so the search may have
  branched a little earlier), the replayed prompt's fp32 test score next to the claimed one, and
  the host; off the submitter's CPU kind this is no evidence of forgery by itself.
* ``forged`` (4): a mismatch no host difference explains: the replay made no LM call (the result
  is a function of the seed and config alone, e.g. the manual template), or the run records the
  host kind of this one, or the auditor states with ``same_cpu`` that this host is of the CPU kind
  the entry was made on: where replays are exact.
  Neither holds when the replay had to assume part of the setup (:func:`setup_gaps`, printed as
  notes: config fields the entry does not record, as it stores scalar fields only and none added to
  the agent after it; another promptgym version): then a mismatch stays "not reproduced".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import promptgym
from promptgym.agent import agent_spec, find_agent
from promptgym.bench.evaluate import check_request, curve_record, prompt_record
from promptgym.bench.schema import TIERS, check_budget, parse_submission, protocol_test_rows, validate_submission
from promptgym.envs.registration import env_task
from promptgym.errors import ConfigError, InvalidSubmissionError, UnknownEnvError
from promptgym.evaluation import Evaluator
from promptgym.host import current_host, describe_host, same_kind
from promptgym.lm import get_lm
from promptgym.runner import run_agent
from promptgym.tasks import data_fingerprint, get_task

REPRODUCED, NOT_REPRODUCED, FORGED = "reproduced", "not reproduced on this host", "forged"
#: ``promptgym audit``'s exit code for each verdict (2 is bad input, as for every command)
EXIT_CODES = {REPRODUCED: 0, NOT_REPRODUCED: 3, FORGED: 4}


@dataclass
class AuditReport:
    """One seed's audit: the verdict, what differs, and the paragraph ``promptgym audit`` prints."""

    seed: int
    verdict: str
    differences: list[str]
    claimed: dict[str, Any]  # the entry's run: prompt, calls_used, curve, test
    replayed: dict[str, Any]  # the replay's prompt, calls_used, curve (and test metric on a mismatch)
    first_divergence: int | None  # the call where the dev curves part, if they do
    host: str  # this host, described
    notes: list[str] = field(default_factory=list)
    paragraph: str = ""
    #: whether the run records this host's kind (None: it records none)
    same_host: bool | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def find_entry(entry: str | Path, root: str | Path | None = None) -> Path:
    """``entry`` as a file: a path, or the file name of a committed entry (``leaderboards/<env>/NAME``)."""
    path = Path(entry)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; pass an entry file")
    if path.name != str(entry) or not path.name:  # a path with folders: that file or nothing
        raise ConfigError(f"unknown entry {str(entry)!r}: no such file")
    board = Path(root if root is not None else Path.cwd()) / "leaderboards"
    name = path.name if path.name.endswith(".json") else f"{path.name}.json"
    hits = sorted(board.glob(f"*/{name}")) if board.is_dir() else []
    if len(hits) == 1:
        return hits[0]
    raise ConfigError(f"unknown entry {str(entry)!r}: no such file, nor a {board}/<env_id>/{name}")


def load_entry(path: Path) -> dict[str, Any]:
    """A submission file, parsed and validated (an over-budget one is refused here too)."""
    try:
        sub = parse_submission(path.read_bytes())
        check_budget(sub)
    except InvalidSubmissionError as exc:
        raise InvalidSubmissionError(f"{path}: {exc}") from None
    return sub


def check_audit_request(sub: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything about an audit that can be refused before a model loads; returns the agent config to
    replay with (the recorded one: the protocol sets ``seed`` to the split seed itself)."""
    check_budget(sub)
    seeds = [run["seed"] for run in sub["runs"]]
    if seed not in seeds:
        raise ConfigError(f"seed {seed} is not in the entry; its seeds: {', '.join(map(str, seeds))}")
    agent = sub["agent"]["name"]
    if find_agent(agent) is None:  # a built-in, a registered one, or an installed plugin's
        raise ConfigError(f"agent {agent!r} is not registered here: an audit re-runs the agent's own code; install "
                          "its package (an entry point in promptgym.agents) or register it (promptgym.register_agent) "
                          "and call promptgym.bench.audit.audit from Python")
    config = {k: v for k, v in sub["agent"]["config"].items() if k != "seed"}
    try:
        check_request(sub["env_id"], agent, sub["tier"], [seed], sub["env_kwargs"] or None, config,
                      bool(sub.get("calibration", False)))
    except ConfigError as exc:
        raise ConfigError(f"cannot replay the entry (made with promptgym {sub['promptgym_version']}): {exc}") from None
    return config


def audit(sub: dict[str, Any], seed: int, *, same_cpu: bool = False, progress: bool = False) -> AuditReport:
    """Re-run seed ``seed`` of validated submission ``sub`` as the protocol ran it; compare with the entry.

    ``same_cpu``: the auditor states that this host is of the CPU kind (and torch build) the entry
    was made on, so a replay is exact and any mismatch is judged forged. Raises ConfigError or
    InvalidSubmissionError (bad input: nothing replayed) when the entry cannot be replayed here: an
    unregistered agent, a config this promptgym does not have, other data or model weights.
    """
    sub = validate_submission(sub)
    config = check_audit_request(sub, seed)
    check_inputs(sub)
    agent, budget = sub["agent"]["name"], TIERS[sub["tier"]]
    calibrate = bool(sub.get("calibration", False))
    claimed = next(run for run in sub["runs"] if run["seed"] == seed)
    run = run_agent(sub["env_id"], agent, budget, seed, seed, sub["model"]["name"], "bfloat16",
                    sub["env_kwargs"] or None, {**config, "seed": seed}, progress=progress,
                    label=f"audit {agent}{' + calibration' if calibrate else ''} seed {seed}", calibrate=calibrate,
                    threads=claimed.get("threads"))  # the entry's thread settings, when it records them
    replayed: dict[str, Any] = {"prompt": prompt_record(run.result), "calls_used": int(run.env.unwrapped.budget.calls),
                                "curve": curve_record(run.result)}
    differences = prompt_differences(claimed["prompt"], replayed["prompt"])
    if replayed["calls_used"] != claimed["calls_used"]:
        differences.append(f"calls used: the replay used {replayed['calls_used']}, the entry claims "
                           f"{claimed['calls_used']}")
    divergence = first_divergence(claimed["curve"], replayed["curve"])
    if divergence is not None:
        differences.append(f"dev curve: parts from the entry's at call {divergence}")
    gaps = setup_gaps(sub)  # a replay that had to assume part of the setup proves nothing by a mismatch
    here = current_host()
    same_host = None if claimed.get("host") is None else same_kind(claimed["host"], here)
    if not differences:
        verdict = REPRODUCED
    elif (replayed["calls_used"] == 0 or same_cpu or same_host) and not gaps:
        verdict = FORGED
    else:
        verdict = NOT_REPRODUCED
    if verdict != REPRODUCED:  # what the agent really finds here, on the protocol's fp32 test scoring
        rows = protocol_test_rows(run.env.unwrapped.spec_task.name, sub["tier"])  # the rows the entry claims on
        evaluator = Evaluator.for_env(run.env, test_rows=rows)
        replayed["test"] = {"metric": float(evaluator.score(run.result, dtype="float32").metric)}
    report = AuditReport(seed, verdict, differences, claimed, replayed, divergence, describe_host(here), gaps,
                         same_host=same_host)
    report.paragraph = verdict_paragraph(sub, report, budget, same_cpu)
    return report


def check_inputs(sub: dict[str, Any]) -> None:
    """The entry's data and model weights must be the local ones, else a replay means nothing."""
    try:
        task = get_task(env_task(sub["env_id"]))
    except UnknownEnvError as exc:
        raise InvalidSubmissionError(f"env_id: {exc}") from None
    local = data_fingerprint(task)
    if sub["data_sha256"] != local:
        diff = sorted(k for k in set(local) | set(sub["data_sha256"]) if local.get(k) != sub["data_sha256"].get(k))
        raise InvalidSubmissionError(f"data_sha256: does not match the local data for {diff[:5]}")
    model = sub["model"]["name"]
    if get_lm(model, "float32").weights_sha256 != sub["model"]["weights_sha256"]:
        raise InvalidSubmissionError(f"model.weights_sha256: does not match the local weights of {model}")


def setup_gaps(sub: dict[str, Any]) -> list[str]:
    """What the replay had to assume: config fields the entry does not record (only scalars and short
    lists are stored, and fields added since are absent: the defaults stand in), and another promptgym
    version (other agent code). With any of these a mismatch is never judged forged."""
    notes = []
    recorded = set(sub["agent"]["config"]) | {"seed"}
    fields = [f.name for f in dataclasses.fields(agent_spec(sub["agent"]["name"]).config_class)]
    missing = [name for name in fields if name not in recorded]
    if missing:
        notes.append(f"config field(s) {', '.join(missing)} are not recorded in the entry and were replayed with "
                     "their defaults")
    if sub["promptgym_version"] != promptgym.__version__:
        notes.append(f"the entry was made with promptgym {sub['promptgym_version']}, replayed with "
                     f"{promptgym.__version__}")
    return notes


def prompt_differences(claimed: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """How two prompt records differ, part by part (empty when equal)."""
    out = []
    for key in ("action", "members", "weights", "label_bias", "combine", "demonstrations"):
        a, b = claimed.get(key), replayed.get(key)
        if a == b:
            continue
        if key == "members" and a is not None and b is not None and len(a) == len(b):
            differ = sum(x != y for x, y in zip(a, b))
            out.append(f"members: {differ} of {len(a)} differ ({_delta(a, b)})")
        elif a is None or b is None or key in ("combine", "demonstrations"):
            out.append(f"{key}: the entry has {_brief(a)}, the replay {_brief(b)}")
        else:
            out.append(f"{key}: {_delta(a, b)}")
    if not out and claimed.get("text") != replayed.get("text"):
        out.append("text: the entry's prompt text is not the one its action renders")
    return out


def _brief(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return f"{len(value)} value{'s' if len(value) != 1 else ''}" if value and not isinstance(value[0], list) \
            else f"{len(value)} members"
    return repr(value)[:60]


def _delta(a: Any, b: Any) -> str:
    try:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except ValueError:  # ragged: members of different lengths
        return "of different shapes"
    if x.shape != y.shape:
        return f"shape {x.shape} in the entry, {y.shape} in the replay"
    return f"{int(np.sum(x != y))} of {x.size} values differ, by up to {float(np.max(np.abs(x - y))):.3g}"


def first_divergence(claimed: list[list[float]], replayed: list[list[float]]) -> int | None:
    """The call at which two best-so-far dev curves part (None: equal curves)."""
    for a, b in zip(claimed, replayed):
        if list(a) != list(b):
            return int(min(a[0], b[0]))
    if len(claimed) == len(replayed):
        return None
    longer = claimed if len(claimed) > len(replayed) else replayed
    return int(longer[min(len(claimed), len(replayed))][0])


def threads_phrase(threads: dict[str, Any] | None) -> str:
    """How the replay's threads were set: the entry's recorded settings, or (older entries) this process's."""
    if not threads:
        return ", on this process's thread settings (the entry records none; a BLAS rounds by thread count)"
    return ", under the entry's thread settings (" + ", ".join(f"{k} {v}" for k, v in sorted(threads.items())) + ")"


def verdict_paragraph(sub: dict[str, Any], report: AuditReport, budget: int, same_cpu: bool) -> str:
    """The one paragraph ``promptgym audit`` prints: what was replayed, the verdict and why."""
    agent = sub["agent"]["name"] + (" + calibration" if sub.get("calibration") else "")
    claimed, replayed = report.claimed, report.replayed
    members = len(claimed["prompt"].get("members") or []) or 1
    what = "the prompt" if members == 1 else f"all {members} members of the set (weights and label biases too)"
    head = (f"Seed {report.seed} of {agent} on {sub['env_id']} ({sub['tier']} tier, {budget:,} calls, "
            f"{sub['model']['name']}): {report.verdict}. The audit re-ran {sub['agent']['name']} with the recorded "
            f"config, env kwargs and agent seed {report.seed} (bf16 search) on this host ({report.host})"
            f"{threads_phrase(claimed.get('threads'))}")
    if report.verdict == REPRODUCED:
        body = (f" and got {what} bit for bit, within the budget ({replayed['calls_used']:,} calls, as the entry "
                "says), with the same dev curve.")
    else:
        where = ("the dev curves agree at every dev check: the difference arose after the last one"
                 if report.first_divergence is None else
                 f"the dev curves part at call {report.first_divergence:,} (dev checks only: it may have branched "
                 "a little earlier)")
        body = (f"; it differs: {'; '.join(report.differences)}. {where[0].upper()}{where[1:]}. The replayed prompt "
                f"scores {replayed['test']['metric']:.4f} on test (fp32), the entry claims "
                f"{claimed['test']['metric']:.4f}; the replay used {replayed['calls_used']:,} of {budget:,} calls.")
        if report.verdict == FORGED and replayed["calls_used"] == 0:
            body += (" The replay made no LM call, so nothing host-dependent entered it: this agent returns the "
                     "replayed prompt from its seed and config alone on any host.")
        elif report.verdict == FORGED and report.same_host:
            body += (f" The entry's run records this host's kind ({describe_host(claimed['host'])}), where a replay "
                     "is exact.")
        elif report.verdict == FORGED:
            body += (" The auditor states this host is of the CPU kind the entry was made on (--same-cpu), where a "
                     "replay is exact.")
        elif report.notes and (same_cpu or report.same_host or replayed["calls_used"] == 0):
            body += (" The replay had to assume part of the entry's setup (below), so this mismatch is not "
                     "conclusive even here.")
        else:
            if report.same_host is False:
                body += f" The entry's run was made on {describe_host(claimed['host'])}, another kind than this host."
            body += (" A bf16 search is exact only on the CPU kind and torch build it ran on: bf16 matmuls round "
                     "differently across CPU kinds (AMD EPYC vs Intel AMX hosts) and a CMA-ES search branches on "
                     "reward differences that small, so this alone does not show the entry forged; replayed on a "
                     "host of the submitter's CPU kind (--same-cpu), a mismatch is conclusive.")
    notes = "".join(f" Note: {n}." for n in report.notes)
    return head + body + notes

