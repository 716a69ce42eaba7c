"""The remote clients against a real server (uvicorn on 127.0.0.1, a free port), on the tiny model in fp32.

What is proved: scores over HTTP are the in-process scores (native protocol and the OpenAI-compatible
one with each scoring method forced), soft prompts included; keys and quotas surface as the env's
errors and the server's usage is exactly the calls the client made; the transport retries what it
may and never what it must not; every env kind and the black-box agents run against a served model.
"""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager

import gymnasium as gym
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import promptgym  # noqa: F401  (registers the envs)
from promptgym.errors import (
    AuthenticationError,
    BudgetExhausted,
    ConfigError,
    IncompatibleAgentError,
    InvalidPromptError,
    InvalidRequestError,
    ServiceError,
)
from promptgym.lm import get_lm, parse_served
from promptgym.lm.base import BlackBoxLM, ScoreRequest, SoftPrompt, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.openai_compat import METHODS, OpenAICompatLM
from promptgym.lm.presets import load_model
from promptgym.lm.remote import RemoteLM
from promptgym.lm.transport import RetryPolicy, Transport
from promptgym.serve.keys import KeyStore
from promptgym.serve.running import run_app_in_background, serve_in_background

WORDS = ("terrible", "great")
SEGMENTS = (("", " a gripping, funny film. It was"), ("", " dull and far too long. It was"),
            ("Review: the cast is superb.", " It was"))
FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_server):
    """A server of the tiny causal model in fp32 (its own instance: nothing shared with the client side)."""
    store = KeyStore(tmp_path_factory.mktemp("keys") / "keys.db")
    key = store.add("tester", None)
    return tiny_server(store), key, store


@pytest.fixture(scope="module")
def local():
    """The in-process reference, with the plain path (the server's completions use it too)."""
    lm = LocalLM(load_model("tiny-random-causal", "float32"), input_cache=False, prefix_cache=False, memo=False)
    return lm


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, local):
    """The tiny model saved as a model folder: where an OpenAI client reads the input embeddings."""
    folder = tmp_path_factory.mktemp("tiny-weights")
    local.white_box().model.save_pretrained(folder)
    return folder


def requests_of(lm, rng) -> list[ScoreRequest]:
    soft = SoftPrompt(rng.normal(0.0, 0.05, (4, lm.embedding_dim)).astype(np.float32))
    return [ScoreRequest(TokenPrompt(tuple(lm.encode(" Movie review:"))), SEGMENTS, WORDS),
            ScoreRequest(TokenPrompt(()), SEGMENTS, WORDS),
            ScoreRequest(soft, SEGMENTS, WORDS),
            ScoreRequest(TokenPrompt(tuple(lm.encode(" so"))), SEGMENTS, WORDS, label_only=True)]


def assert_same(results, reference, atol=1e-5):
    assert len(results) == len(reference)
    for got, ref in zip(results, reference, strict=True):
        np.testing.assert_array_equal(got.predictions, ref.predictions)
        assert got.num_tokens == ref.num_tokens
        if ref.logprobs is None:
            assert got.logprobs is None and got.label_logprobs is None
        else:
            np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=atol, rtol=0)
            np.testing.assert_allclose(got.label_logprobs, ref.label_logprobs, atol=atol, rtol=0)
        assert not got.extra.get("approximate")


# ---------------------------------------------------------------------------------------------- native protocol
def test_native_scores_equal_in_process(served, local):
    url, key, _ = served
    remote = RemoteLM(url, key, retry=FAST)
    assert isinstance(remote, BlackBoxLM)
    assert (remote.vocab_size, remote.embedding_dim, remote.is_masked) == (local.vocab_size, local.embedding_dim, False)
    assert remote.embedding_stats() == pytest.approx(local.embedding_stats(), abs=1e-7)
    np.testing.assert_array_equal(remote.embed_tokens([5, 17, 3]), local.embed_tokens([5, 17, 3]))
    assert remote.label_token_ids(WORDS) == local.label_token_ids(WORDS)
    assert remote.encode(" It was great") == local.encode(" It was great")
    reqs = requests_of(local, np.random.default_rng(0))
    before = remote.remaining_calls(), remote.usage.calls
    assert_same(remote.score(reqs), local.score(reqs))
    assert remote.usage.calls == before[1] + len(reqs)  # one request = one call, charged once
    assert remote.batch_calls == 1


