"""A model served by ``promptgym serve``, behind the same :class:`~promptgym.lm.base.BlackBoxLM` contract.

What a user of a hosted LM has, and nothing more: the model's description, its published tokenizer
(clients tokenise locally), the embeddings of chosen token ids, and scoring. Scoring sends exactly
what :meth:`BlackBoxLM.score` takes (:mod:`promptgym.lm.wire`), so a remote env computes what a local
one does, soft prompts included; one request is one API call charged to the key, **by the server**,
which is the authority on the quota: :meth:`RemoteLM.remaining_calls` lets an env cap its budget at
what the key has left, and a call past the quota raises
:class:`~promptgym.errors.BudgetExhausted` with the server's message (never retried).

The tokenizer's files are fetched once and kept under the promptgym cache folder
(``$PROMPTGYM_CACHE/tokenizers/<weights sha256>``), so a second client starts without downloading.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from promptgym.errors import ConfigError, InvalidRequestError, RequestTooLargeError, ServiceError
from promptgym.lm.base import BlackBoxLM, ScoreRequest, ScoreResult
from promptgym.lm.layout import check_prompt
from promptgym.lm.presets import cache_root
from promptgym.lm.tokenizer import TokenizerMixin
from promptgym.lm.transport import (
    DEFAULT_MAX_REQUESTS,
    DEFAULT_MAX_ROWS,
    DEFAULT_REQUEST_TIMEOUT_S,
    RetryPolicy,
    Transport,
    resolve_api_key,
)
from promptgym.lm.wire import (
    EmbeddingsResponse,
    ModelInfo,
    Receipt,
    ScoreBatch,
    ScoreResponse,
    TokenizerFiles,
    Usage,
    decode_array,
    request_to_wire,
    result_from_wire,
)

_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SAFE_DIGEST = re.compile(r"^[0-9a-fA-F]{16,128}$")


def load_served_tokenizer(transport: Transport, weights_sha256: str):
    """The server's tokenizer, from the local cache or fetched once from ``GET /v1/tokenizer``.

    File names come from the server and are checked (no paths); the folder is written atomically
    and marked complete, so a half-written cache is never loaded.
    """
    from transformers import AutoTokenizer

    if not _SAFE_DIGEST.match(weights_sha256):
        raise ServiceError(f"the server's weights_sha256 is not a hex digest: {weights_sha256[:80]!r}")
    folder = cache_root() / "tokenizers" / weights_sha256.lower()
    if not (folder / "COMPLETE").is_file():
        files = TokenizerFiles.model_validate(transport.get("/v1/tokenizer")).files
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, data in files.items():
            if not _SAFE_FILE.match(name) or name == "COMPLETE":
                shutil.rmtree(tmp, ignore_errors=True)
                raise ServiceError(f"the server sent a tokenizer file with an unsafe name: {name[:80]!r}")
            (tmp / name).write_bytes(base64.b64decode(data))
        (tmp / "COMPLETE").write_text("ok\n")
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(Path(folder))


def _concat(parts: list[ScoreResult]) -> ScoreResult:
    """One result from the results of consecutive slices of a request's examples."""
    def stack(name: str):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values, axis=0)

    return ScoreResult(predictions=np.concatenate([p.predictions for p in parts]), logprobs=stack("logprobs"),
                       label_logprobs=stack("label_logprobs"), num_tokens=sum(p.num_tokens for p in parts))


