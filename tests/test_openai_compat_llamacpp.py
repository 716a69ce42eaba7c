"""The OpenAI-compatible client against llama.cpp's server (llama-cpp-python), faked and real.

The fake (a FastAPI app on real uvicorn, 127.0.0.1, a free port) answers as llama-cpp-python 0.3.36's
server does by its source: ``prompt`` must be a string or a list of strings, and anything else is
refused with a 500 quoting FastAPI's whole validation error (every union branch repeats the input);
a list of two strings fails an assertion (a 500 with an empty message); ``logprobs`` must be >= 0;
``logprobs`` come from the raw logits whatever ``logit_bias`` does to sampling, keyed by token *text*
(the token's bytes decoded with ``errors="ignore"``, specials printed as ""), the generated token
always among them; a generated end-of-text token stops before it is returned (no log-probs at all).
Its model is the tiny random one in fp32, so its scores must equal the in-process ones.

What is proved: the probe finds that ids are refused and text is taken, one prompt per POST (or
batched where a server takes that), and picks the exact "logit_bias" method; rows that text cannot
carry, and a server that adds its own BOS, are refused with a ConfigError saying why; a 20 KB refusal
becomes a message of a few hundred characters. The last test runs the real server (marker llama_cpp).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager

import gymnasium as gym
import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

import promptgym  # noqa: F401  (registers the envs)
from promptgym.errors import ConfigError, InvalidRequestError, ServiceError
from promptgym.lm.base import ScoreRequest, TokenPrompt
from promptgym.lm.local import LocalLM
from promptgym.lm.openai_compat import OpenAICompatLM, token_logprob, token_text
from promptgym.lm.presets import load_model
from promptgym.lm.transport import MAX_QUOTE, RetryPolicy, Transport
from promptgym.serve.running import run_app_in_background

WORDS = ("terrible", "great")
SEGMENTS = (("", " a gripping, funny film. It was"), ("", " dull and far too long. It was"),
            ("Review: the cast is superb.", " It was"))
FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def local():
    """The in-process reference (plain path, as the fake server scores too)."""
    return LocalLM(load_model("tiny-random-causal", "float32"), input_cache=False, prefix_cache=False, memo=False)


def byte_table() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins back to bytes: printable Latin-1 bytes stand for themselves,
    the others for code points from 256 up, in byte order."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class LlamaCppCompletion(BaseModel):
    """The fields of llama-cpp-python 0.3.36's completion request that matter here (others are ignored)."""

    model: str | None = None
    prompt: str | list[str] = ""
    max_tokens: int | None = Field(16, ge=0)
    temperature: float = 0.8
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)
    logit_bias: dict[str, float] | None = None


def server_error(message: str) -> JSONResponse:
    """How llama.cpp's server answers any exception of a route: a 500 with the exception's text."""
    return JSONResponse({"error": {"message": message, "type": "internal_server_error", "param": None,
                                   "code": None}}, 500)


