"""The leaderboard submission format (schema version 1) and its validation.

A submission is one JSON file: which environment and agent, which model and data (by sha256),
which budget tier, and one run per data seed with the final prompt, the learning curve on the dev
split and the predictions on the test split. Submissions come from strangers and are committed to
the repository, so the validator trusts nothing:

* the raw bytes are bounded (``MAX_BYTES``), must be UTF-8 and must be one JSON object;
* ``NaN``/``Infinity`` literals and overflowing numbers (``1e400``) are rejected, with their field
  path, because ``json.loads`` would otherwise turn them into non-finite floats that poison averages;
* duplicate keys are rejected (``json.loads`` silently keeps the last one, so two readers could
  disagree about what a file says);
* every field has an exact type (``true`` is not an int), a bound on its size, and unknown keys
  are errors, so that a typo is reported instead of ignored.

Every error is an :class:`~promptgym.errors.InvalidSubmissionError` whose message starts with the
field path, e.g. ``runs[2].test.ece: must be a finite float in [0, 1]``.

Validation returns a *normalised copy*: keys in schema order, numbers as plain ``int``/``float``,
tuples as lists. Files written from that copy are byte-stable, which makes the content hash in
their file names (see :mod:`promptgym.bench.store`) meaningful.

Protocol rules that are not about shape live in :func:`check_budget` (budget tiers), so that a
tool can show a structurally valid but over-budget file and say precisely why it is refused.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from promptgym.errors import InvalidSubmissionError
from promptgym.tasks.data import SEEDS
from promptgym.tasks.metrics import METRICS

__all__ = ["BENCH_SEEDS", "MAX_BYTES", "SCHEMA_VERSION", "TIERS", "budget_ok", "check_budget", "created_date",
           "parse_submission", "validate_submission"]

SCHEMA_VERSION = 1

#: Budget (LM calls per run) of each tier. "standard" is BBT's and BDPL's 8,000 calls; "lite"
#: lets CPU-only users take part (600 calls took ~4 minutes on our machines).
TIERS: dict[str, int] = {"lite": 1000, "standard": 8000}

#: The data seeds every submission must report, once each (the published k-shot splits).
BENCH_SEEDS: tuple[int, ...] = tuple(SEEDS)

MAX_BYTES = 5 * 1024 * 1024
MAX_ENV_KWARGS = 50
MAX_CONFIG_KEYS = 100
MAX_CONFIG_LIST = 64
MAX_DATA_FILES = 100
MAX_ACTION = 5000
MAX_LABEL_BIAS = 100
MAX_PROMPT_TEXT = 5000
MAX_CURVE = 10_000
MAX_SUBMITTER = 100
MAX_COMMAND = 1000
MAX_KWARG_STRING = 1000
MAX_TEST_ROWS = 1_000_000
MAX_BUDGET = 10_000_000

ENV_ID_RE = re.compile(r"^Prompt[A-Za-z0-9]+(-[A-Za-z]+)?-v\d+$")
AGENT_NAME_RE = re.compile(r"^[a-z0-9_\-]{1,40}$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,99}$")
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?[A-Za-z0-9.+\-]{0,30}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DATA_PATH_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")
PREDICTIONS_RE = re.compile(r"^[0-9a-z]*$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

_TOP_KEYS = ("schema_version", "env_id", "env_kwargs", "agent", "submitter", "promptgym_version", "model",
             "data_sha256", "tier", "budget_calls", "metric", "runs", "command", "created")
_RUN_KEYS = ("seed", "calls_used", "wall_seconds", "prompt", "curve", "test")
_PROMPT_KEYS = ("action", "label_bias", "text")
_TEST_KEYS = ("metric", "ece", "n", "predictions")

# Range of each metric: accuracy and F1 are fractions, Matthews correlation lies in [-1, 1].
_METRIC_RANGE: dict[str, tuple[float, float]] = {"accuracy": (0.0, 1.0), "f1": (0.0, 1.0),
                                                 "matthews_correlation": (-1.0, 1.0)}
assert set(_METRIC_RANGE) == set(METRICS), "every task metric needs a valid range here"


# --------------------------------------------------------------------------------------- parsing
def parse_submission(raw: bytes | str) -> dict[str, Any]:
    """Parse and validate a submission file's content; return the normalised submission.

    Order matters: the size is checked before decoding or parsing so that a huge upload cannot
    cost memory or time, and decoding is strict UTF-8 so that two readers cannot decode the same
    bytes differently.
    """
    if isinstance(raw, str):
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidSubmissionError(f"submission: text is not encodable as UTF-8 ({exc.reason})") from None
    elif isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
    else:
        raise InvalidSubmissionError(f"submission: expected bytes or str, got {type(raw).__name__}")
    if len(data) > MAX_BYTES:
        raise InvalidSubmissionError(f"submission: file is {len(data):,} bytes, the limit is {MAX_BYTES:,} (5 MB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSubmissionError(
            f"submission: not valid UTF-8 (byte {exc.start}: {exc.reason}); save the file as UTF-8") from None
    if text.startswith("\ufeff"):
        raise InvalidSubmissionError("submission: starts with a byte-order mark; save as UTF-8 without BOM")
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InvalidSubmissionError(
            f"submission: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} "
            f"(is the file truncated?)") from None
    except RecursionError:
        raise InvalidSubmissionError("submission: JSON is nested too deeply") from None
    except ValueError as exc:  # duplicate keys, or an integer literal too long to convert
        raise InvalidSubmissionError(f"submission: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidSubmissionError(f"submission: top level must be a JSON object, got {_json_type(obj)}")
    return validate_submission(obj)


class _NonFinite:
    """Stands in for a ``NaN``/``Infinity`` literal or an overflowing number while parsing.

    Raising inside ``json.loads`` would lose the field path; this placeholder is not a number, so
    the validator rejects it wherever it appears and names the field (every value is type-checked).
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


