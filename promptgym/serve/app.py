"""A promptgym model behind HTTP: API keys, per-key call quotas, limits, and an OpenAI-compatible subset.

This is the black box the papers assume (a model users may only query, billed per call), made real:
the budget is enforced by the server from its key store (:mod:`promptgym.lm.keys`), not by the
client's good will. Wire shapes are :mod:`promptgym.lm.wire`.

Endpoints (``Authorization: Bearer <key>`` on all but ``/health``):

* ``GET /health`` - liveness and the served model's name.
* ``GET /v1/model`` - name, weight sha256, vocabulary size, embedding dimension and statistics,
  masked or causal, mask token, dtype.
* ``GET /v1/tokenizer`` - the tokenizer's ``save_pretrained`` files (clients tokenize locally).
* ``POST /v1/embeddings`` - input embeddings of chosen token ids: free of charge, but only for a key
  with calls left (a spent key gets the quota 429) and rate-limited per key
  (``embeddings_rate_limit``), so it is no unmetered side door to the model worker.
* ``GET /v1/usage`` - the key's calls, quota and remaining calls.
* ``GET /v1/receipt`` - the key's usage receipt, signed (:mod:`promptgym.lm.receipts`; ``?from=N`` adds
  the chain's calls after its first N); free, and answered for a spent key too. Every charged and
  answered call of either scoring endpoint is one chain entry, recorded as its answer is delivered
  (a refunded call never is). ``GET /v1/receipt/public-key`` (no key needed): the signing key.
* ``POST /v1/score`` - the native protocol: exactly :meth:`~promptgym.lm.base.BlackBoxLM.score`;
  one request = one API call charged.
* ``POST /v1/completions`` - OpenAI-compatible, vLLM dialect, **scoring only** (``max_tokens`` 0
  or 1; the one generated token is the argmax whatever the sampling fields say). Each prompt is one
  API call. Follows vLLM's shapes: ``choices[i].logprobs`` with ``tokens``/``token_logprobs``/
  ``top_logprobs``/``text_offset`` (prompt tokens first with ``echo``, the first one ``None``);
  ``choices[i].prompt_logprobs`` = ``[None, {"<id>": {"logprob", "rank", "decoded_token"}}, ...]``
  (the actual token plus the top-k); ``return_tokens_as_token_ids`` spells tokens ``token_id:<id>``;
  ``logprobs=-1`` / ``prompt_logprobs=-1`` mean the whole vocabulary (vLLM needs
  ``--max-logprobs -1`` for that); ``prompt_embeds`` is base64 of a ``torch.save``d (L, d) float
  tensor (vLLM needs ``--enable-prompt-embeds``), loaded with ``weights_only=True``.
  Differences: ``logprob_token_ids`` (recent vLLM releases have it; older ones ignore it) adds the
  log-probs of those ids to ``top_logprobs`` of the generated position; giving both ``prompt`` and
  ``prompt_embeds`` is refused; ``n`` must be 1 and ``stream`` false. Causal models only.

Limits (:class:`~promptgym.lm.server_config.ServerConfig`) answer 413 ``too_large`` before any model
work: body bytes (checked on ``Content-Length`` and while the body streams in), requests per batch,
rows per request, prompt length, array elements, log-probs listed per completions answer. Text that
is not valid Unicode (a lone UTF-16 surrogate, which JSON can carry) answers 400 naming the field.

Execution: one worker thread owns the model (torch on 2 cores gains nothing from parallel
forwards; the LM is not thread-safe, so do not use a served instance from other threads); the event
loop only parses, checks and answers. Quota: a job reserves its calls in the
key store when the worker takes it, after every check passed (bad input is never charged), and gives
them back if scoring fails or the client's timeout expired first (a timed-out request is never
charged: the client will retry it). A timed-out job's work is stopped, not finished: the worker
asks before every forward pass whether the job was abandoned (``LocalLM.interrupt``), so an uncharged
request costs the worker at most ``request_timeout_s`` plus one forward pass. A key revoked while its
request waited in the queue answers 401, not a quota 429.

Failure modes of the charge. The calls are committed before the model runs, so no crash ever
yields free calls; the other side of that choice is that a process killed outright (SIGKILL, power
loss, OOM killer) while jobs were reserved keeps them charged though never answered: at most the
jobs of one worker cycle (one job, or with ``batching`` the identical jobs scored together). A key
store locked by another process past its busy timeout answers 503 + ``Retry-After`` with nothing
charged. ``promptgym serve`` shuts down gracefully on SIGTERM or Ctrl-C: it stops accepting
connections, finishes every request in flight (a request cut off after ``request_timeout_s`` more
is refunded) and exits 0; a second Ctrl-C quits at once. Its access log never holds a query string
(a key put in ``?api_key=`` is refused and not logged).

Batching: merging different requests into one ``lm.score`` call changes their bf16 scores by
rounding (LocalLM cuts rows into chunks by length, and a row's padding width depends on its chunk
mates: log-probs moved by up to 1e-6 on the plain path and 6e-5 with the fast paths, bf16, tiny
model) and saves little on a CPU (a prompt alone in a call vs inside a 20-prompt call: 1.11 s vs
1.03 s, LocalLM's docstring). So with ``batching`` on, the worker drains every queued ``/v1/score`` job (waiting up to
``batch_window_ms`` for more) and scores **identical** jobs once (same prompts, rows, label words and
mode: each still charged); distinct jobs are never merged, and every result is byte-for-byte what it
would be with batching off (tested).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import math
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptgym.errors import (
    ConfigError,
    InvalidPromptError,
    InvalidRequestError,
    KeyStoreBusyError,
    PromptGymError,
)
from promptgym.lm import receipts
from promptgym.lm.base import SoftPrompt, TokenPrompt
from promptgym.lm.keys import KeyStore
from promptgym.lm.kv_cache import prompt_key
from promptgym.lm.server_config import ServerConfig
from promptgym.lm.wire import (
    CompletionChoice,
    CompletionLogProbs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ErrorBody,
    Health,
    ModelInfo,
    PromptLogprob,
    Receipt,
    ReceiptKey,
    ScoreBatch,
    ScoreResponse,
    SoftPromptIn,
    TokenizerFiles,
    Usage,
    encode_array,
    error_body,
    request_from_wire,
    result_to_wire,
)

log = logging.getLogger("promptgym.server")
#: vLLM's floor for log-probs in JSON (-inf is not JSON)
LOGPROB_FLOOR = -9999.0
#: most chain entries one ``GET /v1/receipt`` lists (a standard-tier run with its evaluation fits)
MAX_RECEIPT_ENTRIES = 100_000


class ApiError(Exception):
    """An error answered as ``{"error": {"type", "message"}}`` with ``status``."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


