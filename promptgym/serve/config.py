"""The limits and behaviour of a promptgym server (``promptgym serve``), validated on construction.

A module of its own so that the command line reads the defaults without importing the server (torch,
FastAPI). The limits a client also assumes (requests per batch, rows per request, the timeout) are
defined beside the client's transport (:mod:`promptgym.lm.transport`), so no client imports the server.

The defaults fit the benchmark: a BBT population of 20 soft prompts on 32 rows is ~1 MB; the largest
test splits but two (Yelp, DBPedia) fit ``max_rows`` in one request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from promptgym.errors import ConfigError
from promptgym.lm.transport import DEFAULT_MAX_REQUESTS, DEFAULT_MAX_ROWS, DEFAULT_REQUEST_TIMEOUT_S


@dataclass
class ServerConfig:
    """Limits and behaviour of a server; validated on construction (ConfigError names the field)."""

    max_body_bytes: int = 32 * 1024 * 1024  # a larger request body answers 413 before it is parsed
    max_requests: int = DEFAULT_MAX_REQUESTS  # most requests (API calls) in one /v1/score batch
    max_rows: int = DEFAULT_MAX_ROWS  # most examples per score request; most prompts per /v1/completions
    max_prompt_length: int = 512  # most prompt tokens / soft vectors per score request
    max_array_elements: int = 1 << 22  # most elements of one array (soft prompt, prompt_embeds, ids)
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S  # a request not answered by then gets 503 and is not charged
    rate_limit: float | None = None  # requests per second per key (a burst of max(1, rate) allowed); None: off
    # /v1/embeddings is free of charge, so it gets a rate limit of its own (per key; None: off). An env
    # asks it once when it is built; a client over the limit is told Retry-After and retries.
    embeddings_rate_limit: float | None = 5.0
    batching: bool = True  # score identical concurrent /v1/score jobs once (never changes a score)
    batch_window_ms: float = 0.0  # with batching, wait this long for more jobs before scoring
    max_logprob_entries: int = 1 << 21  # most (token, log-prob) pairs one /v1/completions answer may list

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_requests", "max_rows", "max_prompt_length", "max_array_elements",
                     "max_logprob_entries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServerConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("request_timeout_s", "batch_window_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"ServerConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"ServerConfig.request_timeout_s must be > 0, got {self.request_timeout_s!r}")
        for name in ("rate_limit", "embeddings_rate_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value) or value <= 0):
                raise ConfigError(f"ServerConfig.{name} must be a number > 0 or None, got {value!r}")
        if not isinstance(self.batching, bool):
            raise ConfigError(f"ServerConfig.batching must be true or false, got {self.batching!r}")


def server_defaults() -> dict[str, object]:
    """Every field's default (the command line shows them)."""
    return {f.name: f.default for f in fields(ServerConfig)}
