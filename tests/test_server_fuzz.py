"""Schema fuzzing: cases generated from the served OpenAPI document never get a 5xx or a non-JSON error.

Positive cases follow the schema, negative ones break it; both run against every operation of the
document. Tight server limits keep the valid-but-large cases cheap (they answer 413). Bounded to
fit CI: a few dozen cases per operation and mode.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptgym.lm.local import LocalLM
from promptgym.lm.presets import load_model
from promptgym.lm.wire import encode_array
from promptgym.serve.keys import KeyStore
from promptgym.serve.running import serve_in_background

EXAMPLES = {"POST": 30, "GET": 3}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    auth = {"Authorization": "Bearer " + store.add("fuzz", None)}
    lm = LocalLM(load_model("tiny-random-causal", "float32"))
    with serve_in_background(lm, store, max_requests=4, max_rows=8, max_prompt_length=16,
                             max_array_elements=16 * lm.embedding_dim, max_body_bytes=64 * 1024) as url:
        yield url, schemathesis.openapi.from_url(url + "/openapi.json"), auth


def operations(url_doc: dict) -> list[tuple[str, str]]:
    return sorted((m.upper(), p) for p, ops in url_doc["paths"].items() for m in ops)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_schema_fuzzing_finds_no_server_error(api, mode):
    url, schema, auth = api
    doc = httpx.get(url + "/openapi.json").json()
    ops = operations(doc)
    assert len(ops) >= 7
    if mode == schemathesis.GenerationMode.NEGATIVE:  # an operation without inputs cannot be sent broken ones
        ops = [(m, p) for m, p in ops if "requestBody" in doc["paths"][p][m.lower()]]
        assert len(ops) == 3
    statuses: dict[str, set[int]] = {}
    for method, path in ops:
        seen = statuses.setdefault(f"{method} {path}", set())
        fuzz(schema[path][method].as_strategy(mode), EXAMPLES[method], url, auth, seen)()
    assert httpx.get(url + "/health").status_code == 200  # still serving
    if mode == schemathesis.GenerationMode.NEGATIVE:  # broken bodies were refused, not scored
        assert all(s >= 400 for s in statuses["POST /v1/score"]), statuses


def fuzz(strategy, examples: int, url: str, auth: dict, seen: set[int]):
    """A hypothesis test sending ``examples`` cases of ``strategy``; statuses go to ``seen``."""

    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        r = case.call(base_url=url, headers=auth)
        seen.add(r.status_code)
        assert r.status_code < 500, (case.method, case.path, r.status_code, r.text[:300])
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body

    return check


# ---------------------------------------------------------------------------------------------- well-formed bodies
# Schema-generated cases rarely get past validation (random ids fall outside the vocabulary); these
# strategies build bodies of the right shape with random contents, so scoring itself is fuzzed.
VOCAB = 49152  # the tiny model's (SmolLM2's tokenizer)
_text = st.text(max_size=40)
_ids = st.lists(st.integers(-2, VOCAB + 2), max_size=6)


@st.composite
def _soft(draw) -> dict:
    rows = draw(st.integers(0, 3))
    cols = draw(st.sampled_from([32, 32, 31]))
    values = draw(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=rows * cols,
                           max_size=rows * cols))
    arr = encode_array(np.asarray(values, dtype=np.float32).reshape(rows, cols)).model_dump()
    if draw(st.booleans()):
        arr["shape"] = draw(st.lists(st.integers(0, 40), max_size=3))
    return {"kind": "soft", "embeds": arr}


_random_request = st.fixed_dictionaries({
    "prompt": st.one_of(st.fixed_dictionaries({"kind": st.just("tokens"), "ids": _ids}), _soft()),
    "segments": st.lists(st.tuples(_text, _text).map(list), max_size=4),
    "label_words": st.lists(st.sampled_from(["great", "terrible", "good", "bad", "x", " ", ""]) | _text, max_size=3),
    "label_only": st.booleans()})
_valid_request = st.fixed_dictionaries({
    "prompt": st.one_of(
        st.fixed_dictionaries({"kind": st.just("tokens"), "ids": st.lists(st.integers(0, VOCAB - 1), max_size=6)}),
        st.integers(1, 3).map(lambda n: {"kind": "soft", "embeds": encode_array(
            np.full((n, 32), 0.01, np.float32)).model_dump()})),
    "segments": st.lists(st.tuples(_text, _text).map(list), min_size=1, max_size=4),
    "label_words": st.sampled_from([["great", "terrible"], ["good", "bad"], ["Yes", "No", "Maybe"]]),
    "label_only": st.booleans()})
_score_body = st.fixed_dictionaries({"requests": st.lists(_valid_request | _valid_request | _random_request,
                                                          min_size=1, max_size=3)})
_completion_body = st.fixed_dictionaries({
    "prompt": st.one_of(_text, st.lists(_text, max_size=3), _ids, st.lists(_ids, max_size=3))}, optional={
    "max_tokens": st.integers(-1, 2), "logprobs": st.none() | st.integers(-2, 4),
    "prompt_logprobs": st.none() | st.integers(-1, 3), "echo": st.booleans(),
    "return_tokens_as_token_ids": st.booleans(), "logprob_token_ids": _ids, "temperature": st.floats(0, 2),
    "model": st.sampled_from(["tiny-random-causal", "other"])})


@pytest.mark.parametrize("path,strategy", [("/v1/score", _score_body), ("/v1/completions", _completion_body)])
def test_well_formed_random_bodies_never_get_a_server_error(api, path, strategy):
    url, _, auth = api
    seen: set[int] = set()
    with httpx.Client(base_url=url, headers=auth, timeout=60) as c:

        @given(body=strategy)
        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(body) -> None:
            r = c.post(path, json=body)
            seen.add(r.status_code)
            assert r.status_code < 500, (body, r.status_code, r.text[:300])
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"type", "message"}

        check()
    assert 200 in seen and any(s >= 400 for s in seen), seen  # both scored and refused bodies were reached