# ---------------------------------------------------------------------------------------------- worker
class JobAbandoned(Exception):
    """Raised on the worker thread, inside the model's forward loop, to stop a job nobody waits for."""


class _Job:
    """One unit of model work; ``fn(job, cycle)`` runs on the worker thread (``cycle``: a dict shared by
    the jobs of one batching cycle). The state machine decides who refunds: a job the handler
    abandoned (timeout) before it finished is refunded by the worker."""

    def __init__(self, fn: Callable[[_Job, dict], Any], loop: asyncio.AbstractEventLoop, batchable: bool) -> None:
        self.fn, self.loop, self.batchable = fn, loop, batchable
        self.future: asyncio.Future = loop.create_future()
        self.lock = threading.Lock()
        self.state = "queued"  # -> running -> done | abandoned
        self.refund: Callable[[], None] | None = None  # set by fn once calls are reserved
        # set by fn once it has answers: records the answered calls (usage receipts); run only if the job is
        # delivered, under the lock that decides it, so a chain never holds a call that was refunded
        self.commit: Callable[[], None] | None = None

    def raise_if_abandoned(self) -> None:
        """Stop the job's model work (the LM calls this before each forward pass) if its handler gave up."""
        if self.state == "abandoned":
            raise JobAbandoned

    def _deliver(self, value: Any, error: BaseException | None) -> None:
        def put() -> None:
            if not self.future.done():
                if error is not None:
                    self.future.set_exception(error)
                else:
                    self.future.set_result(value)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(put)


