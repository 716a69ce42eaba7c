"""The one run driver: check everything, make the env, let an agent learn, score its prompt on test.

``promptgym train``, the leaderboard protocol (``promptgym evaluate``), the demo and the benchmark
scripts all run agents through :func:`run_agent` and score on the test split through
:func:`score_test`, so a number in a run folder, a leaderboard entry and a benchmark table come
from the same code. Everything that can be checked without the model (env id, budget, agent name
and config) is checked first: a typo costs neither the model's load time nor an API call.

Test scoring follows the rule "search in bf16, report in fp32": by default the prompt is re-scored
with the same model loaded in fp32 (bf16 moves single logits by up to ~0.3). It goes through the
env's own :class:`~promptgym.envs.scoring.Scorer`, uncharged: the test split never enters an env.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from promptgym.agent import (
    AGENT_REGISTRY,
    Agent,
    Result,
    check_compatible,
    check_kind,
    config_dict,
    make_agent,
)
from promptgym.calibration import calibrate_result, calibration_calls, check_calibratable
from promptgym.envs.budget import QueryBudget
from promptgym.envs.registration import check_env_id, env_kind
from promptgym.envs.scoring import Segments, is_approximate
from promptgym.errors import ConfigError, IncompatibleAgentError, PromptGymError
from promptgym.journal import CallJournal
from promptgym.lm import DEFAULT_MODEL, in_dtype
from promptgym.lm.base import Prompt, ScoreRequest, SoftPrompt
from promptgym.members import combine_set, member_biases, member_prompts
from promptgym.metrics import compute_metric, probability_metrics
from promptgym.metrics.stats import expected_calibration_error
from promptgym.progress import LiveMonitor
from promptgym.tasks import load_split
from promptgym.tracking import TensorBoardTracker, check_tracker

#: env arguments the driver sets itself; passing them in ``env_kwargs`` too would be ambiguous
DRIVER_ENV_ARGS = ("model", "dtype", "split_seed", "budget")


@dataclass
class Run:
    """What :func:`run_agent` returns."""

    result: Result
    env: gym.Env
    agent: Agent
    agent_name: str
    seconds: float
    replayed_calls: int = 0  # calls answered from the journal of a killed run (0: not a resume)


def check_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(env_kwargs or {})
    clash = sorted(set(kwargs) & set(DRIVER_ENV_ARGS))
    if clash:
        raise ConfigError(f"env kwargs {clash} are set by their own options (--model, --dtype, --split-seed, "
                          "--budget), not as env kwargs")
    if "api_key" in kwargs:  # env kwargs are written into run folders and submissions: a key must never be
        raise ConfigError("pass a served model's API key in $PROMPTGYM_API_KEY, not as an env kwarg "
                          "(env kwargs are recorded in run folders)")
    return kwargs


def make_env(env_id: str, budget: int, split_seed: int = 13, model: Any = DEFAULT_MODEL, dtype: str = "bfloat16",
             env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``gym.make`` with the id checked first (an unknown id names the closest ones)."""
    check_env_id(env_id)
    return gym.make(env_id, model=model, dtype=dtype, split_seed=split_seed, budget=budget,
                    **check_env_kwargs(env_kwargs))


def prepare_agent(agent: str | Agent, seed: int, agent_kwargs: dict[str, Any] | None = None) -> tuple[Agent, str]:
    """The agent to run and its name: a registered name is built with ``agent_kwargs`` (its ``seed``
    defaults to ``seed``); an agent object is used as it is."""
    if isinstance(agent, str):
        kwargs = dict(agent_kwargs or {})
        kwargs.setdefault("seed", int(seed))
        return make_agent(agent, **kwargs), agent
    if agent_kwargs:
        raise ConfigError("agent_kwargs only apply to registered agents given by name")
    if not isinstance(agent, Agent):
        raise ConfigError(f"an agent needs a name and learn(env), got {type(agent).__name__}")
    return agent, agent.name


