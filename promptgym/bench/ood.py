"""Out-of-distribution detection: can a tuned prompt tell its own task's inputs from another task's?

A prompt (or prompt set) that knows what it does not know should be less confident on inputs of
another task. Each in-domain task is paired with several other mirrored tasks (:data:`OOD_PAIRS`).
The OOD task's test inputs are rendered with **the OOD task's own template** (its body and answer
cue: an RTE pair still reads as premise + question) and scored with **the in-domain label words**,
through the in-domain prompt(s) — exactly what a deployed SST-2 prompt would do when handed an RTE
question. The detection score is the in-domain model's confidence (max-probability, or minus the
entropy); :func:`ood_metrics` reports, per OOD task, the AUROC of separating the in-domain test rows
(positives) from the OOD rows (:func:`promptgym.metrics.uncertainty.ood_auroc`).

**Why several OOD tasks.** One pair cannot rank prompts on OOD detection: scored against RTE and
against a second NLI set, the max-prob AUROCs of the same committed SST-2 entries reverse
(calibrated template 0.57 -> 0.34, BBT 0.34 -> 0.70, 5 seeds each). What a prompt detects depends
on which OOD set it is handed, so every task is scored on a panel that varies the kind of shift,
and the leaderboard reports the mean over the panel with its spread (:mod:`promptgym.bench.ranking`).

**The panels** (every task with a labelled test split in the mirror; the version 1 pair, the
reference work's where both tasks are mirrored, is kept first in each):

* SST-2, Yelp P. (single-sentence sentiment): RTE and MNLI (sentence pairs: another input format;
  two NLI sets, since the ranking already reverses from one NLI set to another), AG News (single text, far domain:
  news) and CoLA (single short sentences, the near shift: the input looks like SST-2's).
* MRPC, RTE, SNLI (sentence pairs): two other pair tasks — RTE and MNLI for MRPC; MRPC and MNLI for
  RTE and SNLI — and SST-2 (single sentences: a format shift).
* QNLI (question + sentence): RTE and MRPC (pairs) and SST-2 (single sentences); it had none before.
* AG News: MRPC (pairs), SST-2 (single sentences: reviews) and DBPedia (the near shift: another
  topic-classification text). DBPedia: AG News (near), MRPC and SST-2.
* CoLA: none. Acceptability is defined on any English sentence, so another task's sentences are not
  out of its distribution; its OOD AUROC would measure grammaticality, not OOD detection.
* QQP: none (no test split is mirrored, so no in-domain test rows).

**Versions.** The protocol's first version scored the reference work's pairs only
(:data:`OOD_PAIRS_V1`: one OOD task per task, two for RTE and SNLI); runs and leaderboard entries
of that time carry only those keys in ``test.ood``. New runs score every pair of
:data:`OOD_PAIRS`. The key set of a record says which version it follows: a record may carry
exactly the pair set of one version (:func:`ood_pair_sets`), and verification re-scores exactly the
keys it carries; a key that is no known pair of the task is refused
(:func:`promptgym.bench.evaluate.verify`).

Large OOD test splits are capped at :data:`OOD_MAX_ROWS` rows, a fixed subset (see
:func:`ood_rows`): of the paired tasks SST-2 (872 rows), MNLI (1,000), CoLA (1,043), DBPedia (4,113)
and AG News (7,600) exceed it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from promptgym.agent import Result
from promptgym.envs.scoring import Segments, render_rows
from promptgym.errors import ConfigError, UnknownTaskError
from promptgym.evaluation import Evaluator
from promptgym.metrics.uncertainty import OOD_SCORES, ood_auroc
from promptgym.score_store import ScoreStore
from promptgym.tasks import load_split
from promptgym.tasks.catalog import TASKS
from promptgym.tasks.spec import Template

__all__ = ["OOD_MAX_ROWS", "OOD_PAIRS", "OOD_PAIRS_V1", "OOD_PAIR_VERSIONS", "OOD_SUBSET_SEED", "known_ood_tasks",
           "ood_metrics", "ood_pair_sets", "ood_rows", "ood_segments", "ood_tasks", "ood_template"]

#: in-domain task -> its OOD tasks, as new runs score them (see the module docstring for the choice)
OOD_PAIRS: dict[str, tuple[str, ...]] = {
    "sst2": ("rte", "mnli", "agnews", "cola"),
    "yelpp": ("rte", "mnli", "agnews", "cola"),
    "mrpc": ("rte", "mnli", "sst2"),
    "rte": ("mrpc", "mnli", "sst2"),
    "snli": ("mrpc", "mnli", "sst2"),
    "qnli": ("rte", "mrpc", "sst2"),
    "agnews": ("mrpc", "sst2", "dbpedia"),
    "dbpedia": ("agnews", "mrpc", "sst2"),
}

#: the pairs of protocol version 1 (the reference work's where both tasks are mirrored): what runs
#: and leaderboard entries recorded before the panels carry; they still verify
OOD_PAIRS_V1: dict[str, tuple[str, ...]] = {
    "sst2": ("rte",),
    "yelpp": ("rte",),
    "mrpc": ("rte",),
    "rte": ("mrpc", "mnli"),
    "snli": ("mrpc", "mnli"),
    "agnews": ("mrpc",),
    "dbpedia": ("agnews",),
}

#: every version's pairs, oldest first; the last is :data:`OOD_PAIRS`
OOD_PAIR_VERSIONS: tuple[dict[str, tuple[str, ...]], ...] = (OOD_PAIRS_V1, OOD_PAIRS)

# At most this many OOD rows per pair: every member of a prompt set scores every OOD row (an RTE
# entry's 20-member set would otherwise score 28,000 long MNLI/MRPC rows per seed). The AUROC's
# standard error is at most about sqrt((n_in + n_out + 1) / (12 n_in n_out)) (its value at chance):
# with the smallest in-domain split (RTE, 277 rows) 0.022 at 500 OOD rows, 0.020 at 1,000 and 0.018
# at 7,600, so the cap costs little precision; the in-domain split limits it either way.
OOD_MAX_ROWS = 500
OOD_SUBSET_SEED = 0  # the subset of a capped split is fixed: every entry is scored on the same rows


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def ood_tasks(task: str) -> tuple[str, ...]:
    """The OOD tasks a new run of ``task`` (a catalog name) is scored on, () when it has none."""
    _check_task(task)
    return OOD_PAIRS.get(task, ())


def ood_pair_sets(task: str) -> tuple[frozenset[str], ...]:
    """The OOD task sets a run record of ``task`` may carry in ``test.ood``: one per protocol
    version (oldest first, repeats dropped; the empty set when a version had no pair)."""
    _check_task(task)
    out: list[frozenset[str]] = []
    for pairs in OOD_PAIR_VERSIONS:
        tasks = frozenset(pairs.get(task, ()))
        if tasks not in out:
            out.append(tasks)
    return tuple(out)


def known_ood_tasks(task: str) -> tuple[str, ...]:
    """Every OOD task ``task`` was ever paired with (any version), current pairs first."""
    _check_task(task)
    return tuple(dict.fromkeys(t for pairs in reversed(OOD_PAIR_VERSIONS) for t in pairs.get(task, ())))


def ood_template(env: gym.Env, ood_task: str) -> Template:
    """The template OOD rows are scored with: the OOD task's own body and cue, for the env's LM kind
    (masked or causal), with the env's (in-domain) label words."""
    base = env.unwrapped
    spec = TASKS[ood_task]
    own = spec.masked if base.lm.is_masked else spec.causal
    return dataclasses.replace(own, verbalizers=base.template.verbalizers)