@contextmanager
def llama_cpp_like_server(batch: bool = False, add_bos: bool = False, biased_logprobs: bool = False):
    """A server answering as llama.cpp's does (see the module docstring), on its own tiny model instance.

    ``batch``: take several strings per POST (llama.cpp does not); ``add_bos``: put the BOS before every
    text prompt (llama.cpp does when the GGUF's ``tokenizer.ggml.add_bos_token`` is true);
    ``biased_logprobs``: report log-probs after the logit bias (llama.cpp does not). Yields the URL and the
    list of request bodies received."""
    lm = LocalLM(load_model("tiny-random-causal", "float32"), input_cache=False, prefix_cache=False, memo=False)
    tok = lm.tokenizer
    specials = set(tok.all_special_ids)
    end_of_text = {tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")}
    bytes_of = byte_table()

    def piece(i: int) -> str:
        if i in specials:
            return ""
        return bytes(bytes_of[ch] for ch in tok.convert_ids_to_tokens(i)).decode("utf-8", errors="ignore")

    app = FastAPI()
    seen: list = []

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "smol.gguf", "object": "model", "owned_by": "me", "permissions": []}]}

    @app.post("/v1/completions")
    async def complete(request: Request):
        raw = await request.json()
        seen.append(raw)
        try:
            body = LlamaCppCompletion.model_validate(raw)
        except ValidationError as exc:  # FastAPI's error for the body, turned into a 500 by llama.cpp's route class
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            return server_error(str(RequestValidationError(errors)))
        prompts = body.prompt if isinstance(body.prompt, list) else [body.prompt]
        if len(prompts) > 1 and not batch:
            return server_error("")  # `assert len(body.prompt) <= 1`
        choices, counted = [], 0
        for index, text in enumerate(prompts):
            ids = ([tok.bos_token_id] if add_bos else []) + list(tok(text, add_special_tokens=False)["input_ids"])
            counted += len(ids)
            lp = lm.next_token_logprobs([ids])[0].astype(np.float64)
            biased = lp.copy()
            for key, value in (body.logit_bias or {}).items():
                biased[int(key)] += value
            token = int(np.argmax(biased))
            if biased_logprobs:
                lp = biased - np.logaddexp.reduce(biased)
            generated = [] if token in end_of_text else [token]
            logprobs = None
            if body.logprobs is not None:
                logprobs = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
                for t in generated:
                    top = {piece(int(i)): float(lp[i]) for i in np.argsort(-lp, kind="stable")[:body.logprobs]}
                    top[piece(t)] = float(lp[t])
                    logprobs["tokens"].append(piece(t))
                    logprobs["text_offset"].append(len(text))
                    logprobs["token_logprobs"].append(float(lp[t]))
                    logprobs["top_logprobs"].append(top)
            choices.append({"text": (text if body.echo else "") + "".join(piece(t) for t in generated),
                            "index": index, "logprobs": logprobs, "finish_reason": "length" if generated else "stop"})
        return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body.model, "choices": choices,
                "usage": {"prompt_tokens": counted, "completion_tokens": len(choices),
                          "total_tokens": counted + len(choices)}}

    with run_app_in_background(app) as url:
        yield url, seen


def token_requests(lm) -> list[ScoreRequest]:
    return [ScoreRequest(TokenPrompt(tuple(lm.encode(" Movie review:"))), SEGMENTS, WORDS),
            ScoreRequest(TokenPrompt(()), SEGMENTS, WORDS),
            ScoreRequest(TokenPrompt(tuple(lm.encode(" so"))), SEGMENTS, WORDS, label_only=True)]


def assert_same(results, reference, atol=1e-5):
    for got, ref in zip(results, reference, strict=True):
        np.testing.assert_array_equal(got.predictions, ref.predictions)
        if ref.logprobs is None:
            assert got.logprobs is None
        else:
            np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=atol, rtol=0)
        assert not got.extra.get("approximate")


@pytest.mark.parametrize("batch", [False, True])
def test_ids_refused_text_taken_and_scored_exactly(local, batch):
    """Token ids are refused (500, validation error), text is taken: one string per POST on llama.cpp's
    server, a list of strings where a server takes that; labels are forced by logit_bias, scores exact."""
    with llama_cpp_like_server(batch=batch) as (url, seen):
        lm = OpenAICompatLM(url, tokenizer=local.tokenizer, retry=FAST)
        assert (lm.prompt_form, lm.batched, lm.method) == ("text", batch, "logit_bias") and not lm.approximate
        shapes = ["list of " + type(b["prompt"][0]).__name__ if isinstance(b["prompt"], list) else "str"
                  for b in seen[:4]]
        tried = ["list of list", "list of int", "list of str"]  # ids batched, ids one per POST, text batched
        assert shapes[:3] == tried and (batch or shapes[3] == "str")
        probe_posts, probe_prompts = len(seen), lm.prompts_sent
        reqs = token_requests(local)
        assert_same(lm.score(reqs), local.score(reqs))
    scoring = seen[probe_posts:]
    assert all(isinstance(b["prompt"], str if not batch else list) for b in scoring)
    assert all(b["max_tokens"] == 1 and b["logprobs"] == 0 and len(b["logit_bias"]) == 1 for b in scoring)
    rows = 3 * len(SEGMENTS) * 2  # three requests, one row per example, one prompt per label
    assert lm.prompts_sent - probe_prompts == rows
    assert len(scoring) == (rows if not batch else 2)  # batched: one POST per label


