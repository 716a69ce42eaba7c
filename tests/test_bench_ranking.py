"""The leaderboard's data side (``promptgym.bench.ranking``), checked on numbers rather than on pages.

Submissions are synthetic (see ``test_bench_schema.make_submission``): 40 test rows, and each seed
gets the labels with a chosen number of rows flipped, so the means and their order are known.
"""

from __future__ import annotations

import pytest
from test_bench_schema import TEST_LABELS, make_predictions, make_submission

from promptgym.agent import AGENT_REGISTRY, AgentSpec
from promptgym.bench.ranking import Table, baseline_agents, prompt_free_agents, rank, task_of


def _by_env(tables: list[Table]) -> dict[str, Table]:
    return {t.env_id: t for t in tables}


def test_baseline_sets_come_from_the_agent_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert baseline_agents() >= {"manual", "calibrated", "icl", "random"}
    assert prompt_free_agents() >= {"manual", "calibrated", "icl"} and "random" not in prompt_free_agents()
    assert "bbt" not in baseline_agents() and "my_agent" not in baseline_agents()  # unregistered: neither
    monkeypatch.setitem(AGENT_REGISTRY, "my_base", AgentSpec("my_base", "my_pkg:Base", baseline=True))
    assert "my_base" in baseline_agents() and "my_base" not in prompt_free_agents()


def test_rows_are_ranked_by_mean_and_ties_go_to_the_earlier_entry() -> None:
    subs = [make_submission("bbt", predictions=make_predictions(TEST_LABELS, [8] * 5), created="2025-02-01T00:00:00Z"),
            make_submission("random", predictions=make_predictions(TEST_LABELS, [16] * 5)),
            make_submission("bdpl", predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0])),
            make_submission("manual", predictions=make_predictions(TEST_LABELS, [8] * 5),
                            created="2025-01-01T00:00:00Z")]
    (table,) = rank(subs, {"PromptSST2-v0": TEST_LABELS})
    assert [r.agent for r in table.rows] == ["bdpl", "manual", "bbt", "random"]
    assert [r.rank for r in table.rows] == [1, 2, 3, 4]
    assert [r.mean for r in table.rows] == sorted((r.mean for r in table.rows), reverse=True)
    assert [r.is_baseline for r in table.rows] == [False, True, False, True]
    assert table.rows[0].preds is not None and len(table.rows[0].scores) == 5


def test_comparison_is_not_distinguishable_when_the_paired_ci_contains_zero() -> None:
    same = make_predictions(TEST_LABELS, [12, 11, 13, 12, 12])
    subs = [make_submission("bbt", predictions=same), make_submission("manual", predictions=same),
            make_submission("bdpl", predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0]))]
    (table,) = rank(subs, {"PromptSST2-v0": TEST_LABELS})
    rows = {r.agent: r for r in table.rows}
    manual, twin, strong = rows["manual"].versus, rows["bbt"].versus, rows["bdpl"].versus
    assert manual is not None and manual.is_self
    assert twin is not None and twin.ci is not None and twin.ci[0] <= 0 <= twin.ci[1]
    assert not twin.distinguishable and twin.baseline_key == rows["manual"].key
    assert strong is not None and strong.ci is not None and strong.ci[0] > 0 and strong.distinguishable
    assert not table.seed_only and not table.missing_baseline and table.borrowed == ()


def test_without_labels_the_comparison_falls_back_to_seed_ci_overlap() -> None:
    same = make_predictions(TEST_LABELS, [12, 11, 13, 12, 12])
    (table,) = rank([make_submission("bbt", predictions=same), make_submission("manual", predictions=same)], None)
    twin = next(r for r in table.rows if r.agent == "bbt").versus
    assert table.seed_only and twin is not None and twin.ci is None and not twin.distinguishable


def test_prompt_free_baselines_of_the_discrete_env_serve_the_subspace_table() -> None:
    bbt = make_submission("bbt", predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0]),
                          env_id="PromptSST2-Subspace-v0")
    manual = make_submission("manual", predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12]))
    rand = make_submission("random", predictions=make_predictions(TEST_LABELS, [1, 1, 1, 1, 1]))  # better, not shared
    labels = {"PromptSST2-v0": TEST_LABELS, "PromptSST2-Subspace-v0": TEST_LABELS}
    tables = _by_env(rank([bbt, manual, rand], labels))
    subspace = tables["PromptSST2-Subspace-v0"]
    versus = subspace.rows[0].versus
    assert versus is not None and versus.baseline_key == tables["PromptSST2-v0"].rows[1].key  # manual
    assert versus.ci is not None and versus.distinguishable and versus.diff > 0
    assert subspace.borrowed == (("manual", "PromptSST2-v0"),)
    assert tables["PromptSST2-v0"].borrowed == ()  # the discrete table's own baselines suffice