def test_native_splits_requests_larger_than_the_server_takes(served, local):
    url, key, _ = served
    remote = RemoteLM(url, key, retry=FAST, max_rows=2)  # 3 examples per request: sent as 2 + 1
    reqs = requests_of(local, np.random.default_rng(5))
    before = remote.remaining_calls(), remote.usage.calls
    assert_same(remote.score(reqs), local.score(reqs))
    assert remote.usage.calls == before[1] + 2 * len(reqs)


def test_native_refuses_bad_prompts_before_sending(served, local):
    url, key, _ = served
    remote = RemoteLM(url, key, retry=FAST)
    calls = remote.remaining_calls(), remote.usage.calls
    with pytest.raises(InvalidPromptError, match="outside the vocabulary"):
        remote.score([ScoreRequest(TokenPrompt((remote.vocab_size,)), SEGMENTS, WORDS)])
    bad = np.full((2, remote.embedding_dim), np.nan, dtype=np.float32)
    with pytest.raises(InvalidPromptError, match="NaN"):
        remote.score([ScoreRequest(SoftPrompt(bad), SEGMENTS, WORDS)])
    with pytest.raises(InvalidRequestError, match="share a first token"):
        remote.score([ScoreRequest(TokenPrompt(()), SEGMENTS, ("Athlete", "Athletic"))])
    remote.remaining_calls()
    assert remote.usage.calls == calls[1]


def test_tokenizer_is_cached_by_weights_digest(served, fresh_cache, tmp_path, monkeypatch):
    url, key, _ = served
    (tmp_path / "models").symlink_to(fresh_cache / "models", target_is_directory=True)
    monkeypatch.setenv("PROMPTGYM_CACHE", str(tmp_path))
    remote = RemoteLM(url, key, retry=FAST)  # fetches /v1/model and /v1/tokenizer
    assert remote.transport.requests == 2
    assert (tmp_path / "tokenizers" / remote.weights_sha256 / "COMPLETE").is_file()
    again = RemoteLM(url, key, retry=FAST)  # reads the cache: /v1/model only
    assert again.transport.requests == 1
    assert again.encode(" cached") == remote.encode(" cached")


