"""The leaderboard submission format (schema version 2): pydantic models, and strict parsing around them.

A submission is one JSON file: which environment and agent, which model and data (by sha256),
which budget tier, and one run per data seed with the final prompt, the learning curve on the dev
split and the predictions on the test split. Submissions come from strangers and are committed to
the repository, so nothing in them is trusted:

* :func:`parse_submission` bounds the size (``MAX_BYTES``) before decoding, decodes strict UTF-8
  without BOM, and rejects duplicate keys (``json.loads`` keeps the last one, so two readers could
  disagree about a file) and ``NaN``/``Infinity``/overflowing numbers (they would poison averages).
  No validation library does this, so it stays hand-written;
* the models give every field an exact type (strict mode: ``true`` is not an int), a size bound and,
  where it has one, a pattern; unknown keys are errors, so a typo is reported instead of ignored.
  The constraints are pydantic's own, so :func:`submission_json_schema` publishes what is checked.

Every error is an :class:`~promptgym.errors.InvalidSubmissionError` whose one-line message starts
with the field path, e.g. ``runs[2].test.ece: must be a finite float in [0, 1], got 1.5``.

Validation returns a *normalised copy*: keys in schema order, numbers as plain ``int``/``float``,
tuples as lists. Files written from it are byte-stable, which makes the content hash in their names
(see :mod:`promptgym.bench.store`) meaningful.

Protocol rules that are not about shape live in :func:`check_budget` (budget tiers), so that a
tool can show a structurally valid but over-budget file and say precisely why it is refused.

Versions. A file keeps the version it was written with and is re-scored by that version's rules,
so committed entries verify exactly as they did. Version 2 changed the meaning of a prompt set's
``"combine": "vote"`` from the bare weighted histogram of predicted labels (exact zeros: its NLL
was the 1e-12 floor; ties went to the first label) to smoothed vote shares with a tie-break
(:func:`promptgym.members.combine_set`); the shape is the same. :func:`combine_rule` maps a file's
rule name to the runner's rule, the one place where the versions differ. A run's optional
``receipt`` (a server's signed usage receipt, :mod:`promptgym.bench.receipts`) changes no existing
key's meaning, so it came without a new version: files without it read and verify as before. So does
a metric the registry records (:mod:`promptgym.metrics.registry`; ``Scores`` is built from it): it adds
an optional key of the test record, which files written before it lack.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from annotated_types import GroupedMetadata
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
    field_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from promptgym.agent import COMBINE_RULES, VOTE_V1
from promptgym.errors import InvalidSubmissionError
from promptgym.host import BF16_NAMES, MAX_CPU_NAME
from promptgym.metrics.registry import MetricSpec, recorded_specs
from promptgym.metrics.task import RANGES
from promptgym.tasks.data import SEEDS, load_split, stratified_rows

__all__ = ["BENCH_SEEDS", "LITE_TEST_ROWS", "MAX_BYTES", "SCHEMA_VERSION", "SCHEMA_VERSIONS", "TIERS", "Submission",
           "TIER_TEST_ROWS", "TestSubsample", "bare_vote", "budget_ok", "check_budget", "combine_rule", "created_date",
           "parse_submission", "submission_json_schema", "validate_submission", "protocol_test_rows"]

#: the version new submissions are written with, and every version this promptgym reads (see above)
SCHEMA_VERSION = 2
SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

#: Budget (LM calls per run) of each tier. "standard" is BBT's and BDPL's 8,000 calls; "lite"
#: lets CPU-only users take part (600 calls took ~4 minutes on our machines).
TIERS: dict[str, int] = {"lite": 1000, "standard": 8000}
#: test rows a lite-tier entry is scored on at most: a larger test split is scored on its fixed
#: label-stratified subsample of this many rows; the standard tier scores every row (:func:`protocol_test_rows`).
#: Measured (fp32, SmolLM2, 2-core Intel Xeon): 41-87 s per 1,000 rows, so the offline mirror's largest splits
#: (SNLI 9,824 rows: ~7 min per prompt) are scored in full; the hub's full Yelp (38,000 long reviews) and
#: DBPedia (70,000) test splits would cost hours per prompt (extrapolated; DBPedia ~1.7 h) and are subsampled.
LITE_TEST_ROWS = 10_000
#: tier -> the most test rows its entries are scored on (a tier not listed: every row)
TIER_TEST_ROWS: dict[str, int] = {"lite": LITE_TEST_ROWS}


def protocol_test_rows(task: str, tier: str, data_dir: str | None = None) -> np.ndarray | None:
    """The test rows an entry of ``tier`` on ``task`` is scored on: None (all of them), or, when the tier
    caps them (:data:`TIER_TEST_ROWS`) and the test split is larger, its label-stratified subsample
    (:func:`promptgym.tasks.data.stratified_rows`, seed 0: the same rows on every machine; a run records
    their sha256; an accuracy's 95% CI at 10,000 rows is about +-1 point)."""
    cap = TIER_TEST_ROWS.get(tier)
    if cap is None:
        return None
    labels = load_split(task, "test", None, data_dir).labels
    if len(labels) <= cap:
        return None
    return stratified_rows(labels, cap)

#: The data seeds every submission must report, once each (the published k-shot splits).
BENCH_SEEDS: tuple[int, ...] = tuple(SEEDS)

MAX_BYTES = 5 * 1024 * 1024
MAX_ENV_KWARGS = 50
MAX_CONFIG_KEYS = 100
MAX_CONFIG_LIST = 64
MAX_DATA_FILES = 100
MAX_ACTION = 5000
MAX_LABEL_BIAS = 100
MAX_MEMBERS = 1000
MAX_OOD_TASKS = 20
MAX_PROMPT_TEXT = 5000
MAX_CURVE = 10_000
MAX_SUBMITTER = 100
MAX_COMMAND = 1000
MAX_KWARG_STRING = 1000
MAX_TEST_ROWS = 1_000_000
MAX_BUDGET = 10_000_000
MAX_RECEIPT_ENTRIES = 25_000  # calls after the search a receipt lists: each member on test and the OOD tasks
MAX_THREADS = 4096  # a run's recorded torch or BLAS threads

# Anchored with ^...$: pydantic (Rust regex) and JSON Schema (ECMA-262) let '$' match only at the very
# end; Python users of these constants call fullmatch, since Python's '$' also matches before a final '\n'.
ENV_ID_RE = re.compile(r"^Prompt[A-Za-z0-9]+(-[A-Za-z]+)?-v\d+$")
AGENT_NAME_RE = re.compile(r"^[a-z0-9_\-]{1,40}$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,99}$")
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?[A-Za-z0-9.+\-]{0,30}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DATA_PATH_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")
PREDICTIONS_RE = re.compile(r"^[0-9a-z]*$")
SINGLE_LINE_RE = re.compile(r"^[^\x00-\x1f\x7f]*$")
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")  # promptgym.serve.keys' key names
KEY_ID_RE = re.compile(r"^[0-9a-f]{32}$")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")



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
        obj = json.loads(text, parse_constant=_NonFinite, parse_float=_finite_float, object_pairs_hook=_unique_keys)
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
    the models reject it wherever it appears and name the field (every value is type-checked).
    """

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def __repr__(self) -> str:
        return self.literal


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
    try:
        sub = Submission.model_validate(obj)
    except ValidationError as exc:
        raise _submission_error(exc.errors(include_url=False)[0]) from None
    return sub.model_dump(exclude_unset=True)  # exclude_unset: the optional prompt key only when given


def submission_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a submission, as published in ``leaderboards/submission.schema.json``.

    It states the shape, types, bounds and patterns; the cross-field rules (one run per seed, curve
    within ``calls_used``, metric range by metric, ...) and the budget tiers are only in this module.
    """
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Submission.model_json_schema()}


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


