"""``POST /v1/completions``: the OpenAI-compatible subset, vLLM's dialect, **scoring only**.

``max_tokens`` is 0 or 1; the one generated token is the argmax whatever the sampling fields say.
Each prompt is one API call. Follows vLLM's shapes: ``choices[i].logprobs`` with
``tokens``/``token_logprobs``/``top_logprobs``/``text_offset`` (prompt tokens first with ``echo``, the
first one ``None``); ``choices[i].prompt_logprobs`` = ``[None, {"<id>": {"logprob", "rank",
"decoded_token"}}, ...]`` (the actual token plus the top-k); ``return_tokens_as_token_ids`` spells
tokens ``token_id:<id>``; ``logprobs=-1`` / ``prompt_logprobs=-1`` mean the whole vocabulary (vLLM
needs ``--max-logprobs -1`` for that); ``prompt_embeds`` is base64 of a ``torch.save``d (L, d) float
tensor (vLLM needs ``--enable-prompt-embeds``), loaded with ``weights_only=True``.

Differences: ``logprob_token_ids`` (recent vLLM releases have it; older ones ignore it) adds the
log-probs of those ids to ``top_logprobs`` of the generated position; giving both ``prompt`` and
``prompt_embeds`` is refused; ``n`` must be 1 and ``stream`` false. Causal models only.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptgym.lm import receipts
from promptgym.lm.base import SoftPrompt, TokenPrompt
from promptgym.lm.wire import (
    CompletionChoice,
    CompletionLogProbs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    ModelInfo,
    PromptLogprob,
)
from promptgym.serve.config import ServerConfig
from promptgym.serve.limits import ApiError, bad_request, check_ids, check_text, too_large

#: vLLM's floor for log-probs in JSON (-inf is not JSON)
LOGPROB_FLOOR = -9999.0


@dataclass
class CompletionPlan:
    """What a completions request asks for, checked (:func:`check_completion`) before any model work."""

    kind: str  # "ids" | "text" | "embeds"
    items: list
    max_tokens: int
    top: int | None  # logprobs: top-k per returned position (-1: vocabulary); None: no logprobs object
    prompt_top: int | None  # prompt_logprobs
    extra_ids: list[int]
    echo: bool
    as_ids: bool
    add_special_tokens: bool


def check_completion(body: CompletionRequest, config: ServerConfig, info: ModelInfo) -> CompletionPlan:
    if info.is_masked:
        raise bad_request(f"{info.name} is a masked LM: /v1/completions needs a causal LM (use /v1/score)")
    if body.model is not None and body.model != info.name:
        raise ApiError(404, "not_found", f"model {body.model!r} is not served here; this server serves {info.name!r}")
    if body.max_tokens not in (0, 1):
        raise bad_request(f"max_tokens must be 0 or 1 (this server scores, it does not generate), "
                          f"got {body.max_tokens}")
    if body.n != 1 or (body.best_of not in (None, 1)):
        raise bad_request("n and best_of must be 1")
    if body.stream:
        raise bad_request("stream is not supported")
    for field in ("logprobs", "prompt_logprobs"):
        value = getattr(body, field)
        if value is not None and not -1 <= value <= info.vocab_size:
            raise bad_request(f"{field} must be -1 (whole vocabulary) or 0..{info.vocab_size}, got {value}")
    extra = list(body.logprob_token_ids or [])
    if len(extra) > config.max_array_elements:
        raise too_large(f"logprob_token_ids has {len(extra)} ids, the server allows {config.max_array_elements}")
    check_ids(extra, info.vocab_size, "logprob_token_ids")
    if (body.prompt is None) == (body.prompt_embeds is None):
        raise bad_request("give exactly one of prompt and prompt_embeds")
    if body.prompt_embeds is not None:
        kind, items = "embeds", [body.prompt_embeds] if isinstance(body.prompt_embeds, str) else body.prompt_embeds
        if body.echo or body.prompt_logprobs is not None:
            raise bad_request("echo and prompt_logprobs need token prompts, not prompt_embeds")
    elif isinstance(body.prompt, str):
        kind, items = "text", [body.prompt]
    elif body.prompt and all(isinstance(p, int) for p in body.prompt):
        kind, items = "ids", [body.prompt]
    elif body.prompt and all(isinstance(p, str) for p in body.prompt):
        kind, items = "text", list(body.prompt)
    else:
        kind, items = "ids", list(body.prompt or [])
    if not items:
        raise bad_request("prompt must hold at least one prompt")
    if len(items) > config.max_rows:
        raise too_large(f"{len(items)} prompts in one request, the server allows {config.max_rows}")
    if kind == "ids":
        for i, ids in enumerate(items):
            if not ids:
                raise bad_request(f"prompt[{i}] is empty")
            check_ids(ids, info.vocab_size, f"prompt[{i}]")
    elif kind == "text":
        for i, text in enumerate(items):
            check_text(text, f"prompt[{i}]")
    return CompletionPlan(kind=kind, items=items, max_tokens=int(body.max_tokens), top=body.logprobs,
                           prompt_top=body.prompt_logprobs, extra_ids=extra, echo=bool(body.echo),
                           as_ids=bool(body.return_tokens_as_token_ids),
                           add_special_tokens=body.add_special_tokens is not False)


def completion_inputs(lm, plan: CompletionPlan, info: ModelInfo, config: ServerConfig) -> list:
    """Token-id tuples or (L, d) float32 arrays, each checked against the model's length limit."""
    max_len = int(lm.max_length)
    inputs: list = []
    for i, item in enumerate(plan.items):
        if plan.kind == "ids":
            x: Any = tuple(item)
        elif plan.kind == "text":
            x = tuple(lm.tokenizer(item, add_special_tokens=plan.add_special_tokens)["input_ids"])
            if not x:
                raise bad_request(f"prompt[{i}] has no tokens")
        else:
            x = _load_embeds(item, i, info, config)
        if len(x) > max_len:
            raise bad_request(f"prompt[{i}] has {len(x)} positions, the model takes at most {max_len}")
        inputs.append(x)
    entries = _logprob_entries(plan, [len(x) for x in inputs], info.vocab_size)
    if entries > config.max_logprob_entries:
        raise too_large(f"this request would list {entries} log-probs, the server allows "
                        f"{config.max_logprob_entries}: ask for fewer prompts, positions or top-k")
    return inputs