def ood_rows(n: int, max_rows: int = OOD_MAX_ROWS) -> np.ndarray:
    """Indices of the rows of an ``n``-row OOD split that are scored: all of them up to ``max_rows``,
    else a fixed random subset of ``max_rows`` (seed :data:`OOD_SUBSET_SEED`), in split order."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(OOD_SUBSET_SEED).permutation(n)[:max_rows])


def ood_segments(env: gym.Env, ood_task: str) -> Segments:
    """The OOD task's (capped) test rows rendered for the env's LM: ``(left, right)`` per row, the
    prompt going between them at the env's prompt position, as for the env's own rows."""
    base = env.unwrapped
    split = load_split(ood_task, "test", None, base.data_dir)
    segments = render_rows(ood_template(env, ood_task), split, base.prompt_position,
                           base.lm.mask_token)
    return tuple(segments[i] for i in ood_rows(len(segments)))


def ood_metrics(env: gym.Env, result: Result, dtype: str | None = "float32",
                probs_in: np.ndarray | None = None,
                tasks: Sequence[str] | None = None, store: ScoreStore | None = None) -> dict[str, dict[str, float]]:
    """``{ood_task: {"auroc_maxprob": x, "auroc_entropy": y}}`` for every OOD task paired with the
    env's task ({} when it has none), uncharged.

    Both sides are scored by the env's :class:`~promptgym.evaluation.Evaluator`: the in-domain rows
    are the env task's test split (pass ``probs_in`` when already at hand), the OOD rows
    :func:`ood_segments`. ``dtype`` as in :meth:`~promptgym.evaluation.Evaluator.score`. ``tasks``:
    score only these OOD tasks (each a pair of the env's task in some version,
    :func:`known_ood_tasks`; a verifier re-scores what a record claims). ``store``: keep the OOD
    scores on disk too (:mod:`promptgym.score_store`).
    """
    base = env.unwrapped
    name = base.spec_task.name
    if tasks is None:
        pairs = ood_tasks(name)
    else:
        pairs = tuple(tasks)
        unknown = [t for t in pairs if t not in known_ood_tasks(name)]
        if unknown:
            raise ConfigError(f"{', '.join(map(repr, unknown))}: not an OOD task of {name} "
                              f"(its OOD tasks: {', '.join(known_ood_tasks(name)) or 'none'})")
    if not pairs:
        return {}
    evaluator = Evaluator.for_env(env, store=store)
    p_in = evaluator.probs(result, dtype=dtype) if probs_in is None else np.asarray(probs_in)
    out: dict[str, dict[str, float]] = {}
    for task in pairs:
        p_out = evaluator.probs(result, segments=ood_segments(env, task), dtype=dtype)
        out[task] = {f"auroc_{score}": ood_auroc(p_in, p_out, score) for score in OOD_SCORES}
    return out
