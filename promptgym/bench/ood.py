"""Out-of-distribution detection: can a tuned prompt tell its own task's inputs from another task's?

A prompt (or prompt set) that knows what it does not know should be less confident on inputs of
another task. Following the reference work's protocol, each in-domain task is paired with other
mirrored tasks (:data:`OOD_PAIRS`). The OOD task's test inputs are rendered with **the OOD task's
own template** (its body and answer cue: an RTE pair still reads as premise + question) and scored
with **the in-domain label words**, through the in-domain prompt(s) — exactly what a deployed
SST-2 prompt would do when handed an RTE question. The detection score is the in-domain model's
confidence (max-probability, or minus the entropy); :func:`ood_metrics` reports the AUROC of
separating the in-domain test rows (positives) from the OOD rows
(:func:`promptgym.bench.uncertainty.ood_auroc`).

Large OOD test splits are capped at :data:`OOD_MAX_ROWS` rows, a fixed subset (see
:func:`ood_rows`): of the paired tasks MNLI (1,000 rows) and AG News (7,600) exceed it.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from promptgym.agent import Result
from promptgym.bench.uncertainty import OOD_SCORES, ood_auroc
from promptgym.envs.scoring import Segments, render_rows
from promptgym.errors import UnknownTaskError
from promptgym.runner import member_probs
from promptgym.tasks import load_split
from promptgym.tasks.catalog import TASKS
from promptgym.tasks.spec import Template

__all__ = ["OOD_MAX_ROWS", "OOD_PAIRS", "OOD_SUBSET_SEED", "ood_metrics", "ood_rows", "ood_segments", "ood_tasks",
           "ood_template"]

#: in-domain task -> its OOD tasks: the reference work's pairs where both tasks are mirrored
OOD_PAIRS: dict[str, tuple[str, ...]] = {
    "sst2": ("rte",),
    "yelpp": ("rte",),
    "mrpc": ("rte",),
    "rte": ("mrpc", "mnli"),
    "snli": ("mrpc", "mnli"),
    "agnews": ("mrpc",),
    "dbpedia": ("agnews",),
}

# At most this many OOD rows per pair: every member of a prompt set scores every OOD row (an RTE
# entry's 20-member set would otherwise score 28,000 long MNLI/MRPC rows per seed). The AUROC's
# standard error is at most about sqrt((n_in + n_out + 1) / (12 n_in n_out)) (its value at chance):
# with the smallest in-domain split (RTE, 277 rows) 0.022 at 500 OOD rows, 0.020 at 1,000 and 0.018
# at 7,600, so the cap costs little precision; the in-domain split limits it either way.
OOD_MAX_ROWS = 500
OOD_SUBSET_SEED = 0  # the subset of a capped split is fixed: every entry is scored on the same rows


def ood_tasks(task: str) -> tuple[str, ...]:
    """The OOD tasks paired with ``task`` (a catalog name), () when it has none."""
    if task not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return OOD_PAIRS.get(task, ())


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
                           getattr(base.lm, "mask_token", None))
    return tuple(segments[i] for i in ood_rows(len(segments)))


def ood_metrics(env: gym.Env, result: Result, dtype: str | None = "float32",
                probs_in: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """``{ood_task: {"auroc_maxprob": x, "auroc_entropy": y}}`` for every OOD task paired with the
    env's task ({} when it has none), uncharged.

    The in-domain rows are the env task's test split, scored as in
    :func:`promptgym.runner.member_probs` (pass ``probs_in`` when already at hand). ``dtype`` as in
    :func:`promptgym.runner.score_test`.
    """
    base = env.unwrapped
    pairs = ood_tasks(base.spec_task.name)
    if not pairs:
        return {}
    p_in = member_probs(env, result, dtype=dtype) if probs_in is None else np.asarray(probs_in)
    out: dict[str, dict[str, float]] = {}
    for task in pairs:
        p_out = member_probs(env, result, segments=ood_segments(env, task), dtype=dtype)
        out[task] = {f"auroc_{score}": ood_auroc(p_in, p_out, score) for score in OOD_SCORES}
    return out