class ModelWorker:
    """The single thread that owns the LM and runs jobs in arrival order."""

    def __init__(self, batching: bool, window_s: float, own_thread: bool = True) -> None:
        self.batching, self.window_s = batching, window_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if own_thread:
            self._thread = threading.Thread(target=self.run, name="promptgym-model-worker", daemon=True)
            self._thread.start()

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def run(self) -> None:
        """Run jobs on the calling thread until :meth:`stop` (the worker's own thread runs this too)."""
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            if self.batching and job.batchable:
                deadline = time.monotonic() + self.window_s
                while True:
                    try:
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic())) if self.window_s > 0 \
                            else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    jobs.append(nxt)
                    if nxt is None:
                        break
            cycle: dict = {}
            for j in jobs:
                if j is None:
                    return
                self._run(j, cycle if self.batching else {})

    @staticmethod
    def _run(job: _Job, cycle: dict) -> None:
        with job.lock:
            if job.state == "abandoned":
                return
            job.state = "running"
        value, error = None, None
        try:
            value = job.fn(job, cycle)
        except BaseException as e:  # delivered to the handler, which answers JSON
            error = e
            ModelWorker._give_back(job)
        with job.lock:
            if job.state == "abandoned":
                ModelWorker._give_back(job)
                return
            if error is None:
                error = ModelWorker._commit(job)
            job.state = "done"
        job._deliver(value, error)

    @staticmethod
    def _commit(job: _Job) -> BaseException | None:
        """Record the job's answered calls; if that fails (a busy key store), refund them and answer the error."""
        commit, job.commit = job.commit, None
        if commit is None:
            return None
        try:
            commit()
        except BaseException as exc:
            ModelWorker._give_back(job)
            return exc
        return None

    @staticmethod
    def _give_back(job: _Job) -> None:
        """Refund the job's reserved calls; a failing refund is logged, never allowed to stop the worker."""
        refund, job.refund = job.refund, None
        if refund is None:
            return
        try:
            refund()
        except Exception as exc:
            log.error("could not give back the calls of a failed or abandoned request: %s", exc)


