"""The FastAPI app: a promptgym model behind HTTP, API keys, per-key call quotas, signed usage receipts.

This is the black box the papers assume (a model users may only query, billed per call), made real:
the budget is enforced by the server from its key store (:mod:`promptgym.serve.keys`), not by the
client's good will. Wire shapes are :mod:`promptgym.lm.wire` (shared with the clients).

Endpoints (``Authorization: Bearer <key>`` on all but ``/health``):

* ``GET /health`` - liveness and the served model's name.
* ``GET /v1/model`` - name, weight sha256, vocabulary size, embedding dimension and statistics,
  masked or causal, mask token, dtype.
* ``GET /v1/tokenizer`` - the tokenizer's ``save_pretrained`` files (clients tokenize locally).
* ``POST /v1/embeddings`` - input embeddings of chosen token ids: free of charge, but only for a key
  with calls left (a spent key gets the quota 429) and rate-limited per key
  (``embeddings_rate_limit``), so it is no unmetered side door to the model worker.
* ``GET /v1/usage`` - the key's calls, quota and remaining calls.
* ``GET /v1/receipt`` - the key's usage receipt, signed (:mod:`promptgym.serve.receipts`; ``?from=N``
  adds the chain's calls after its first N); free, and answered for a spent key too. Every charged and
  answered call of either scoring endpoint is one chain entry, recorded as its answer is delivered
  (a refunded call never is). ``GET /v1/receipt/public-key`` (no key needed): the signing key.
* ``POST /v1/score`` - the native protocol: exactly :meth:`~promptgym.lm.base.BlackBoxLM.score`;
  one request = one API call charged.
* ``POST /v1/completions`` - OpenAI-compatible, vLLM dialect, **scoring only**; each prompt is one
  API call (:mod:`promptgym.serve.completions`).

Every request passes :mod:`promptgym.serve.limits` before any model work; the model runs on one
worker thread, which charges and refunds (:mod:`promptgym.serve.worker`). A key store locked by
another process past its busy timeout answers 503 + ``Retry-After`` with nothing charged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptgym.errors import InvalidPromptError, InvalidRequestError, KeyStoreBusyError, PromptGymError
from promptgym.lm import receipts
from promptgym.lm.base import BlackBoxLM, as_black_box
from promptgym.lm.kv_cache import prompt_key
from promptgym.lm.wire import (
    CompletionRequest,
    CompletionResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorBody,
    Health,
    ModelInfo,
    Receipt,
    ReceiptKey,
    ScoreBatch,
    ScoreResponse,
    TokenizerFiles,
    Usage,
    encode_array,
    error_body,
    result_to_wire,
)
from promptgym.serve.completions import check_completion, complete, completion_inputs, completion_prompt_sha256
from promptgym.serve.config import ServerConfig
from promptgym.serve.keys import KeyStore
from promptgym.serve.limits import ApiError, BodyLimit, RateLimiter, bad_request, check_ids, check_score, too_large
from promptgym.serve.receipts import ReceiptLog, ReceiptSigner, receipt_body, signing_key_path
from promptgym.serve.worker import Job, ModelWorker

log = logging.getLogger("promptgym.server")
#: most chain entries one ``GET /v1/receipt`` lists (a standard-tier run with its evaluation fits)
MAX_RECEIPT_ENTRIES = 100_000


class _CatchAll:
    """ASGI middleware: an unexpected exception becomes a JSON 500 here, so the connection stays usable.

    (Starlette's own last-resort handler answers and then re-raises, and the server closes the
    connection: a client would see a reset on its next request.)
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error("internal error on %s %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__,
                      exc_info=exc)
            if started:
                raise
            await JSONResponse(error_body("internal", "internal server error (nothing was charged)"),
                               status_code=500)(scope, receive, send)