def test_wrong_or_missing_key(served, monkeypatch):
    url, _, _ = served
    with pytest.raises(AuthenticationError, match="refused the API key"):
        RemoteLM(url, "pg-not-a-real-key", retry=FAST)
    monkeypatch.delenv("PROMPTGYM_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="PROMPTGYM_API_KEY"):
        RemoteLM(url)
    with pytest.raises(AuthenticationError):
        gym.make("PromptSST2-v0", model=url, api_key="pg-wrong", budget=10)
    with pytest.raises(AuthenticationError):
        OpenAICompatLM(url, "pg-wrong", retry=FAST)


def test_key_from_environment(served, monkeypatch):
    url, key, _ = served
    monkeypatch.setenv("PROMPTGYM_API_KEY", key)
    assert RemoteLM(url, retry=FAST).name == "tiny-random-causal"


def test_served_model_is_checked_before_any_connection():
    with pytest.raises(ConfigError, match="unknown option"):
        gym.make("PromptSST2-v0", model="openai+http://127.0.0.1:9?tokenzier=x", budget=10)
    with pytest.raises(ConfigError, match="credentials"):
        gym.make("PromptSST2-v0", model="http://me:secret@127.0.0.1:9", budget=10)
    with pytest.raises(ConfigError, match="api_key is for a served model"):
        gym.make("PromptSST2-v0", model="tiny-random-causal", api_key="pg-x", budget=10)
    assert parse_served("openai+https://gpu:8000/?top_k=5&method=top_k") == (
        "openai", "https://gpu:8000", {"top_k": 5, "method": "top_k"})


def test_quota_caps_the_env_and_the_server_has_the_last_word(served):
    url, _, store = served
    key = store.add("quota5", 5)
    env = gym.make("PromptSST2-v0", model=url, api_key=key, budget=100, prompt_length=2, num_candidates=10)
    base = env.unwrapped
    assert base.budget.max_calls == 5  # capped at the key's remaining calls
    env.reset(seed=0)
    env.step(env.action_space.sample())
    other = RemoteLM(url, key, retry=FAST)  # another client spends 3 calls of the same key
    other.score([ScoreRequest(TokenPrompt(()), SEGMENTS, WORDS)] * 3)
    with pytest.raises(BudgetExhausted, match="the server refused the call") as info:
        base.score_actions([env.action_space.sample()] * 2)  # the env thinks 4 remain; the server has 1
    assert "quota" in str(info.value)
    assert base.budget.calls == 1  # nothing charged locally for a refused call
    assert store.get("quota5").calls == base.budget.calls + 3  # the server counted exactly the calls made
    base.score_actions([env.action_space.sample()])
    assert store.get("quota5").calls == 5 and other.remaining_calls() == 0


# ---------------------------------------------------------------------------------------------- OpenAI-compatible
@pytest.mark.parametrize("method", METHODS[:3])
def test_openai_methods_equal_in_process(served, local, weights_dir, method):
    url, key, _ = served
    lm = OpenAICompatLM(url, key, embeddings=str(weights_dir), method=method, retry=FAST)
    assert lm.method == method and not lm.approximate and isinstance(lm, BlackBoxLM)
    np.testing.assert_array_equal(lm.embed_tokens([4, 9]), local.embed_tokens([4, 9]))
    assert lm.embedding_stats() == local.embedding_stats()
    reqs = requests_of(local, np.random.default_rng(1))
    ours, theirs = lm.layout.build(reqs, lm.encode), local.layout.build(reqs, local.encode)
    assert [(r.ids, r.soft_start, r.answer) for r in ours[0]] == [(r.ids, r.soft_start, r.answer) for r in theirs[0]]
    assert ours[1:] == theirs[1:]  # the same rows, owners and label ids
    assert_same(lm.score(reqs), local.score(reqs))
    per_row = 2 if method == "prompt_logprobs" else 1  # one prompt per row (and label, by prompt log-probs)
    token_rows = 3 * len(SEGMENTS) * per_row
    assert lm.prompts_sent == token_rows + len(SEGMENTS)


def test_openai_probe_picks_the_best_exact_method(served, local):
    url, key, _ = served
    lm = OpenAICompatLM(url, key, retry=FAST)  # tokenizer from our server's files, no embeddings
    assert lm.method == "token_ids" and lm.soft_method == "token_ids"
    reqs = [r for r in requests_of(local, np.random.default_rng(2)) if isinstance(r.prompt, TokenPrompt)]
    assert_same(lm.score(reqs), local.score(reqs))
    soft = SoftPrompt(np.zeros((2, local.embedding_dim), np.float32))
    with pytest.raises(ConfigError, match="embeddings="):
        lm.score([ScoreRequest(soft, SEGMENTS, WORDS)])


def test_openai_top_k_is_approximate_and_flagged(served, local):
    url, key, _ = served
    lm = OpenAICompatLM(url, key, embeddings=local.white_box().embed.weight.detach().numpy(), method="top_k",
                        top_k=5, retry=FAST)
    assert lm.approximate
    reqs = requests_of(local, np.random.default_rng(3))
    results = lm.score(reqs)
    assert all(r.extra.get("approximate") for r in results)
    exact = local.score(reqs)
    for got, ref in zip(results, exact, strict=True):
        if ref.logprobs is not None:  # approximations never exceed the truth by more than rounding
            assert got.logprobs.shape == ref.logprobs.shape and np.all(np.isfinite(got.logprobs))


def test_openai_refuses_masked_models(tmp_path):
    store = KeyStore(tmp_path / "keys.db")
    key = store.add("m", None)
    with serve_in_background(get_lm("tiny-random-masked", "float32"), store) as url:
        with pytest.raises(ConfigError, match="masked LM"):
            OpenAICompatLM(url, key, retry=FAST)
        remote = RemoteLM(url, key, retry=FAST)  # the native protocol serves masked LMs
        assert remote.is_masked and remote.mask_token == "<mask>"


# ---------------------------------------------------------------------------------------------- envs and agents
def test_every_env_kind_runs_against_a_served_model(served, weights_dir):
    url, key, _ = served
    small = {"budget": 20, "dtype": "float32"}
    env = gym.make("PromptSST2-v0", model=url, api_key=key, prompt_length=3, num_candidates=20, **small)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and np.isfinite(reward) and info["budget"].calls_used == 1

    env = gym.make("PromptSST2-Tokenwise-v0", model=url, api_key=key, prompt_length=2, num_candidates=20, **small)
    env.reset(seed=0)
    assert env.step(3)[1] == 0.0
    _, reward, terminated, _, _ = env.step(4)
    assert terminated and np.isfinite(reward) and env.unwrapped.budget.calls == 1

    for model in (url, f"openai+{url}?embeddings={weights_dir}"):
        env = gym.make("PromptSST2-Subspace-v0", model=model, api_key=key, intrinsic_dim=8, prompt_length=2, **small)
        env.reset(seed=0)
        outs = env.unwrapped.score_actions([np.zeros(8, np.float32), np.full(8, 0.5, np.float32)])
        assert len(outs) == 2 and all(np.isfinite(o.reward) for o in outs)


def test_served_and_local_envs_give_the_same_rewards(served, weights_dir, local):
    url, key, _ = served
    kwargs = {"budget": 10, "dtype": "float32", "intrinsic_dim": 8, "prompt_length": 2}
    local_env = gym.make("PromptSST2-Subspace-v0", model=local, **kwargs).unwrapped
    zs = [np.zeros(8, np.float32), np.linspace(-1, 1, 8).astype(np.float32)]
    ref = [o.reward for o in local_env.score_actions(zs)]
    for model in (url, f"openai+{url}?embeddings={weights_dir}"):
        env = gym.make("PromptSST2-Subspace-v0", model=model, api_key=key, **kwargs).unwrapped
        np.testing.assert_allclose(env.A, local_env.A, rtol=1e-6)
        np.testing.assert_array_equal(env.p0, local_env.p0)
        np.testing.assert_allclose([o.reward for o in env.score_actions(zs)], ref, atol=1e-5)


@pytest.mark.parametrize(("env_id", "agent", "agent_kwargs"), [
    ("PromptSST2-v0", "bdpl", {"samples": 3, "dev_every": 1}),
    ("PromptSST2-Tokenwise-v0", "random", {"batch": 3}),
    ("PromptSST2-v0", "calibrated", {}),
    ("PromptSST2-v0", "icl", {}),
    ("PromptSST2-Subspace-v0", "bbt", {"popsize": 4, "dev_every": 1}),
])
def test_black_box_agents_run_on_a_served_model(served, monkeypatch, env_id, agent, agent_kwargs):
    from promptgym.runner import run_agent

    url, _, store = served
    name = f"agent-{agent}-{env_id}"
    monkeypatch.setenv("PROMPTGYM_API_KEY", store.add(name, None))
    env_kwargs = {"intrinsic_dim": 8, "prompt_length": 2} if "Subspace" in env_id else {"prompt_length": 2,
                                                                                        "num_candidates": 10}
    run = run_agent(env_id, agent, 14, model=url, dtype="float32", env_kwargs=env_kwargs, agent_kwargs=agent_kwargs,
                    progress=False)
    assert 1 <= run.env.unwrapped.budget.calls <= 14
    assert store.get(name).calls == run.env.unwrapped.budget.calls


def test_white_box_agents_are_refused_on_a_served_model(served, monkeypatch):
    from promptgym.runner import run_agent

    url, key, _ = served
    monkeypatch.setenv("PROMPTGYM_API_KEY", key)
    with pytest.raises(IncompatibleAgentError, match="white-box"):
        run_agent("PromptSST2-Subspace-v0", "prompt_tuning", 10, model=url, env_kwargs={"intrinsic_dim": 8},
                  progress=False)


def test_bbt_spends_exactly_the_quota(served):
    """Quota 12 < budget 8,000: the env is capped at 12 and BBT (popsize 4, a dev check of the mean and the
    best each generation: 6 calls) runs exactly two generations; nothing is left, nothing is refused."""
    from promptgym.runner import run_agent

    url, _, store = served
    key = store.add("bbt12", 12)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTGYM_API_KEY", key)
        run = run_agent("PromptSST2-Subspace-v0", "bbt", 8000, model=url, dtype="float32",
                        env_kwargs={"intrinsic_dim": 8, "prompt_length": 2},
                        agent_kwargs={"popsize": 4, "dev_every": 1}, progress=False)
    assert run.env.unwrapped.budget.max_calls == 12
    assert run.env.unwrapped.budget.calls == 12 == store.get("bbt12").calls
    assert run.result.extra["generations"] == 2


# ---------------------------------------------------------------------------------------------- transport
@contextmanager
def flaky_server(fail_first: int, status: int, error_type: str, retry_after: str | None = None):
    """A tiny FastAPI app on real uvicorn: answers ``status`` ``fail_first`` times, then 200."""
    app = FastAPI()
    hits = {"n": 0}

    @app.api_route("/v1/thing", methods=["GET", "POST"])
    async def thing():
        hits["n"] += 1
        if hits["n"] <= fail_first:
            headers = {"Retry-After": retry_after} if retry_after else None
            return JSONResponse({"error": {"type": error_type, "message": f"try {hits['n']}"}}, status, headers=headers)
        return {"ok": hits["n"]}

    with run_app_in_background(app) as url:
        yield url, hits


def test_retries_503_then_succeeds():
    with flaky_server(2, 503, "unavailable") as (url, hits):
        transport = Transport(url, "k", retry=FAST)
        assert transport.post("/v1/thing", {}) == {"ok": 3}
        assert hits["n"] == 3 and transport.retries == 2


def test_rate_limit_honours_retry_after():
    with flaky_server(1, 429, "rate_limited", retry_after="0.3") as (url, hits):
        transport = Transport(url, "k", retry=FAST)
        started = time.monotonic()
        assert transport.get("/v1/thing") == {"ok": 2}
        assert time.monotonic() - started >= 0.3 and hits["n"] == 2


def test_quota_429_is_never_retried():
    with flaky_server(5, 429, "quota_exceeded") as (url, hits):
        with pytest.raises(BudgetExhausted, match="try 1"):
            Transport(url, "k", retry=FAST).post("/v1/thing", {})
        assert hits["n"] == 1


def test_gives_up_after_the_last_try():
    with flaky_server(10, 503, "unavailable") as (url, hits):
        with pytest.raises(ServiceError, match="gave up after 4 tries"):
            Transport(url, "k", retry=FAST).get("/v1/thing")
        assert hits["n"] == 4
    with socket.socket() as s:  # a port nobody listens on: connection errors are retried, then reported
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceError, match="cannot connect"):
        Transport(f"http://127.0.0.1:{port}", "k", retry=FAST).post("/v1/thing", {})