def combine_rule(combine: str | None, schema_version: int) -> str:
    """The runner's rule (:func:`promptgym.members.combine_set`) for a prompt's ``combine`` in a file of
    ``schema_version``: "vote" is :data:`~promptgym.agent.VOTE_V1` (the bare histogram) before version 2;
    absent is "mean"."""
    rule = combine or "mean"
    return VOTE_V1 if rule == "vote" and schema_version < 2 else rule


def bare_vote(sub: Mapping[str, Any]) -> bool:
    """Whether a submission's prompt sets vote by the bare histogram (schema version 1): its NLL is the
    probability floor's, not a property of the method (leaderboards show it as not applicable)."""
    version = sub.get("schema_version", SCHEMA_VERSION)
    return any(combine_rule((run.get("prompt") or {}).get("combine"), version) == VOTE_V1 for run in sub["runs"])


# ------------------------------------------------------------------------------- error messages
# The two kinds of error this module raises inside pydantic: a value of the wrong JSON type, or of the
# right type failing a check. The context key "at" extends the error's location (for cross-field checks).
_WRONG, _BAD = "wrong_type", "bad_value"


def _wrong(message: str) -> PydanticCustomError:
    return PydanticCustomError(_WRONG, message)


def _bad(message: str, *at: str | int) -> PydanticCustomError:
    return PydanticCustomError(_BAD, message, {"at": at})


