"""The HTTP service: native scores equal in-process scores, keys, quotas, limits, errors, restarts, load, batching.

Every test starts its server on 127.0.0.1 and a free port (``serve_in_background``) and stops it.
Servers get a model instance of their own (``load_model``), so that an in-process reference with the
same call history gives byte-identical scores (the LM's memo would otherwise make equality trivial).
"""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from promptgym.lm import ScoreRequest, SoftPrompt, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.presets import load_model
from promptgym.lm.wire import ScoreResponse, encode_array, request_to_wire, result_from_wire
from promptgym.serve.keys import KeyStore
from promptgym.serve.running import serve_in_background
from promptgym.tasks import get_task, load_split

ENDPOINTS = {("get", "/health"), ("get", "/v1/model"), ("get", "/v1/tokenizer"), ("post", "/v1/embeddings"),
             ("get", "/v1/usage"), ("post", "/v1/score"), ("post", "/v1/completions")}


def fresh_lm(name: str = "tiny-random-causal", dtype: str = "float32", **kwargs) -> LocalLM:
    return LocalLM(load_model(name, dtype), **kwargs)


@pytest.fixture(scope="module")
def sst2():
    spec = get_task("sst2")
    data = load_split("sst2", "train", seed=13)
    return tuple(spec.causal.render(t) for t in data.texts), tuple(spec.causal.verbalizers)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, key store, served LM, an unlimited key) on the tiny causal model in fp32."""
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    admin = store.add("admin", None)
    lm = fresh_lm()
    with serve_in_background(lm, store) as url:
        yield url, store, lm, admin


def client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def score_body(requests) -> dict:
    return {"requests": [request_to_wire(r).model_dump() for r in requests]}


def post_score(c: httpx.Client, requests) -> list:
    r = c.post("/v1/score", json=score_body(requests))
    assert r.status_code == 200, r.text
    body = ScoreResponse.model_validate(r.json())
    assert body.calls == len(requests)
    return [result_from_wire(x) for x in body.results]


def assert_error(r: httpx.Response, status: int, type_: str | None = None) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body["error"]["message"]


def requests_mix(lm, sst2, rng, n: int = 3) -> list[ScoreRequest]:
    segs, words = sst2
    out = []
    for i in range(n):
        rows = segs[i * 4:(i + 1) * 4 + 3]
        if i % 3 == 1:
            prompt = SoftPrompt(rng.normal(0, 0.02, (3, lm.embedding_dim)).astype(np.float32))
        else:
            prompt = TokenPrompt(tuple(int(t) for t in rng.integers(0, lm.vocab_size, 2 + i)))
        out.append(ScoreRequest(prompt, rows, words, label_only=(i % 3 == 2)))
    return out


def same_result(a, b) -> bool:
    same = np.array_equal(a.predictions, b.predictions) and a.num_tokens == b.num_tokens
    for x, y in ((a.logprobs, b.logprobs), (a.label_logprobs, b.label_logprobs)):
        same &= (x is None and y is None) or (x is not None and y is not None and x.dtype == y.dtype
                                                and x.tobytes() == y.tobytes())
    return bool(same)


# ---------------------------------------------------------------------------------------------- basics
def test_openapi_document_lists_every_endpoint(server):
    url, _, _, _ = server
    doc = httpx.get(url + "/openapi.json").json()
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert found >= ENDPOINTS
    assert "ErrorBody" in doc["components"]["schemas"] and "ScoreBatch" in doc["components"]["schemas"]


def test_every_endpoint_but_health_needs_a_valid_key(server):
    url, store, _, _ = server
    revoked = store.add("gone", 5)
    store.revoke("gone")
    assert httpx.get(url + "/health").json() == {"status": "ok", "model": "tiny-random-causal"}
    for key in (None, "pg-not-a-key", revoked, "Basic abc"):
        c = client(url, key)
        for method, path in ENDPOINTS - {("get", "/health")}:
            assert_error(c.request(method.upper(), path, json={}), 401, "unauthorized")
    r = httpx.get(url + "/v1/usage", headers={"Authorization": "Basic abc"})
    assert_error(r, 401, "unauthorized")


def test_native_scores_equal_in_process_scores(server, sst2):
    url, store, lm, _ = server
    key = store.add("native", None)
    ref = fresh_lm()
    rng = np.random.default_rng(0)
    c = client(url, key)
    for n in (1, 3, 6):  # token and soft prompts, label-only requests, batches of several requests
        reqs = requests_mix(lm, sst2, rng, n)
        got = post_score(c, reqs)
        want = ref.score(reqs)
        assert all(same_result(g, w) for g, w in zip(got, want, strict=True))
        assert got[-1].logprobs is None if reqs[-1].label_only else got[-1].logprobs is not None
    assert c.get("/v1/usage").json() == {"key": "native", "calls": 10, "quota": None, "remaining": None}


def test_model_tokenizer_and_embeddings_describe_the_served_model(server, tmp_path):
    from transformers import AutoTokenizer

    url, _, lm, admin = server
    c = client(url, admin)
    info = c.get("/v1/model").json()
    mean, std = lm.embedding_stats()
    assert info == {"name": lm.name, "weights_sha256": lm.weights_sha256, "vocab_size": lm.vocab_size,
                    "embedding_dim": lm.embedding_dim, "embedding_mean": mean, "embedding_std": std,
                    "is_masked": False, "mask_token": None, "dtype": "float32"}
    for name, data in c.get("/v1/tokenizer").json()["files"].items():
        (tmp_path / name).write_bytes(base64.b64decode(data))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = " A movie review: it was great!"
    assert tuple(tok(text, add_special_tokens=False)["input_ids"]) == lm.encode(text)
    ids = [0, 5, lm.vocab_size - 1, 5]
    r = c.post("/v1/embeddings", json={"ids": ids})
    assert r.status_code == 200
    got = result_array(r.json()["embeddings"])
    assert got.tobytes() == lm.embed_tokens(ids).astype(np.float32).tobytes()
    assert_error(c.post("/v1/embeddings", json={"ids": [lm.vocab_size]}), 400, "invalid_request")
    assert_error(c.post("/v1/embeddings", json={"ids": []}), 400, "invalid_request")


def result_array(obj: dict) -> np.ndarray:
    from promptgym.lm.wire import Array, decode_array

    return decode_array(Array.model_validate(obj), 1 << 30)


# ---------------------------------------------------------------------------------------------- quotas
def test_quota_429_charges_nothing_and_usage_equals_calls_made(server, sst2):
    url, store, lm, _ = server
    key = store.add("small", 3)
    c = client(url, key)
    rng = np.random.default_rng(1)
    post_score(c, requests_mix(lm, sst2, rng, 2))
    message = assert_error(c.post("/v1/score", json=score_body(requests_mix(lm, sst2, rng, 2))), 429,
                           "quota_exceeded")
    assert "1 of 3 calls left" in message
    assert c.get("/v1/usage").json() == {"key": "small", "calls": 2, "quota": 3, "remaining": 1}
    post_score(c, requests_mix(lm, sst2, rng, 1))
    assert_error(c.post("/v1/score", json=score_body(requests_mix(lm, sst2, rng, 1))), 429, "quota_exceeded")
    assert_error(c.post("/v1/completions", json={"prompt": [[1, 2]], "max_tokens": 1}), 429, "quota_exceeded")
    assert c.get("/v1/usage").json()["calls"] == 3
    assert store.get("small").calls == 3 and store.get("small").requests == 2


def test_completions_charge_one_call_per_prompt(server):
    url, store, _, _ = server
    key = store.add("oai", 5)
    c = client(url, key)
    assert c.post("/v1/completions", json={"prompt": [[1, 2], [3, 4, 5], [6]], "max_tokens": 1}).status_code == 200
    assert_error(c.post("/v1/completions", json={"prompt": [[1], [2], [3]], "max_tokens": 1}), 429,
                 "quota_exceeded")
    assert c.post("/v1/completions", json={"prompt": "Hello there", "max_tokens": 0}).status_code == 200
    assert c.get("/v1/usage").json()["calls"] == 4


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_4xx_charges_nothing_and_the_server_keeps_serving(server, sst2):
    url, store, lm, _ = server
    key = store.add("fuzzy", 1000)
    c = client(url, key)
    segs, words = sst2
    good = request_to_wire(ScoreRequest(TokenPrompt((1, 2)), segs[:2], words)).model_dump()
    d = lm.embedding_dim

    def with_prompt(prompt: dict, **changes) -> dict:
        return {"requests": [{**good, "prompt": prompt, **changes}]}

    def soft(arr: np.ndarray) -> dict:
        return {"kind": "soft", "embeds": encode_array(arr).model_dump()}

    nan = np.zeros((2, d), np.float32)
    nan[1, 3] = np.nan
    inf = np.zeros((2, d), np.float32)
    inf[0, 0] = np.inf
    short = encode_array(np.zeros((2, d), np.float32)).model_dump()
    short["shape"] = [3, d]
    cases = [
        ("/v1/score", b'{"requests": [', 400),  # malformed JSON
        ("/v1/score", b"\xff\xfe\x00", 400),
        ("/v1/score", {"requests": []}, 400),
        ("/v1/score", {"requests": [good], "extra": 1}, 422),  # unknown field (native: forbidden)
        ("/v1/score", {"requests": [{**good, "label_only": "yes"}]}, 422),  # wrong type
        ("/v1/score", {"requests": [{**good, "segments": [["only one"]]}]}, 422),  # wrong shape
        ("/v1/score", {"requests": [{**good, "segments": []}]}, 400),
        ("/v1/score", {"requests": [{**good, "label_words": []}]}, 400),
        ("/v1/score", {"requests": [{**good, "label_words": ["great", "great"]}]}, 400),  # same first token
        ("/v1/score", {"requests": [{**good, "label_words": [" "]}]}, 400),
        ("/v1/score", with_prompt({"kind": "tokens", "ids": [1, lm.vocab_size]}), 400),
        ("/v1/score", with_prompt({"kind": "tokens", "ids": [1.5]}), 422),
        ("/v1/score", with_prompt({"kind": "tokens", "ids": ["1"]}), 422),
        ("/v1/score", with_prompt({"kind": "words", "ids": [1]}), 422),
        ("/v1/score", with_prompt(soft(np.zeros((2, d + 1), np.float32))), 400),  # wrong embedding dim
        ("/v1/score", with_prompt(soft(np.zeros((2, 3, d), np.float32))), 400),
        ("/v1/score", with_prompt(soft(nan)), 400),
        ("/v1/score", with_prompt(soft(inf)), 400),
        ("/v1/score", with_prompt({"kind": "soft", "embeds": short}), 400),  # bytes do not match the shape
        ("/v1/score", with_prompt({"kind": "soft", "embeds": {**short, "data": "@@@"}}), 400),
        ("/v1/score", with_prompt({"kind": "soft", "embeds": {**short, "dtype": "float16"}}), 422),
        ("/v1/score", with_prompt({"kind": "soft", "embeds": {**short, "shape": [-1, d]}}), 422),
        ("/v1/score", b'{"requests": [{"prompt": {"kind": "soft", "embeds": {"dtype": "float32", "shape": [NaN], '
                      b'"data": ""}}}]}', 422),
        ("/v1/completions", b'{"prompt": [[1, 2]], "max_tokens": 1, "temperature": NaN}', 422),
        ("/v1/completions", b'{"prompt": [[1, 2]], "max_tokens": 1, "top_p": Infinity}', 422),
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "top_k": "many"}, 422),  # known field, wrong type
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "echo": "yes"}, 422),
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 2}, 400),  # generation
        ("/v1/completions", {"prompt": [[1, 2]]}, 400),  # vLLM's default max_tokens (16)
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "n": 2}, 400),
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "stream": True}, 400),
        ("/v1/completions", {"prompt": [[]], "max_tokens": 1}, 400),
        ("/v1/completions", {"prompt": [[1, -2]], "max_tokens": 1}, 400),
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "logprobs": -5}, 400),
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "logprob_token_ids": [lm.vocab_size]}, 400),
        ("/v1/completions", {"prompt": [[1, 2]], "prompt_embeds": "AAAA", "max_tokens": 1}, 400),
        ("/v1/completions", {"prompt_embeds": "not base64!", "max_tokens": 1}, 400),
        ("/v1/completions", {"prompt_embeds": base64.b64encode(b"junk").decode(), "max_tokens": 1}, 400),
        ("/v1/completions", {"prompt": [[1, 2]], "max_tokens": 1, "model": "gpt-4"}, 404),
        ("/v1/completions", {"max_tokens": 1}, 400),
        ("/v1/embeddings", {"ids": [1], "extra": [2]}, 422),
        ("/v1/embeddings", {"ids": "1,2"}, 422),
    ]
    for path, body, status in cases:
        kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
            else {"json": body}
        r = c.post(path, **kwargs)
        try:
            assert_error(r, status, "not_found" if status == 404 else "invalid_request")
        except AssertionError as e:
            raise AssertionError(f"{path} {body!r:.200}: {e}") from None
    assert_error(c.get("/v1/nothing"), 404, "not_found")
    assert_error(c.delete("/v1/score"), 405)
    assert c.get("/v1/usage").json()["calls"] == 0  # nothing was charged
    assert len(post_score(c, [ScoreRequest(TokenPrompt((1, 2)), segs[:2], words)])) == 1  # still serving
    assert c.get("/v1/usage").json()["calls"] == 1


def test_torch_pickles_other_than_tensors_are_refused(server):
    url, _, _, admin = server

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    r = client(url, admin).post("/v1/completions", json={"prompt_embeds": base64.b64encode(buf.getvalue()).decode(),
                                                          "max_tokens": 1})
    assert_error(r, 400, "invalid_request")


# ---------------------------------------------------------------------------------------------- limits
@pytest.fixture(scope="module")
def small_server(server, tmp_path_factory):
    """The same model behind tight limits."""
    _, _, lm, _ = server
    store = KeyStore(tmp_path_factory.mktemp("small") / "keys.db")
    key = store.add("user", None)
    with serve_in_background(lm, store, max_body_bytes=20_000, max_requests=3, max_rows=5, max_prompt_length=8,
                             max_array_elements=4 * lm.embedding_dim) as url:
        yield url, key


def test_limits_answer_413_before_anything_runs(small_server, server, sst2):
    url, key = small_server
    lm = server[2]
    segs, words = sst2
    c = client(url, key)
    ok = ScoreRequest(TokenPrompt((1, 2)), segs[:5], words)
    assert len(post_score(c, [ok] * 3)) == 3
    too_many = [ok] * 4
    too_long = [ScoreRequest(TokenPrompt(tuple(range(9))), segs[:2], words)]
    too_wide = [ScoreRequest(SoftPrompt(np.zeros((5, lm.embedding_dim), np.float32)), segs[:2], words)]
    too_tall = [ScoreRequest(TokenPrompt((1,)), segs[:6], words)]
    for reqs in (too_many, too_long, too_wide, too_tall):
        assert_error(c.post("/v1/score", json=score_body(reqs)), 413, "too_large")
    assert_error(c.post("/v1/completions", json={"prompt": [[1]] * 6, "max_tokens": 1}), 413, "too_large")
    big = {"requests": [{"prompt": {"kind": "tokens", "ids": [1]}, "segments": [["x" * 30_000, "y"]],
                         "label_words": ["a"]}]}
    assert_error(c.post("/v1/score", json=big), 413, "too_large")  # Content-Length over the limit

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b'{"requests": [{"prompt": {"kind": "tokens", "ids": [1]}, "segments": [["'
        for _ in range(40):
            yield b"x" * 1000
        yield b'", "y"]], "label_words": ["a"]}]}'

    r = c.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "too_large")
    assert len(post_score(c, [ok])) == 1  # still serving


def test_rate_limit_answers_429_with_retry_after(server, tmp_path):
    _, _, lm, _ = server
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("fast", None)
    with serve_in_background(lm, store, rate_limit=2.0) as url:
        c = client(url, key)
        statuses = [c.get("/v1/usage") for _ in range(6)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited and statuses[0].status_code == 200
        assert_error(limited[0], 429, "rate_limited")
        assert int(limited[0].headers["retry-after"]) >= 1
        time.sleep(1.1)
        assert c.get("/v1/usage").status_code == 200


class SlowLM:
    """A served LM whose scoring takes ``delay`` seconds (to trip the request timeout)."""

    def __init__(self, lm, delay: float) -> None:
        self._lm, self.delay = lm, delay

    def __getattr__(self, name):
        return getattr(self._lm, name)

    def score(self, requests):
        time.sleep(self.delay)
        return self._lm.score(requests)


def test_a_timed_out_request_answers_503_and_is_not_charged(server, sst2, tmp_path):
    _, _, lm, _ = server
    segs, words = sst2
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("patient", 10)
    with serve_in_background(SlowLM(lm, 0.6), store, request_timeout_s=0.2) as url:
        c = client(url, key)
        reqs = [ScoreRequest(TokenPrompt((1,)), segs[:2], words)]
        first = c.post("/v1/score", json=score_body(reqs))  # running when the timeout expires
        second = c.post("/v1/score", json=score_body(reqs))  # may still be queued behind it
        for r in (first, second):
            assert "timeout" in assert_error(r, 503, "unavailable")
        time.sleep(1.5)  # the worker finishes the abandoned job and gives its calls back
        assert c.get("/v1/usage").json()["calls"] == 0


# ---------------------------------------------------------------------------------------------- persistence, load
def test_a_restarted_server_keeps_every_keys_usage(server, sst2, tmp_path):
    _, _, lm, _ = server
    segs, words = sst2
    path = tmp_path / "keys.db"
    store = KeyStore(path)
    a, b = store.add("a", 5), store.add("b", None)
    store.close()
    req = [ScoreRequest(TokenPrompt((7,)), segs[:2], words)]
    with serve_in_background(lm, path) as url:
        post_score(client(url, a), req * 3)
        post_score(client(url, b), req * 2)
    with serve_in_background(lm, path) as url:
        assert client(url, a).get("/v1/usage").json() == {"key": "a", "calls": 3, "quota": 5, "remaining": 2}
        assert client(url, b).get("/v1/usage").json()["calls"] == 2
        assert_error(client(url, a).post("/v1/score", json=score_body(req * 3)), 429, "quota_exceeded")
        post_score(client(url, a), req * 2)
    assert KeyStore(path).usage("a")["calls"] == 5


def test_load_8_clients_x_50_requests_zero_errors_exact_usage(server, sst2):
    url, store, lm, _ = server
    segs, words = sst2
    keys = [store.add(f"load{i}", 60) for i in range(8)]
    errors: list = []

    def run(i: int) -> None:
        rng = np.random.default_rng(i)
        with client(url, keys[i]) as c:
            for _ in range(50):
                prompt = TokenPrompt(tuple(int(t) for t in rng.integers(0, 1000, 2)))
                try:
                    r = c.post("/v1/score", json=score_body([ScoreRequest(prompt, segs[:2], words)]))
                    if r.status_code != 200:
                        errors.append(r.text)
                except httpx.HTTPError as e:
                    errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [store.usage(f"load{i}")["calls"] for i in range(8)] == [50] * 8


def test_batching_never_changes_a_score(sst2, tmp_path):
    """Concurrent clients (duplicates among their requests) get the same bytes with batching on and off."""
    segs, words = sst2
    rng = np.random.default_rng(5)
    probe = fresh_lm()
    distinct = [requests_mix(probe, sst2, rng, n) for n in (1, 1, 2, 3)]
    jobs = [distinct[i % len(distinct)] for i in range(16)]  # each job sent 4 times, by different clients
    results: dict = {}
    for batching in (True, False):
        store = KeyStore(tmp_path / f"keys{batching}.db")
        key = store.add("k", None)
        lm = fresh_lm(memo=False)  # no memo: a shared result is not just a memo hit
        with serve_in_background(lm, store, batching=batching, batch_window_ms=200) as url:
            got: dict = {}

            def run(i: int, url=url, key=key, got=got) -> None:
                with client(url, key) as c:
                    for j in range(i, len(jobs), 8):
                        got[j] = post_score(c, jobs[j])

            threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            results[batching] = (got, dict(url.app.state.stats))
    on, off = results[True][0], results[False][0]
    assert set(on) == set(off) == set(range(len(jobs)))
    for j in range(len(jobs)):
        assert all(same_result(a, b) for a, b in zip(on[j], off[j], strict=True)), j
    alone = fresh_lm(memo=False)
    for j, job in enumerate(distinct):  # and each equals the job scored alone in process
        assert all(same_result(a, b) for a, b in zip(on[j], alone.score(job), strict=True))
    assert results[True][1]["shared"] > 0 and results[False][1]["shared"] == 0


# ---------------------------------------------------------------------------------------------- masked model
def test_masked_model_scores_natively_and_refuses_completions(tmp_path):
    spec = get_task("sst2")
    lm, ref = fresh_lm("tiny-random-masked"), fresh_lm("tiny-random-masked")
    texts = load_split("sst2", "train", seed=13).texts[:6]
    rows = tuple(spec.masked.render(t, mask_token=lm.mask_token) for t in texts)
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("m", None)
    reqs = [ScoreRequest(TokenPrompt((5, 6)), rows, spec.masked.verbalizers),
            ScoreRequest(SoftPrompt(np.ones((2, lm.embedding_dim), np.float32) * 0.01), rows, spec.masked.verbalizers)]
    with serve_in_background(lm, store) as url:
        c = client(url, key)
        assert c.get("/v1/model").json()["mask_token"] == lm.mask_token
        got = post_score(c, reqs)
        assert all(same_result(g, w) for g, w in zip(got, ref.score(reqs), strict=True))
        assert "masked" in assert_error(c.post("/v1/completions", json={"prompt": [[1]], "max_tokens": 1}), 400)


class BrokenLM(SlowLM):
    """A served LM whose scoring fails (a server-side fault, not bad input)."""

    def score(self, requests):
        raise RuntimeError("the accelerator caught fire")


def test_a_server_fault_is_a_json_500_refunded_and_keys_are_never_logged(server, sst2, tmp_path, caplog):
    _, _, lm, _ = server
    segs, words = sst2
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("unlucky", 10)
    caplog.set_level("DEBUG")
    with serve_in_background(BrokenLM(lm, 0.0), store, log_level="debug") as url:
        c = client(url, key)
        r = c.post("/v1/score", json=score_body([ScoreRequest(TokenPrompt((1,)), segs[:2], words)]))
        assert "nothing was charged" in assert_error(r, 500, "internal")
        assert "fire" not in r.text  # no internals in the answer
        assert c.get("/v1/usage").json()["calls"] == 0  # the reserved call was given back
        assert_error(client(url, key + "x").get("/v1/usage"), 401)
    assert "RuntimeError" in caplog.text  # the fault is logged for the operator...
    assert key not in caplog.text and key[3:20] not in caplog.text  # ...but never a key