class _RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts of ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = float(rate), max(1.0, float(rate))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str) -> float:
        """0 if a request may go now, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.rate


# ---------------------------------------------------------------------------------------------- body limit
class _BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, checked on the header and while streaming."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await JSONResponse(error_body("too_large", f"request body over the server's limit of {self.max_bytes} "
                                          "bytes"), status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, f"request body over the server's limit of {self.max_bytes} "
                                                      "bytes")
            return message

        await self.app(scope, limited, send)


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


def create_app(lm, key_store: KeyStore, config: ServerConfig | None = None, worker_thread: bool = True) -> FastAPI:
    """The FastAPI app serving ``lm`` (a :class:`~promptgym.lm.local.LocalLM` or any backend with its
    public API) with keys from ``key_store``. Call ``app.state.shutdown()`` to stop its worker.

    ``worker_thread=False``: the model worker gets no thread of its own; the caller runs
    ``app.state.worker.run()`` (``promptgym serve`` runs it on the thread that loaded the model).
    """
    config = config or ServerConfig()
    worker = ModelWorker(config.batching, config.batch_window_ms / 1000.0, own_thread=worker_thread)
    limiter = _RateLimiter(config.rate_limit) if config.rate_limit else None
    embeddings_limiter = _RateLimiter(config.embeddings_rate_limit) if config.embeddings_rate_limit else None
    bearer = HTTPBearer(auto_error=False, description="an API key made by `promptgym keys add`")
    mean, std = lm.embedding_stats()
    info = ModelInfo(name=str(lm.name), weights_sha256=str(getattr(lm, "weights_sha256", "") or ""),
                     vocab_size=int(lm.vocab_size), embedding_dim=int(lm.embedding_dim), embedding_mean=float(mean),
                     embedding_std=float(std), is_masked=bool(lm.is_masked),
                     mask_token=getattr(lm, "mask_token", None) if lm.is_masked else None,
                     dtype=str(getattr(lm, "dtype", "unknown")).replace("torch.", ""))
    tokenizer_files = _tokenizer_files(lm.tokenizer)
    signer = receipts.ReceiptSigner.load_or_create(receipts.signing_key_path(key_store.path))
    chain = receipts.ReceiptLog(key_store)

    app = FastAPI(title="promptgym LM service", version="1",
                  description="A frozen LM as a black box: scoring calls charged to API keys with quotas.")
    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)
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

    async def run_job(fn: Callable[[_Job, dict], Any], batchable: bool = False) -> Any:
        job = _Job(fn, asyncio.get_running_loop(), batchable)
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

    def charge(job: _Job, name: str, n: int) -> dict:
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
    def interruptible(job: _Job) -> Iterator[None]:
        """Let the LM stop ``job``'s forward passes once its handler abandoned it (a timeout), so a
        refunded request does not keep the one model worker busy."""
        if not hasattr(lm, "interrupt"):  # an LM without the hook runs its calls to the end
            yield
            return
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
            body = receipts.receipt_body(signer, name, key_store.key_id(name), info.name, info.weights_sha256,
                                         info.dtype, summary)
            out: dict[str, Any] = {"receipt": body, "signature": signer.sign(body)}
            if after is not None:
                if after > summary["calls"]:
                    raise _bad(f"from={after} is past the chain's {summary['calls']} calls")
                if summary["calls"] - after > MAX_RECEIPT_ENTRIES:
                    raise _too_large(f"{summary['calls'] - after} calls after from={after}; the server lists at most "
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
            raise _bad("ids must hold at least one token id")
        if len(body.ids) * info.embedding_dim > config.max_array_elements:
            raise _too_large(f"{len(body.ids)} ids x {info.embedding_dim} dims exceed the server's "
                             f"{config.max_array_elements} array elements")
        _check_ids(body.ids, info.vocab_size, "ids")
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
        requests = _check_score(body, config, info)
        key = tuple((prompt_key(r.prompt), r.segments, r.label_words, r.label_only) for r in requests)

        def work(job: _Job, cycle: dict) -> tuple[list, dict]:
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
                    raise _bad(str(e)) from None
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
        plan = _check_completion(body, config, info)

        def work(job: _Job, cycle: dict) -> CompletionResponse:
            inputs = _completion_inputs(lm, plan, info, config)
            charge(job, name, len(inputs))
            try:
                with interruptible(job):
                    answer = _complete(lm, body, plan, inputs)
            except (InvalidPromptError, InvalidRequestError) as e:
                raise _bad(str(e)) from None
            rows = receipts.options_sha256(body.model_dump(mode="json", exclude={"prompt", "prompt_embeds"}))
            entries = [receipts.Entry(_completion_prompt_sha256(item, x), rows,
                                      receipts.response_sha256(choice.model_dump(mode="json")), 1)
                       for item, x, choice in zip(plan.items, inputs, answer.choices, strict=True)]
            job.commit = lambda: chain.append(name, entries)
            return answer

        return await run_job(work)

    return app


# ---------------------------------------------------------------------------------------------- checks
def _check_ids(ids: list[int], vocab: int, what: str) -> None:
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise _bad(f"{what}: token ids {bad[:5]} are outside the vocabulary [0, {vocab})")


def _check_text(text: str, where: str) -> None:
    """400 for text that is not valid Unicode: JSON's ``\\ud800`` escapes decode to a lone surrogate, which
    no tokenizer can encode (it failed inside the tokenizer, as a 500)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _bad(f"{where} holds a lone UTF-16 surrogate at character {e.start} (not valid Unicode "
                   "text)") from None


def _completion_prompt_sha256(item: Any, scored: Any) -> str:
    """The receipt hash of a completions prompt: its token ids or embeddings as a score request's would
    be, or its text as given."""
    if isinstance(scored, np.ndarray):
        return receipts.prompt_sha256(SoftPrompt(scored))
    if isinstance(item, str):
        return receipts.text_prompt_sha256(item)
    return receipts.prompt_sha256(TokenPrompt(tuple(scored)))


