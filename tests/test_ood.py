"""OOD detection (``promptgym.bench.ood``): the pairs, how OOD rows are rendered and scored, and the
metrics' range and determinism, on the tiny models; one short check on the real model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from test_bench_schema import make_submission

import promptgym  # noqa: F401  (registers the envs)
from promptgym.agent import Result
from promptgym.bench import ood
from promptgym.bench.evaluate import check_ood_claim, metric_close, verify
from promptgym.bench.ranking import ood_summary, rank
from promptgym.bench.render import HEADERS, render_markdown
from promptgym.envs.registration import env_task
from promptgym.envs.scoring import render_rows
from promptgym.errors import ConfigError, InvalidSubmissionError, UnknownTaskError
from promptgym.evaluation import Evaluator
from promptgym.metrics.uncertainty import ood_auroc
from promptgym.tasks import load_split
from promptgym.tasks.catalog import TASKS


def _env(env_id: str, model: str = "tiny-random-causal", **kwargs) -> gym.Env:
    return gym.make(env_id, model=model, dtype="float32", budget=10, **kwargs)


def _template_result() -> Result:
    return Result("manual", None, "", 0.0, None, 0)


def test_every_task_has_a_panel_of_mirrored_ood_tasks_and_keeps_its_version_1_pair(data_dir: Path) -> None:
    assert ood.OOD_PAIRS == {
        "sst2": ("rte", "mnli", "agnews", "cola"), "yelpp": ("rte", "mnli", "agnews", "cola"),
        "mrpc": ("rte", "mnli", "sst2"), "rte": ("mrpc", "mnli", "sst2"), "snli": ("mrpc", "mnli", "sst2"),
        "qnli": ("rte", "mrpc", "sst2"), "agnews": ("mrpc", "sst2", "dbpedia"), "dbpedia": ("agnews", "mrpc", "sst2")}
    assert ood.OOD_PAIRS_V1 == {"sst2": ("rte",), "yelpp": ("rte",), "mrpc": ("rte",), "rte": ("mrpc", "mnli"),
                                "snli": ("mrpc", "mnli"), "agnews": ("mrpc",), "dbpedia": ("agnews",)}
    assert ood.OOD_PAIR_VERSIONS[-1] is ood.OOD_PAIRS
    manifest = json.loads((data_dir / "manifest.json").read_text())
    tasks = manifest.get("tasks", manifest)
    for task, others in ood.OOD_PAIRS.items():
        assert len(others) >= 2 and len(set(others)) == len(others) and task not in others, task
        for name in (task, *others):
            assert name in TASKS, name
            assert "test.jsonl" in tasks[name]["files"] and (data_dir / name / "test.jsonl").is_file(), name
        assert set(ood.OOD_PAIRS_V1.get(task, ())) <= set(others), task  # old keys stay known pairs
        assert others[:len(ood.OOD_PAIRS_V1.get(task, ()))] == ood.OOD_PAIRS_V1.get(task, ())
        # a panel mixes input formats: sentence-pair and single-text OOD tasks
        assert {TASKS[o].pair for o in others} == {True, False}, task
    # SST-2: the two NLI sets on which the ranking reversed, and single-sentence sets (labelled test splits)
    assert {"rte", "mnli"} <= set(ood.ood_tasks("sst2")) and {"agnews", "cola"} <= set(ood.ood_tasks("sst2"))
    for single in ("agnews", "cola"):
        assert not TASKS[single].pair and len(set(load_split(single, "test").labels)) > 1
    assert ood.ood_tasks("cola") == () and ood.ood_tasks("qqp") == ()
    assert ood.ood_pair_sets("sst2") == (frozenset({"rte"}), frozenset({"rte", "mnli", "agnews", "cola"}))
    assert ood.ood_pair_sets("qnli") == (frozenset(), frozenset({"rte", "mrpc", "sst2"}))
    assert ood.ood_pair_sets("cola") == (frozenset(),)
    assert ood.known_ood_tasks("rte") == ("mrpc", "mnli", "sst2")
    with pytest.raises(UnknownTaskError, match="unknown task 'sst-2'"):
        ood.ood_tasks("sst-2")
    with pytest.raises(UnknownTaskError):
        ood.ood_pair_sets("sst-2")


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
    assert list(out) == ["rte", "mnli", "sst2"]  # every pair of the panel, in its order
    for scores in out.values():
        assert set(scores) == {"auroc_maxprob", "auroc_entropy"} and all(0.0 <= v <= 1.0 for v in scores.values())
    for task in out:
        segments = ood.ood_segments(env, task)
        on_ood = [r for r in requests if r.segments == segments]
        assert len(on_ood) == 2, task  # each member scored on the OOD rows
        assert all(r.label_words == ("No", "Yes") and not r.label_only for r in on_ood)  # MRPC's words, not RTE's
        assert {tuple(r.prompt.ids) for r in on_ood} == {tuple(base.prompt_of(m).ids) for m in result.members}

    # a verifier re-scores exactly the claimed tasks: the same numbers, and only those rows are scored
    requests.clear()
    assert ood.ood_metrics(env, result, tasks=("rte",)) == {"rte": out["rte"]}  # deterministic
    assert not [r for r in requests if r.segments in (ood.ood_segments(env, "mnli"), ood.ood_segments(env, "sst2"))]
    p_in = Evaluator.for_env(env).probs(result)
    assert ood.ood_metrics(env, result, probs_in=p_in, tasks=("rte",)) == {"rte": out["rte"]}
    p_out = Evaluator.for_env(env).probs(result, segments=ood.ood_segments(env, "rte"))
    assert out["rte"]["auroc_maxprob"] == ood_auroc(p_in, p_out, "maxprob")
    with pytest.raises(ConfigError, match="'agnews': not an OOD task of mrpc"):
        ood.ood_metrics(env, result, tasks=("rte", "agnews"))


def test_a_task_without_pairs_costs_no_lm_call(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env("PromptCoLA-v0")

    def fail(reqs):
        raise AssertionError("no LM call expected")

    monkeypatch.setattr(env.unwrapped.lm, "score", fail)
    assert ood.ood_metrics(env, _template_result()) == {}


# ------------------------------------------------------------------ versions: what a record may claim
def _ood_record(tasks, value: float = 0.6) -> dict[str, dict[str, float]]:
    return {t: {"auroc_maxprob": value, "auroc_entropy": value} for t in tasks}


def test_a_record_claims_the_whole_panel_of_one_version() -> None:
    check_ood_claim(0, "sst2", _ood_record(["rte"]))  # version 1: still verifies
    check_ood_claim(0, "sst2", _ood_record(["cola", "agnews", "mnli", "rte"]))  # a new run, any key order
    check_ood_claim(0, "rte", _ood_record(["mnli", "mrpc"]))
    check_ood_claim(0, "qnli", {})  # no pair in version 1
    for task, claimed, message in (
            ("sst2", ["rte", "qnli"], r"^runs\[3\]\.test\.ood: qnli is not an OOD task of sst2 \(its OOD tasks: "
                                      r"rte, mnli, agnews, cola\)$"),
            ("cola", ["sst2"], r"sst2 is not an OOD task of cola \(its OOD tasks: none\)$"),
            ("sst2", ["rte", "mnli"], r"claims \{mnli, rte\}; a run records every OOD task of one protocol version: "
                                      r"\{rte\} or \{agnews, cola, mnli, rte\}$"),  # cherry-picked
            ("sst2", [], r"claims \{\}")):
        with pytest.raises(InvalidSubmissionError, match=message) as info:
            check_ood_claim(3, task, _ood_record(claimed))
        assert "\n" not in str(info.value)


def test_every_committed_entry_claims_a_known_panel() -> None:
    paths = sorted((Path(__file__).resolve().parents[1] / "leaderboards").glob("*/*.json"))
    assert paths
    for path in paths:
        sub = json.loads(path.read_text())
        task = env_task(sub["env_id"])
        for i, run in enumerate(sub["runs"]):
            if "ood" in run["test"]:  # today all of version 1: one pair for SST-2 and MRPC, two for RTE
                check_ood_claim(i, task, run["test"]["ood"])


def test_verify_refuses_an_unknown_ood_key_before_scoring_and_passes_an_old_one() -> None:
    old = make_submission("bbt")  # PromptSST2-v0; fake data and model hashes: verify stops at data_sha256
    for run in old["runs"]:
        run["test"]["ood"] = _ood_record(["rte"])
    with pytest.raises(InvalidSubmissionError, match="^data_sha256"):  # the OOD keys passed
        verify(old, log=lambda *_: None)
    forged = copy.deepcopy(old)
    forged["runs"][2]["test"]["ood"]["qqp"] = {"auroc_maxprob": 0.9, "auroc_entropy": 0.9}
    with pytest.raises(InvalidSubmissionError, match=r"^runs\[2\]\.test\.ood: qqp is not an OOD task of sst2"):
        verify(forged, log=lambda *_: None)


def test_an_old_record_verifies_on_exactly_its_keys() -> None:
    """A version 1 Yelp run (RTE only): re-scoring its claimed key reproduces it, as verify does."""
    env = _env("PromptYelpP-v0")
    result = _template_result()
    old = {"rte": ood.ood_metrics(env, result)["rte"]}  # what the version 1 record holds: its one pair
    check_ood_claim(0, "yelpp", old)
    got = ood.ood_metrics(env, result, tasks=tuple(old))
    assert list(got) == ["rte"]
    assert all(metric_close(value, got["rte"][key]) for key, value in old["rte"].items())


# ---------------------------------------------------------------- reporting: mean and spread over tasks
def _tests(per_seed: list[dict[str, float]]) -> list[dict]:
    return [{"ood": {t: {"auroc_maxprob": v, "auroc_entropy": 0.5} for t, v in seed.items()}} for seed in per_seed]


def test_ood_summary_is_the_mean_and_spread_over_ood_tasks_of_seed_means() -> None:
    per_seed = [{"rte": 0.6, "mnli": 0.2, "agnews": 0.9, "cola": 0.5},
                {"rte": 0.4, "mnli": 0.4, "agnews": 0.7, "cola": 0.5}]
    summary = ood_summary(_tests(per_seed))
    assert summary is not None and summary.n == 4 and summary.tasks == ("rte", "mnli", "agnews", "cola")
    assert summary.by_task == pytest.approx({"rte": 0.5, "mnli": 0.3, "agnews": 0.8, "cola": 0.5})
    assert summary.mean == pytest.approx(0.525) and (summary.low, summary.high) == pytest.approx((0.3, 0.8))
    assert summary.std == pytest.approx(np.std([0.5, 0.3, 0.8, 0.5]))
    one = ood_summary(_tests([{"rte": 0.57}, {"rte": 0.55}]))
    assert one is not None and one.n == 1 and one.mean == pytest.approx(0.56) and one.std == 0.0
    # seeds with different panels: only the tasks every seed has; none without OOD on some seed
    mixed = ood_summary(_tests([{"rte": 0.6, "mnli": 0.2}, {"rte": 0.4}]))
    assert mixed is not None and mixed.by_task == pytest.approx({"rte": 0.5})
    assert ood_summary(_tests([{"rte": 0.6}]) + [{}]) is None and ood_summary([]) is None
    assert ood_summary(_tests([{"rte": 0.6}, {"mnli": 0.6}])) is None


def test_the_leaderboard_column_shows_mean_range_and_number_of_ood_tasks() -> None:
    panel = make_submission("bbt", created="2025-02-01T00:00:00Z")
    for run, shift in zip(panel["runs"], (0.0, 0.02, -0.02, 0.01, -0.01)):
        run["test"]["ood"] = _ood_record([])
        for task, v in {"rte": 0.34, "mnli": 0.70, "agnews": 0.60, "cola": 0.52}.items():
            run["test"]["ood"][task] = {"auroc_maxprob": v + shift, "auroc_entropy": 0.5}
    old = make_submission("calibrated")
    for run in old["runs"]:
        run["test"]["ood"] = _ood_record(["rte"], 0.57)
    table = rank([panel, old], None)[0]
    rows = {r.agent: r for r in table.rows}
    assert rows["bbt"].ood_auroc == pytest.approx(0.54) and rows["bbt"].ood.n == 4
    assert rows["calibrated"].ood_auroc == pytest.approx(0.57) and rows["calibrated"].ood.n == 1
    md = render_markdown([panel, old], None)
    cells = {line.split(" | ")[1]: line.split(" | ")[HEADERS.index("OOD AUROC")]
             for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Rank")}
    assert cells == {"bbt": "54.0 [34–70]/4", "calibrated": "57.0"}
    assert "scored on different OOD tasks (rte: calibrated; agnews, cola, mnli, rte: bbt)" in md


# ------------------------------------------------------------------------ benchmarks/ood_panel.py
@pytest.fixture(scope="module")
def panel(benchmark_script):
    return benchmark_script("ood_panel")


def test_panel_table_on_synthetic_numbers(panel) -> None:
    tasks = ("rte", "mnli", "agnews", "cola")
    scores = {"calibrated": {"rte": [0.57, 0.59, 0.55], "mnli": [0.34, 0.32, 0.36], "agnews": [0.8] * 3,
                             "cola": [0.49] * 3},
              "bbt": {"rte": [0.34, 0.30, 0.38], "mnli": [0.70, 0.72, 0.68], "agnews": [0.7] * 3,
                      "cola": [0.6, 0.5, 0.4]},
              "worse": {"rte": [0.3], "mnli": [0.3], "agnews": [0.3], "cola": [0.3]}}
    text = panel.panel_table(scores, tasks)
    lines = text.splitlines()
    assert lines[0] == ("| entry | seeds | rte | mnli | agnews | cola | mean over OOD tasks | range over OOD tasks |")
    assert lines[2] == ("| calibrated | 3 | 0.570 ± 0.020 | 0.340 ± 0.020 | 0.800 ± 0.000 | 0.490 ± 0.000 | 0.550 | "
                        "0.340–0.800 (4 tasks) |")
    assert lines[3].startswith("| bbt | 3 | 0.340 ± 0.040 | 0.700 ± 0.020 | 0.700 ± 0.000 | 0.500 ± 0.100 | 0.560 |")
    assert lines[4] == ("| worse | 1 | 0.300 ± 0.000 | 0.300 ± 0.000 | 0.300 ± 0.000 | 0.300 ± 0.000 | 0.300 | "
                        "0.300–0.300 (4 tasks) |")
    partial = panel.panel_table({"old": {"rte": [0.6, 0.4]}}, tasks)
    assert partial.splitlines()[2] == "| old | 2 | 0.500 ± 0.141 | – | – | – | 0.500 | 0.500–0.500 (1 task) |"
    orders = panel.orders(scores, tasks)
    assert orders == ["calibrated vs bbt: no order (higher on rte, agnews; lower on mnli, cola)",
                      "calibrated > worse on every OOD task (rte, mnli, agnews, cola)",
                      "bbt > worse on every OOD task (rte, mnli, agnews, cola)"]
    assert panel.report(scores, tasks) == text + "\n" + "\n".join(f"- {o}" for o in orders) + "\n"


def test_panel_rescores_a_run_file_end_to_end(panel, tmp_path: Path) -> None:
    """A version 1 run file (RTE only) of the tiny model, re-scored on the whole Yelp panel."""
    env = _env("PromptYelpP-v0")
    full = ood.ood_metrics(env, _template_result())
    folder = tmp_path / "PromptYelpP-v0-manual-lite"
    folder.mkdir()
    run = {"seed": 13, "calls_used": 0, "wall_seconds": 0.0,
           "prompt": {"action": None, "label_bias": None, "text": ""}, "curve": [],
           "test": {"metric": 0.5, "ece": 0.1, "n": 1000, "predictions": "0" * 1000, "ood": {"rte": full["rte"]}},
           "extra": {"env_id": "PromptYelpP-v0", "env_kwargs": {}, "model": "tiny-random-causal", "agent": "manual"}}
    (folder / "seed-13.json").write_text(json.dumps(run))
    scores, tasks = panel.rescore_folders([folder], log=lambda *_: None)
    assert tasks == ood.ood_tasks("yelpp")
    # the stored run is scored as a fresh env would score it (bf16 search env, fp32 test scoring)
    assert set(scores) == {folder.name} and set(scores[folder.name]) == set(tasks)
    assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in scores[folder.name].values())
    assert scores[folder.name]["rte"][0] == pytest.approx(full["rte"]["auroc_maxprob"], abs=0.01)
    assert f"| {folder.name} | 1 |" in panel.panel_table(scores, tasks)


@pytest.mark.integration
def test_real_model_reads_rte_pairs_with_the_sst2_label_words() -> None:
    """SmolLM2 (fp32), the SST-2 template alone: 16 SST-2 test rows against 16 RTE rows rendered as
    RTE and read with " terrible"/" great". Only 16 + 16 rows, to keep the check short: the full
    splits take minutes (the full-split AUROC measured 0.704 by either score)."""
    env = gym.make("PromptSST2-v0", budget=10)
    result = _template_result()
    in_domain = env.unwrapped.scorer.segments(load_split("sst2", "test"))[:16]
    evaluator = Evaluator.for_env(env)
    p_in = evaluator.probs(result, segments=in_domain)
    p_out = evaluator.probs(result, segments=ood.ood_segments(env, "rte")[:16])
    for p in (p_in, p_out):
        assert p.shape == (16, 2) and np.allclose(p.sum(axis=1), 1.0) and np.all(p > 0)
    for score in ("maxprob", "entropy"):
        assert 0.0 <= ood_auroc(p_in, p_out, score) <= 1.0