def _logprob_entries(plan: CompletionPlan, lengths: list[int], vocab: int) -> int:
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
        raise too_large(f"{where} is larger than {config.max_array_elements} elements can be")
    try:
        raw = base64.b64decode(item, validate=True)
        tensor = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except Exception:
        raise bad_request(f"{where} is not the base64 of a torch.save'd tensor") from None
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise bad_request(f"{where} must hold a floating-point tensor")
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2 or tensor.shape[1] != info.embedding_dim or tensor.shape[0] < 1:
        raise bad_request(f"{where} must have shape (length, {info.embedding_dim}), got {tuple(tensor.shape)}")
    if tensor.numel() > config.max_array_elements:
        raise too_large(f"{where} has {tensor.numel()} elements, the server allows {config.max_array_elements}")
    x = tensor.detach().to(torch.float32).numpy().copy()
    if not np.all(np.isfinite(x)):
        raise bad_request(f"{where} contains NaN or inf values")
    return x


def _top(lp: np.ndarray, k: int | None) -> np.ndarray:
    """Ids of the ``k`` largest log-probs, best first (-1: all)."""
    if k is None or k == 0:
        return np.empty(0, dtype=np.int64)
    if k < 0 or k >= lp.shape[0]:
        return np.argsort(-lp, kind="stable")
    part = np.argpartition(-lp, k - 1)[:k]
    return part[np.argsort(-lp[part], kind="stable")]


def complete(lm, body: CompletionRequest, plan: CompletionPlan, inputs: list) -> CompletionResponse:
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


def completion_prompt_sha256(item: Any, scored: Any) -> str:
    """The receipt hash of a completions prompt: its token ids or embeddings as a score request's would
    be, or its text as given."""
    if isinstance(scored, np.ndarray):
        return receipts.prompt_sha256(SoftPrompt(scored))
    if isinstance(item, str):
        return receipts.text_prompt_sha256(item)
    return receipts.prompt_sha256(TokenPrompt(tuple(scored)))