def _too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def _check_score(body: ScoreBatch, config: ServerConfig, info: ModelInfo) -> list:
    """The :class:`ScoreRequest` list of a batch, every server limit and model bound checked (nothing charged)."""
    n = len(body.requests)
    if n == 0:
        raise _bad("requests must hold at least one request")
    if n > config.max_requests:
        raise _too_large(f"{n} requests in one batch, the server allows {config.max_requests}")
    out = []
    for i, req in enumerate(body.requests):
        where = f"requests[{i}]"
        if not req.segments:
            raise _bad(f"{where}.segments must hold at least one example")
        if len(req.segments) > config.max_rows:
            raise _too_large(f"{where} has {len(req.segments)} rows, the server allows {config.max_rows}")
        if not req.label_words:
            raise _bad(f"{where}.label_words must hold at least one word")
        for j, segment in enumerate(req.segments):
            for k, text in enumerate(segment):
                _check_text(text, f"{where}.segments[{j}][{k}]")
        for j, word in enumerate(req.label_words):
            _check_text(word, f"{where}.label_words[{j}]")
        if isinstance(req.prompt, SoftPromptIn):
            shape = req.prompt.embeds.shape
            if len(shape) != 2 or shape[1] != info.embedding_dim:
                raise _bad(f"{where}.prompt.embeds must have shape (length, {info.embedding_dim}), got {tuple(shape)}")
            length = shape[0]
            if shape[0] * shape[1] > config.max_array_elements:
                raise _too_large(f"{where}.prompt.embeds has {shape[0] * shape[1]} elements, the server allows "
                                 f"{config.max_array_elements}")
        else:
            length = len(req.prompt.ids)
            _check_ids(req.prompt.ids, info.vocab_size, f"{where}.prompt.ids")
        if length > config.max_prompt_length:
            raise _too_large(f"{where}.prompt has {length} positions, the server allows {config.max_prompt_length}")
        try:
            out.append(request_from_wire(req, config.max_array_elements))
        except InvalidRequestError as e:
            raise _bad(f"{where}.prompt.embeds: {e}") from None
    return out


@dataclass
class _CompletionPlan:
    kind: str  # "ids" | "text" | "embeds"
    items: list
    max_tokens: int
    top: int | None  # logprobs: top-k per returned position (-1: vocabulary); None: no logprobs object
    prompt_top: int | None  # prompt_logprobs
    extra_ids: list[int]
    echo: bool
    as_ids: bool
    add_special_tokens: bool


def _check_completion(body: CompletionRequest, config: ServerConfig, info: ModelInfo) -> _CompletionPlan:
    if info.is_masked:
        raise _bad(f"{info.name} is a masked LM: /v1/completions needs a causal LM (use /v1/score)")
    if body.model is not None and body.model != info.name:
        raise ApiError(404, "not_found", f"model {body.model!r} is not served here; this server serves {info.name!r}")
    if body.max_tokens not in (0, 1):
        raise _bad(f"max_tokens must be 0 or 1 (this server scores, it does not generate), got {body.max_tokens}")
    if body.n != 1 or (body.best_of not in (None, 1)):
        raise _bad("n and best_of must be 1")
    if body.stream:
        raise _bad("stream is not supported")
    for field in ("logprobs", "prompt_logprobs"):
        value = getattr(body, field)
        if value is not None and not -1 <= value <= info.vocab_size:
            raise _bad(f"{field} must be -1 (whole vocabulary) or 0..{info.vocab_size}, got {value}")
    extra = list(body.logprob_token_ids or [])
    if len(extra) > config.max_array_elements:
        raise _too_large(f"logprob_token_ids has {len(extra)} ids, the server allows {config.max_array_elements}")
    _check_ids(extra, info.vocab_size, "logprob_token_ids")
    if (body.prompt is None) == (body.prompt_embeds is None):
        raise _bad("give exactly one of prompt and prompt_embeds")
    if body.prompt_embeds is not None:
        kind, items = "embeds", [body.prompt_embeds] if isinstance(body.prompt_embeds, str) else body.prompt_embeds
        if body.echo or body.prompt_logprobs is not None:
            raise _bad("echo and prompt_logprobs need token prompts, not prompt_embeds")
    elif isinstance(body.prompt, str):
        kind, items = "text", [body.prompt]
    elif body.prompt and all(isinstance(p, int) for p in body.prompt):
        kind, items = "ids", [body.prompt]
    elif body.prompt and all(isinstance(p, str) for p in body.prompt):
        kind, items = "text", list(body.prompt)
    else:
        kind, items = "ids", list(body.prompt or [])
    if not items:
        raise _bad("prompt must hold at least one prompt")
    if len(items) > config.max_rows:
        raise _too_large(f"{len(items)} prompts in one request, the server allows {config.max_rows}")
    if kind == "ids":
        for i, ids in enumerate(items):
            if not ids:
                raise _bad(f"prompt[{i}] is empty")
            _check_ids(ids, info.vocab_size, f"prompt[{i}]")
    elif kind == "text":
        for i, text in enumerate(items):
            _check_text(text, f"prompt[{i}]")
    return _CompletionPlan(kind=kind, items=items, max_tokens=int(body.max_tokens), top=body.logprobs,
                           prompt_top=body.prompt_logprobs, extra_ids=extra, echo=bool(body.echo),
                           as_ids=bool(body.return_tokens_as_token_ids),
                           add_special_tokens=body.add_special_tokens is not False)