def _reject_constant(name: str) -> _NonFinite:
    return _NonFinite(name)


def _finite_float(literal: str) -> float | _NonFinite:
    value = float(literal)
    return value if math.isfinite(value) else _NonFinite(f"{literal[:40]} (overflows to {value})")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:60]!r} in a JSON object (readers would disagree on its value)")
        out[key] = value
    return out


# ------------------------------------------------------------------------------------ validation
def validate_submission(obj: Any) -> dict[str, Any]:
    """Validate a parsed submission (a dict from JSON, or built in Python) and return a normalised copy.

    Raises :class:`InvalidSubmissionError` naming the field path of the first problem found.
    Budget-tier rules are checked separately by :func:`check_budget`.
    """
    top = _object(obj, "submission", _TOP_KEYS, _TOP_KEYS)
    out: dict[str, Any] = {}
    version = _int(top["schema_version"], "schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidSubmissionError(f"schema_version: this promptgym reads version {SCHEMA_VERSION}, got {version}")
    out["schema_version"] = version
    out["env_id"] = _string(top["env_id"], "env_id", 80, pattern=ENV_ID_RE,
                            hint="an environment id like 'PromptSST2-v0'")
    out["env_kwargs"] = _flat_dict(top["env_kwargs"], "env_kwargs", MAX_ENV_KWARGS, allow_lists=False)
    out["agent"] = _agent(top["agent"], "agent")
    out["submitter"] = _string(top["submitter"], "submitter", MAX_SUBMITTER, single_line=True)
    out["promptgym_version"] = _string(top["promptgym_version"], "promptgym_version", 40, pattern=VERSION_RE,
                                       hint="a version like '0.1.0'")
    out["model"] = _model(top["model"], "model")
    out["data_sha256"] = _data_hashes(top["data_sha256"], "data_sha256")
    out["tier"] = _choice(top["tier"], "tier", tuple(TIERS))
    out["budget_calls"] = _int(top["budget_calls"], "budget_calls", lo=1, hi=MAX_BUDGET)
    metric = out["metric"] = _choice(top["metric"], "metric", tuple(_METRIC_RANGE))
    out["runs"] = _runs(top["runs"], "runs", metric)
    out["command"] = _string(top["command"], "command", MAX_COMMAND)
    out["created"] = _timestamp(top["created"], "created")
    return out


def created_date(sub: Mapping[str, Any]) -> str:
    """The ``YYYY-MM-DD`` date of a validated submission's ``created`` timestamp."""
    return _parse_iso(str(sub["created"])).date().isoformat()


def check_budget(sub: Mapping[str, Any]) -> None:
    """Raise unless the submission respects its tier: the tier's budget, and every run within it.

    Kept apart from :func:`validate_submission` because it is a protocol rule, not a shape rule:
    a result obtained with a non-standard budget may be a fine experiment, it just cannot be
    ranked against entries that had exactly the tier's budget.
    """
    tier = sub.get("tier")
    if tier not in TIERS:
        raise InvalidSubmissionError(f"tier: must be one of {sorted(TIERS)}, got {tier!r}")
    budget = TIERS[tier]
    if sub.get("budget_calls") != budget:
        raise InvalidSubmissionError(
            f"budget_calls: the {tier!r} tier has a budget of exactly {budget} calls, got {sub.get('budget_calls')!r}")
    for i, run in enumerate(sub.get("runs", [])):
        used = run.get("calls_used")
        if not _is_int(used):
            raise InvalidSubmissionError(f"runs[{i}].calls_used: must be an integer, got {_json_type(used)}")
        if used > budget:
            raise InvalidSubmissionError(
                f"runs[{i}].calls_used: {used!r} exceeds the {tier!r} tier's budget of {budget} calls")


def budget_ok(sub: Mapping[str, Any]) -> bool:
    """True when :func:`check_budget` passes (for filters and listings that must not raise)."""
    try:
        check_budget(sub)
    except InvalidSubmissionError:
        return False
    return True


# ----------------------------------------------------------------------------------- sub-objects
def _agent(value: Any, path: str) -> dict[str, Any]:
    obj = _object(value, path, ("name", "config"), ("name", "config"))
    return {"name": _string(obj["name"], f"{path}.name", 40, pattern=AGENT_NAME_RE,
                            hint="1-40 characters from a-z, 0-9, '_' and '-'"),
            "config": _flat_dict(obj["config"], f"{path}.config", MAX_CONFIG_KEYS, allow_lists=True)}


def _model(value: Any, path: str) -> dict[str, Any]:
    obj = _object(value, path, ("name", "weights_sha256"), ("name", "weights_sha256"))
    return {"name": _string(obj["name"], f"{path}.name", 100, pattern=MODEL_NAME_RE,
                            hint="a preset or Hugging Face id like 'smollm2-135m'"),
            "weights_sha256": _string(obj["weights_sha256"], f"{path}.weights_sha256", 64, pattern=SHA256_RE,
                                      hint="64 lowercase hex digits")}


def _data_hashes(value: Any, path: str) -> dict[str, str]:
    obj = _mapping(value, path)
    if not obj:
        raise InvalidSubmissionError(f"{path}: must list the sha256 of every data file used (got none)")
    if len(obj) > MAX_DATA_FILES:
        raise InvalidSubmissionError(f"{path}: at most {MAX_DATA_FILES} entries, got {len(obj)}")
    out: dict[str, str] = {}
    for key, digest in obj.items():
        key_path = f"{path}[{key[:60]!r}]"
        if not DATA_PATH_RE.fullmatch(key):
            raise InvalidSubmissionError(
                f"{key_path}: data file keys are relative paths of 1-200 characters from A-Z a-z 0-9 '_' '.' '-' '/'")
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise InvalidSubmissionError(
                f"{key_path}: must be a relative path inside the data directory (no leading '/', no '.' or '..' "
                f"components, no empty components)")
        out[key] = _string(digest, key_path, 64, pattern=SHA256_RE, hint="64 lowercase hex digits")
    return out


def _runs(value: Any, path: str, metric: str) -> list[dict[str, Any]]:
    items = _list(value, path, len(BENCH_SEEDS))
    runs = [_run(item, f"{path}[{i}]", metric) for i, item in enumerate(items)]
    seeds = [run["seed"] for run in runs]
    if sorted(seeds) != sorted(BENCH_SEEDS):
        raise InvalidSubmissionError(
            f"{path}: needs exactly one run per data seed {list(BENCH_SEEDS)}, got seeds {seeds}")
    n0 = runs[0]["test"]["n"]
    for i, run in enumerate(runs):
        if run["test"]["n"] != n0:
            raise InvalidSubmissionError(
                f"{path}[{i}].test.n: every run is scored on the same test split, got {run['test']['n']} "
                f"but runs[0].test.n is {n0}")
    return runs


def _run(value: Any, path: str, metric: str) -> dict[str, Any]:
    obj = _object(value, path, _RUN_KEYS, _RUN_KEYS)
    calls_used = _int(obj["calls_used"], f"{path}.calls_used", lo=0, hi=MAX_BUDGET)
    return {
        "seed": _int(obj["seed"], f"{path}.seed"),
        "calls_used": calls_used,
        "wall_seconds": _float(obj["wall_seconds"], f"{path}.wall_seconds", lo=0.0),
        "prompt": _prompt(obj["prompt"], f"{path}.prompt"),
        "curve": _curve(obj["curve"], f"{path}.curve", calls_used),
        "test": _test(obj["test"], f"{path}.test", metric),
    }


def _prompt(value: Any, path: str) -> dict[str, Any]:
    obj = _object(value, path, _PROMPT_KEYS, (*_PROMPT_KEYS, "demonstrations"))
    action = obj["action"]
    if action is not None:
        items = _list(action, f"{path}.action", MAX_ACTION)
        if all(_is_int(x) for x in items):
            action = [int(x) for x in items]
        else:
            action = [_float(x, f"{path}.action[{i}]") for i, x in enumerate(items)]
    bias = obj["label_bias"]
    if bias is not None:
        items = _list(bias, f"{path}.label_bias", MAX_LABEL_BIAS)
        bias = [_float(x, f"{path}.label_bias[{i}]") for i, x in enumerate(items)]
    out = {"action": action, "label_bias": bias, "text": _string(obj["text"], f"{path}.text", MAX_PROMPT_TEXT)}
    if "demonstrations" in obj:  # in-context examples, a text prefix (optional key)
        out["demonstrations"] = _string(obj["demonstrations"], f"{path}.demonstrations", MAX_PROMPT_TEXT)
    return out


def _curve(value: Any, path: str, calls_used: int) -> list[list[int | float]]:
    items = _list(value, path, MAX_CURVE)
    out: list[list[int | float]] = []
    previous = 0
    for i, point in enumerate(items):
        p = f"{path}[{i}]"
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise InvalidSubmissionError(f"{p}: must be a pair [calls, best_dev], got {_json_type(point)}")
        calls = _int(point[0], f"{p}[0]", lo=0)
        best = _float(point[1], f"{p}[1]")
        if calls < previous:
            raise InvalidSubmissionError(f"{p}[0]: calls must be non-decreasing along the curve ({calls} < {previous})")
        if calls > calls_used:
            raise InvalidSubmissionError(f"{p}[0]: {calls} calls is more than the run's calls_used ({calls_used})")
        previous = calls
        out.append([calls, best])
    return out


def _test(value: Any, path: str, metric: str) -> dict[str, Any]:
    obj = _object(value, path, _TEST_KEYS, _TEST_KEYS)
    lo, hi = _METRIC_RANGE[metric]
    n = _int(obj["n"], f"{path}.n", lo=1, hi=MAX_TEST_ROWS)
    predictions = _string(obj["predictions"], f"{path}.predictions", MAX_TEST_ROWS, pattern=PREDICTIONS_RE,
                          hint="one base-36 label id (0-9, a-z) per test row")
    if len(predictions) != n:
        raise InvalidSubmissionError(f"{path}.predictions: must have one character per test row (n={n}), "
                                     f"got {len(predictions)}")
    return {"metric": _float(obj["metric"], f"{path}.metric", lo=lo, hi=hi),
            "ece": _float(obj["ece"], f"{path}.ece", lo=0.0, hi=1.0),
            "n": n, "predictions": predictions}


def _timestamp(value: Any, path: str) -> str:
    text = _string(value, path, 40, single_line=True)
    try:
        _parse_iso(text)
    except ValueError:
        raise InvalidSubmissionError(f"{path}: must be an ISO-8601 timestamp like '2025-01-31T12:00:00Z', "
                                     f"got {text!r}") from None
    return text


def _parse_iso(text: str) -> datetime:
    # Python 3.10's fromisoformat does not know the 'Z' suffix.
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)