def run_agent(env_id: str, agent: str | Agent, budget: int, seed: int = 0, split_seed: int = 13,
              model: Any = DEFAULT_MODEL, dtype: str = "bfloat16", env_kwargs: dict[str, Any] | None = None,
              agent_kwargs: dict[str, Any] | None = None, progress: bool = True, label: str | None = None,
              calibrate: bool = False, journal: str | Path | None = None,
              tensorboard: str | Path | None = None) -> Run:
    """Let ``agent`` learn on ``env_id`` under ``budget`` API calls; return its Result and the env.

    ``seed`` is the agent's seed; ``split_seed`` picks the 16-shot split. Checks run before the
    model loads; the agent's compatibility with the env (kind, reward, backend) before any call.

    ``calibrate``: after ``learn()``, fit one bias per label for each final prompt on the train
    batch (:func:`promptgym.calibration.calibrate_result`, one charged call per member). The agent
    learns with the budget minus those calls, reserved up front, so the run stays within ``budget``.

    ``journal``: a call-journal file (:mod:`promptgym.journal`). Every charged LM call is journaled there;
    if the file exists (a killed run), its calls are replayed first, so the run resumes where it stopped
    and ends as the uninterrupted run would.

    ``tensorboard``: a folder for the run's TensorBoard events (:mod:`promptgym.tracking`), indexed by calls.
    """
    check_env_id(env_id)
    QueryBudget(budget)  # a bad budget is refused before the model loads
    kwargs = check_env_kwargs(env_kwargs)
    if tensorboard is not None:
        check_tracker("tensorboard")
    learner, name = prepare_agent(agent, seed, agent_kwargs)
    if name in AGENT_REGISTRY:
        check_kind(name, env_kind(env_id))
    reserve = 0
    if calibrate:
        check_calibration_request(name, kwargs)
        reserve = calibration_calls(learner)
        if reserve >= budget:
            raise ConfigError(f"calibration needs {reserve} call(s) after the agent learns; a budget of {budget} "
                              "leaves the agent none")
    env = make_env(env_id, budget, split_seed, model, dtype, env_kwargs)
    if name in AGENT_REGISTRY:
        check_compatible(name, env)
    base = env.unwrapped
    if calibrate:
        check_calibratable(base.reward_kind)
    record = None
    if journal is not None:
        identity = {"env_id": env_id, "agent": name, "agent_config": config_dict(getattr(learner, "config", None)),
                    "budget": int(budget), "seed": int(seed), "split_seed": int(split_seed),
                    "model": model if isinstance(model, str) else base.lm.name,
                    "dtype": dtype, "env_kwargs": kwargs, "calibrate": bool(calibrate)}
        record = CallJournal(journal, identity)
        base.record_calls(record)
        # a served key's quota no longer counts the journaled calls: they were charged before the kill
        base.budget.max_calls = min(int(budget), base.budget.max_calls + record.recorded_calls)
    tracker = contextlib.nullcontext()
    if tensorboard is not None:
        tracker = TensorBoardTracker(base, tensorboard, {"env": env_id, "agent": name, "budget": budget, "seed": seed,
                                                         "split_seed": split_seed, "model": str(model), "dtype": dtype,
                                                         "config": config_dict(getattr(learner, "config", None)),
                                                         "env_kwargs": kwargs, "calibrate": calibrate},
                                     replaying=None if record is None else (lambda: record.replaying))
        use_tracking = getattr(learner, "use_tracking", None)
        if callable(use_tracking):  # the agent's own statistics go into the same run (SB3's logger)
            use_tracking(Path(tensorboard))
    started = time.time()
    with LiveMonitor(base, label or name, enabled=progress), tracker:
        base.budget.max_calls -= reserve  # the agent sees the budget without calibration's calls
        try:
            result = learner.learn(env)
        finally:
            base.budget.max_calls += reserve
        if calibrate:
            members = len(result.members) if result.is_set else 1
            if members > reserve:
                raise PromptGymError(f"agent {name!r} returned {members} members but declared max_members = "
                                     f"{reserve}: calibration would exceed the budget")
            result = calibrate_result(env, result)
    seconds = time.time() - started
    replayed = 0
    if record is not None:
        replayed = record.replayed_calls
        base.record_calls(None)
    if base.budget.calls > budget:  # cannot happen through the env; checked anyway
        raise PromptGymError(f"agent used {base.budget.calls} calls, over the budget of {budget}")
    return Run(result, env, learner, name, seconds, replayed)


