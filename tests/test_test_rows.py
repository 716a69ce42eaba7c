"""The lite tier's test subsample of a large split: the same rows everywhere, recorded by sha256, scored
on exactly those rows, and re-checked by the verifier (a run claiming other rows is refused, no LM call).

The hub's full Yelp and DBPedia test splits (38,000 and 70,000 rows) would cost an hour or more per prompt in
fp32 on a 2-core CPU; here SST-2's 872 rows and a ``unit`` tier capped at 200 rows exercise the same code in
seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptgym.bench import schema
from promptgym.bench.evaluate import check_subsample
from promptgym.cli import main
from promptgym.errors import InvalidSubmissionError
from promptgym.metrics import compute_metric
from promptgym.metrics.stats import decode_predictions
from promptgym.tasks import load_split
from promptgym.tasks.data import rows_fingerprint, stratified_rows

MODEL = "tiny-random-causal"
ENV = "PromptSST2-v0"


def test_stratified_rows_keep_each_label_share_and_are_fixed():
    labels = np.array([0] * 700 + [1] * 250 + [2] * 50)
    rows = stratified_rows(labels, 100)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)  # sorted, no repeats
    assert np.bincount(labels[rows]).tolist() == [70, 25, 5]
    assert np.array_equal(rows, stratified_rows(labels, 100))  # the same rows every time
    assert not np.array_equal(rows, stratified_rows(labels, 100, seed=1))
    assert np.array_equal(stratified_rows(labels[:80], 100), np.arange(80))  # a small split: every row
    assert rows_fingerprint(rows) != rows_fingerprint(stratified_rows(labels, 100, seed=1))


def test_the_protocol_caps_only_the_lite_tier_of_large_splits(data_dir, monkeypatch):
    assert schema.protocol_test_rows("sst2", "lite") is None  # 872 rows: every row
    assert schema.protocol_test_rows("sst2", "standard") is None
    monkeypatch.setitem(schema.TIER_TEST_ROWS, "lite", 300)
    rows = schema.protocol_test_rows("sst2", "lite")
    labels = np.asarray(load_split("sst2", "test").labels)
    assert len(rows) == 300 and abs(labels[rows].mean() - labels.mean()) < 0.01


@pytest.fixture(scope="module")
def capped_tier(unit_tier):
    schema.TIER_TEST_ROWS[unit_tier] = 200
    yield unit_tier
    del schema.TIER_TEST_ROWS[unit_tier]


@pytest.fixture(scope="module")
def capped_submission(capped_tier, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("work")
    out = work / "sub.json"
    assert main(["evaluate", "--env", ENV, "--agent", "calibrated", "--tier", capped_tier, "--model", MODEL,
                 "--workdir", str(work), "--out", str(out), "--no-progress", "--submitter", "ci"]) == 0
    return json.loads(out.read_text())


def test_a_capped_entry_is_scored_and_verified_on_its_rows(capped_submission, capped_tier, tmp_path, capsys):
    rows = schema.protocol_test_rows("sst2", capped_tier)
    labels = np.asarray(load_split("sst2", "test").labels)[rows]
    for run in capped_submission["runs"]:
        test = run["test"]
        assert test["n"] == 200 and test["subsample"] == {"of": 872, "sha256": rows_fingerprint(rows)}
        predictions = decode_predictions(test["predictions"])
        assert test["metric"] == pytest.approx(compute_metric("accuracy", labels, predictions))
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(capped_submission))
    assert main(["submit", "--check", str(path)]) == 0
    assert "predictions agree 100.00%" in capsys.readouterr().out


def test_a_run_claiming_other_rows_is_refused_before_scoring(capped_submission, tmp_path, capsys):
    forged = json.loads(json.dumps(capped_submission))
    forged["runs"][2]["test"]["subsample"]["sha256"] = "0" * 64
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    assert main(["submit", "--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "runs[2].test.subsample" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(InvalidSubmissionError, match="scores every test row"):
        check_subsample(0, {"subsample": {"of": 872, "sha256": "0" * 64}}, None, 872)


def test_a_cached_run_of_other_rows_is_refused(capped_tier, tmp_path, capsys):
    work = tmp_path / "work"
    args = ["evaluate", "--env", ENV, "--agent", "calibrated", "--tier", capped_tier, "--model", MODEL,
            "--workdir", str(work), "--no-progress", "--seeds", "13"]
    assert main(args) == 0
    del schema.TIER_TEST_ROWS[capped_tier]  # the same folder, now a tier that scores every row
    try:
        assert main(args) == 2
    finally:
        schema.TIER_TEST_ROWS[capped_tier] = 200
    assert "delete it to re-run" in capsys.readouterr().err