# ---------------------------------------------------------------------------------------------- app
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 413, 422, 429, 503)}
_STATUS_TYPES = {400: "invalid_request", 401: "unauthorized", 403: "unauthorized", 404: "not_found",
                 405: "invalid_request", 413: "too_large", 415: "invalid_request", 422: "invalid_request",
                 429: "rate_limited", 503: "unavailable"}


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(type_, message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "the body is not valid JSON"
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return 422, "; ".join(parts) + more


def create_app(lm: BlackBoxLM, key_store: KeyStore, config: ServerConfig | None = None,
               worker_thread: bool = True) -> FastAPI:
    """The FastAPI app serving ``lm`` (a :class:`~promptgym.lm.local.LocalLM` or any other
    :class:`~promptgym.lm.base.BlackBoxLM`) with keys from ``key_store``. Call ``app.state.shutdown()``
    to stop its worker.

    ``worker_thread=False``: the model worker gets no thread of its own; the caller runs
    ``app.state.worker.run()`` (``promptgym serve`` runs it on the thread that loaded the model).
    """
    lm = as_black_box(lm)
    config = config or ServerConfig()
    worker = ModelWorker(config.batching, config.batch_window_ms / 1000.0, own_thread=worker_thread)
    limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
    embeddings_limiter = RateLimiter(config.embeddings_rate_limit) if config.embeddings_rate_limit else None
    bearer = HTTPBearer(auto_error=False, description="an API key made by `promptgym keys add`")
    mean, std = lm.embedding_stats()
    info = ModelInfo(name=str(lm.name), weights_sha256=str(lm.weights_sha256 or ""),
                     vocab_size=int(lm.vocab_size), embedding_dim=int(lm.embedding_dim), embedding_mean=float(mean),
                     embedding_std=float(std), is_masked=bool(lm.is_masked),
                     mask_token=lm.mask_token if lm.is_masked else None,
                     dtype=str(lm.dtype).replace("torch.", ""))
    tokenizer_files = _tokenizer_files(lm.tokenizer)
    signer = ReceiptSigner.load_or_create(signing_key_path(key_store.path))
    chain = ReceiptLog(key_store)

    app = FastAPI(title="promptgym LM service", version="1",
                  description="A frozen LM as a black box: scoring calls charged to API keys with quotas.")
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(_CatchAll)
    app.state.config, app.state.keys, app.state.worker, app.state.lm = config, key_store, worker, lm
    app.state.shutdown = worker.stop
    app.state.signer, app.state.receipts = signer, chain
    app.state.stats = stats = {"score_jobs": 0, "shared": 0}  # shared: identical jobs scored once (batching)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return _error(status, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, _STATUS_TYPES.get(exc.status_code, "invalid_request"), str(exc.detail),
                      getattr(exc, "headers", None))

    @app.exception_handler(PromptGymError)
    async def _pg(request: Request, exc: PromptGymError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(KeyStoreBusyError)  # more specific than PromptGymError: chosen first
    async def _busy(request: Request, exc: KeyStoreBusyError) -> JSONResponse:
        return _error(503, "unavailable", "the key store is busy; nothing was charged, retry later",
                      {"Retry-After": "1"})

    # ------------------------------------------------------------------ helpers
    async def auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:  # noqa: B008
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "missing API key: send the header 'Authorization: Bearer <key>'")
        name = await asyncio.to_thread(key_store.authenticate, credentials.credentials)
        if name is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key")
        if limiter is not None:
            wait = limiter.take(name)
            if wait > 0:
                raise ApiError(429, "rate_limited", f"more than {config.rate_limit:g} requests per second for this "
                               "key; retry later", {"Retry-After": str(max(1, math.ceil(wait)))})
        return name

    async def run_job(fn: Callable[[Job, dict], Any], batchable: bool = False) -> Any:
        job = Job(fn, asyncio.get_running_loop(), batchable)
        worker.submit(job)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout=config.request_timeout_s)
        except asyncio.CancelledError:  # the server shuts down without waiting any longer: never charge
            with job.lock:
                if job.state != "done":
                    job.state = "abandoned"
            raise
        except asyncio.TimeoutError:
            with job.lock:
                finished = job.state == "done"
                if not finished:  # queued: never runs; running: the worker refunds when it sees this
                    job.state = "abandoned"
            if finished:
                return await job.future
            raise ApiError(503, "unavailable", f"not answered within the server's timeout of "
                           f"{config.request_timeout_s:g} s; nothing was charged, retry later") from None

    def charge(job: Job, name: str, n: int) -> dict:
        """Reserve ``n`` calls for ``name`` (on the worker thread) and return the usage after it, or raise the
        quota 429."""
        usage = key_store.charge(name, n)
        if usage is None:
            rec = key_store.get(name)
            if rec.revoked:  # revoked while the request waited: an auth failure, not a quota one
                raise ApiError(401, "unauthorized", "unknown or revoked API key")
            left = "no limit" if rec.remaining is None else f"{rec.remaining} of {rec.quota} calls left"
            raise ApiError(429, "quota_exceeded", f"quota exceeded for key {name!r}: this request needs {n} calls, "
                           f"{left}; nothing was charged")
        job.refund = lambda: key_store.refund(name, n)
        return usage

    @contextlib.contextmanager
    def interruptible(job: Job) -> Iterator[None]:
        """Let the LM stop ``job``'s forward passes once its handler abandoned it (a timeout), so a
        refunded request does not keep the one model worker busy (a backend that never calls its
        ``interrupt`` hook runs its calls to the end)."""
        saved, lm.interrupt = lm.interrupt, job.raise_if_abandoned
        try:
            yield
        finally:
            lm.interrupt = saved

    # ------------------------------------------------------------------ endpoints
    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        return Health(status="ok", model=info.name)

    @app.get("/v1/model", response_model=ModelInfo, responses=_ERRORS, tags=["model"])
    async def model(name: str = Depends(auth)) -> ModelInfo:
        return info

    @app.get("/v1/tokenizer", response_model=TokenizerFiles, responses=_ERRORS, tags=["model"])
    async def tokenizer(name: str = Depends(auth)) -> TokenizerFiles:
        return tokenizer_files

    @app.get("/v1/usage", response_model=Usage, responses=_ERRORS, tags=["service"])
    async def usage(name: str = Depends(auth)) -> Usage:
        return Usage(**(await asyncio.to_thread(key_store.usage, name)))

    @app.get("/v1/receipt", response_model=Receipt, response_model_exclude_none=True, responses=_ERRORS,
             tags=["service"])
    async def receipt(name: str = Depends(auth), after: int | None = Query(  # noqa: B008
            None, alias="from", ge=0, description="also list the chain's calls after its first `from` calls"),
    ) -> Receipt:
        """The key's usage receipt, signed: free, and given to a spent key too (that is when it is wanted)."""
        def read() -> dict:
            summary = chain.summary(name)
            body = receipt_body(signer, name, key_store.key_id(name), info.name, info.weights_sha256, info.dtype,
                                summary)
            out: dict[str, Any] = {"receipt": body, "signature": signer.sign(body)}
            if after is not None:
                if after > summary["calls"]:
                    raise bad_request(f"from={after} is past the chain's {summary['calls']} calls")
                if summary["calls"] - after > MAX_RECEIPT_ENTRIES:
                    raise too_large(f"{summary['calls'] - after} calls after from={after}; the server lists at most "
                                    f"{MAX_RECEIPT_ENTRIES} per request (ask for a later from)")
                head, entries = chain.entries(name, after)
                if len(entries) != summary["calls"] - after:  # a call answered between the two reads
                    raise ApiError(503, "unavailable", "the chain grew while it was read; retry",
                                   {"Retry-After": "1"})
                out["log"] = {"from": after, "head": head,
                              "entries": [(*e.triple(), e.examples) for e in entries]}
            return out

        return Receipt.model_validate(await asyncio.to_thread(read))

    @app.get("/v1/receipt/public-key", response_model=ReceiptKey, tags=["service"])
    async def receipt_key() -> ReceiptKey:
        """The public key receipts are signed with (a leaderboard trusts it by committing it)."""
        return ReceiptKey(signer=signer.fingerprint, public_key=signer.public_pem())

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=_ERRORS, tags=["model"])
    async def embeddings(body: EmbeddingsRequest, name: str = Depends(auth)) -> EmbeddingsResponse:
        if not body.ids:
            raise bad_request("ids must hold at least one token id")
        if len(body.ids) * info.embedding_dim > config.max_array_elements:
            raise too_large(f"{len(body.ids)} ids x {info.embedding_dim} dims exceed the server's "
                            f"{config.max_array_elements} array elements")
        check_ids(body.ids, info.vocab_size, "ids")
        rec = await asyncio.to_thread(key_store.get, name)
        if rec.remaining == 0:  # free of charge, but not a way to keep using the service on a spent key
            raise ApiError(429, "quota_exceeded", f"quota exceeded for key {name!r}: 0 of {rec.quota} calls left "
                           "(embeddings are free of charge for a key with calls left)")
        if embeddings_limiter is not None:
            wait = embeddings_limiter.take(name)
            if wait > 0:
                raise ApiError(429, "rate_limited", f"more than {config.embeddings_rate_limit:g} embeddings "
                               "requests per second for this key; retry later",
                               {"Retry-After": str(max(1, math.ceil(wait)))})
        out = await run_job(lambda job, cycle: lm.embed_tokens(body.ids))
        return EmbeddingsResponse(embeddings=encode_array(np.asarray(out, dtype=np.float32)))

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS, tags=["scoring"])
    async def score(body: ScoreBatch, name: str = Depends(auth)) -> ScoreResponse:
        requests = check_score(body, config, info)
        key = tuple((prompt_key(r.prompt), r.segments, r.label_words, r.label_only) for r in requests)

        def work(job: Job, cycle: dict) -> tuple[list, dict]:
            usage = charge(job, name, len(requests))
            stats["score_jobs"] += 1
            if key in cycle:
                stats["shared"] += 1
                results = cycle[key]
            else:
                try:
                    with interruptible(job):
                        results = lm.score(requests)
                except (InvalidPromptError, InvalidRequestError) as e:
                    raise bad_request(str(e)) from None
                cycle[key] = results
            wire = [result_to_wire(r) for r in results]
            entries = [receipts.Entry(receipts.prompt_sha256(req.prompt),
                                      receipts.rows_sha256(req.segments, req.label_words, req.label_only),
                                      receipts.response_sha256(out.model_dump(mode="json")), len(req.segments))
                       for req, out in zip(requests, wire, strict=True)]
            job.commit = lambda: chain.append(name, entries)
            return wire, usage

        wire, usage = await run_job(work, batchable=True)
        return ScoreResponse(results=wire, calls=len(requests), usage=Usage(**usage))

    @app.post("/v1/completions", response_model=CompletionResponse, responses=_ERRORS, tags=["openai-compatible"])
    async def completions(body: CompletionRequest, name: str = Depends(auth)) -> CompletionResponse:
        plan = check_completion(body, config, info)

        def work(job: Job, cycle: dict) -> CompletionResponse:
            inputs = completion_inputs(lm, plan, info, config)
            charge(job, name, len(inputs))
            try:
                with interruptible(job):
                    answer = complete(lm, body, plan, inputs)
            except (InvalidPromptError, InvalidRequestError) as e:
                raise bad_request(str(e)) from None
            rows = receipts.options_sha256(body.model_dump(mode="json", exclude={"prompt", "prompt_embeds"}))
            entries = [receipts.Entry(completion_prompt_sha256(item, x), rows,
                                      receipts.response_sha256(choice.model_dump(mode="json")), 1)
                       for item, x, choice in zip(plan.items, inputs, answer.choices, strict=True)]
            job.commit = lambda: chain.append(name, entries)
            return answer

        return await run_job(work)

    return app


def _tokenizer_files(tokenizer) -> TokenizerFiles:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: base64.b64encode(p.read_bytes()).decode("ascii") for p in sorted(Path(tmp).iterdir())
                 if p.is_file()}
    return TokenizerFiles(files=files)