class RemoteLM(TokenizerMixin, BlackBoxLM):
    """A :class:`~promptgym.lm.base.BlackBoxLM` whose model runs behind ``promptgym serve``.

    :param url: the server, e.g. ``http://127.0.0.1:8000``
    :param api_key: the key (default ``$PROMPTGYM_API_KEY``; required)
    :param timeout: seconds to wait for one HTTP answer (longer than the server's own request timeout,
        so that a slow call gets the server's 503, which is uncharged and retried)
    :param retry: retries on connection errors, 503 and rate limits (:class:`RetryPolicy`)
    :param max_requests: most requests sent in one POST (default: the server's default limit); a larger
        ``score()`` call is split, and a POST the server finds too large (413) is split in halves and
        resent (nothing was charged)
    :param max_rows: most examples in one request (default: the server's default ``max_rows``); a
        request with more (a large test split) is sent as several, each charged one call

    ``batch_calls`` counts ``score()`` invocations, as in-process; ``usage`` is the key's usage as of the
    last answer (calls, quota, remaining), straight from the server.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = DEFAULT_REQUEST_TIMEOUT_S + 60,
                 retry: RetryPolicy | None = None, max_requests: int = DEFAULT_MAX_REQUESTS,
                 max_rows: int = DEFAULT_MAX_ROWS) -> None:
        key = resolve_api_key(api_key, required=True)
        for field, value in (("max_requests", max_requests), ("max_rows", max_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field} must be a whole number >= 1, got {value!r}")
        self.url = url
        self.transport = Transport(url, key, timeout=timeout, retry=retry)
        try:
            self.info = ModelInfo.model_validate(self.transport.get("/v1/model"))
        except (InvalidRequestError, ValidationError) as exc:
            if isinstance(exc, InvalidRequestError) and getattr(exc, "status", None) != 404:
                raise
            raise ConfigError(f"{url} does not describe its model as `promptgym serve` does; for vLLM or another "
                              f"OpenAI-compatible server use model='openai+{url}'") from None
        self.name = self.info.name
        self.weights_sha256 = self.info.weights_sha256
        self.vocab_size = self.info.vocab_size
        self.embedding_dim = self.info.embedding_dim
        self.is_masked = self.info.is_masked
        self.mask_token = self.info.mask_token
        self.dtype = self.info.dtype
        self.use_tokenizer(load_served_tokenizer(self.transport, self.weights_sha256))
        self.max_requests, self.max_rows = max_requests, max_rows
        self.batch_calls = 0
        self.usage: Usage | None = None

    # ------------------------------------------------------------------ what an API exposes
    def embedding_stats(self) -> tuple[float, float]:
        return self.info.embedding_mean, self.info.embedding_std

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        answer = EmbeddingsResponse.model_validate(self.transport.post("/v1/embeddings", {"ids": ids}))
        emb = decode_array(answer.embeddings, max(1, len(ids)) * self.embedding_dim)
        if emb.shape != (len(ids), self.embedding_dim):
            raise ServiceError(f"the server sent embeddings of shape {emb.shape} for {len(ids)} ids")
        return emb.astype(np.float32, copy=False)

    def remaining_calls(self) -> int | None:
        """Calls the key has left on the server (None: no quota); asks the server."""
        self.usage = Usage.model_validate(self.transport.get("/v1/usage"))
        return self.usage.remaining

    def receipt(self, after: int | None = None) -> Receipt:
        """The key's signed usage receipt (:mod:`promptgym.serve.receipts`), free of charge; with ``after``,
        also the chain's calls after its first ``after`` ones."""
        return Receipt.model_validate(self.transport.get("/v1/receipt" + ("" if after is None else f"?from={after}")))

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score ``requests`` on the server: one POST (or a few, see ``max_requests``), one call each."""
        if not requests:
            raise InvalidRequestError("score() needs at least one request")
        for req in requests:  # refuse locally what the server would refuse: a clear message, no round trip
            if not req.segments:
                raise InvalidRequestError("a request needs at least one example")
            check_prompt(req.prompt, self.vocab_size, self.embedding_dim)
            self.label_token_ids(req.label_words)
        # a request with more examples than the server takes in one request goes as several (each a call)
        parts, owners = [], []
        for req in requests:
            segs = tuple(req.segments)
            owners.append(range(len(parts), len(parts) + -(-len(segs) // self.max_rows)))
            parts.extend(ScoreRequest(req.prompt, segs[i:i + self.max_rows], req.label_words, req.label_only)
                         for i in range(0, len(segs), self.max_rows))
        wire = [request_to_wire(r) for r in parts]
        answers: list[ScoreResult] = []
        for start in range(0, len(wire), self.max_requests):
            answers.extend(self._post_scores(wire[start:start + self.max_requests]))
        self.batch_calls += 1
        return [answers[own[0]] if len(own) == 1 else _concat([answers[i] for i in own]) for own in owners]

    def _post_scores(self, wire: list) -> list[ScoreResult]:
        try:
            answer = self.transport.post("/v1/score", ScoreBatch(requests=wire).model_dump(mode="json"))
        except RequestTooLargeError:
            if len(wire) == 1:
                raise
            half = len(wire) // 2  # too large for the server's limits: nothing was charged, send halves
            self.max_requests = max(1, half)
            return self._post_scores(wire[:half]) + self._post_scores(wire[half:])
        response = ScoreResponse.model_validate(answer)
        if len(response.results) != len(wire):
            raise ServiceError(f"the server answered {len(response.results)} results for {len(wire)} requests")
        self.usage = response.usage
        return [result_from_wire(r) for r in response.results]

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"RemoteLM({self.url!r}, model={self.name!r})"
