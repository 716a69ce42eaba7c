"""The reliability benchmark's report (``benchmarks/reliability.py --report``) on hand-made seed files.

The report is where the issue's question is answered ("which methods improve calibration over a
single BBT prompt at equal budget"), so its paired table is checked against differences computed
here by hand on real SST-2 test labels: the accuracy difference, the per-seed ECE / NLL differences,
and no CI when fewer than three seeds are paired.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptgym.metrics.stats import encode_predictions
from promptgym.tasks import get_task, load_split


@pytest.fixture(scope="module")
def rel(benchmark_script: Any) -> Any:
    return benchmark_script("reliability")


def _write_run(rel: Any, root: Path, m: Any, seed: int, preds: np.ndarray, labels: np.ndarray, ece: float,
               nll: float) -> None:
    path = rel.cache_path(m, seed, "lite", root)
    path.parent.mkdir(parents=True, exist_ok=True)
    test = {"metric": float(np.mean(preds == labels)), "ece": ece, "nll": nll, "aurc": 0.2, "n": len(labels),
            "predictions": encode_predictions(preds)}
    path.write_text(json.dumps({"seed": seed, "calls_used": 999, "test": test}))


def _row(md: str, table_header: str, label: str) -> list[str]:
    section = md.split(table_header, 1)[1]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_paired_table_matches_hand_computed_differences(rel: Any, tmp_path: Path) -> None:
    labels = np.asarray(load_split(get_task("sst2"), "test").labels)
    ref, bbt, cal, bdpl = (next(m for m in rel.METHODS if m.key == k)
                           for k in ("SST2:calibrated", "SST2:bbt", "SST2:bbt+calibration", "SST2:bdpl+calibration"))
    assert bbt.single and not cal.single
    rng = np.random.default_rng(0)
    seeds = (13, 21, 42)
    accs = {}
    for i, seed in enumerate(seeds):
        gold = labels.copy()
        flip = rng.random(len(labels))
        base = np.where(flip < 0.35, 1 - gold, gold)  # ~65% correct
        better = np.where(flip < 0.30, 1 - gold, gold)  # ~70% correct, a superset of base's hits
        _write_run(rel, tmp_path, ref, seed, better, labels, 0.02, 0.58)
        _write_run(rel, tmp_path, bbt, seed, base, labels, 0.10 + 0.01 * i, 0.65)
        _write_run(rel, tmp_path, cal, seed, better, labels, 0.04, 0.60 - 0.01 * i)
        accs[seed] = (np.mean(better == labels), np.mean(base == labels))
    _write_run(rel, tmp_path, bdpl, 13, better, labels, 0.05, 0.61)  # one seed only: no CI

    md = rel.report([ref, bbt, cal, bdpl], "lite", tmp_path)
    header = "| method | paired seeds |"
    row = _row(md, header, "BBT + calibration")
    assert row[1] == "3"
    delta = 100 * np.mean([a - b for a, b in accs.values()])
    m = re.match(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]( \(excludes 0\))?$", row[2])
    assert m, row[2]
    assert float(m.group(1)) == round(delta, 1)
    assert float(m.group(2)) > 0 and m.group(4)  # every row BBT gets right, calibration gets right too
    d_ece = np.mean([0.04 - (0.10 + 0.01 * i) for i in range(3)])
    assert row[3].startswith(f"{d_ece:+.3f} [") and "(excludes 0)" in row[3]
    d_nll = np.mean([(0.60 - 0.01 * i) - 0.65 for i in range(3)])
    assert row[4].startswith(f"{d_nll:+.3f} [")
    one = _row(md, header, "BDPL + calibration")
    assert one[1] == "1" and one[3] == f"{0.05 - 0.10:+.3f} (no CI: 1 seed)"
    assert "| BBT |" not in md.split(header, 1)[1]  # the baseline is not paired with itself
    d = [0.04 - (0.10 + 0.01 * i) for i in range(3)]
    half = 4.303 * np.std(d, ddof=1) / np.sqrt(3)  # Student's t, 2 degrees of freedom
    t_cell = re.search(r"\{t: ([+-]\d\.\d+), ([+-]\d\.\d+)( \(excludes 0\))?\}", row[3])
    assert t_cell, row[3]
    assert float(t_cell.group(1)) == round(np.mean(d) - half, 3)
    assert float(t_cell.group(2)) == round(np.mean(d) + half, 3)
    assert t_cell.group(3)  # -0.070 ± 0.025: excludes 0
    per_seed = _row(md, "Per seed:", "BDPL + calibration")
    assert per_seed[1] == f"{100 * np.mean(better == labels):.1f} / 0.050" and per_seed[2:] == ["–", "–"]


def test_ood_panel_cell_is_the_mean_over_tasks_with_their_range(rel: Any) -> None:
    def run(**aurocs: float) -> dict:
        return {"test": {"ood": {t: {"auroc_maxprob": v, "auroc_entropy": 0.5} for t, v in aurocs.items()}}}

    runs = [run(rte=0.5, mnli=0.6, cola=0.1), run(rte=0.7, mnli=0.6, cola=0.3)]  # task means 0.6, 0.6, 0.2
    assert rel.ood_panel(runs) == "0.467 [0.20–0.60] /3"
    assert rel.ood_panel([run(rte=0.5, mnli=0.7), run(rte=0.6)]) == "0.550 /1"  # MNLI is not on every seed
    assert rel.ood_panel([{"test": {}}]) == "–"