def test_other_client_errors_carry_the_server_message():
    with flaky_server(1, 400, "invalid_request") as (url, _), pytest.raises(InvalidRequestError,
                                                                             match="refused \\(400\\): try 1"):
        Transport(url, "k", retry=FAST).get("/v1/thing")


@contextmanager
def vllm_like_proxy(upstream: str, full_vocab: bool):
    """A proxy in front of our server that behaves like a vLLM without our extension: it silently drops
    ``logprob_token_ids`` and, unless ``full_vocab``, refuses ``logprobs=-1`` as vLLM's default
    ``--max-logprobs 20`` does."""
    import httpx

    app = FastAPI()
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request):
        body = await request.json() if request.method == "POST" else None
        if path == "v1/model" or path == "v1/tokenizer":  # a vLLM has no such endpoints
            return JSONResponse({"detail": "Not Found"}, 404)
        if body is not None:
            body.pop("logprob_token_ids", None)
            if body.get("logprobs") == -1 and not full_vocab:
                return JSONResponse({"error": {"message": "logprobs must be <= 20", "type": "BadRequestError"}}, 400)
        answer = await client.request(request.method, "/" + path, json=body,
                                      headers={"Authorization": request.headers.get("Authorization", "")})
        return JSONResponse(answer.json(), answer.status_code)

    with run_app_in_background(app) as url:
        yield url