def _completion_inputs(lm, plan: _CompletionPlan, info: ModelInfo, config: ServerConfig) -> list:
    """Token-id tuples or (L, d) float32 arrays, each checked against the model's length limit."""
    max_len = int(getattr(lm, "max_length", 1024))
    inputs: list = []
    for i, item in enumerate(plan.items):
        if plan.kind == "ids":
            x: Any = tuple(item)
        elif plan.kind == "text":
            x = tuple(lm.tokenizer(item, add_special_tokens=plan.add_special_tokens)["input_ids"])
            if not x:
                raise _bad(f"prompt[{i}] has no tokens")
        else:
            x = _load_embeds(item, i, info, config)
        if len(x) > max_len:
            raise _bad(f"prompt[{i}] has {len(x)} positions, the model takes at most {max_len}")
        inputs.append(x)
    entries = _logprob_entries(plan, [len(x) for x in inputs], info.vocab_size)
    if entries > config.max_logprob_entries:
        raise _too_large(f"this request would list {entries} log-probs, the server allows "
                         f"{config.max_logprob_entries}: ask for fewer prompts, positions or top-k")
    return inputs


def _logprob_entries(plan: _CompletionPlan, lengths: list[int], vocab: int) -> int:
    """How many (token, log-prob) pairs the answer lists (a bound: top-k plus the chosen tokens)."""
    def width(k: int | None) -> int:
        return 0 if k is None else (vocab if k < 0 else min(k, vocab)) + 1

    n = 0
    if plan.top is not None or plan.extra_ids:
        per_position = width(plan.top if plan.top is not None else 0) + len(plan.extra_ids)
        positions = sum(lengths) if plan.echo and plan.kind != "embeds" else 0
        positions += len(lengths) * plan.max_tokens
        n += positions * per_position
    if plan.prompt_top is not None:
        n += sum(max(0, length - 1) for length in lengths) * width(plan.prompt_top)
    return n


