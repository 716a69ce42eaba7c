"""One converter between a Result and its plain records (:meth:`Result.to_record`, :meth:`Result.from_record`).

Committed seed files and leaderboard entries must read back and write out byte for byte as they are,
so the converter can never drift from the files already published; every Result shape round-trips
through both records (the protocol's prompt and a run folder's prompt.json).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptgym.agent import VOTE_V1, Result
from promptgym.bench.schema import SCHEMA_VERSION, combine_rule

ROOT = Path(__file__).resolve().parents[1]


def committed(*patterns: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


SEED_FILES = committed("runs/evaluate/*/seed-*.json", "runs/reliability/*/seed-*.json")
ENTRIES = committed("leaderboards/*/*.json")


def prompt_round_trip(prompt: dict[str, Any], schema_version: int) -> dict[str, Any]:
    """A file's prompt read as a verifier reads it, then written again."""
    rule = combine_rule(prompt.get("combine"), schema_version)
    return Result.from_record(prompt, "agent", combine=rule).to_record()


def same_bytes(a: Any, b: Any) -> bool:
    return json.dumps(a, indent=2) == json.dumps(b, indent=2)


# ------------------------------------------------------------------------------------ committed files
def test_committed_files_are_found() -> None:
    assert len(SEED_FILES) > 50 and len(ENTRIES) > 5


#: seed files written before vectors were stored in their shortest float32 decimals (long float64
#: decimals of the same float32 values): they read back to the same Result, written shorter today
LONG_DECIMALS = ("runs/evaluate/PromptSST2-Subspace-v0-bbt-lite/", "runs/evaluate/PromptSST2-Subspace-v0-random-lite/")


@pytest.mark.parametrize("path", SEED_FILES)
def test_committed_seed_file_prompt_round_trips(path: str) -> None:
    prompt = json.loads((ROOT / path).read_text())["prompt"]
    back = prompt_round_trip(prompt, SCHEMA_VERSION)
    if not path.startswith(LONG_DECIMALS):
        assert same_bytes(back, prompt)
        return
    assert not same_bytes(back, prompt), f"{path} is written as today: drop its folder from LONG_DECIMALS"
    assert same_bytes({**back, "action": None}, {**prompt, "action": None}) and "members" not in prompt
    np.testing.assert_array_equal(np.asarray(back["action"], dtype=np.float32),
                                  np.asarray(prompt["action"], dtype=np.float32))


@pytest.mark.parametrize("path", ENTRIES)
def test_committed_entry_prompts_round_trip(path: str) -> None:
    entry = json.loads((ROOT / path).read_text())
    version = entry.get("schema_version", SCHEMA_VERSION)
    for run in entry["runs"]:
        assert same_bytes(prompt_round_trip(run["prompt"], version), run["prompt"])


# ------------------------------------------------------------------------------------ every shape
def _shapes() -> dict[str, Result]:
    curve = [(10, 0.5), (20, 0.75)]
    z = np.random.default_rng(0).normal(size=7).astype(np.float32)
    return {
        "tokens": Result("rl", np.array([3, 14, 15]), "a b c", 0.6, 0.75, 20, curve, [(10, 0.6)],
                         config={"lr": 0.1}, extra={"steps": np.int64(4)}),
        "template": Result("manual", None, "", float("nan"), None, 0),
        "z": Result("cma", z, "z prompt", 0.5, 0.7, 30, curve,
                    label_bias=np.array([0.25, -0.25], dtype=np.float32),
                    extra={"calibration": {"calls": 1, "method": "contextual"}}),
        "soft": Result("prompt_tuning", None, "(soft)", 0.9, 0.8, 5, [(1, 0.8)], curve_unit="passes",
                       soft_prompt=np.zeros((2, 4), dtype=np.float32)),
        "demonstrations": Result("icl", None, "", 0.4, 0.6, 8, demonstrations="Q: x\nA: yes\n\n"),
        "weighted_set": Result("ensemble", None, "best", 0.7, 0.8, 40, curve,
                               label_bias=np.array([[0.1, -0.1], [0.2, -0.2], [0.0, 0.0]], dtype=np.float32),
                               members=[np.array([1, 2]), np.array([3, 4]), np.array([5, 6])],
                               weights=[0.2, 0.5, 0.3]),
        "vote_set": Result("abc_smc", None, "vote", 0.6, 0.7, 50, curve,
                           members=[np.array([0.5, -1.25], dtype=np.float32), np.array([1.0, 2.0], dtype=np.float32)],
                           combine="vote"),
    }


SHAPES = _shapes()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_prompt_record_round_trips(name: str) -> None:
    result = SHAPES[name]
    record = json.loads(json.dumps(result.to_record()))
    back = Result.from_record(record, result.agent)
    assert same_bytes(back.to_record(), record)
    assert back.prompt_kind == ("template" if result.prompt_kind == "soft_prompt" else result.prompt_kind)
    assert back.is_set == result.is_set and back.combine == result.combine
    if result.label_bias is not None:
        np.testing.assert_array_equal(back.label_bias, result.label_bias)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_full_record_round_trips(name: str) -> None:
    result = SHAPES[name]
    record = json.loads(json.dumps(result.to_record(full=True)))
    assert "soft_prompt" not in record  # a file of its own (promptgym.runs.write_run)
    back = Result.from_record(record, full=True)
    assert same_bytes(back.to_record(full=True), record)
    assert (back.agent, back.calls_used, back.curve, back.curve_unit) == (
        result.agent, result.calls_used, result.curve, result.curve_unit)
    for got, want in zip(back.members or [back.action], result.members or [result.action]):
        np.testing.assert_array_equal(got, want)


def test_prompt_record_keeps_float32_actions_exactly() -> None:
    result = SHAPES["vote_set"]
    back = Result.from_record(json.loads(json.dumps(result.to_record())))
    for got, want in zip(back.members or [], result.members or []):
        np.testing.assert_array_equal(np.asarray(got, dtype=np.float32), want)


def test_an_old_vote_is_written_as_it_was_read() -> None:
    """A version 1 "vote" read as VOTE_V1 goes back to "vote": its meaning is the file's version's."""
    record = SHAPES["vote_set"].to_record()
    back = Result.from_record(record, combine=combine_rule("vote", 1))
    assert back.combine == VOTE_V1 and back.to_record() == record
