"""The registry of leaderboard metrics (``promptgym.metrics.registry``): specs validate themselves, the
macro-F1 is right and covers the class-imbalanced tasks, and a metric added to the registry reaches the
schema, evaluation, verification, ranking and both pages with no other change.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import f1_score
from test_bench_schema import TEST_LABELS, make_predictions, make_submission

from promptgym.bench import schema as schema_module
from promptgym.bench.evaluate import has_uncertainty
from promptgym.bench.ranking import rank
from promptgym.bench.render import render_markdown
from promptgym.errors import ConfigError
from promptgym.metrics import registry
from promptgym.metrics.registry import (
    METRIC_REGISTRY,
    Direction,
    Format,
    MetricSpec,
    Source,
    Tolerance,
    column_specs,
    macro_f1,
    metric_spec,
    probability_metrics,
    recorded_specs,
    register,
)
from promptgym.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def _spec(**overrides: Any) -> MetricSpec:
    fields: dict[str, Any] = {"name": "toy", "label": "Toy", "description": "a toy metric",
                              "direction": Direction.HIGHER, "source": Source.PREDICTIONS,
                              "compute": lambda y, p: float(np.mean(y == p)), "bounds": (0.0, 1.0)}
    return MetricSpec(**{**fields, **overrides})


# ------------------------------------------------------------------------------------------- specs
def test_the_builtin_registry() -> None:
    assert list(METRIC_REGISTRY) == ["macro_f1", "ece", "nll", "brier", "aurc", "aurc_10bin"]
    assert [s.name for s in recorded_specs()] == ["ece", "nll", "brier", "aurc", "aurc_10bin"]
    assert [s.label for s in column_specs("sst2")] == ["ECE", "NLL", "AURC"]
    assert [s.label for s in column_specs("mrpc")] == ["Macro-F1", "ECE", "NLL", "AURC"]
    assert all(s.verify == registry.UNCERTAINTY_TOLERANCE for s in recorded_specs())
    assert [s.name for s in METRIC_REGISTRY.values() if s.required] == ["ece"]  # the only key of every file
    assert metric_spec("nll").fmt is Format.NATS and metric_spec("nll").bare_vote_na
    assert metric_spec("ece").direction is Direction.LOWER and metric_spec("macro_f1").direction is Direction.HIGHER
    with pytest.raises(ConfigError, match="unknown leaderboard metric 'auc'"):
        metric_spec("auc")


def test_strings_become_enums_and_tasks_a_frozenset() -> None:
    spec = _spec(direction="lower is better", source="predictions", fmt="nats", tasks=["mrpc"])
    assert spec.direction is Direction.LOWER and spec.source is Source.PREDICTIONS and spec.fmt is Format.NATS
    assert spec.tasks == frozenset({"mrpc"}) and spec.applies_to("mrpc") and not spec.applies_to("sst2")
    assert _spec().applies_to("anything")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": "Bad-Name"}, "metric name must match"),
    ({"name": "predictions"}, "metric name must match"),  # a key the test record already has
    ({"label": ""}, "label must be a non-empty single line"),
    ({"description": "two\nlines"}, "description must be a non-empty single line"),
    ({"direction": "up"}, "direction must be one of"),
    ({"source": "logits"}, "source must be one of"),
    ({"fmt": "permille"}, "fmt must be one of"),
    ({"compute": 3}, "compute must be a function"),
    ({"bounds": (1.0, 0.0)}, "bounds must be"),
    ({"bounds": (0.0,)}, "bounds must be a pair"),
    ({"verify": 0.01}, "verify must be a Tolerance"),
    ({"source": Source.PROBABILITIES}, "needs a verify tolerance"),
    ({"verify": Tolerance(0.01)}, "derived from the predictions is not recorded"),
    ({"required": True}, "derived from the predictions is not recorded"),
    ({"tasks": []}, "tasks must be a non-empty set"),
    ({"tasks": "mrpc"}, "tasks must be a non-empty set"),
])
def test_a_bad_spec_is_refused_by_name(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _spec(**overrides)


def test_tolerance() -> None:
    tol = Tolerance(atol=0.005, rtol=0.01)
    assert tol.close(1.0, 1.0149) and not tol.close(1.0, 1.0151)
    with pytest.raises(ConfigError, match="Tolerance.rtol"):
        Tolerance(0.005, -0.1)


def test_register_refuses_a_taken_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="'ece' is already registered"):
        register(_spec(name="ece"))
    with pytest.raises(ConfigError, match="label 'ECE' is already metric 'ece'"):
        register(_spec(name="ece2", label="ECE"))
    assert "ece2" not in METRIC_REGISTRY
    with pytest.raises(ConfigError, match="takes a MetricSpec"):
        register("toy")  # type: ignore[arg-type]


def test_measure_needs_its_source() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert metric_spec("nll").measure([0, 1], probs=probs) == pytest.approx(-np.mean(np.log([0.9, 0.8])))
    assert metric_spec("macro_f1").measure([0, 1], predictions=[0, 1]) == 1.0
    with pytest.raises(ConfigError, match="pass probs"):
        metric_spec("nll").measure([0, 1], predictions=[0, 1])
    with pytest.raises(ConfigError, match="pass predictions"):
        metric_spec("macro_f1").measure([0, 1], probs=probs)


def test_the_metrics_package_is_a_leaf() -> None:
    """It imports nothing from promptgym but its errors (every layer may use it; it uses none)."""
    for path in sorted((ROOT / "promptgym" / "metrics").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("promptgym"):
                assert node.module.startswith("promptgym.metrics") or node.module == "promptgym.errors", path


# -------------------------------------------------------------------------------------- macro-F1
@pytest.mark.parametrize(("n", "c", "seed"), [(50, 2, 0), (300, 3, 1), (200, 14, 2)])
def test_macro_f1_matches_scikit_learn(n: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, c, n), rng.integers(0, c, n)
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)
    p[: n // 2] = y[: n // 2]
    assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)


def test_macro_f1_hand_computed_and_the_majority_answer() -> None:
    y = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    # label 1: tp 5, fp 1, fn 1 -> 10/12; label 0: tp 3, fp 1, fn 1 -> 6/8
    p = np.array([1, 1, 1, 1, 1, 0, 1, 0, 0, 0])
    assert macro_f1(y, p) == pytest.approx((10 / 12 + 6 / 8) / 2)
    majority = np.ones_like(y)  # the F1 of label 1 is 0.75; macro-F1 sees the missing label
    assert f1_score(y, majority) == pytest.approx(0.75) and macro_f1(y, majority) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="equal length"):
        macro_f1([0, 1], [0])


def test_macro_f1_covers_the_class_imbalanced_tasks(data_dir: Path) -> None:
    """Every task scored by F1, and every task whose test split's majority label holds >= 60% of the rows."""
    from promptgym.errors import SplitUnavailableError
    from promptgym.tasks import load_split

    tasks = metric_spec("macro_f1").tasks
    assert tasks is not None and tasks <= set(TASKS)
    assert {name for name, spec in TASKS.items() if spec.metric == "f1"} <= tasks
    skewed = set()
    for name in TASKS:
        try:
            counts = np.bincount(load_split(name, "test").labels)
        except SplitUnavailableError:  # QQP: no test split (it is F1-scored)
            continue
        if counts.max() / counts.sum() >= 0.6:
            skewed.add(name)
    assert skewed == {"mrpc", "cola"} and skewed <= tasks