def _load_embeds(item: str, i: int, info: ModelInfo, config: ServerConfig) -> np.ndarray:
    import torch

    where = f"prompt_embeds[{i}]"
    if len(item) > 4 * (config.max_array_elements * 8 // 3) + 4096:
        raise _too_large(f"{where} is larger than {config.max_array_elements} elements can be")
    try:
        raw = base64.b64decode(item, validate=True)
        tensor = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception:
        raise _bad(f"{where} is not the base64 of a torch.save'd tensor") from None
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise _bad(f"{where} must hold a floating-point tensor")
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2 or tensor.shape[1] != info.embedding_dim or tensor.shape[0] < 1:
        raise _bad(f"{where} must have shape (length, {info.embedding_dim}), got {tuple(tensor.shape)}")
    if tensor.numel() > config.max_array_elements:
        raise _too_large(f"{where} has {tensor.numel()} elements, the server allows {config.max_array_elements}")
    x = tensor.detach().to(torch.float32).numpy().copy()
    if not np.all(np.isfinite(x)):
        raise _bad(f"{where} contains NaN or inf values")
    return x


def _top(lp: np.ndarray, k: int | None) -> np.ndarray:
    """Ids of the ``k`` largest log-probs, best first (-1: all)."""
    if k is None or k == 0:
        return np.empty(0, dtype=np.int64)
    if k < 0 or k >= lp.shape[0]:
        return np.argsort(-lp, kind="stable")
    part = np.argpartition(-lp, k - 1)[:k]
    return part[np.argsort(-lp[part], kind="stable")]


def _complete(lm, body: CompletionRequest, plan: _CompletionPlan, inputs: list) -> CompletionResponse:
    need_all = plan.kind != "embeds" and (plan.echo or plan.prompt_top is not None)
    lps = lm.next_token_logprobs(inputs, all_positions=need_all)
    tok = (lambda i: f"token_id:{i}") if plan.as_ids else (lambda i: lm.decode([int(i)]))

    def val(x: float) -> float:
        return float(max(float(x), LOGPROB_FLOOR))

    choices, prompt_tokens = [], 0
    for c, (x, lp) in enumerate(zip(inputs, lps, strict=True)):
        ids = None if isinstance(x, np.ndarray) else [int(t) for t in x]
        length = len(x)
        prompt_tokens += length
        last = lp[-1] if need_all else lp
        gen = int(np.argmax(last)) if plan.max_tokens == 1 else None
        prompt_text = lm.decode(ids) if (ids is not None and plan.echo) else ""
        text = prompt_text + (lm.decode([gen]) if gen is not None else "")
        logprobs = None
        if plan.top is not None or plan.extra_ids:
            entries: list[tuple[int, float | None, dict | None]] = []
            if plan.echo and ids is not None:
                for t, token in enumerate(ids):
                    if t == 0:
                        entries.append((token, None, None))
                    else:
                        row = lp[t - 1]
                        top = {tok(j): val(row[j]) for j in _top(row, plan.top)}
                        top[tok(token)] = val(row[token])
                        entries.append((token, val(row[token]), top))
            if gen is not None:
                top = {tok(j): val(last[j]) for j in _top(last, plan.top)}
                top[tok(gen)] = val(last[gen])
                for j in plan.extra_ids:
                    top[tok(j)] = val(last[j])
                entries.append((gen, val(last[gen]), top))
            offsets, pos = [], 0
            for token, _, _ in entries:
                offsets.append(pos)
                pos += len(tok(token))
            logprobs = CompletionLogProbs(text_offset=offsets, token_logprobs=[e[1] for e in entries],
                                          tokens=[tok(e[0]) for e in entries], top_logprobs=[e[2] for e in entries])
        prompt_lps = None
        if plan.prompt_top is not None and ids is not None:
            prompt_lps = [None]
            for t in range(1, length):
                row, token = lp[t - 1], ids[t]
                entry = {}
                for j in _top(row, plan.prompt_top):
                    entry[str(int(j))] = PromptLogprob(logprob=val(row[j]), rank=int(np.sum(row > row[j])) + 1,
                                                       decoded_token=tok(j))
                entry[str(token)] = PromptLogprob(logprob=val(row[token]), rank=int(np.sum(row > row[token])) + 1,
                                                  decoded_token=tok(token))
                prompt_lps.append(entry)
        choices.append(CompletionChoice(index=c, text=text, logprobs=logprobs, finish_reason="length",
                                        prompt_logprobs=prompt_lps,
                                        prompt_token_ids=ids if (plan.echo or plan.prompt_top is not None) else None))
    completion_tokens = len(inputs) * plan.max_tokens
    return CompletionResponse(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=str(lm.name),
                              choices=choices, usage=CompletionUsage(prompt_tokens=prompt_tokens,
                                                                     completion_tokens=completion_tokens,
                                                                     total_tokens=prompt_tokens + completion_tokens))


def _tokenizer_files(tokenizer) -> TokenizerFiles:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: base64.b64encode(p.read_bytes()).decode("ascii") for p in sorted(Path(tmp).iterdir())
                 if p.is_file()}
    return TokenizerFiles(files=files)


