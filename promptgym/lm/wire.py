"""What travels over HTTP between a promptgym client and server: pydantic models and an exact array codec.

One module for both sides, so the server validates and the client builds the very same shapes.

* **Native protocol** (``/v1/score`` and friends): our own client speaks it, so every model forbids
  unknown fields and every scalar is strict (``"3"`` is not an int, ``1`` is not a bool). A score
  request carries exactly what :meth:`promptgym.lm.base.BlackBoxLM.score` takes.
* **Arrays** travel as ``{"dtype", "shape", "data"}`` with ``data`` the base64 of the C-order
  little-endian bytes: exact (JSON floats would round-trip through decimal text), compact, and NaN/inf
  can be checked before anything is scored (:func:`decode_array`).
* **OpenAI-compatible subset** (``/v1/completions``, vLLM's dialect): clients written for vLLM send
  sampling fields we do not use, so unknown fields are tolerated (as vLLM does), but every field
  vLLM defines is declared with its type, so a known field of the wrong type is a 4xx, not ignored.
  ``logprob_token_ids`` is our extension (exact log-probs of chosen ids at the first generated
  position): vLLM answers such a request only through ``logprobs=-1``/prompt log-probs.
* **Errors** are ``{"error": {"type", "message"}}``; ``type`` is one of :data:`ERROR_TYPES`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from promptgym.errors import InvalidRequestError
from promptgym.lm.base import ScoreRequest, ScoreResult, SoftPrompt, TokenPrompt

#: error ``type`` -> the HTTP status it travels with ("invalid_request" may also be 422)
ERROR_TYPES: dict[str, int] = {
    "invalid_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "too_large": 413,
    "quota_exceeded": 429,  # the key's call quota is spent: never retry
    "rate_limited": 429,  # too many requests per second: retry after the Retry-After header
    "internal": 500,
    "unavailable": 503,  # busy or timed out: retry
}
#: dtypes an :class:`Array` may carry (little-endian on the wire)
ARRAY_DTYPES = ("float32", "float64", "int64")
MAX_ARRAY_DIMS = 4


class _Strict(BaseModel):
    """Our own client's messages: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- arrays
class Array(_Strict):
    """A numpy array, exactly: dtype, shape, base64 of the C-order little-endian bytes."""

    dtype: Literal["float32", "float64", "int64"]
    shape: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(max_length=MAX_ARRAY_DIMS)]
    data: StrictStr


def encode_array(a: np.ndarray) -> Array:
    """``a`` as an :class:`Array` (floats other than float64 become float32, ints int64)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        dtype = "float64" if a.dtype == np.float64 else "float32"
    elif a.dtype.kind in "iub":
        dtype = "int64"
    else:
        raise InvalidRequestError(f"cannot encode an array of dtype {a.dtype}")
    if a.ndim > MAX_ARRAY_DIMS:
        raise InvalidRequestError(f"arrays have at most {MAX_ARRAY_DIMS} dimensions, got {a.ndim}")
    raw = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return Array(dtype=dtype, shape=list(a.shape), data=base64.b64encode(raw).decode("ascii"))


def decode_array(arr: Array, max_elements: int) -> np.ndarray:
    """The numpy array of ``arr`` (native byte order), checked: size, byte count, finite floats."""
    n = 1
    for s in arr.shape:
        n *= int(s)
    if n > max_elements:
        raise InvalidRequestError(f"array of shape {tuple(arr.shape)} has {n} elements, more than the {max_elements} "
                                  "allowed")
    dt = np.dtype(arr.dtype).newbyteorder("<")
    if len(arr.data) > 4 * ((n * dt.itemsize + 2) // 3) + 4:
        raise InvalidRequestError(f"array data is longer than shape {tuple(arr.shape)} needs")
    try:
        raw = base64.b64decode(arr.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("array data is not valid base64") from None
    if len(raw) != n * dt.itemsize:
        raise InvalidRequestError(f"array data has {len(raw)} bytes, shape {tuple(arr.shape)} of {arr.dtype} needs "
                                  f"{n * dt.itemsize}")
    out = np.frombuffer(raw, dtype=dt).astype(np.dtype(arr.dtype), copy=True).reshape(arr.shape)
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        raise InvalidRequestError("array contains NaN or inf values")
    return out


# ---------------------------------------------------------------------------------------------- native protocol
TokenId = Annotated[StrictInt, Field(ge=0)]


class TokenPromptIn(_Strict):
    kind: Literal["tokens"]
    ids: list[TokenId]


class SoftPromptIn(_Strict):
    kind: Literal["soft"]
    embeds: Array  # shape (length, embedding_dim)


PromptIn = Annotated[TokenPromptIn | SoftPromptIn, Field(discriminator="kind")]


class ScoreRequestIn(_Strict):
    """One :class:`~promptgym.lm.base.ScoreRequest`: one API call."""

    prompt: PromptIn
    segments: list[Annotated[list[StrictStr], Field(min_length=2, max_length=2)]]
    label_words: list[StrictStr]
    label_only: StrictBool = False


class ScoreBatch(_Strict):
    """Body of ``POST /v1/score``: requests scored in one batched computation, each charged one call."""

    requests: list[ScoreRequestIn]


class ScoreResultOut(_Strict):
    predictions: list[StrictInt]
    logprobs: Array | None = None  # (rows, labels), normalised over the vocabulary; None if label_only
    label_logprobs: Array | None = None  # the same renormalised over the label words
    num_tokens: StrictInt = 0


class Usage(_Strict):
    """A key's usage: ``remaining`` is None for a key without a quota."""

    key: StrictStr
    calls: StrictInt
    quota: StrictInt | None = None
    remaining: StrictInt | None = None