def _submission_error(error: ErrorDetails) -> InvalidSubmissionError:
    """Turn pydantic's first error into ``<field path>: <message>``, e.g. ``data_sha256['a/b.jsonl']: ...``."""
    loc = list(error["loc"])
    if loc[-1:] == ["[key]"]:  # a bad dict key, which pydantic puts in the location lossily (lone surrogates)
        loc[-2:] = [error["input"]]
    path = ""
    for part in [*loc, *error.get("ctx", {}).get("at", ())]:
        if isinstance(part, str) and KEY_RE.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{part}]" if isinstance(part, int) else f"[{str(part)[:60]!r}]"
    return InvalidSubmissionError(f"{path or 'submission'}: {error['msg']}")


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


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` where a count belongs is a bug in the submitter's code
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fmt(x: float | None) -> str:
    return "∞" if x is None else (str(int(x)) if float(x).is_integer() else str(x))


# ----------------------------------------------------------------------------------------- rules
_REJECTED = object()  # what a `prepare` function passes on for a value no pydantic type may accept


class _Rule(GroupedMetadata):
    """``Annotated`` metadata for one kind of value: pydantic constraints, and their errors re-phrased.

    The constraints (strict mode always) do the checking and are what the JSON Schema states. A wrap
    validator around them ``prepare``\\ s the value (numpy scalars to plain numbers, tuples to lists),
    applies an optional ``check``, and turns pydantic's error about the value itself into ``must be
    <what>, got <value>`` or ``at most <max> <unit>, got <n>``; errors inside a container pass through.
    """

    def __init__(self, what: str | Callable[[], str], *, bad: str = "", unit: str = "", empty: str = "",
                 prepare: Callable[[Any], Any] = lambda value: value, check: Callable[[Any], bool] | None = None,
                 **constraints: Any) -> None:
        self.what, self.bad, self.unit, self.empty = what, bad, unit, empty
        self.prepare, self.check, self.constraints = prepare, check, constraints

    def __iter__(self) -> Iterator[object]:
        yield Field(strict=True, **self.constraints)
        yield WrapValidator(self._validate)

    def _validate(self, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        plain = self.prepare(value)
        try:
            out = handler(plain)
        except ValidationError as exc:
            error = next((e for e in exc.errors() if not e["loc"] and e["type"] not in (_WRONG, _BAD)), None)
            if error is None:
                raise
            kind = error["type"]
        else:
            if self.check is None or self.check(out):
                return out
            kind = "check"
        what = self.what() if callable(self.what) else self.what
        if kind.endswith("_type"):
            raise _wrong(f"must be {what}, got {_json_type(value if plain is _REJECTED else plain)}")
        if kind.endswith("too_long"):  # a list's, dict's or string's
            raise _bad(f"at most {self.constraints['max_length']:,} {self.unit}, got {len(plain):,}")
        if kind == "too_short":
            raise _bad(self.empty)
        raise _bad(f"must be {self.bad or what}, got {plain[:80] if isinstance(plain, str) else plain!r}")


def _int(lo: int | None = None, hi: int | None = None) -> _Rule:
    return _Rule("an integer", bad=f"an integer in [{lo}, {_fmt(hi)}]", ge=lo, le=hi,
                 prepare=lambda value: int(value) if _is_int(value) else value)  # numpy integers too


def _float(lo: float | None = None, hi: float | None = None) -> _Rule:
    bounds = (f" in [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None
              else f" ≥ {_fmt(lo)}" if lo is not None else "")
    return _Rule("a finite float" + bounds, prepare=_plain_float, ge=lo, le=hi, allow_inf_nan=False)


def _plain_float(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _REJECTED  # pydantic would take a numpy bool for a float
    try:
        return float(value)  # numpy floats, and ints where a float is expected
    except OverflowError:
        return _NonFinite(f"integer ~2**{int(value).bit_length()} (overflows a float)")


def _text(max_len: int, pattern: re.Pattern[str] | None = None, hint: str = "",
          check: Callable[[str], bool] | None = None) -> _Rule:
    return _Rule("a string", bad=hint or f"of the form {pattern and pattern.pattern}", unit="characters",
                 prepare=_unicode, check=check, max_length=max_len, pattern=pattern and pattern.pattern)


def _unicode(value: Any) -> Any:
    # JSON escapes can smuggle lone surrogates ("\ud800") that no UTF-8 file can hold.
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad("contains a lone surrogate that is not valid Unicode text") from None
    return value


def _choice(options: Callable[[], Collection[str]]) -> _Rule:
    """A string from a set read when validating (tests add a tier) and when writing the JSON Schema."""
    return _Rule(lambda: f"one of {list(options())}", check=lambda value: value in options(),
                 json_schema_extra=lambda schema: schema.update(enum=list(options())))


def _array(max_len: int) -> _Rule:
    return _Rule("an array", unit="items", max_length=max_len,
                 prepare=lambda value: list(value) if isinstance(value, tuple) else value)


def _object(max_len: int, unit: str = "keys", empty: str = "") -> _Rule:
    return _Rule("an object", unit=unit, empty=empty, max_length=max_len, min_length=1 if empty else None,
                 json_schema_extra=_key_pattern_as_property_names)


def _key_pattern_as_property_names(schema: dict[str, Any]) -> None:
    # pydantic states a key pattern as patternProperties, which would let keys missing the pattern through.
    if "patternProperties" in schema:
        [(pattern, values)] = schema.pop("patternProperties").items()
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values


class _OneOf(GroupedMetadata):
    """A union, tried left to right. Of the members' errors, report the one that got furthest (a value
    of the right kind failing a check, or an item of a list); else one 'must be <what>' error."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __iter__(self) -> Iterator[object]:
        yield Field(union_mode="left_to_right")
        yield WrapValidator(self._validate)

    def _validate(self, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            for e in exc.errors():  # e["loc"][0] names the union member
                if e["type"] == _BAD or len(e["loc"]) > 1:
                    raise _bad(e["msg"], *e["loc"][1:], *e.get("ctx", {}).get("at", ())) from None
            raise _wrong(f"must be {self.what}, got {_json_type(value)}") from None


def _as_pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) and len(value) == 2 else _REJECTED


def _uniform_numbers(values: list[int | float]) -> list[int | float]:
    """An action of token ids stays ints; with any float in it, it is a continuous vector, all floats."""
    if all(isinstance(x, int) for x in values):
        return values
    for i, x in enumerate(values):
        try:
            values[i] = float(x)
        except OverflowError:
            raise _bad("must be a finite float, got an integer too large for a float", i) from None
    return values


def _inside_data_dir(key: str) -> bool:
    return not key.startswith("/") and all(part not in ("", ".", "..") for part in key.split("/"))


def _known_version(version: int) -> int:
    if version not in SCHEMA_VERSIONS:
        raise _bad(f"this promptgym reads versions {', '.join(map(str, SCHEMA_VERSIONS))}, got {version}")
    return version


def _is_iso_timestamp(text: str) -> bool:
    try:
        _parse_iso(text)
    except ValueError:
        return False
    return True


def _parse_iso(text: str) -> datetime:
    # Python 3.10's fromisoformat does not know the 'Z' suffix.
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)


Sha256 = Annotated[str, _text(64, SHA256_RE, "64 lowercase hex digits")]
DataPath = Annotated[str, _text(200, DATA_PATH_RE, "a relative path inside the data directory: 1-200 characters from "
                                "A-Z a-z 0-9 '_' '.' '-' '/', no leading '/', no '', '.' or '..' components",
                                _inside_data_dir)]
# Flat dicts of JSON scalars (and, in agent configs, short lists of them): enough for kwargs and
# configs, and nothing a renderer or a re-run could choke on.
Key = Annotated[str, _text(64, KEY_RE, "an identifier of at most 64 characters (letters, digits, '_')")]
Scalar = Annotated[None | StrictBool | Annotated[int, _int()] | Annotated[float, _float()]
                   | Annotated[str, _text(MAX_KWARG_STRING)], _OneOf("a string, number, boolean, null")]
ConfigValue = Annotated[Scalar | Annotated[list[Scalar], _array(MAX_CONFIG_LIST)],
                        _OneOf("a string, number, boolean, null or a short list of those")]
Number = Annotated[Annotated[int, _int()] | Annotated[float, _float()], _OneOf("a finite float")]
CurvePoint = Annotated[tuple[Annotated[int, _int(0)], Annotated[float, _float()]],
                       _Rule("a pair [calls, best_dev]", prepare=_as_pair)]


# ---------------------------------------------------------------------------------------- models
class _Strict(BaseModel):
    """Exact types, unknown keys forbidden, and key errors phrased like the other errors."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _phrase_key_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            unknown = [str(e["loc"][0])[:60] for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
            if unknown:
                raise _bad(f"unknown key(s) {unknown[:5]}; allowed: {list(cls.model_fields)}") from None
            missing = [e["loc"][0] for e in errors if e["type"] == "missing" and len(e["loc"]) == 1]
            if missing:
                raise _bad(f"missing key(s) {missing}") from None
            own = next((e for e in errors if not e["loc"] or e["type"] == "invalid_key"), None)
            if own is None or own["type"] in (_WRONG, _BAD):
                raise
            if own["type"] == "invalid_key":
                raise _wrong(f"keys must be strings, got {_json_type(own['input'])}") from None
            if own["type"] == "string_unicode":
                raise _bad("contains a lone surrogate that is not valid Unicode text") from None
            raise _wrong(f"must be an object, got {_json_type(data)}") from None


class Agent(_Strict):
    """The agent that produced the prompts, and its configuration."""

    name: Annotated[str, _text(40, AGENT_NAME_RE, "1-40 characters from a-z, 0-9, '_' and '-'")]
    config: Annotated[dict[Key, ConfigValue], _object(MAX_CONFIG_KEYS)]


class ModelRef(_Strict):
    """The scoring language model: a preset or Hugging Face id, and the sha256 of its weights."""

    name: Annotated[str, _text(100, MODEL_NAME_RE, "a preset or Hugging Face id like 'smollm2-135m'")]
    weights_sha256: Sha256


def _optional() -> Any:
    """An optional key: absent unless given (a dump only has it when the input had it; null is refused)."""
    return Field(default=None, json_schema_extra=lambda schema: schema.pop("default"))


Action = Annotated[list[Number], _array(MAX_ACTION), AfterValidator(_uniform_numbers)]
Bias = Annotated[list[Annotated[float, _float()]], _array(MAX_LABEL_BIAS)]


class Prompt(_Strict):
    """The final prompt: token ids or a continuous vector (``action``), label bias, and its text.

    A prompt set (distributional agents) adds its ``members`` (actions), their ``weights`` (>= 0,
    normalised when scored; absent: uniform) and the ``combine`` rule ("mean" of the members' label
    distributions, or "vote" of their predicted labels: smoothed vote shares, in version 1 files the
    bare histogram); ``action`` is then the member of largest weight, and ``label_bias`` may hold
    one bias per member.
    """

    action: Action | None
    label_bias: Annotated[Bias | Annotated[list[Bias], _array(MAX_MEMBERS)],
                          _OneOf("an array of floats, or one such array per member")] | None
    text: Annotated[str, _text(MAX_PROMPT_TEXT)]
    # In-context examples, a text prefix.
    demonstrations: Annotated[str, _text(MAX_PROMPT_TEXT)] = _optional()
    members: Annotated[list[Action], _array(MAX_MEMBERS)] = _optional()
    weights: Annotated[list[Annotated[float, _float(0.0)]], _array(MAX_MEMBERS)] = _optional()
    combine: Annotated[str, _choice(lambda: COMBINE_RULES)] = _optional()

    @model_validator(mode="after")
    def _a_consistent_set(self) -> Prompt:
        members = self.members
        if members is None:
            for key in ("weights", "combine"):
                if getattr(self, key) is not None:
                    raise _bad("only a prompt set (with members) has this key", key)
            if self.label_bias and isinstance(self.label_bias[0], list):
                raise _bad("one bias per member needs members", "label_bias")
            return self
        if not members:
            raise _bad("a prompt set needs at least one member", "members")
        if self.weights is not None:
            if len(self.weights) != len(members):
                raise _bad(f"needs one weight per member ({len(members)}), got {len(self.weights)}", "weights")
            if sum(self.weights) <= 0:
                raise _bad("must have a positive sum", "weights")
        if self.label_bias and isinstance(self.label_bias[0], list):
            if len(self.label_bias) != len(members):
                raise _bad(f"needs one bias per member ({len(members)}), got {len(self.label_bias)}", "label_bias")
            if len({len(b) for b in self.label_bias}) != 1:
                raise _bad("every member's bias needs the same number of labels", "label_bias")
        return self


class OodAuroc(_Strict):
    """Out-of-distribution detection on one OOD task's test inputs: AUROC of two confidence scores."""

    auroc_maxprob: Annotated[float, _float(0.0, 1.0)]
    auroc_entropy: Annotated[float, _float(0.0, 1.0)]


class TestSubsample(_Strict):
    """The test rows a run was scored on when not all of them (:func:`protocol_test_rows`): the split's size
    and the sha256 of the row indices (:func:`promptgym.tasks.data.rows_fingerprint`)."""

    of: Annotated[int, _int(1, MAX_TEST_ROWS)]
    sha256: Sha256


TestSubsample.__test__ = False  # type: ignore[attr-defined]  # not a pytest class, despite its name


class _ScoresRules(_Strict):
    """The cross-field rule of :data:`Scores` (whose fields are built from the metric registry)."""

    @model_validator(mode="after")
    def _one_prediction_per_row(self) -> _ScoresRules:
        if len(self.predictions) != self.n:  # fields of the built model
            raise _bad(f"must have one character per test row (n={self.n}), got {len(self.predictions)}",
                       "predictions")
        return self


def _recorded_field(spec: MetricSpec) -> Any:
    """A recorded metric's key: a finite float within the spec's bounds; absent in files written before
    the metric was recorded, unless the spec says every file has it."""
    lo, hi = spec.bounds
    return Annotated[float, _float(lo, hi)], (... if spec.required else _optional())


def _scores_model() -> type[_Strict]:
    """``Scores``: the task metric, the predictions and the metrics the registry records
    (:func:`~promptgym.metrics.registry.recorded_specs`, each within its bounds), keys in the order files
    have always had them: the required metrics after ``metric``, the optional ones after ``predictions``."""
    recorded = recorded_specs()
    fields: dict[str, Any] = {  # the range of the task's own metric is checked by Submission (RANGES)
        "metric": (Annotated[float, _float(), Field(json_schema_extra={"minimum": -1, "maximum": 1})], ...)}
    fields.update({spec.name: _recorded_field(spec) for spec in recorded if spec.required})
    fields["n"] = (Annotated[int, _int(1, MAX_TEST_ROWS)], ...)
    fields["predictions"] = (Annotated[str, _text(MAX_TEST_ROWS, PREDICTIONS_RE,
                                                  "one base-36 label id (0-9, a-z) per test row")], ...)
    fields.update({spec.name: _recorded_field(spec) for spec in recorded if not spec.required})
    fields["ood"] = (Annotated[dict[Key, OodAuroc], _object(MAX_OOD_TASKS, "tasks")], _optional())
    fields["subsample"] = (TestSubsample, _optional())
    return create_model("Scores", __base__=_ScoresRules, __module__=__name__, __doc__=(
        "Scores on the test split. ``metric`` lies in [0, 1], or [-1, 1] for Matthews correlation."), **fields)


#: the model of a run's ``test`` record (a class, built once from the metric registry at import)
Scores = _scores_model()


class ReceiptBody(_Strict):
    """What a server's usage receipt states, exactly as it signed it (:mod:`promptgym.lm.receipts`)."""

    format: Annotated[str, _text(40, SINGLE_LINE_RE, "a receipt format like 'promptgym-receipt/1'")]
    signer: Sha256
    key: Annotated[str, _text(64, KEY_NAME_RE, "a key name (letters, digits, _.@-)")]
    key_id: Annotated[str, _text(32, KEY_ID_RE, "32 lowercase hex digits")]
    model: Annotated[str, _text(300, SINGLE_LINE_RE, "a single line without control characters")]
    model_sha256: Sha256
    dtype: Annotated[str, _text(20, SINGLE_LINE_RE, "a dtype like 'bfloat16'")]
    calls: Annotated[int, _int(0, MAX_BUDGET + MAX_RECEIPT_ENTRIES)]
    examples: Annotated[int, _int(0)]
    first_call: Annotated[str, _text(40, SINGLE_LINE_RE, "a timestamp")]
    last_call: Annotated[str, _text(40, SINGLE_LINE_RE, "a timestamp")]
    head: Sha256
    issued: Annotated[str, _text(40, SINGLE_LINE_RE, "a timestamp")]


CallHashes = Annotated[list[Sha256], _Rule("an array [prompt, rows, response] of sha256 hashes", unit="items",
                                           empty="needs 3 hashes: [prompt, rows, response]", min_length=3,
                                           max_length=3, prepare=lambda v: list(v) if isinstance(v, tuple) else v)]


class UsageReceipt(_Strict):
    """A run's usage receipt: the server's signed receipt of the run's key, the chain's head after the
    search, and the calls after it (the harness scoring the submitted prompts) as [prompt, rows,
    response] hashes, from which the signed head is recomputed (:mod:`promptgym.bench.receipts`)."""

    body: ReceiptBody
    signature: Annotated[str, _text(200, BASE64_RE, "base64")]
    prefix_head: Sha256
    entries: Annotated[list[CallHashes], _array(MAX_RECEIPT_ENTRIES)]


class SearchThreads(_Strict):
    """The thread settings a run's search ran under (:mod:`promptgym.threads`): an agent's arithmetic is
    deterministic on one setting only (a BLAS rounds by thread count), so an audit replays under these."""

    torch: Annotated[int, _int(1, MAX_THREADS)] = _optional()
    blas: Annotated[int, _int(1, MAX_THREADS)] = _optional()


class SearchHost(_Strict):
    """The kind of host a run's LM ran on (:mod:`promptgym.host`): a bf16 search is repeated bit for bit
    only on the same CPU model, bf16 instruction sets and torch build, so an audit compares this with its own."""

    cpu: Annotated[str, _text(MAX_CPU_NAME)]
    bf16: Annotated[list[Annotated[str, _choice(lambda: BF16_NAMES)]], _array(len(BF16_NAMES))]
    torch: Annotated[str, _text(64)]


class Run(_Strict):
    """One data seed: LM calls used, the final prompt, the best-so-far dev curve and the test scores
    (and, for a run made against ``promptgym serve``, the server's usage receipt)."""

    seed: Annotated[int, _int(), Field(json_schema_extra={"enum": list(BENCH_SEEDS)})]
    calls_used: Annotated[int, _int(0, MAX_BUDGET)]
    wall_seconds: Annotated[float, _float(0.0)]
    prompt: Prompt
    curve: Annotated[list[CurvePoint], _array(MAX_CURVE)]
    test: Scores
    receipt: UsageReceipt = _optional()
    threads: SearchThreads = _optional()  # absent in runs made before promptgym recorded them
    host: SearchHost = _optional()  # likewise, and in runs against a served model (the LM ran on the server)

    @model_validator(mode="after")
    def _curve_within_run(self) -> Run:
        previous = 0
        for i, (calls, _) in enumerate(self.curve):
            if calls < previous:
                raise _bad(f"calls must be non-decreasing along the curve ({calls} < {previous})", "curve", i, 0)
            if calls > self.calls_used:
                raise _bad(f"{calls} calls is more than the run's calls_used ({self.calls_used})", "curve", i, 0)
            previous = calls
        return self

    @field_serializer("curve")
    def _points_as_lists(self, curve: list[tuple[int, float]]) -> list[list[int | float]]:
        return [list(point) for point in curve]


class Submission(_Strict):
    """A promptgym leaderboard submission (schema version 2, or 1): one run per protocol data seed, each seed once."""

    schema_version: Annotated[int, _int(), AfterValidator(_known_version),
                              Field(json_schema_extra={"enum": list(SCHEMA_VERSIONS)})]
    env_id: Annotated[str, _text(80, ENV_ID_RE, "an environment id like 'PromptSST2-v0'")]
    env_kwargs: Annotated[dict[Key, Scalar], _object(MAX_ENV_KWARGS)]
    agent: Agent
    submitter: Annotated[str, _text(MAX_SUBMITTER, SINGLE_LINE_RE, "a single line without control characters")]
    promptgym_version: Annotated[str, _text(40, VERSION_RE, "a version like '0.1.0'")]
    model: ModelRef
    data_sha256: Annotated[dict[DataPath, Sha256], _object(MAX_DATA_FILES, "entries",
                                                           "must list the sha256 of every data file used (got none)")]
    tier: Annotated[str, _choice(lambda: TIERS)]
    budget_calls: Annotated[int, _int(1, MAX_BUDGET)]
    metric: Annotated[str, _choice(lambda: RANGES)]
    runs: Annotated[list[Run], _array(len(BENCH_SEEDS)), Field(json_schema_extra={"minItems": len(BENCH_SEEDS)})]
    command: Annotated[str, _text(MAX_COMMAND)]
    created: Annotated[str, _text(40, SINGLE_LINE_RE, "an ISO-8601 timestamp like '2025-01-31T12:00:00Z'",
                                  _is_iso_timestamp)]
    # the agent's final prompts were calibrated after learning (one label bias per member, fitted on
    # train with charged calls: ``promptgym evaluate --calibrate``); absent means false
    calibration: StrictBool = _optional()

    @model_validator(mode="after")
    def _runs_agree(self) -> Submission:
        lo, hi = RANGES[self.metric]
        for i, run in enumerate(self.runs):
            if not lo <= run.test.metric <= hi:
                raise _bad(f"must be a finite float in [{_fmt(lo)}, {_fmt(hi)}], got {run.test.metric!r}",
                           "runs", i, "test", "metric")
        seeds = [run.seed for run in self.runs]
        if sorted(seeds) != sorted(BENCH_SEEDS):
            raise _bad(f"needs exactly one run per data seed {list(BENCH_SEEDS)}, got seeds {seeds}", "runs")
        for i, run in enumerate(self.runs):
            if run.test.n != self.runs[0].test.n:
                raise _bad(f"every run is scored on the same test split, got {run.test.n} but runs[0].test.n is "
                           f"{self.runs[0].test.n}", "runs", i, "test", "n")
        return self
