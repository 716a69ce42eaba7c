"""The HTTP transport of the remote LM clients: base URL, API key, retries, and errors as our own.

Both clients (:mod:`promptgym.lm.remote`, our protocol; :mod:`promptgym.lm.openai_compat`, vLLM-like
engines) talk through one :class:`Transport`, so they retry and fail the same way:

* **Retried** with exponential backoff: a connection that could not be opened, 503 (busy or timed
  out), and a 429 that is a *rate* limit (its ``Retry-After`` header is honoured). A request that was
  sent but got no answer is retried only if it is a GET: a POST may have been charged already.
* **Never retried**: a 429 whose type says the *quota* is spent (our ``quota_exceeded``, OpenAI's
  ``insufficient_quota``) raises :class:`~promptgym.errors.BudgetExhausted` with the server's message,
  which is what an env raises when its own budget is spent; 401 raises
  :class:`~promptgym.errors.AuthenticationError`; any other 4xx raises
  :class:`~promptgym.errors.InvalidRequestError` with the server's one-line message; a 5xx other than
  503, or retries run out, raise :class:`~promptgym.errors.ServiceError`.

A server's message is quoted on one line and clipped to :data:`MAX_QUOTE` characters (:func:`clip`):
llama.cpp's server answers a prompt it cannot parse with a 500 quoting the whole request in a pydantic
validation error (~20 KB for a batch of token ids), which no error message should carry.

The key comes from the ``api_key`` argument or ``$PROMPTGYM_API_KEY``, travels as
``Authorization: Bearer <key>`` and is never part of a message or a URL.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from promptgym.errors import (
    AuthenticationError,
    BudgetExhausted,
    ConfigError,
    InvalidRequestError,
    RequestTooLargeError,
    ServiceError,
)

API_KEY_ENV = "PROMPTGYM_API_KEY"
#: error types of a 429 that mean "quota spent" (ours, OpenAI's): retrying cannot help
QUOTA_TYPES = ("quota_exceeded", "insufficient_quota")
#: longest wait honoured from a Retry-After header, in seconds
MAX_RETRY_AFTER = 60.0
#: most characters of a server's error body quoted in one of our error messages
MAX_QUOTE = 300
#: a promptgym server's default limits (:class:`promptgym.serve.config.ServerConfig` takes them), which
#: a client assumes unless told otherwise: requests in one ``/v1/score`` batch, rows in one request, and
#: the seconds after which an unanswered request gets 503 (uncharged). Here, not in the server's config,
#: so that no client imports the server, and the command line reads them without importing pydantic.
DEFAULT_MAX_REQUESTS = 256
DEFAULT_MAX_ROWS = 16384
DEFAULT_REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries before giving up on a busy or unreachable server."""

    attempts: int = 6          # tries per request, the first included
    backoff: float = 0.25      # seconds before the first retry; doubles after each retry
    max_backoff: float = 8.0   # longest wait between two tries (a Retry-After header may ask for more)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be a whole number >= 1, got {self.attempts!r}")
        if not 0 <= self.backoff <= self.max_backoff:
            raise ConfigError(f"RetryPolicy needs 0 <= backoff <= max_backoff, got {self.backoff}, {self.max_backoff}")

    def wait(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return min(self.max_backoff, self.backoff * 2 ** retry)


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL of a server; else a ConfigError.

    A key in the URL (``http://user:key@host``) is refused: URLs end up in run records and logs.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a server URL must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"a server URL looks like http://127.0.0.1:8000, got {url!r}")
    if parts.username or parts.password:
        raise ConfigError("do not put credentials in the server URL; pass api_key=... or set $PROMPTGYM_API_KEY")
    if parts.query or parts.fragment:
        raise ConfigError(f"a server URL has no query or fragment, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(f"bad port in server URL {url!r}: {exc}") from None
    return url.rstrip("/")


def resolve_api_key(api_key: str | None, required: bool = True) -> str | None:
    """The key to send: ``api_key``, else ``$PROMPTGYM_API_KEY``; a ConfigError if required and missing."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    if key is not None and (not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key)):
        raise ConfigError("api_key must be a non-empty string without spaces")
    if key is None and required:
        raise ConfigError(f"this server needs an API key: pass api_key=... or set ${API_KEY_ENV} "
                          "(`promptgym keys add NAME` creates one on the server's machine)")
    return key


def clip(text: Any, limit: int = MAX_QUOTE) -> str:
    """``text`` on one line, at most ``limit`` characters: what a message may quote of a server's answer
    (bodies come in any size; the cut says how long the whole was, so nobody mistakes it for all of it)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    tail = f" ... [{len(line):,} characters]"
    return line[:max(limit - len(tail), 0)].rstrip() + tail


def _validation_summary(detail: list) -> str:
    """FastAPI's 422 ``detail`` list as its first error's place and reason (each entry quotes the input)."""
    first = detail[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(detail) - 1} more validation errors)" if len(detail) > 1 else ""
    return f"{where}: {first.get('msg', '')}{more}"


def error_of(response: httpx.Response) -> tuple[str, str]:
    """``(type, message)`` of an error response: ours, vLLM's/OpenAI's or FastAPI's shape, as one clipped line."""
    etype, message = "", ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), list) and body["detail"] \
            and all(isinstance(d, dict) for d in body["detail"]):
        return "", clip(_validation_summary(body["detail"]))
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            etype = str(err.get("type") or err.get("code") or "")
            message = str(err.get("message") or err.get("detail") or "")
        elif isinstance(err, str):
            message = err
        if not message and "detail" in body:
            message = str(body["detail"])
    if not message:  # llama.cpp's server answers a failed assertion with type "internal_server_error", message ""
        message = f"{etype} without a message" if etype else (response.text or response.reason_phrase)
    return clip(etype, 80), clip(message)


class Transport:
    """JSON over HTTP to one server, with the key, the retries and the error mapping above.

    :param base_url: the server, e.g. ``http://127.0.0.1:8000`` (checked before any connection)
    :param api_key: the key (see :func:`resolve_api_key`); None sends no Authorization header
    :param timeout: seconds to wait for an answer (scoring a large batch on a CPU server is slow)
    :param retry: the :class:`RetryPolicy`
    """

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 600.0,
                 retry: RetryPolicy | None = None) -> None:
        self.base_url = check_base_url(base_url)
        self.retry = retry or RetryPolicy()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=10.0))
        self.requests = 0  # HTTP requests answered with a success
        self.retries = 0   # tries repeated after a busy answer or a failed connection

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> Any:
        return self.request("POST", path, body)

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        """The decoded JSON answer of ``method path``, retried and mapped to our errors."""
        last = ""
        for attempt in range(self.retry.attempts):
            if attempt:
                self.retries += 1
            try:
                response = self._client.request(method, path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last = f"cannot connect to {self.base_url} ({type(exc).__name__})"
                self._sleep(attempt, None)
                continue
            except httpx.TransportError as exc:
                if method != "GET":
                    raise ServiceError(f"{method} {path} to {self.base_url} got no answer ({type(exc).__name__}); "
                                       "it may have been charged: check the key's usage") from None
                last = f"no answer from {self.base_url} ({type(exc).__name__})"
                self._sleep(attempt, None)
                continue
            if response.is_success:
                self.requests += 1
                try:
                    return response.json()
                except ValueError:
                    raise ServiceError(f"{method} {path}: the server's answer is not JSON") from None
            etype, message = error_of(response)
            status = response.status_code
            if status == 429 and etype in QUOTA_TYPES:
                raise BudgetExhausted(f"the server refused the call: {message}")
            if status == 429 or status == 503:
                last = f"server busy ({status}: {message})"
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            if status == 401:
                raise AuthenticationError(f"{self.base_url} refused the API key: {message}")
            if 400 <= status < 500:
                cls = RequestTooLargeError if status == 413 else InvalidRequestError
                error = cls(f"{method} {path} refused ({status}): {message}")
                error.status = status  # callers may tell a 404 (no such endpoint) from bad input
                raise error
            raise ServiceError(f"{method} {path} failed on the server ({status}): {message}")
        raise ServiceError(f"{last}; gave up after {self.retry.attempts} tries")

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        if attempt + 1 >= self.retry.attempts:
            return
        wait = self.retry.wait(attempt)
        if retry_after:
            with suppress(ValueError):  # an HTTP date is not honoured: keep the backoff
                wait = min(MAX_RETRY_AFTER, max(wait, float(retry_after)))
        time.sleep(wait)

    def close(self) -> None:
        self._client.close()
