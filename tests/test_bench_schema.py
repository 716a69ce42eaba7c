"""Validation of leaderboard submissions (schema version 1).

The numbers in these submissions are synthetic: the tests check that the validator accepts a
well-formed file and rejects each kind of malformed one with the offending field path in the
message. They are not results.

``make_submission`` is imported by the other ``test_bench_*`` modules.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from promptgym.bench.schema import (
    BENCH_SEEDS,
    MAX_BYTES,
    SCHEMA_VERSION,
    TIERS,
    budget_ok,
    check_budget,
    parse_submission,
    validate_submission,
)
from promptgym.errors import InvalidSubmissionError, PromptGymError
from promptgym.metrics import compute_metric
from promptgym.metrics.stats import encode_predictions

SHA = "ab" * 32
N_TEST = 40
TEST_LABELS = np.array([i % 2 for i in range(N_TEST)], dtype=np.int64)


def make_predictions(labels: np.ndarray, n_wrong: Sequence[int]) -> list[np.ndarray]:
    """Per seed: the labels with the first ``n_wrong[i]`` rows (after a seed-specific shift) flipped."""
    out = []
    for i, k in enumerate(n_wrong):
        p = labels.copy()
        idx = (np.arange(k) * 3 + i) % labels.size
        p[idx] = 1 - p[idx]
        out.append(p)
    return out


def make_submission(agent: str = "bdpl", *, labels: np.ndarray | None = None,
                    predictions: Sequence[np.ndarray] | None = None, metric: str = "accuracy", tier: str = "lite",
                    created: str = "2025-01-31T12:00:00Z", submitter: str = "unit test",
                    model: str = "smollm2-135m", env_id: str = "PromptSST2-v0") -> dict[str, Any]:
    """A valid submission whose test metrics are consistent with its predictions and labels."""
    labels = TEST_LABELS if labels is None else labels
    if predictions is None:
        predictions = make_predictions(labels, [4, 6, 5, 8, 3])
    budget = TIERS[tier]
    runs = []
    for seed, pred in zip(BENCH_SEEDS, predictions):
        score = compute_metric(metric, labels, pred)
        runs.append({
            "seed": seed,
            "calls_used": budget - seed,
            "wall_seconds": 12.5,
            "prompt": {"action": [3, 1, 4, 1, 5], "label_bias": [0.25, -0.25], "text": "Review:\n"},
            "curve": [[0, 0.5], [budget // 4, 0.6], [budget // 2, 0.7], [budget - seed, 0.75]],
            "test": {"metric": score, "ece": 0.05, "n": int(labels.size), "predictions": encode_predictions(pred)},
        })
    return {
        "schema_version": SCHEMA_VERSION,
        "env_id": env_id,
        "env_kwargs": {"action_type": "discrete", "prompt_length": 10, "bf16": True, "template": None,
                       "lr": 0.1},
        "agent": {"name": agent, "config": {"population": 20, "sigma": 0.5, "layers": [1, 2], "tag": "x"}},
        "submitter": submitter,
        "promptgym_version": "0.1.0",
        "model": {"name": model, "weights_sha256": SHA},
        "data_sha256": {"sst2/16-13/train.jsonl": SHA, "sst2/test.jsonl": SHA},
        "tier": tier,
        "budget_calls": budget,
        "metric": metric,
        "runs": runs,
        "command": "promptgym evaluate --agent bdpl --tier lite",
        "created": created,
    }


def few_calls_submission(agent: str, calls: int, dev: float, *, submitter: str = "promptgym",
                         **kwargs: Any) -> dict[str, Any]:
    """A prompt-free baseline's entry: ``calls`` calls per run (0: no dev point at all, so no curve)."""
    sub = make_submission(agent, submitter=submitter, **kwargs)
    for run in sub["runs"]:
        run["calls_used"] = calls
        run["curve"] = [[calls, dev]] if calls else []
    return sub