@pytest.mark.parametrize("full_vocab", [True, False])
def test_openai_probe_falls_back_on_a_vllm_like_server(served, local, weights_dir, full_vocab):
    """A server that ignores ``logprob_token_ids`` is detected by its answer (not by an error): token prompts
    go to prompt log-probs; soft prompts to the full vocabulary if allowed, else to top-k, flagged."""
    url, key, _ = served
    with vllm_like_proxy(url, full_vocab) as proxy:
        lm = OpenAICompatLM(proxy, key, tokenizer=local.tokenizer, embeddings=str(weights_dir), top_k=5, retry=FAST)
        assert lm.method == "prompt_logprobs" and lm.soft_method is None
        reqs = requests_of(local, np.random.default_rng(4))
        results = lm.score(reqs)
    reference = local.score(reqs)
    soft = [isinstance(r.prompt, SoftPrompt) for r in reqs]
    assert_same([r for r, s in zip(results, soft, strict=True) if not s],
                [r for r, s in zip(reference, soft, strict=True) if not s])
    if full_vocab:
        assert lm.soft_method == "full_vocab" and not lm.approximate
        assert_same([results[soft.index(True)]], [reference[soft.index(True)]])
    else:
        assert lm.soft_method == "top_k" and lm.approximate
        assert results[soft.index(True)].extra["approximate"] is True