# ---------------------------------------------------------------------------------------------- running
def _resolve(model, keys_db, dtype: str):
    from promptgym.lm import get_lm

    lm = get_lm(model, dtype) if isinstance(model, str) else model
    store = keys_db if isinstance(keys_db, KeyStore) else KeyStore(keys_db)
    return lm, store


class _RedactQuery(logging.Filter):
    """Drops the query string from access-log lines: a client that put a key in ``?api_key=`` (refused,
    the key goes in a header) must not find it stored in clear text in the operator's logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a.split("?", 1)[0] + "?[redacted]" if isinstance(a, str) and a.startswith("/")
                                and "?" in a else a for a in record.args)
        return True


def serve(model, keys_db, host: str = "127.0.0.1", port: int = 8000, dtype: str = "bfloat16",
          config: ServerConfig | None = None, log_level: str = "info") -> None:
    """Serve until SIGTERM or Ctrl-C (the ``promptgym serve`` command), then shut down gracefully.

    The model runs on the main thread, which loaded it, and HTTP on a second thread: with torch's
    OpenMP threads, a process in which two threads run the model was measured ~20% slower per
    call on 2 cores (benchmarks/RESULTS.md, "Serving"). uvicorn installs signal handlers only on the
    main thread, so this function installs them: without, SIGTERM killed the process mid-request
    (the client saw a protocol error for a call that stayed charged). The first SIGTERM or SIGINT
    stops accepting connections and lets every request in flight finish (at most
    ``request_timeout_s``, then it is cancelled and refunded); a second SIGINT quits at once. A
    SIGKILL cannot be caught: calls reserved at that moment stay charged (module docstring).
    """
    import signal

    import uvicorn

    lm, store = _resolve(model, keys_db, dtype)
    config = config or ServerConfig()
    app = create_app(lm, store, config, worker_thread=False)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=True,
                                           timeout_graceful_shutdown=config.request_timeout_s + 5))
    access = logging.getLogger("uvicorn.access")  # configured by uvicorn.Config above
    redact = _RedactQuery()
    access.addFilter(redact)

    def on_signal(signum: int, frame: Any) -> None:
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True

    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def run_http() -> None:
        try:
            server.run()
        finally:
            app.state.shutdown()  # ends the model loop below

    http = threading.Thread(target=run_http, name="promptgym-http", daemon=True)
    http.start()
    try:
        app.state.worker.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=30)
        store.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        access.removeFilter(redact)
    if not server.started:
        raise ConfigError(f"could not serve on {host}:{port} (is the port in use?)")


class ServerURL(str):
    """A running server's base URL; ``.app`` is its FastAPI app (tests read ``app.state``)."""

    app: FastAPI

    def __new__(cls, url: str, app: FastAPI) -> ServerURL:
        obj = super().__new__(cls, url)
        obj.app = app
        return obj


@contextlib.contextmanager
def serve_in_background(model, keys_db, host: str = "127.0.0.1", port: int = 0, dtype: str = "bfloat16",
                        log_level: str = "warning", **options) -> Iterator[ServerURL]:
    """Run a server in a thread on ``host:port`` (0: a free port) and yield its base URL (a
    :class:`ServerURL`); stops it on exit.

    ``model``: a preset / Hugging Face name (loaded with ``dtype``) or an LM object; ``keys_db``: a
    path or a :class:`KeyStore`; ``options``: :class:`ServerConfig` fields.
    """
    import uvicorn

    config = ServerConfig(**options)
    lm, store = _resolve(model, keys_db, dtype)
    app = create_app(lm, store, config)
    # uvicorn binds the port itself (0: a free one, read back once started); a socket bound here and
    # handed over answered every request ~40 ms late (measured: 46 ms vs 3.6 ms per GET /health)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           lifespan="off", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="promptgym-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield ServerURL(f"http://{host}:{bound}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        app.state.shutdown()
        if store is not keys_db:
            store.close()
