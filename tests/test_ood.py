"""OOD detection (``promptgym.bench.ood``): the pairs, how OOD rows are rendered and scored, and the
metrics' range and determinism, on the tiny models; one short check on the real model."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the envs)
from promptgym.agent import Result
from promptgym.bench import ood
from promptgym.bench.uncertainty import ood_auroc
from promptgym.envs.scoring import render_rows
from promptgym.errors import UnknownTaskError
from promptgym.runner import member_probs
from promptgym.tasks import load_split
from promptgym.tasks.catalog import TASKS


def _env(env_id: str, model: str = "tiny-random-causal", **kwargs) -> gym.Env:
    return gym.make(env_id, model=model, dtype="float32", budget=10, **kwargs)


def _template_result() -> Result:
    return Result("manual", None, "", 0.0, None, 0)


def test_pairs_are_the_issues_list_and_every_task_has_a_mirrored_test_split(data_dir: Path) -> None:
    assert ood.OOD_PAIRS == {"sst2": ("rte",), "yelpp": ("rte",), "mrpc": ("rte",), "rte": ("mrpc", "mnli"),
                             "snli": ("mrpc", "mnli"), "agnews": ("mrpc",), "dbpedia": ("agnews",)}
    manifest = json.loads((data_dir / "manifest.json").read_text())
    tasks = manifest.get("tasks", manifest)
    for task, others in ood.OOD_PAIRS.items():
        for name in (task, *others):
            assert name in TASKS, name
            assert "test.jsonl" in tasks[name]["files"] and (data_dir / name / "test.jsonl").is_file(), name
        assert task not in others
    assert ood.ood_tasks("cola") == () and ood.ood_tasks("rte") == ("mrpc", "mnli")
    with pytest.raises(UnknownTaskError, match="unknown task 'sst-2'"):
        ood.ood_tasks("sst-2")


def test_capped_rows_are_a_fixed_sorted_subset() -> None:
    np.testing.assert_array_equal(ood.ood_rows(277), np.arange(277))
    rows = ood.ood_rows(7600)
    assert rows.size == ood.OOD_MAX_ROWS and np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < 7600
    np.testing.assert_array_equal(rows, ood.ood_rows(7600))  # deterministic
    assert rows.max() > 5000  # spread over the split, not its first rows
    assert ood.ood_rows(10, max_rows=3).size == 3


def test_ood_rows_use_their_own_template_with_the_in_domain_label_words() -> None:
    env = _env("PromptYelpP-v0")  # as SST-2 (same template and words), without building a 67k-row vocabulary
    template = ood.ood_template(env, "rte")
    assert (template.body, template.cue) == (TASKS["rte"].causal.body, TASKS["rte"].causal.cue)
    assert template.verbalizers == TASKS["yelpp"].causal.verbalizers == ("terrible", "great")
    rte = load_split("rte", "test")
    segments = ood.ood_segments(env, "rte")
    assert len(segments) == len(rte) == 277
    left, right = segments[0]
    assert left == "" and right.startswith(rte.texts[0]) and rte.text_pairs[0] in right  # the pair is kept
    assert right.endswith("\nTrue or false? Answer:")

    after = _env("PromptYelpP-v0", prompt_position="after")
    left, right = ood.ood_segments(after, "rte")[0]
    assert left == f"{rte.texts[0]}\nQuestion: {rte.text_pairs[0]}" and right == "\nTrue or false? Answer:"


def test_a_masked_lm_gets_the_ood_tasks_masked_template() -> None:
    env = _env("PromptRTE-v0", model="tiny-random-masked")
    template = ood.ood_template(env, "mnli")
    assert (template.body, template.cue) == (TASKS["mnli"].masked.body, TASKS["mnli"].masked.cue)
    assert template.verbalizers == TASKS["rte"].masked.verbalizers
    mask = env.unwrapped.lm.mask_token
    mnli = load_split("mnli", "test")
    first = int(ood.ood_rows(len(mnli))[0])  # MNLI's 1,000 rows are capped to a fixed subset
    assert ood.ood_segments(env, "mnli")[0] == ("", f"{mnli.texts[first]} ? {mask}, {mnli.text_pairs[first]}")


def test_a_large_ood_split_is_capped_to_the_fixed_subset() -> None:
    env = _env("PromptDBPedia-v0")
    agnews = load_split("agnews", "test")
    full = render_rows(ood.ood_template(env, "agnews"), agnews, "before", None)
    segments = ood.ood_segments(env, "agnews")
    assert len(segments) == ood.OOD_MAX_ROWS
    assert segments == tuple(full[i] for i in ood.ood_rows(len(agnews)))


def test_ood_metrics_score_every_member_on_ood_rows_with_in_domain_words(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env("PromptMRPC-v0")
    base = env.unwrapped
    space = env.action_space
    space.seed(0)
    result = Result("ensemble", None, "", 0.0, None, 0, members=[space.sample(), space.sample()], weights=[1.0, 3.0])
    requests = []
    score = base.lm.score

    def spy(reqs):
        requests.extend(reqs)
        return score(reqs)

    monkeypatch.setattr(base.lm, "score", spy)
    out = ood.ood_metrics(env, result)
    assert set(out) == {"rte"} and set(out["rte"]) == {"auroc_maxprob", "auroc_entropy"}
    assert all(0.0 <= v <= 1.0 for v in out["rte"].values())
    segments = ood.ood_segments(env, "rte")
    on_ood = [r for r in requests if r.segments == segments]
    assert len(on_ood) == 2  # each member scored on the OOD rows
    assert all(r.label_words == ("No", "Yes") and not r.label_only for r in on_ood)  # MRPC's words, not RTE's
    assert {tuple(r.prompt.ids) for r in on_ood} == {tuple(base.prompt_of(m).ids) for m in result.members}

    again = ood.ood_metrics(env, result)
    assert again == out  # deterministic
    p_in = member_probs(env, result)
    assert ood.ood_metrics(env, result, probs_in=p_in) == out
    p_out = member_probs(env, result, segments=segments)
    assert out["rte"]["auroc_maxprob"] == ood_auroc(p_in, p_out, "maxprob")


def test_a_task_without_pairs_costs_no_lm_call(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env("PromptCoLA-v0")

    def fail(reqs):
        raise AssertionError("no LM call expected")

    monkeypatch.setattr(env.unwrapped.lm, "score", fail)
    assert ood.ood_metrics(env, _template_result()) == {}


@pytest.mark.integration
def test_real_model_reads_rte_pairs_with_the_sst2_label_words() -> None:
    """SmolLM2 (fp32), the SST-2 template alone: 16 SST-2 test rows against 16 RTE rows rendered as
    RTE and read with " terrible"/" great". Only 16 + 16 rows, to keep the check short: the full
    splits take minutes (the full-split AUROC measured 0.704 by either score)."""
    env = gym.make("PromptSST2-v0", budget=10)
    result = _template_result()
    in_domain = env.unwrapped.scorer.segments(load_split("sst2", "test"))[:16]
    p_in = member_probs(env, result, segments=in_domain)
    p_out = member_probs(env, result, segments=ood.ood_segments(env, "rte")[:16])
    for p in (p_in, p_out):
        assert p.shape == (16, 2) and np.allclose(p.sum(axis=1), 1.0) and np.all(p > 0)
    for score in ("maxprob", "entropy"):
        assert 0.0 <= ood_auroc(p_in, p_out, score) <= 1.0