def _rejects(obj_or_raw: Any, *fragments: str) -> str:
    """Assert the input is rejected and the message contains every fragment (field path first)."""
    call: Callable[[Any], Any] = parse_submission if isinstance(obj_or_raw, (bytes, str)) else validate_submission
    with pytest.raises(InvalidSubmissionError) as info:
        call(obj_or_raw)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def _mutated(mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    sub = make_submission()
    mutate(sub)
    return sub


# ------------------------------------------------------------------------------------------ valid
def test_valid_submission_round_trips() -> None:
    sub = make_submission()
    assert validate_submission(sub) == sub
    assert parse_submission(json.dumps(sub)) == sub
    assert parse_submission(json.dumps(sub).encode("utf-8")) == sub


def test_error_class_is_a_value_error() -> None:
    assert issubclass(InvalidSubmissionError, PromptGymError)
    assert issubclass(InvalidSubmissionError, ValueError)


def test_validation_normalises_numbers_and_tuples() -> None:
    sub = make_submission()
    sub["runs"][0]["wall_seconds"] = 3  # an int where a float is expected is fine
    sub["runs"][1]["test"]["ece"] = np.float64(0.1)
    sub["runs"][2]["calls_used"] = np.int64(990)
    sub["runs"][3]["prompt"]["action"] = (0.5, 1, -2.0)  # mixed numbers -> floats
    out = validate_submission(sub)
    assert type(out["runs"][0]["wall_seconds"]) is float
    assert type(out["runs"][1]["test"]["ece"]) is float
    assert type(out["runs"][2]["calls_used"]) is int
    assert out["runs"][3]["prompt"]["action"] == [0.5, 1.0, -2.0]
    assert all(type(x) is float for x in out["runs"][3]["prompt"]["action"])
    assert out["runs"][4]["prompt"]["action"] == [3, 1, 4, 1, 5]


def test_null_prompt_parts_and_empty_curve_are_allowed() -> None:
    sub = make_submission()
    sub["runs"][0]["prompt"] = {"action": None, "label_bias": None, "text": ""}
    sub["runs"][0]["curve"] = []
    assert validate_submission(sub)["runs"][0]["prompt"]["action"] is None


def test_matthews_metric_may_be_negative() -> None:
    sub = make_submission(metric="matthews_correlation")
    sub["runs"][0]["test"]["metric"] = -0.2
    validate_submission(sub)
    sub["runs"][0]["test"]["metric"] = -1.5
    _rejects(sub, "runs[0].test.metric: must be a finite float in [-1, 1]")


# ---------------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_in_json_are_rejected_with_path(literal: str) -> None:
    raw = json.dumps(make_submission()).replace('"ece": 0.05', f'"ece": {literal}', 1)
    assert literal in raw
    _rejects(raw, "runs[0].test.ece: must be a finite float in [0, 1]", "non-finite")


def test_non_finite_in_flat_dicts_and_lists_are_rejected() -> None:
    raw = json.dumps(make_submission()).replace('"lr": 0.1', '"lr": NaN')
    _rejects(raw, "env_kwargs.lr:")
    raw = json.dumps(make_submission()).replace('"label_bias": [0.25, -0.25]', '"label_bias": [0.25, Infinity]', 1)
    _rejects(raw, "runs[0].prompt.label_bias[1]: must be a finite float")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_python_floats_are_rejected(value: float) -> None:
    _rejects(_mutated(lambda s: s["runs"][2]["test"].__setitem__("ece", value)),
             "runs[2].test.ece: must be a finite float in [0, 1]")
    _rejects(_mutated(lambda s: s["runs"][1]["curve"][0].__setitem__(1, value)), "runs[1].curve[0][1]")


# ---------------------------------------------------------------------------------------- types
@pytest.mark.parametrize(("mutate", "fragment"), [
    (lambda s: s["runs"][0].__setitem__("calls_used", True), "runs[0].calls_used: must be an integer, got boolean"),
    (lambda s: s.__setitem__("budget_calls", False), "budget_calls: must be an integer"),
    (lambda s: s.__setitem__("schema_version", True), "schema_version: must be an integer"),
    (lambda s: s["runs"][3].__setitem__("seed", True), "runs[3].seed: must be an integer"),
    (lambda s: s["runs"][1]["test"].__setitem__("n", 40.0), "runs[1].test.n: must be an integer, got float"),
    (lambda s: s["runs"][1]["test"].__setitem__("ece", True), "runs[1].test.ece: must be a finite float"),
    (lambda s: s["runs"][0]["curve"][1].__setitem__(0, True), "runs[0].curve[1][0]: must be an integer"),
    (lambda s: s["runs"][0]["prompt"].__setitem__("action", [1, True]), "runs[0].prompt.action[1]"),
    (lambda s: s["runs"][0]["prompt"].__setitem__("text", 5), "runs[0].prompt.text: must be a string"),
    (lambda s: s.__setitem__("env_kwargs", []), "env_kwargs: must be an object, got array"),
    (lambda s: s["env_kwargs"].__setitem__("nested", {"a": 1}), "env_kwargs.nested: must be a string, number"),
    (lambda s: s["env_kwargs"].__setitem__("lst", [1, 2]), "env_kwargs.lst:"),
    (lambda s: s["agent"]["config"].__setitem__("deep", [[1]]), "agent.config.deep[0]"),
    (lambda s: s["agent"]["config"].__setitem__("long", list(range(65))), "agent.config.long: at most 64"),
    (lambda s: s.__setitem__("runs", {}), "runs: must be an array"),
    (lambda s: s["runs"][0].__setitem__("curve", [[1, 0.5, 2]]), "runs[0].curve[0]: must be a pair"),
    (lambda s: s["runs"][0].__setitem__("wall_seconds", -1.0), "runs[0].wall_seconds: must be a finite float ≥ 0"),
    (lambda s: s["runs"][0].__setitem__("calls_used", -1), "runs[0].calls_used: must be an integer in [0,"),
    (lambda s: s.__setitem__("budget_calls", 0), "budget_calls: must be an integer in [1,"),
    (lambda s: s.__setitem__("tier", "huge"), "tier: must be one of ['lite', 'standard']"),
    (lambda s: s.__setitem__("metric", "auc"), "metric: must be one of"),
    (lambda s: s.__setitem__("schema_version", 3), "schema_version: this promptgym reads versions 1, 2, got 3"),
])
def test_wrong_types_and_values_name_the_field(mutate: Callable[[dict[str, Any]], Any], fragment: str) -> None:
    _rejects(_mutated(mutate), fragment)


def test_ece_out_of_range_message_is_exact() -> None:
    message = _rejects(_mutated(lambda s: s["runs"][2]["test"].__setitem__("ece", 1.5)))
    assert message == "runs[2].test.ece: must be a finite float in [0, 1], got 1.5"


# ------------------------------------------------------------------------------------ key sets
def test_missing_and_extra_keys() -> None:
    _rejects(_mutated(lambda s: s.pop("metric")), "submission: missing key(s) ['metric']")
    _rejects(_mutated(lambda s: s["runs"][1]["test"].pop("n")), "runs[1].test: missing key(s) ['n']")
    _rejects(_mutated(lambda s: s["model"].pop("weights_sha256")), "model: missing key(s) ['weights_sha256']")
    _rejects(_mutated(lambda s: s.__setitem__("score", 1.0)), "submission: unknown key(s) ['score']")
    _rejects(_mutated(lambda s: s["runs"][4]["prompt"].__setitem__("vector", [])), "runs[4].prompt: unknown key(s)")
    _rejects(_mutated(lambda s: s["agent"].__setitem__("version", "1")), "agent: unknown key(s) ['version']")


def test_duplicate_json_keys_are_rejected() -> None:
    raw = json.dumps(make_submission())
    raw = raw.replace('"tier": "lite"', '"tier": "lite", "tier": "standard"')
    _rejects(raw, "duplicate key 'tier'")


# -------------------------------------------------------------------------------------- sizes
def test_oversized_arrays_and_strings() -> None:
    _rejects(_mutated(lambda s: s["runs"][0]["prompt"].__setitem__("action", [0] * 5001)),
             "runs[0].prompt.action: at most 5,000 items, got 5,001")
    _rejects(_mutated(lambda s: s["runs"][0]["prompt"].__setitem__("label_bias", [0.0] * 101)),
             "runs[0].prompt.label_bias: at most 100 items")
    _rejects(_mutated(lambda s: s["runs"][0].__setitem__("curve", [[0, 0.5]] * 10_001)),
             "runs[0].curve: at most 10,000 items")
    _rejects(_mutated(lambda s: s["runs"][0]["prompt"].__setitem__("text", "x" * 5001)),
             "runs[0].prompt.text: at most 5,000 characters")
    _rejects(_mutated(lambda s: s.__setitem__("submitter", "x" * 101)), "submitter: at most 100 characters")
    _rejects(_mutated(lambda s: s.__setitem__("command", "x" * 1001)), "command: at most 1,000 characters")
    _rejects(_mutated(lambda s: s.__setitem__("env_kwargs", {f"k{i}": i for i in range(51)})),
             "env_kwargs: at most 50 keys")
    _rejects(_mutated(lambda s: s.__setitem__("data_sha256", {f"f{i}.jsonl": SHA for i in range(101)})),
             "data_sha256: at most 100 entries")
    _rejects(_mutated(lambda s: s.__setitem__("runs", s["runs"] * 2)), "runs: at most 5 items")


def test_file_over_5_mb_is_rejected_before_parsing() -> None:
    raw = b"{" + b" " * MAX_BYTES + b"}"
    _rejects(raw, "submission: file is", "5 MB")


# ------------------------------------------------------------------------------- raw documents
def test_truncated_json() -> None:
    raw = json.dumps(make_submission())
    _rejects(raw[: len(raw) // 2], "submission: not valid JSON", "truncated")
    _rejects("", "submission: not valid JSON")


def test_non_utf8_and_bom() -> None:
    raw = json.dumps(make_submission()).encode("utf-8").replace(b"unit test", b"unit \xff test")
    _rejects(raw, "submission: not valid UTF-8")
    _rejects(b"\xef\xbb\xbf" + json.dumps(make_submission()).encode(), "byte-order mark")


def test_lone_surrogate_is_rejected() -> None:
    raw = json.dumps(make_submission()).replace("unit test", "unit \\ud800 test")
    _rejects(raw, "submitter: contains a lone surrogate")


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "42", "null"])
def test_top_level_must_be_an_object(raw: str) -> None:
    _rejects(raw, "submission: top level must be a JSON object")


def test_deep_nesting_is_rejected_cleanly() -> None:
    _rejects("[" * 100_000 + "]" * 100_000, "submission:")


# ------------------------------------------------------------------------------ string formats
@pytest.mark.parametrize("key", ["../x", "sst2/../../etc/passwd", "/etc/passwd", "./x", "a//b", "a/", "C:\\x",
                                 "~/x", "a b", ""])
def test_path_tricks_in_data_keys(key: str) -> None:
    message = _rejects(_mutated(lambda s: s["data_sha256"].__setitem__(key, SHA)), "data_sha256[")
    assert repr(key) in message


@pytest.mark.parametrize(("field", "value"), [
    ("env_id", "SST2-v0"), ("env_id", "PromptSST2-v0/../x"), ("env_id", "PromptSST2"),
    ("promptgym_version", "latest"), ("created", "yesterday"), ("created", "2025-13-01"),
])
def test_bad_top_level_strings(field: str, value: str) -> None:
    _rejects(_mutated(lambda s: s.__setitem__(field, value)), f"{field}: must be")


@pytest.mark.parametrize(("field", "value"), [("env_id", "PromptSST2-v0\n"), ("promptgym_version", "0.1.0\n")])
def test_trailing_newline_does_not_slip_through_patterns(field: str, value: str) -> None:
    # Python's '$' matches before a final newline; the validator must use full matches.
    _rejects(_mutated(lambda s: s.__setitem__(field, value)), f"{field}: must be")


@pytest.mark.parametrize("name", ["BDPL", "../bdpl", "a" * 41, "", "bd pl", "bdpl\n"])
def test_bad_agent_names(name: str) -> None:
    _rejects(_mutated(lambda s: s["agent"].__setitem__("name", name)), "agent.name: ")


def test_bad_hashes_and_predictions() -> None:
    _rejects(_mutated(lambda s: s["model"].__setitem__("weights_sha256", "AB" * 32)), "model.weights_sha256")
    _rejects(_mutated(lambda s: s["data_sha256"].__setitem__("sst2/test.jsonl", "abc")),
             "data_sha256['sst2/test.jsonl']: must be 64 lowercase hex digits")
    _rejects(_mutated(lambda s: s["runs"][2]["test"].__setitem__("predictions", "0" * 39 + "A")),
             "runs[2].test.predictions: must be one base-36 label id")
    _rejects(_mutated(lambda s: s["runs"][2]["test"].__setitem__("predictions", "0" * 39)),
             "runs[2].test.predictions: must have one character per test row (n=40), got 39")
    _rejects(_mutated(lambda s: s.__setitem__("submitter", "line\nbreak")), "submitter: must be a single line")
    _rejects(_mutated(lambda s: s["env_kwargs"].__setitem__("bad-key", 1)),
             "env_kwargs['bad-key']: must be an identifier")


def test_runs_must_share_the_test_split() -> None:
    def shrink(s: dict[str, Any]) -> None:
        s["runs"][3]["test"]["n"] = 39
        s["runs"][3]["test"]["predictions"] = s["runs"][3]["test"]["predictions"][:39]

    _rejects(_mutated(shrink), "runs[3].test.n: every run is scored on the same test split")


# -------------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seeds", [[13, 21, 42, 87, 99], [13, 13, 42, 87, 100], [100, 87, 42, 21, 14]])
def test_wrong_seed_sets(seeds: list[int]) -> None:
    def set_seeds(s: dict[str, Any]) -> None:
        for run, seed in zip(s["runs"], seeds):
            run["seed"] = seed

    _rejects(_mutated(set_seeds), "runs: needs exactly one run per data seed [13, 21, 42, 87, 100]")


def test_missing_run_and_seed_order() -> None:
    _rejects(_mutated(lambda s: s["runs"].pop()), "runs: needs exactly one run per data seed")
    shuffled = _mutated(lambda s: s["runs"].reverse())
    assert [r["seed"] for r in validate_submission(shuffled)["runs"]] == list(reversed(BENCH_SEEDS))


# -------------------------------------------------------------------------------------- curves
def test_curve_calls_must_not_decrease() -> None:
    _rejects(_mutated(lambda s: s["runs"][0].__setitem__("curve", [[0, 0.5], [10, 0.6], [5, 0.7]])),
             "runs[0].curve[2][0]: calls must be non-decreasing along the curve (5 < 10)")


def test_curve_cannot_exceed_calls_used() -> None:
    _rejects(_mutated(lambda s: s["runs"][1]["curve"].append([s["runs"][1]["calls_used"] + 1, 0.9])),
             "runs[1].curve[4][0]:", "more than the run's calls_used")


def test_equal_calls_on_curve_are_fine() -> None:
    validate_submission(_mutated(lambda s: s["runs"][0].__setitem__("curve", [[5, 0.5], [5, 0.6]])))


# ------------------------------------------------------------------------------------- budget
def test_budget_tiers() -> None:
    assert TIERS == {"lite": 1000, "standard": 8000}
    sub = make_submission(tier="standard")
    check_budget(sub)
    assert budget_ok(sub)

    over = copy.deepcopy(sub)
    over["runs"][2]["calls_used"] = 8001
    with pytest.raises(InvalidSubmissionError, match=r"runs\[2\]\.calls_used: 8001 exceeds the 'standard' tier"):
        check_budget(over)
    assert not budget_ok(over)

    wrong = make_submission(tier="lite")
    wrong["budget_calls"] = 8000
    validate_submission(wrong)  # structurally fine ...
    with pytest.raises(InvalidSubmissionError, match="budget_calls: the 'lite' tier has a budget of exactly 1000"):
        check_budget(wrong)  # ... but not rankable
    assert not budget_ok(wrong)


# ----------------------------------------------------------------- pydantic edge cases (new)
def test_errors_never_leak_pydantic_and_always_start_with_a_path() -> None:
    """Every wrong value at every field gives one line starting with the field's path, never a pydantic error."""
    def leaves(x: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if isinstance(x, dict):
            return [path] + [p for k, v in x.items() for p in leaves(v, (*path, k))]
        if isinstance(x, list) and x and path[-1:] != ("predictions",):
            return [path] + [p for i, v in enumerate(x[:2]) for p in leaves(v, (*path, i))]
        return [path]

    base = make_submission()
    for path in leaves(base)[1:]:
        for bad in ({"x": [1]}, [[{}]], float("nan"), "\ud800", np.bool_(True), 10**400, object()):
            sub = copy.deepcopy(base)
            parent = sub
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = bad
            try:
                validate_submission(sub)
            except InvalidSubmissionError as exc:
                message = str(exc)
            else:
                continue  # e.g. a string where any string is fine
            first = path[0]
            assert message.startswith(first) and "\n" not in message, (path, bad, message)
            assert "Input should" not in message and "validation error" not in message, (path, bad, message)


def test_huge_integers_where_floats_belong_are_rejected_cleanly() -> None:
    # float(10**400) raises OverflowError; the file must be refused with the field path instead
    _rejects(_mutated(lambda s: s["runs"][0].__setitem__("wall_seconds", 10**400)),
             "runs[0].wall_seconds: must be a finite float ≥ 0, got non-finite number integer")
    raw = json.dumps(make_submission()).replace('"ece": 0.05', '"ece": 1' + "0" * 400, 1)
    _rejects(raw, "runs[0].test.ece: must be a finite float in [0, 1], got non-finite number")
    _rejects(_mutated(lambda s: s["runs"][1]["prompt"].__setitem__("action", [0.5, 10**400])),
             "runs[1].prompt.action[1]: must be a finite float")
    assert validate_submission(_mutated(lambda s: s["env_kwargs"].__setitem__("big", 10**400)))["env_kwargs"]["big"] \
        == 10**400  # an int where any number is fine stays an exact int


def test_numpy_values_are_normalised_but_numpy_bools_are_not_numbers() -> None:
    sub = _mutated(lambda s: s["env_kwargs"].update(n=np.int64(3), x=np.float32(0.5)))
    out = validate_submission(sub)["env_kwargs"]
    assert (type(out["n"]), type(out["x"])) == (int, float)
    _rejects(_mutated(lambda s: s["runs"][0]["test"].__setitem__("ece", np.bool_(True))),
             "runs[0].test.ece: must be a finite float in [0, 1], got bool")
    _rejects(_mutated(lambda s: s["env_kwargs"].__setitem__("flag", np.bool_(True))), "env_kwargs.flag: must be")


def test_tuples_become_lists_and_the_input_is_not_modified() -> None:
    sub = make_submission()
    sub["runs"][0]["curve"] = [(0, 0.5), (10, 0.6)]
    sub["runs"][1]["prompt"]["action"] = [1, 0.5]
    sub["agent"]["config"]["layers"] = (1, 2)
    before = copy.deepcopy(sub)
    out = validate_submission(sub)
    assert out["runs"][0]["curve"] == [[0, 0.5], [10, 0.6]] and type(out["runs"][0]["curve"][0]) is list
    assert out["runs"][1]["prompt"]["action"] == [1.0, 0.5] and out["agent"]["config"]["layers"] == [1, 2]
    assert sub == before and sub["runs"][1]["prompt"]["action"][0] == 1


def test_unions_report_the_member_that_got_furthest() -> None:
    _rejects(_mutated(lambda s: s["agent"]["config"].__setitem__("layers", [1, float("nan")])),
             "agent.config.layers[1]: must be a finite float, got nan")
    _rejects(_mutated(lambda s: s["agent"]["config"].__setitem__("layers", ["x" * 1001])),
             "agent.config.layers[0]: at most 1,000 characters, got 1,001")
    _rejects(_mutated(lambda s: s["agent"]["config"].__setitem__("tag", "x" * 1001)),
             "agent.config.tag: at most 1,000 characters")
    _rejects(_mutated(lambda s: s["agent"]["config"].__setitem__("tag", {})),
             "agent.config.tag: must be a string, number, boolean, null or a short list of those, got object")


def test_optional_demonstrations_key() -> None:
    sub = make_submission()
    sub["runs"][0]["prompt"]["demonstrations"] = "great movie -> positive\n"
    out = validate_submission(sub)
    assert list(out["runs"][0]["prompt"]) == ["action", "label_bias", "text", "demonstrations"]
    assert "demonstrations" not in out["runs"][1]["prompt"]
    sub["runs"][0]["prompt"]["demonstrations"] = None
    _rejects(sub, "runs[0].prompt.demonstrations: must be a string, got null None")


def test_key_errors_name_the_key() -> None:
    raw = json.dumps(make_submission())
    _rejects(raw.replace('"env_kwargs": {', '"env_kwargs": {"\\ud800": 1, ', 1),
             "env_kwargs['\\ud800']: contains a lone surrogate")
    _rejects(raw.replace('"tier":', '"\\ud800": 1, "tier":', 1), "submission: contains a lone surrogate")
    _rejects(_mutated(lambda s: s["agent"].__setitem__(5, 1)), "agent: keys must be strings, got integer")
    _rejects(_mutated(lambda s: s["env_kwargs"].__setitem__(5, 1)), "env_kwargs[5]: must be a string, got integer")
    _rejects(_mutated(lambda s: s["data_sha256"].__setitem__("sst2/./x.jsonl", SHA)),
             "data_sha256['sst2/./x.jsonl']: must be a relative path inside the data directory")
    # a misspelt key is reported as unknown (with the allowed ones), not as the missing correct one
    _rejects(_mutated(lambda s: s["runs"][0].__setitem__("tset", s["runs"][0].pop("test"))),
             "runs[0]: unknown key(s) ['tset']; allowed: ['seed', 'calls_used', 'wall_seconds', 'prompt', 'curve', "
             "'test', 'receipt', 'threads', 'host']")