# ---------------------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def served_smollm2(tmp_path_factory, fresh_cache):
    """SmolLM2 (bf16, as envs use it) served by its own instance."""
    store = KeyStore(tmp_path_factory.mktemp("keys-real") / "keys.db")
    with serve_in_background(LocalLM(load_model("smollm2-135m", "bfloat16")), store) as url:
        yield url, store


@pytest.mark.integration
def test_bbt_on_the_served_default_model_spends_exactly_its_quota(served_smollm2, monkeypatch):
    from promptgym.runner import run_agent

    url, store = served_smollm2
    monkeypatch.setenv("PROMPTGYM_API_KEY", store.add("bbt", 6))  # one generation of 4 and 2 dev checks
    run = run_agent("PromptSST2-Subspace-v0", "bbt", 8000, model=url, agent_kwargs={"popsize": 4, "dev_every": 1},
                    env_kwargs={"prompt_length": 5}, progress=False)
    base = run.env.unwrapped
    assert base.budget.max_calls == 6 and base.budget.calls == 6 == store.get("bbt").calls
    assert run.result.dev_metric is not None


def test_native_client_on_an_openai_only_server_says_what_to_use():
    with flaky_server(0, 200, "") as (url, _), pytest.raises(ConfigError, match="openai\\+http"):
        RemoteLM(url, "k", retry=FAST)