def test_each_model_gets_its_own_table_and_only_its_own_baselines() -> None:
    labels = {"PromptSST2-v0": TEST_LABELS, "PromptSST2-Subspace-v0": TEST_LABELS}
    small = [make_submission("bbt", env_id="PromptSST2-Subspace-v0",
                             predictions=make_predictions(TEST_LABELS, [0, 1, 0, 1, 0])),
             make_submission("manual", predictions=make_predictions(TEST_LABELS, [12, 11, 13, 12, 12]))]
    other = [make_submission("bbt", env_id="PromptSST2-Subspace-v0", model="gpt2", submitter="other",
                             predictions=make_predictions(TEST_LABELS, [2, 2, 2, 2, 2])),
             make_submission("bdpl", model="gpt2", submitter="other")]
    tables = rank(other + small, labels)
    assert [(t.env_id, t.model) for t in tables] == [  # env id, then the default model first
        ("PromptSST2-Subspace-v0", "smollm2-135m"), ("PromptSST2-Subspace-v0", "gpt2"),
        ("PromptSST2-v0", "smollm2-135m"), ("PromptSST2-v0", "gpt2")]
    assert all({r.model for r in t.rows} == {t.model} for t in tables)
    assert [r.rank for r in tables[1].rows] == [1]  # ranked among its own model's rows
    assert tables[1].rows[0].versus is None and tables[1].missing_baseline  # SmolLM2's manual never counts
    assert tables[1].borrowed == () and tables[3].borrowed == ()
    assert tables[0].borrowed == (("manual", "PromptSST2-v0"),) and not tables[0].missing_baseline
    gpt2_manual = make_submission("manual", model="gpt2", submitter="other",
                                  predictions=make_predictions(TEST_LABELS, [4, 4, 4, 4, 4]))
    tables = rank(other + small + [gpt2_manual], labels)
    versus = tables[1].rows[0].versus  # gpt2's BBT against gpt2's manual, borrowed from the discrete env
    assert versus is not None and versus.baseline_key == tables[3].rows[0].key
    assert tables[1].borrowed == (("manual", "PromptSST2-v0"),)


def test_an_unregistered_env_id_is_its_own_task() -> None:
    assert task_of("PromptSST2-Subspace-v0") == task_of("PromptSST2-v0") == "sst2"
    assert task_of("PromptNoSuchTask-Subspace-v0") == "PromptNoSuchTask-Subspace-v0"
    tables = _by_env(rank([make_submission("bbt", env_id="PromptNoSuchTask-Subspace-v0"),
                           make_submission("manual", env_id="PromptNoSuchTask-v0")], None))
    assert tables["PromptNoSuchTask-Subspace-v0"].rows[0].versus is None  # nothing borrowed across unknown ids
    assert tables["PromptNoSuchTask-v0"].rows[0].versus is not None


def _with_uncertainty(sub: dict, nll: list[float], aurc: list[float], ood: list[dict[str, float]] | None) -> dict:
    """``sub`` with per-seed NLL, AURC and OOD AUROCs (``ood[i]``: OOD task -> max-prob AUROC of seed i)."""
    for i, run in enumerate(sub["runs"]):
        run["test"].update(nll=nll[i], brier=0.4, aurc=aurc[i], aurc_10bin=aurc[i])
        if ood is not None:
            run["test"]["ood"] = {task: {"auroc_maxprob": v, "auroc_entropy": 1 - v} for task, v in ood[i].items()}
    return sub


def test_uncertainty_columns_are_means_over_seeds_and_none_when_not_recorded() -> None:
    ood = [{"mrpc": 0.6, "mnli": 0.8}, {"mrpc": 0.5, "mnli": 0.5}, {"mrpc": 0.9, "mnli": 0.7},
           {"mrpc": 0.4, "mnli": 0.6}, {"mrpc": 0.7, "mnli": 0.7}]  # per-seed pair means 0.7, 0.5, 0.8, 0.5, 0.7
    new = _with_uncertainty(make_submission("bbt", env_id="PromptRTE-v0"), [0.5, 0.6, 0.7, 0.8, 0.9],
                            [0.1, 0.2, 0.3, 0.2, 0.2], ood)
    old = make_submission("manual", env_id="PromptRTE-v0", created="2025-01-01T00:00:00Z")
    no_pairs = _with_uncertainty(make_submission("random", env_id="PromptRTE-v0"), [0.5] * 5, [0.2] * 5, None)
    rows = {r.agent: r for r in rank([new, old, no_pairs], None)[0].rows}
    bbt, manual = rows["bbt"].metrics, rows["manual"].metrics
    assert bbt["nll"] == pytest.approx(0.7) and bbt["aurc"] == pytest.approx(0.2) and bbt["brier"] == pytest.approx(0.4)
    assert rows["bbt"].ood_auroc == pytest.approx(0.64)  # mean over pairs, then over seeds
    assert bbt["ece"] == pytest.approx(0.05)
    assert (manual["nll"], manual["aurc"], rows["manual"].ood_auroc) == (None, None, None)
    assert rows["random"].metrics["nll"] == pytest.approx(0.5) and rows["random"].ood_auroc is None
    assert "macro_f1" not in bbt  # RTE is balanced: the macro-F1 does not apply
    partial = _with_uncertainty(make_submission("bbt", env_id="PromptRTE-v0"), [0.5] * 5, [0.2] * 5, None)
    del partial["runs"][3]["test"]["nll"]  # one seed without it: a mean over four seeds would not compare
    assert rank([partial], None)[0].rows[0].metrics["nll"] is None


def test_a_calibrated_entry_is_its_own_row_named_agent_plus_calibration() -> None:
    plain = make_submission("bbt", predictions=make_predictions(TEST_LABELS, [8] * 5))
    calibrated = make_submission("bbt", predictions=make_predictions(TEST_LABELS, [2] * 5))
    calibrated["calibration"] = True
    manual = make_submission("manual", predictions=make_predictions(TEST_LABELS, [12] * 5))
    (table,) = rank([plain, calibrated, manual], {"PromptSST2-v0": TEST_LABELS})
    assert [(r.agent, r.calibrated, r.name) for r in table.rows] == [
        ("bbt", True, "bbt + calibration"), ("bbt", False, "bbt"), ("manual", False, "manual")]
    assert not table.rows[0].is_baseline  # calibrating bbt's prompt does not make it a baseline
    assert table.rows[0].versus is not None and table.rows[0].versus.baseline_key == table.rows[2].key