def test_macro_f1_of_the_committed_mrpc_entries_is_derived_from_their_predictions(data_dir: Path) -> None:
    """Entries submitted before the column existed have it: recomputed from their stored predictions."""
    from promptgym.bench.evaluate import test_labels_by_env
    from promptgym.bench.store import load_entries
    from promptgym.metrics.stats import decode_predictions

    entries = [e for e in load_entries(ROOT) if e["env_id"] == "PromptMRPC-v0"]
    assert entries and all("macro_f1" not in run["test"] for e in entries for run in e["runs"])
    labels = test_labels_by_env(entries)
    tables = rank(entries, labels)  # one per model
    assert tables
    for table in tables:
        assert [s.name for s in table.columns][0] == "macro_f1"
        for row in table.rows:
            expected = np.mean([f1_score(labels["PromptMRPC-v0"], decode_predictions(run["test"]["predictions"]),
                                         average="macro") for run in row.sub["runs"]])
            assert row.metrics["macro_f1"] == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------- adding a metric: one module
def test_a_derived_metric_added_to_the_registry_reaches_ranking_and_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """What adding a derived metric takes: one register call (here patched in), nothing else."""
    error_rate = _spec(name="error_rate", label="Error", description="share of wrong test predictions",
                       direction=Direction.LOWER, compute=lambda y, p: float(np.mean(y != p)), tasks={"sst2"})
    monkeypatch.setitem(METRIC_REGISTRY, "error_rate", error_rate)
    sub = make_submission("bdpl", predictions=make_predictions(TEST_LABELS, [4, 4, 4, 4, 4]))
    (table,) = rank([sub], {"PromptSST2-v0": TEST_LABELS})
    assert table.columns[-1] is error_rate and table.rows[0].metrics["error_rate"] == pytest.approx(0.1)
    md = render_markdown([sub], {"PromptSST2-v0": TEST_LABELS})
    header = next(line for line in md.splitlines() if line.startswith("| Rank"))
    row = next(line for line in md.splitlines() if line.startswith("| 1 "))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["Error"] == "10.0"
    monkeypatch.setitem(METRIC_REGISTRY, "error_rate", replace(error_rate, label="AUC"))  # a table's own column
    with pytest.raises(ConfigError, match="metric column 'AUC' is also one of the table's own columns"):
        render_markdown([sub], {"PromptSST2-v0": TEST_LABELS})
    assert "**Error** (SST2 only): share of wrong test predictions." in " ".join(md.split())  # the summary