class ScoreResponse(_Strict):
    results: list[ScoreResultOut]
    calls: StrictInt
    usage: Usage


class ModelInfo(_Strict):
    name: StrictStr
    weights_sha256: StrictStr
    vocab_size: StrictInt
    embedding_dim: StrictInt
    embedding_mean: StrictFloat
    embedding_std: StrictFloat
    is_masked: StrictBool
    mask_token: StrictStr | None = None
    dtype: StrictStr  # "bfloat16" / "float32": the precision the server scores in


class TokenizerFiles(_Strict):
    """The tokenizer's ``save_pretrained`` files, base64 by file name."""

    files: dict[StrictStr, StrictStr]


class EmbeddingsRequest(_Strict):
    ids: list[TokenId]


class EmbeddingsResponse(_Strict):
    embeddings: Array  # (len(ids), embedding_dim), float32


class ReceiptBody(_Strict):
    """What a usage receipt states (see :mod:`promptgym.lm.receipts`); signed as canonical JSON."""

    format: StrictStr
    signer: StrictStr  # sha256 of the server's raw Ed25519 public key
    key: StrictStr  # the key's name, never the key
    key_id: StrictStr
    model: StrictStr
    model_sha256: StrictStr
    dtype: StrictStr
    calls: StrictInt
    examples: StrictInt
    first_call: StrictStr
    last_call: StrictStr
    head: StrictStr
    issued: StrictStr


class ReceiptLog(_Strict):
    """The key's chain after its first ``from`` calls: the head there, then [prompt, rows, response, examples]."""

    from_: StrictInt = Field(alias="from")
    head: StrictStr
    entries: list[tuple[StrictStr, StrictStr, StrictStr, StrictInt]]


class Receipt(_Strict):
    """``GET /v1/receipt``: the signed receipt of the key's chain (and its log, when asked ``?from=N``)."""

    receipt: ReceiptBody
    signature: StrictStr  # base64 Ed25519 signature of the receipt's canonical JSON
    log: ReceiptLog | None = None


class ReceiptKey(_Strict):
    """``GET /v1/receipt/public-key``: the key receipts are signed with."""

    signer: StrictStr
    public_key: StrictStr  # PEM


class Health(_Strict):
    status: Literal["ok"] = "ok"
    model: StrictStr


class ErrorDetail(_Strict):
    type: StrictStr
    message: StrictStr


class ErrorBody(_Strict):
    error: ErrorDetail


def error_body(type_: str, message: str) -> dict[str, Any]:
    """The JSON error body; ``type_`` must be one of :data:`ERROR_TYPES`."""
    if type_ not in ERROR_TYPES:
        raise ValueError(f"unknown error type {type_!r}")
    return {"error": {"type": type_, "message": message}}


# ---------------------------------------------------------------------------------------------- conversions
def request_to_wire(req: ScoreRequest) -> ScoreRequestIn:
    """A :class:`ScoreRequest` as its wire model (client side)."""
    if isinstance(req.prompt, SoftPrompt):
        prompt: TokenPromptIn | SoftPromptIn = SoftPromptIn(kind="soft", embeds=encode_array(req.prompt.embeds))
    elif isinstance(req.prompt, TokenPrompt):
        prompt = TokenPromptIn(kind="tokens", ids=[int(i) for i in req.prompt.ids])
    else:
        raise InvalidRequestError(f"prompt must be a TokenPrompt or SoftPrompt, got {type(req.prompt).__name__}")
    return ScoreRequestIn(prompt=prompt, segments=[[str(a), str(b)] for a, b in req.segments],
                          label_words=[str(w) for w in req.label_words], label_only=bool(req.label_only))


