"""What a request must pass before any model work; nothing refused here is ever charged.

Limits (:class:`~promptgym.serve.config.ServerConfig`) answer 413 ``too_large`` before any model
work: body bytes (checked on ``Content-Length`` and while the body streams in), requests per batch,
rows per request, prompt length, array elements, log-probs listed per completions answer
(:mod:`promptgym.serve.completions`). Text that is not valid Unicode (a lone UTF-16 surrogate, which
JSON can carry) and token ids outside the vocabulary answer 400 naming the field; a key over its rate
limit gets 429 ``rate_limited`` with ``Retry-After``. :class:`ApiError` is how a check answers.
"""

from __future__ import annotations

import threading
import time

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptgym.errors import InvalidRequestError
from promptgym.lm.wire import ModelInfo, ScoreBatch, SoftPromptIn, error_body, request_from_wire
from promptgym.serve.config import ServerConfig


class ApiError(Exception):
    """An error answered as ``{"error": {"type", "message"}}`` with ``status``."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


# ---------------------------------------------------------------------------------------------- rates
class RateLimiter:
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


# ---------------------------------------------------------------------------------------------- body size
class BodyLimit:
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


# ---------------------------------------------------------------------------------------------- request checks
def check_ids(ids: list[int], vocab: int, what: str) -> None:
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise bad_request(f"{what}: token ids {bad[:5]} are outside the vocabulary [0, {vocab})")


def check_text(text: str, where: str) -> None:
    """400 for text that is not valid Unicode: JSON's ``\\ud800`` escapes decode to a lone surrogate, which
    no tokenizer can encode (it failed inside the tokenizer, as a 500)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise bad_request(f"{where} holds a lone UTF-16 surrogate at character {e.start} (not valid Unicode "
                          "text)") from None


def check_score(body: ScoreBatch, config: ServerConfig, info: ModelInfo) -> list:
    """The :class:`ScoreRequest` list of a batch, every server limit and model bound checked (nothing charged)."""
    n = len(body.requests)
    if n == 0:
        raise bad_request("requests must hold at least one request")
    if n > config.max_requests:
        raise too_large(f"{n} requests in one batch, the server allows {config.max_requests}")
    out = []
    for i, req in enumerate(body.requests):
        where = f"requests[{i}]"
        if not req.segments:
            raise bad_request(f"{where}.segments must hold at least one example")
        if len(req.segments) > config.max_rows:
            raise too_large(f"{where} has {len(req.segments)} rows, the server allows {config.max_rows}")
        if not req.label_words:
            raise bad_request(f"{where}.label_words must hold at least one word")
        for j, segment in enumerate(req.segments):
            for k, text in enumerate(segment):
                check_text(text, f"{where}.segments[{j}][{k}]")
        for j, word in enumerate(req.label_words):
            check_text(word, f"{where}.label_words[{j}]")
        if isinstance(req.prompt, SoftPromptIn):
            shape = req.prompt.embeds.shape
            if len(shape) != 2 or shape[1] != info.embedding_dim:
                raise bad_request(f"{where}.prompt.embeds must have shape (length, {info.embedding_dim}), "
                                  f"got {tuple(shape)}")
            length = shape[0]
            if shape[0] * shape[1] > config.max_array_elements:
                raise too_large(f"{where}.prompt.embeds has {shape[0] * shape[1]} elements, the server allows "
                                f"{config.max_array_elements}")
        else:
            length = len(req.prompt.ids)
            check_ids(req.prompt.ids, info.vocab_size, f"{where}.prompt.ids")
        if length > config.max_prompt_length:
            raise too_large(f"{where}.prompt has {length} positions, the server allows {config.max_prompt_length}")
        try:
            out.append(request_from_wire(req, config.max_array_elements))
        except InvalidRequestError as e:
            raise bad_request(f"{where}.prompt.embeds: {e}") from None
    return out