def test_biased_log_probs_are_not_taken_for_exact(local):
    """A server whose log-probs include the logit bias fails the "logit_bias" check (two forced labels
    cannot both be near-certain): the probe falls back to top-k, matched by token text, flagged approximate."""
    with llama_cpp_like_server(biased_logprobs=True) as (url, _):
        lm = OpenAICompatLM(url, tokenizer=local.tokenizer, top_k=5, retry=FAST)
        assert (lm.prompt_form, lm.method) == ("text", "top_k") and lm.approximate
        results = lm.score(token_requests(local)[:1])
    assert results[0].extra["approximate"] and np.all(np.isfinite(results[0].logprobs))


def test_a_row_text_cannot_carry_is_refused(local):
    split = tuple(local.encode(" gre")) + tuple(local.encode("at"))  # " great" is one token once re-tokenised
    assert tuple(local.encode(" great")) != split
    with llama_cpp_like_server() as (url, seen):
        lm = OpenAICompatLM(url, tokenizer=local.tokenizer, retry=FAST)
        sent = len(seen)
        with pytest.raises(ConfigError, match="does not survive the trip.*token ids"):
            lm.score([ScoreRequest(TokenPrompt(split), SEGMENTS, WORDS)])
        assert len(seen) == sent  # refused before anything was sent


def test_a_server_adding_its_bos_is_refused(local):
    """Our rows (as scored in process) have no BOS; a server putting one before text would score others."""
    with llama_cpp_like_server(add_bos=True) as (url, _), pytest.raises(ConfigError, match="its BOS"):
        OpenAICompatLM(url, tokenizer=local.tokenizer, retry=FAST)


def test_a_long_refusal_is_quoted_short(local):
    ids = list(local.encode(" a gripping, funny film. It was")) * 8
    with llama_cpp_like_server() as (url, _):
        with pytest.raises(ServiceError) as info:
            Transport(url, None, retry=FAST).post("/v1/completions", {"prompt": [ids] * 64, "max_tokens": 1})
        body = httpx.post(f"{url}/v1/completions", json={"prompt": [ids] * 64, "max_tokens": 1}).text
    message = str(info.value)
    assert len(body) > 20_000 and "\n" not in message and len(message) <= MAX_QUOTE + 80
    assert message.startswith("POST /v1/completions failed on the server (500): 65 validation errors: {'type': ")
    assert message.endswith(f"[{len(' '.join(json.loads(body)['error']['message'].split())):,} characters]")

    app = FastAPI()  # FastAPI's own 422: a list of errors, each quoting the input

    @app.post("/v1/completions")
    async def strict(body: LlamaCppCompletion):
        return {}

    with run_app_in_background(app) as url, pytest.raises(InvalidRequestError) as info:
        Transport(url, None, retry=FAST).post("/v1/completions", {"prompt": [ids] * 64})
    assert str(info.value) == ("POST /v1/completions refused (422): body.prompt.str: Input should be a valid string "
                               "(and 64 more validation errors)")


