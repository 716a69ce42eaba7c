"""The model-transfer table (``benchmarks/transfer.py``) on hand-made leaderboard tables.

It is read to answer "does the ranking transfer to a second model", so the checks are on what that
answer rests on: ranks counted per model over every env kind of the task, one row per method, a
method missing on a model shown as missing, the rank correlation, and which rows beat their model's
best baseline with a CI excluding zero (an indistinguishable or negative difference never does).
"""

from __future__ import annotations

from typing import Any

import pytest

from promptgym.bench.ranking import Comparison, Row, Table


@pytest.fixture(scope="module")
def tr(benchmark_script: Any) -> Any:
    return benchmark_script("transfer")


def _row(agent: str, model: str, mean: float, versus: Comparison | None, calibrated: bool = False) -> Row:
    sub = {"agent": {"name": agent}, "model": {"name": model}, "calibration": calibrated}
    return Row(sub=sub, key=f"{agent}-{model}-{mean}", scores=[mean] * 5, mean=mean, std=0.01, ci=(mean, mean),
               calls=1000.0, auc=mean, metrics={}, versus=versus)


def _cmp(diff: float, ci: tuple[float, float] | None, is_self: bool = False) -> Comparison:
    distinguishable = not is_self and ci is not None and (ci[0] > 0 or ci[1] < 0)
    return Comparison("base.json", is_self, diff, ci, distinguishable)


def _tables() -> list[Table]:
    a, b = "model-a", "model-b"
    disc_a = [_row("calibrated", a, 0.69, _cmp(0.0, None, is_self=True)),
              _row("bdpl", a, 0.62, _cmp(-0.07, (-0.10, -0.03)))]
    sub_a = [_row("bbt", a, 0.65, _cmp(-0.04, (-0.08, -0.01))),
             _row("bbt", a, 0.60, _cmp(-0.09, (-0.12, -0.05))),  # a second, worse BBT entry
             _row("bbt", a, 0.68, _cmp(-0.01, (-0.04, +0.02)), calibrated=True)]
    disc_b = [_row("calibrated", b, 0.72, _cmp(0.0, None, is_self=True)),
              _row("bdpl", b, 0.70, _cmp(-0.02, (-0.05, +0.01)))]
    sub_b = [_row("bbt", b, 0.76, _cmp(+0.04, (+0.01, +0.07)))]
    return [Table("PromptSST2-v0", "lite", "accuracy", disc_a, None, model=a),
            Table("PromptSST2-Subspace-v0", "lite", "accuracy", sub_a, None, model=a),
            Table("PromptSST2-v0", "lite", "accuracy", disc_b, None, model=b),
            Table("PromptSST2-Subspace-v0", "lite", "accuracy", sub_b, None, model=b),
            Table("PromptRTE-v0", "lite", "accuracy", [_row("bbt", b, 0.99, None)], None, model=b)]


def test_ranks_are_per_model_over_every_env_kind_one_row_per_method(tr: Any) -> None:
    cells = tr.model_cells(_tables(), "sst2", "lite", "model-a")
    assert list(cells) == ["calibrated (discrete)", "bbt + calibration (subspace)", "bbt (subspace)",
                           "bdpl (discrete)"]
    assert [c.rank for c in cells.values()] == [1, 2, 3, 4]
    assert cells["bbt (subspace)"].mean == pytest.approx(0.65)  # the better of the two BBT entries
    assert cells["calibrated (discrete)"].versus == "best baseline"
    assert cells["bbt + calibration (subspace)"].versus == "≈ -1.0 [-4.0, +2.0]"  # the page's own cell
    other = tr.model_cells(_tables(), "sst2", "lite", "model-b")
    assert [c.rank for c in other.values()] == [1, 2, 3]  # RTE's row is another task: not ranked here


def test_the_table_shows_missing_methods_the_correlation_and_the_winners(tr: Any) -> None:
    text = tr.transfer_table(_tables(), "sst2", "lite", ["model-a", "model-b"])
    line = next(x for x in text.splitlines() if x.startswith("| bbt + calibration (subspace) |"))
    assert line.endswith("| — | — |")
    assert "methods on both models: 3" in text
    # means on a: calibrated .69, bbt .65, bdpl .62; on b: .72, .76, .70 -> ranks (1,2,3) vs (2,1,3)
    assert "Spearman's rho of the two rankings over them: +0.50" in text
    assert "model-a: rows above the best baseline with a CI excluding 0: none" in text
    assert "model-b: rows above the best baseline with a CI excluding 0: bbt (subspace)" in text