def check_calibration_request(agent: str, env_kwargs: dict[str, Any] | None) -> None:
    """Refuse ``calibrate=True`` before the model loads where it cannot work: a label-only env, or an
    agent that already fits a label bias (the calibrated baseline)."""
    check_calibratable(str((env_kwargs or {}).get("reward", "ce")))
    if agent in AGENT_REGISTRY and AGENT_REGISTRY[agent].fits_label_bias:
        raise IncompatibleAgentError(f"agent {agent!r} fits a label bias itself; calibrating it again would fit a "
                                     "bias on top of a bias")


# ---------------------------------------------------------------------------------------------- test split
@dataclass
class TestScore:
    """A Result's predictions on the test split and what leaderboards report of them.

    ``probs`` is the combined predictive distribution (smoothed vote shares for "vote" sets), the one
    the uncertainty ``metrics`` (ECE, NLL, Brier, AURC) are computed from; ``approximate`` is set
    when the backend flagged its scores approximate (they cannot be verified).
    """

    metric: float
    predictions: np.ndarray
    ece: float
    n: int
    probs: np.ndarray | None = None
    labels: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    approximate: bool = False


TestScore.__test__ = False  # type: ignore[attr-defined]  # not a pytest class, despite its name


def member_probs(env: gym.Env, result: Result, segments: Segments | None = None, labels: np.ndarray | None = None,
                 dtype: str | None = "float32") -> np.ndarray:
    """The combined predictive distribution ``(n, C)`` of ``result``'s members, uncharged.

    On the env task's test split (``segments`` None) or on given rendered rows (e.g. OOD inputs
    rendered with the in-domain label words; ``labels`` are then not needed, the distribution does
    not depend on them). Per-member label biases apply; "vote" sets give their smoothed vote shares.
    """
    del labels  # the distribution does not depend on gold labels; kept for callers that have them
    scores = _member_scores(env, result, segments, dtype)
    return _combine(result, scores)[0]


def score_test(env: gym.Env, result: Any, dtype: str | None = "float32") -> TestScore:
    """Score ``result`` on the task's test split, outside any budget.

    Handles every kind of Result: an action of the env, a label bias (added to the label scores
    before the argmax), in-context demonstrations, a white-box soft prompt and a prompt set (every
    member scored, in one LM call, and combined by the Result's rule). ``dtype`` "float32"
    (default) re-checks bf16 searches in fp32; None scores with the env's own LM.
    """
    base = env.unwrapped
    test = load_split(base.spec_task, "test", None, base.data_dir)
    scores = _member_scores(env, result, None, dtype)
    probs, predictions = _combine(result, scores)
    labels = np.asarray(test.labels)
    approximate = bool(scores.lm.approximate) or scores.approximate
    return TestScore(float(compute_metric(base.spec_task.metric, labels, predictions)), predictions,
                     expected_calibration_error(probs, labels), len(labels), probs, labels,
                     _uncertainty(probs, labels), approximate)


score_test.__test__ = False  # type: ignore[attr-defined]


def test_requests(env: gym.Env, result: Result) -> list[ScoreRequest]:
    """The requests :func:`score_test` sends its LM for ``result``: one per member, every test row. A
    verifier rebuilds them to find the submitted prompts among a usage receipt's calls
    (:mod:`promptgym.bench.receipts`)."""
    base = env.unwrapped
    scorer = base.scorer.with_lm(base.lm, reward_kind="ce")
    segments = tuple(scorer.segments(load_split(base.spec_task, "test", None, base.data_dir)))
    return [ScoreRequest(p, segments, scorer.template.verbalizers, scorer.label_only)
            for p, _ in member_prompts(env, result)]