# -------------------------------------------------------------------------------------- primitives
def _object(value: Any, path: str, required: Sequence[str], allowed: Sequence[str]) -> Mapping[str, Any]:
    obj = _mapping(value, path)
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise InvalidSubmissionError(f"{path}: unknown key(s) {[k[:60] for k in extra[:5]]}; allowed: {list(allowed)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise InvalidSubmissionError(f"{path}: missing key(s) {missing}")
    return obj


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidSubmissionError(f"{path}: must be an object, got {_json_type(value)}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidSubmissionError(f"{path}: keys must be strings, got {_json_type(key)}")
        _check_encodable(key, path)
    return value


def _list(value: Any, path: str, max_len: int) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise InvalidSubmissionError(f"{path}: must be an array, got {_json_type(value)}")
    if len(value) > max_len:
        raise InvalidSubmissionError(f"{path}: at most {max_len:,} items, got {len(value):,}")
    return list(value)


def _flat_dict(value: Any, path: str, max_keys: int, *, allow_lists: bool) -> dict[str, Any]:
    """A flat dict of JSON scalars (optionally short scalar lists): enough for kwargs and configs,
    and nothing a renderer or a re-run could choke on."""
    obj = _mapping(value, path)
    if len(obj) > max_keys:
        raise InvalidSubmissionError(f"{path}: at most {max_keys} keys, got {len(obj)}")
    out: dict[str, Any] = {}
    for key, item in obj.items():
        if not KEY_RE.fullmatch(key):
            raise InvalidSubmissionError(
                f"{path}: key {key[:60]!r} must be an identifier of at most 64 characters (letters, digits, '_')")
        p = f"{path}.{key}"
        if allow_lists and isinstance(item, (list, tuple)):
            out[key] = [_scalar(x, f"{p}[{i}]") for i, x in enumerate(_list(item, p, MAX_CONFIG_LIST))]
        else:
            out[key] = _scalar(item, p, lists_ok=allow_lists)
    return out


def _scalar(value: Any, path: str, *, lists_ok: bool = False) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if _is_int(value):
        return int(value)
    if isinstance(value, numbers.Real):
        return _float(value, path)
    if isinstance(value, str):
        return _string(value, path, MAX_KWARG_STRING)
    allowed = "a string, number, boolean, null" + (" or a short list of those" if lists_ok else "")
    raise InvalidSubmissionError(f"{path}: must be {allowed}, got {_json_type(value)}")


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` where a count belongs is a bug in the submitter's code
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int(value: Any, path: str, lo: int | None = None, hi: int | None = None) -> int:
    if not _is_int(value):
        raise InvalidSubmissionError(f"{path}: must be an integer, got {_json_type(value)}")
    out = int(value)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise InvalidSubmissionError(f"{path}: must be an integer in [{lo}, {hi if hi is not None else '∞'}], "
                                     f"got {out}")
    return out


def _float(value: Any, path: str, lo: float | None = None, hi: float | None = None) -> float:
    bounds = f" in [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else (
        f" ≥ {_fmt(lo)}" if lo is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidSubmissionError(f"{path}: must be a finite float{bounds}, got {_json_type(value)}")
    out = float(value)
    if not math.isfinite(out) or (lo is not None and out < lo) or (hi is not None and out > hi):
        raise InvalidSubmissionError(f"{path}: must be a finite float{bounds}, got {out!r}")
    return out


def _string(value: Any, path: str, max_len: int, *, pattern: re.Pattern[str] | None = None, hint: str = "",
            single_line: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidSubmissionError(f"{path}: must be a string, got {_json_type(value)}")
    if len(value) > max_len:
        raise InvalidSubmissionError(f"{path}: at most {max_len:,} characters, got {len(value):,}")
    _check_encodable(value, path)
    if single_line and CONTROL_RE.search(value):
        raise InvalidSubmissionError(f"{path}: must be a single line without control characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidSubmissionError(f"{path}: must be {hint or 'of the form ' + pattern.pattern}, got {value[:80]!r}")
    return value


def _check_encodable(text: str, path: str) -> None:
    # JSON escapes can smuggle lone surrogates ("\ud800") that no UTF-8 file can hold.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidSubmissionError(f"{path}: contains a lone surrogate that is not valid Unicode text") from None


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        got = repr(value[:40]) if isinstance(value, str) else _json_type(value)
        raise InvalidSubmissionError(f"{path}: must be one of {list(choices)}, got {got}")
    return value


def _fmt(x: float | None) -> str:
    return "" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


_JSON_NAMES: dict[type, str] = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
                                tuple: "array", dict: "object", type(None): "null"}


def _json_type(value: Any) -> str:
    """Name a value's type as the submitter sees it in their JSON (bools are 'boolean', not int)."""
    if isinstance(value, _NonFinite):
        return f"non-finite number {value.literal}"
    name = _JSON_NAMES.get(type(value))
    if name is None:
        return type(value).__name__
    if name == "float" and not math.isfinite(value):
        return f"non-finite float {value!r}"
    return f"{name} {value!r}" if name in ("boolean", "null") else name