def test_a_recorded_metric_added_to_the_registry_reaches_schema_and_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """What adding a recorded metric takes: one register call (here patched in). The schema's ``Scores``
    model is built from the registry at import; it is rebuilt here the same way rather than by reloading
    the module (other modules hold its objects)."""
    toy = MetricSpec("max_prob", "Max prob", "mean top-label probability", Direction.HIGHER, Source.PROBABILITIES,
                     lambda probs, labels: float(np.mean(np.max(probs, axis=1))), (0.0, 1.0),
                     verify=Tolerance(0.005))
    monkeypatch.setitem(METRIC_REGISTRY, toy.name, toy)
    probs = np.tile([[0.9, 0.1], [0.3, 0.7]], (5, 1))  # 10 rows: the 10-bin AURC needs them
    assert probability_metrics(probs, [0, 1] * 5)["max_prob"] == pytest.approx(0.8)
    sub = make_submission("bdpl")
    assert not has_uncertainty(sub["runs"][0])  # a cached run without it is completed (uncharged re-scoring)
    scores = schema_module._scores_model()
    prop = scores.model_json_schema()["properties"]["max_prob"]
    assert prop["maximum"] == 1.0 and "max_prob" not in scores.model_json_schema()["required"]
    record = dict(sub["runs"][0]["test"])
    assert "max_prob" not in scores.model_validate(record).model_dump(exclude_unset=True)  # older files still read
    assert scores.model_validate({**record, "max_prob": 0.8}).model_dump(exclude_unset=True)["max_prob"] == 0.8
    with pytest.raises(ValidationError) as exc:
        scores.model_validate({**record, "max_prob": 1.5})
    assert str(schema_module._submission_error(exc.value.errors()[0])) == (
        "max_prob: must be a finite float in [0, 1], got 1.5")
    with pytest.raises(ValidationError):
        schema_module.Scores.model_validate({**record, "max_prob": 0.8})  # the import-time model: an unknown key


def test_the_schema_states_every_recorded_metric_with_its_bounds() -> None:
    scores = schema_module.submission_json_schema()["$defs"]["Scores"]
    for spec in recorded_specs():
        prop = scores["properties"][spec.name]
        lo, hi = spec.bounds
        assert prop["minimum"] == lo and prop.get("maximum") == hi
        assert (spec.name in scores["required"]) == spec.required
    assert not [s for s in METRIC_REGISTRY.values() if not s.recorded and s.name in scores["properties"]]