def test_a_server_taking_no_prompt_form_is_reported_short(local):
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def refuse(path: str):
        return server_error("x" * 50_000) if path == "v1/completions" else JSONResponse({"detail": "Not Found"}, 404)

    with run_app_in_background(app) as url, pytest.raises(ServiceError, match="took no prompt form") as info:
        OpenAICompatLM(url, tokenizer=local.tokenizer, retry=FAST)
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_text_keys_are_matched_as_text(local):
    """llama.cpp keys top log-probs by token text: the token printed "5" is not id 5, and a label is found
    by its text with the leading space; vLLM's prompt log-probs key ids with dict values."""
    tok = local.tokenizer
    five, great = local.encode("5")[0], local.encode(" great")[0]
    assert token_text(tok, great) == " great" and token_text(tok, five) == "5"
    assert token_text(tok, tok.eos_token_id) is None and token_text(tok, local.encode(" .")[0]) == " ."
    assert token_logprob({"5": -0.3, " great": -1.5}, five, tok) == -0.3
    assert token_logprob({"5": -0.3, " great": -1.5}, great, tok) == -1.5
    assert token_logprob({str(great): -0.3}, great, tok) is None  # a float-valued number is a token's text
    assert token_logprob({str(great): {"logprob": -0.7, "rank": 3}}, great) == -0.7
    assert token_logprob({f"token_id:{great}": -0.9}, great) == -0.9


def test_bdpl_runs_on_a_llama_cpp_like_server(local):
    """The whole stack over text prompts: env, budget, BDPL. The prompt goes after the input (see the
    real-engine test); a prompt whose row text cannot carry is refused, not scored as another row."""
    from promptgym.runner import run_agent

    with llama_cpp_like_server() as (url, _):
        model = f"openai+{url}?tokenizer=tiny-random-causal"
        run = run_agent("PromptSST2-v0", "bdpl", 12, model=model, dtype="float32", progress=False,
                        env_kwargs={"prompt_length": 3, "num_candidates": 20, "batch_size": 4,
                                    "prompt_position": "after"},
                        agent_kwargs={"samples": 3, "dev_every": 2})
        lm = run.env.unwrapped.lm
        assert (lm.prompt_form, lm.batched, lm.method) == ("text", False, "logit_bias")
        assert 1 <= run.env.unwrapped.budget.calls <= 12 and math.isfinite(run.result.dev_metric)
        env = gym.make("PromptSST2-v0", model=model, budget=5, prompt_length=1, num_candidates=20)  # before
        env.reset(seed=0)
        with pytest.raises(ConfigError, match="does not survive the trip"):  # "<candidate><input>" merges somewhere
            env.step(np.array([0]))
        assert env.unwrapped.budget.calls == 0  # refused before anything was charged


# ---------------------------------------------------------------------------------------------- the real engine
@pytest.mark.llama_cpp
def test_real_llama_cpp_server_runs_an_env_and_bdpl(benchmark_script):
    """llama-cpp-python's server on the default model's GGUF (SmolLM2-135M Q4_1, the file the preset
    de-quantises) behind ``openai+http://``: an env step and a 40-call BDPL run, scores finite, the
    probing level asserted. The prompt goes after the input: before it, the prompt's last token and the
    input's first often merge once the row is text (a third of random BDPL prompts), which the client
    refuses (ConfigError). Cost: ~1-3 minutes on 2 CPU cores (one prompt per POST, one per row and
    label: a call on a 4-row minibatch is 8 POSTs; the server sorts the whole vocabulary per answer).
    The server is started and stopped by ``benchmarks/llamacpp.py``'s ``llama_server``."""
    pytest.importorskip("llama_cpp")
    from promptgym.runner import run_agent

    with benchmark_script("llamacpp").llama_server(min(2, os.cpu_count() or 1)) as url:
        model = f"openai+{url}?tokenizer=smollm2-135m"
        small = {"prompt_length": 3, "num_candidates": 20, "batch_size": 4, "prompt_position": "after"}
        env = gym.make("PromptSST2-v0", model=model, budget=10, **small)
        env.reset(seed=0)
        _, reward, terminated, _, _ = env.step(env.action_space.sample())
        lm = env.unwrapped.lm
        assert terminated and math.isfinite(reward)
        assert (lm.prompt_form, lm.batched, lm.method) == ("text", False, "logit_bias") and not lm.approximate
        run = run_agent("PromptSST2-v0", "bdpl", 40, model=model, env_kwargs=small,
                        agent_kwargs={"samples": 4, "dev_every": 5}, progress=False)
        assert 1 <= run.env.unwrapped.budget.calls <= 40
        assert run.result.dev_metric is not None and math.isfinite(run.result.dev_metric)