def request_from_wire(req: ScoreRequestIn, max_elements: int) -> ScoreRequest:
    """The :class:`ScoreRequest` a wire request carries (server side; arrays checked by :func:`decode_array`)."""
    if isinstance(req.prompt, SoftPromptIn):
        embeds = decode_array(req.prompt.embeds, max_elements)
        if embeds.ndim != 2:
            raise InvalidRequestError(f"a soft prompt has shape (length, embedding_dim), got {tuple(embeds.shape)}")
        prompt: TokenPrompt | SoftPrompt = SoftPrompt(embeds.astype(np.float32, copy=False))
    else:
        prompt = TokenPrompt(tuple(req.prompt.ids))
    return ScoreRequest(prompt=prompt, segments=tuple((a, b) for a, b in req.segments),
                        label_words=tuple(req.label_words), label_only=req.label_only)


def result_to_wire(res: ScoreResult) -> ScoreResultOut:
    """A :class:`ScoreResult` as its wire model (server side); float32 scores travel bit-exactly."""
    return ScoreResultOut(predictions=[int(p) for p in np.asarray(res.predictions).ravel()],
                          logprobs=None if res.logprobs is None else encode_array(res.logprobs),
                          label_logprobs=None if res.label_logprobs is None else encode_array(res.label_logprobs),
                          num_tokens=int(res.num_tokens))


def result_from_wire(res: ScoreResultOut, max_elements: int = 1 << 31) -> ScoreResult:
    """The :class:`ScoreResult` of a wire result (client side)."""
    return ScoreResult(predictions=np.asarray(res.predictions, dtype=np.int64),
                       logprobs=None if res.logprobs is None else decode_array(res.logprobs, max_elements),
                       label_logprobs=None if res.label_logprobs is None else decode_array(res.label_logprobs,
                                                                                          max_elements),
                       num_tokens=res.num_tokens)


# ---------------------------------------------------------------------------------------------- OpenAI subset
class _Tolerant(BaseModel):
    """vLLM-dialect messages: unknown fields are kept and ignored, declared ones are typed."""

    model_config = ConfigDict(extra="allow")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=False)]
TokenIds = list[StrictInt]


class CompletionRequest(_Tolerant):
    """``POST /v1/completions``, scoring only (``max_tokens`` 0 or 1, no sampling).

    ``prompt``: a string, strings, token ids, or lists of token ids; each prompt is one API call.
    ``prompt_embeds``: base64 of a ``torch.save``d float tensor (L, d) (or a list of them), as vLLM
    takes it with ``--enable-prompt-embeds``. ``logprobs``: top-k at each returned position (-1: the
    whole vocabulary). ``prompt_logprobs``: per prompt token, the actual token's log-prob plus the
    top-k (-1: whole vocabulary). ``logprob_token_ids`` (our extension): exact log-probs of these ids at
    the first generated position, returned in ``top_logprobs`` next to the top-k.
    """

    model: StrictStr | None = None
    prompt: StrictStr | list[StrictStr] | TokenIds | list[TokenIds] | None = None
    prompt_embeds: StrictStr | list[StrictStr] | None = None
    max_tokens: StrictInt | None = 16
    temperature: FiniteFloat | None = None
    logprobs: StrictInt | None = None
    logprob_token_ids: TokenIds | None = None
    echo: StrictBool = False
    prompt_logprobs: StrictInt | None = None
    return_tokens_as_token_ids: StrictBool | None = None
    # vLLM sampling fields: typed (a wrong type is an error) but without effect on scoring
    n: StrictInt = 1
    best_of: StrictInt | None = None
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    top_p: FiniteFloat | None = None
    top_k: StrictInt | None = None
    min_p: FiniteFloat | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stop_token_ids: TokenIds | None = None
    presence_penalty: FiniteFloat | None = None
    frequency_penalty: FiniteFloat | None = None
    repetition_penalty: FiniteFloat | None = None
    length_penalty: FiniteFloat | None = None
    logit_bias: dict[StrictStr, FiniteFloat] | None = None
    user: StrictStr | None = None
    suffix: StrictStr | None = None
    min_tokens: StrictInt | None = None
    ignore_eos: StrictBool | None = None
    skip_special_tokens: StrictBool | None = None
    spaces_between_special_tokens: StrictBool | None = None
    add_special_tokens: StrictBool | None = None
    truncate_prompt_tokens: StrictInt | None = None
    allowed_token_ids: TokenIds | None = None
    include_stop_str_in_output: StrictBool | None = None
    response_format: dict[str, Any] | None = None
    priority: StrictInt | None = None
    request_id: StrictStr | None = None


class CompletionLogProbs(_Strict):
    """OpenAI's legacy ``logprobs`` object of a choice (one entry per returned token)."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class PromptLogprob(_Strict):
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class CompletionChoice(_Strict):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = "length"
    stop_reason: int | str | None = None
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None
    prompt_token_ids: list[int] | None = None  # vLLM returns them when echo/prompt_logprobs ask for them


class CompletionUsage(_Strict):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class CompletionResponse(_Strict):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage
