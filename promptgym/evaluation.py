"""How a Result is scored outside the budget: on the test split, on train/dev rows or on OOD rows.

Why a module of its own: the leaderboard's test metric, a verifier's re-score, OOD detection and
the analysis scripts must all score a Result the same way, so one owner, :class:`Evaluator`, does
it — every path through the env's :class:`~promptgym.envs.scoring.Scorer` (the code that computed
the rewards), every path returning the one :class:`TestScore`. It needs no env: only the scorer
(its LM, task, template and prompt position), the data folder and the map from a Result's actions
to LM prompts (``prompt_of`` / ``text_prompt``). That map is the one thing only an env knows (a
subspace env's projection), so :meth:`Evaluator.for_env` builds an evaluator from an env, and the
protocol (:mod:`promptgym.bench.evaluate`) still makes one env per seed to have it.

Test scores follow the rule "search in bf16, report in fp32": by default a prompt is re-scored with
the same model loaded in fp32 (bf16 moves single logits by up to ~0.3), uncharged: the test split
never enters an env.

The label scores of recent prompts are kept in a bounded LRU :class:`ScoreCache` (a calibrated
Result shares its template's scores, a set re-scored or compared with its best member costs
nothing more). An evaluator built with the constructor owns a private cache; evaluators built by
:meth:`Evaluator.for_env` share the cache of the env's LM (:func:`shared_cache`), since callers
holding only an env build one per score and would otherwise re-score a template per call.
Given a :class:`~promptgym.score_store.ScoreStore`, split and OOD scores also outlive the process
(a resumed sweep or another entry's process reads them back instead of scoring again).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from promptgym.agent import Result
from promptgym.envs.scoring import Scorer, Segments, is_approximate
from promptgym.lm import in_dtype
from promptgym.lm.base import BlackBoxLM, Prompt, ScoreRequest, SoftPrompt, TokenPrompt
from promptgym.members import combine_set, member_biases, member_prompts
from promptgym.metrics import compute_metric, probability_metrics
from promptgym.metrics.stats import expected_calibration_error
from promptgym.score_store import ScoreStore
from promptgym.tasks import load_split
from promptgym.tasks.data import TaskSplit, rows_fingerprint

#: the splits an :class:`Evaluator` scores on ("train"/"dev": the env's 16-shot split of its ``split_seed``)
SPLITS = ("test", "train", "dev")
#: label scores a :class:`ScoreCache` keeps by default (64 MB of float64)
TEST_CACHE_CELLS = 8_000_000


@dataclass
class TestScore:
    """A Result's predictions on a split (the test split unless said otherwise) and what leaderboards
    report of them.

    ``probs`` is the combined predictive distribution (smoothed vote shares for "vote" sets), the one
    the uncertainty ``metrics`` (ECE, NLL, Brier, AURC) are computed from; ``approximate`` is set
    when the backend flagged its scores approximate (they cannot be verified). On rows without gold
    labels (OOD rows) ``metric`` and ``ece`` are NaN, ``labels`` None and ``metrics`` empty.
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


class PromptMap(Protocol):
    """What an evaluator needs of an env: the LM prompt of an action and of a text prefix
    (an env's ``unwrapped`` is one)."""

    def prompt_of(self, action: Any) -> Prompt: ...

    def text_prompt(self, text: str) -> TokenPrompt: ...


# ---------------------------------------------------------------------------------------------- the cache
@dataclass(frozen=True)
class CachedScores:
    """One prompt's label scores on one split, with the LM that scored them."""

    lm: Callable[[], Any]  # the scoring LM (a weak reference when it allows one): a hit must be that LM
    label_logprobs: np.ndarray  # (n, C) float64
    predictions: np.ndarray  # (n,) the LM's own argmax
    approximate: bool


class ScoreCache:
    """Label scores of recent prompts, least recently used first, bounded by stored score cells
    (not entries: a set's members may be many).

    A key holds ``id()`` of the scoring LM; the entry keeps the LM itself (weakly where possible,
    so the cache keeps no model alive), and a hit requires that very LM: a reused id cannot alias.
    """

    def __init__(self, max_cells: int = TEST_CACHE_CELLS) -> None:
        self.max_cells = int(max_cells)
        self._entries: OrderedDict[tuple, CachedScores] = OrderedDict()
        self._cells = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cells(self) -> int:
        """Label scores stored now."""
        return self._cells

    def get(self, key: tuple, lm: Any) -> CachedScores | None:
        """The entry of ``key`` scored by ``lm`` (now the most recently used), or None."""
        hit = self._entries.get(key)
        if hit is None or hit.lm() is not lm:
            return None
        self._entries.move_to_end(key)
        return hit

    def put(self, key: tuple, lm: Any, label_logprobs: np.ndarray, predictions: np.ndarray,
            approximate: bool) -> CachedScores:
        """Store ``lm``'s scores under ``key``, evicting the least recently used beyond ``max_cells``
        (the newest entry is always kept)."""
        try:
            ref: Callable[[], Any] = weakref.ref(lm)
        except TypeError:  # an LM without weak references is kept alive, as it is in use anyway
            ref = _Strong(lm)
        entry = CachedScores(ref, label_logprobs, predictions, approximate)
        old = self._entries.pop(key, None)
        if old is not None:
            self._cells -= old.label_logprobs.size
        self._entries[key] = entry
        self._cells += entry.label_logprobs.size
        while self._cells > self.max_cells and len(self._entries) > 1:
            _, gone = self._entries.popitem(last=False)
            self._cells -= gone.label_logprobs.size
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self._cells = 0


@dataclass(frozen=True)
class _Strong:
    obj: Any

    def __call__(self) -> Any:
        return self.obj


# one cache per LM for :meth:`Evaluator.for_env`: the scores are the LM's whichever env asked, and a
# caller holding only an env builds an evaluator per score. Weakly keyed: it goes with its LM.
_SHARED: weakref.WeakKeyDictionary[Any, ScoreCache] = weakref.WeakKeyDictionary()


def shared_cache(lm: BlackBoxLM) -> ScoreCache:
    """The cache evaluators built by :meth:`Evaluator.for_env` on an env of ``lm`` share (a new
    private one if ``lm`` takes no weak reference)."""
    try:
        cache = _SHARED.get(lm)
        if cache is None:
            cache = _SHARED[lm] = ScoreCache()
        return cache
    except TypeError:
        return ScoreCache()


def _prompt_key(prompt: Prompt) -> tuple:
    if isinstance(prompt, SoftPrompt):
        arr = np.ascontiguousarray(prompt.embeds, dtype=np.float32)
        return ("soft", arr.shape, arr.tobytes())
    return ("tokens", tuple(prompt.ids))


# ---------------------------------------------------------------------------------------------- the evaluator
class _AsEnv:
    """A prompt map in the shape :func:`promptgym.members.member_prompts` reads (``env.unwrapped``)."""

    def __init__(self, prompts: PromptMap) -> None:
        self.unwrapped = prompts


@dataclass
class _Scores:
    lm: Any
    label_logprobs: np.ndarray  # (K, n, C)
    predictions: np.ndarray  # (K, n) the LM's own argmax (exact for a one-member set)
    weights: np.ndarray  # (K,) normalised
    approximate: bool


class Evaluator:
    """Scores Results uncharged on the test split, on train/dev rows or on given rendered rows.

    Handles every kind of Result: an action of the env, a label bias (added to the label scores
    before the argmax), in-context demonstrations, a white-box soft prompt and a prompt set (every
    member scored, in one LM call, and combined by the Result's rule).

    :param scorer: the env's scorer (its LM, task, template and prompt position); label log-probs are
        asked for whatever its reward
    :param prompts: the LM prompt of an action and of a text prefix (an env's ``unwrapped``)
    :param data_dir: the data folder splits are read from (None: the configured default)
    :param split_seed: the 16-shot split of the "train" and "dev" rows (not needed for test)
    :param cache: where label scores are kept (None: a new cache of this evaluator's own)
    :param test_rows: the test rows scored, as sorted indices (None: all of them); the protocol's lite
        tier scores a fixed label-stratified subsample of a large test split
        (:func:`promptgym.bench.schema.protocol_test_rows`)
    :param store: keep split and OOD scores on disk too (None: in memory only); a verifier passes none
    """

    def __init__(self, scorer: Scorer, prompts: PromptMap, data_dir: str | PathLike[str] | None = None,
                 split_seed: int | None = None, cache: ScoreCache | None = None,
                 test_rows: np.ndarray | None = None, store: ScoreStore | None = None) -> None:
        self.scorer, self.prompts = scorer, prompts
        self.data_dir, self.split_seed = data_dir, split_seed
        self.cache = ScoreCache() if cache is None else cache
        self.test_rows = None if test_rows is None else np.asarray(test_rows, dtype=np.int64)
        self.store = store

    @classmethod
    def for_env(cls, env: gym.Env, cache: ScoreCache | None = None, test_rows: np.ndarray | None = None,
                store: ScoreStore | None = None) -> Evaluator:
        """The evaluator of ``env``'s scorer, prompts, data and split (cache None: the LM's
        :func:`shared_cache`)."""
        base = env.unwrapped
        return cls(base.scorer, base, base.data_dir, base.split_seed,
                   shared_cache(base.lm) if cache is None else cache, test_rows, store)

    def split(self, name: str = "test") -> TaskSplit:
        """The rows of split ``name`` (one of :data:`SPLITS`)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return load_split(self.scorer.task, name, None if name == "test" else self.split_seed, self.data_dir)

    def rows(self, name: str = "test") -> np.ndarray | None:
        """The rows of split ``name`` this evaluator scores (None: all of them)."""
        return self.test_rows if name == "test" else None

    def labels(self, name: str = "test") -> np.ndarray:
        """The gold labels of the rows of split ``name`` this evaluator scores."""
        labels, rows = np.asarray(self.split(name).labels), self.rows(name)
        return labels if rows is None else labels[rows]

    def members(self, result: Result) -> list[tuple[Prompt, float]]:
        """``(LM prompt, normalised weight)`` of every member of ``result``."""
        return member_prompts(_AsEnv(self.prompts), result)  # type: ignore[arg-type]  # reads .unwrapped only

    def score(self, result: Result, split: str = "test", *, segments: Segments | None = None,
              labels: Sequence[int] | np.ndarray | None = None, dtype: str | None = "float32") -> TestScore:
        """``result``'s scores on ``split`` or, given ``segments``, on those rendered rows instead (e.g.
        OOD inputs rendered with the task's label words; ``labels``, if any, their gold labels). Split
        rows are cached per prompt; given rows are not (they are scored once, in one LM call).

        ``dtype`` "float32" (default) re-checks bf16 searches in fp32; None scores with the scorer's own LM.
        """
        scores = self._member_scores(result, split, segments, dtype)
        probs, predictions = _combine(result, scores)
        approximate = bool(scores.lm.approximate) or scores.approximate
        if segments is None:
            labels = self.labels(split)
        if labels is None:
            return TestScore(float("nan"), predictions, float("nan"), len(predictions), probs, None, {}, approximate)
        gold = np.asarray(labels)
        return TestScore(float(compute_metric(self.scorer.task.metric, gold, predictions)), predictions,
                         expected_calibration_error(probs, gold), len(gold), probs, gold,
                         _uncertainty(probs, gold), approximate)

    def probs(self, result: Result, split: str = "test", *, segments: Segments | None = None,
              dtype: str | None = "float32") -> np.ndarray:
        """The combined predictive distribution ``(n, C)`` of ``result``'s members on ``split`` or on
        ``segments`` (it does not depend on gold labels). Per-member label biases apply; "vote" sets
        give their smoothed vote shares."""
        return _combine(result, self._member_scores(result, split, segments, dtype))[0]

    def requests(self, result: Result, split: str = "test", dtype: str | None = None) -> list[ScoreRequest]:
        """The requests :meth:`score` sends its LM for ``result`` on ``split``: one per member, every
        row. A verifier rebuilds them to find the submitted prompts among a usage receipt's calls
        (:mod:`promptgym.bench.receipts`). ``dtype`` only picks the LM whose mask token renders the rows."""
        scorer = self.scorer.with_lm(in_dtype(self.scorer.lm, dtype), reward_kind="ce")
        segments, rows = scorer.segments(self.split(split)), self.rows(split)
        if rows is not None:
            segments = tuple(segments[i] for i in rows)
        return scorer.requests([p for p, _ in self.members(result)], segments)

    def _member_scores(self, result: Result, split: str, segments: Segments | None, dtype: str | None) -> _Scores:
        """Every member's label log-probs on ``split`` (cached per prompt) or on ``segments``, in ONE LM call."""
        scorer = self.scorer.with_lm(in_dtype(self.scorer.lm, dtype), reward_kind="ce")
        members = self.members(result)
        prompts = [p for p, _ in members]
        weights = np.array([w for _, w in members])
        scoring = scorer if self.store is None else scorer.with_lm(self.store.view(scorer.lm))  # type: ignore[arg-type]
        if segments is not None:
            out = scoring.score_segments(prompts, segments)
            return _Scores(scorer.lm, np.stack([np.asarray(r.label_logprobs, np.float64) for r in out]),
                           np.stack([np.asarray(r.predictions) for r in out]), weights,
                           any(is_approximate(r) for r in out))
        rows, subset = self.split(split), self.rows(split)
        which = None if subset is None else rows_fingerprint(subset)
        keys = [(id(scorer.lm), rows.sha256, which, scorer.template, scorer.prompt_position, _prompt_key(p))
                for p in prompts]
        found: dict[tuple, CachedScores] = {}
        for key in keys:
            hit = self.cache.get(key, scorer.lm)
            if hit is not None:
                found[key] = hit
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a repeated member is scored once
        todo = sorted(i for key, i in first.items() if key not in found)
        if todo:
            outcomes = scoring.score([prompts[i] for i in todo], rows, rows=subset)
            for i, o in zip(todo, outcomes):
                found[keys[i]] = self.cache.put(keys[i], scorer.lm, np.asarray(o.label_logprobs, np.float64),
                                                np.asarray(o.predictions), o.approximate)
        entries = [found[key] for key in keys]
        return _Scores(scorer.lm, np.stack([e.label_logprobs for e in entries]),
                       np.stack([e.predictions for e in entries]), weights, any(e.approximate for e in entries))


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


def score_test(env: gym.Env, result: Result, dtype: str | None = "float32") -> TestScore:
    """``result`` scored on ``env``'s test split: ``Evaluator.for_env(env).score(result, dtype=dtype)``
    (for callers that hold an env and score once)."""
    return Evaluator.for_env(env).score(result, dtype=dtype)


score_test.__test__ = False  # type: ignore[attr-defined]

__all__ = ["SPLITS", "TEST_CACHE_CELLS", "CachedScores", "Evaluator", "PromptMap", "ScoreCache", "TestScore",
           "score_test", "shared_cache"]