@dataclass
class _Scores:
    lm: Any
    label_logprobs: np.ndarray  # (K, n, C)
    predictions: np.ndarray  # (K, n) the LM's own argmax (exact for a one-member set)
    weights: np.ndarray  # (K,) normalised
    approximate: bool


def _member_scores(env: gym.Env, result: Result, segments: Segments | None, dtype: str | None) -> _Scores:
    """Every member's label log-probs on test (cached per prompt) or on ``segments``, in ONE LM call."""
    base = env.unwrapped
    scorer = base.scorer.with_lm(in_dtype(base.lm, dtype), reward_kind="ce")
    members = member_prompts(env, result)
    prompts = [p for p, _ in members]
    weights = np.array([w for _, w in members])
    if segments is not None:
        words = base.template.verbalizers
        out = scorer.lm.score([ScoreRequest(p, tuple(segments), words, False) for p in prompts])
        return _Scores(scorer.lm, np.stack([np.asarray(r.label_logprobs, np.float64) for r in out]),
                       np.stack([np.asarray(r.predictions) for r in out]), weights,
                       any(is_approximate(r) for r in out))
    test = load_split(base.spec_task, "test", None, base.data_dir)
    keys = [(id(scorer.lm), test.sha256, base.template, base.prompt_position, _prompt_key(p)) for p in prompts]
    found = {}
    for key in keys:
        hit = _TEST_SCORES.get(key)
        if hit is not None and hit[0] is scorer.lm:  # the LM is kept in the entry: ids stay unique
            found[key] = hit
            _TEST_SCORES.move_to_end(key)
    first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a repeated member is scored once
    todo = sorted(i for key, i in first.items() if key not in found)
    if todo:
        outcomes = scorer.score([prompts[i] for i in todo], test)
        for i, o in zip(todo, outcomes):
            entry = (scorer.lm, np.asarray(o.label_logprobs, np.float64), np.asarray(o.predictions), o.approximate)
            found[keys[i]] = entry
            _remember(keys[i], entry)
    entries = [found[key] for key in keys]
    return _Scores(scorer.lm, np.stack([e[1] for e in entries]), np.stack([e[2] for e in entries]), weights,
                   any(e[3] for e in entries))


def _combine(result: Result, scores: _Scores) -> tuple[np.ndarray, np.ndarray]:
    """(combined probs, predictions); a one-member "mean" set keeps the LM's own argmax bit for bit."""
    k, _, c = scores.label_logprobs.shape
    bias = member_biases(result, k, c)
    probs, preds = combine_set(scores.label_logprobs, scores.weights, result.combine, bias)
    if k == 1 and result.combine == "mean":
        preds = scores.predictions[0] if bias is None else np.argmax(scores.label_logprobs[0] + bias[0], axis=1)
    return probs, np.asarray(preds)


def _uncertainty(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return probability_metrics(probs, labels)


# the test label scores of recent prompts, least recently used first: a calibrated Result shares the
# manual template's scores (only the bias differs), and a prompt set re-scored or compared with its
# own best member costs nothing more. Bounded by stored score cells, not entries (sets can be large).
_TEST_SCORES: OrderedDict[tuple, tuple[Any, np.ndarray, np.ndarray, bool]] = OrderedDict()
TEST_CACHE_CELLS = 8_000_000  # label scores kept (64 MB of float64)


def _remember(key: tuple, entry: tuple[Any, np.ndarray, np.ndarray, bool]) -> None:
    _TEST_SCORES[key] = entry
    total = sum(e[1].size for e in _TEST_SCORES.values())
    while total > TEST_CACHE_CELLS and len(_TEST_SCORES) > 1:
        _, old = _TEST_SCORES.popitem(last=False)
        total -= old[1].size


def _prompt_key(prompt: Prompt) -> tuple:
    if isinstance(prompt, SoftPrompt):
        arr = np.ascontiguousarray(prompt.embeds, dtype=np.float32)
        return ("soft", arr.shape, arr.tobytes())
    return ("tokens", tuple(prompt.ids))
