"""In-process transformers backends: one class for causal and masked LMs.

How a request becomes tensors (one row per example; the rows are built by :mod:`promptgym.lm.layout`,
which the OpenAI-compatible client shares)::

    causal:  [special prefix] left [prompt] right              -> answer = next token after the row
    masked:  [CLS]            left [prompt] right [SEP]        -> answer at the mask inside ``right``

* Discrete prompts are token ids; soft prompts replace the embeddings at their positions and the
  whole batch goes in through ``inputs_embeds``. Every soft-prompt vector is an attended input
  position, so a soft prompt of zeros is *not* the same as no prompt (use an empty prompt for that).
* Causal rows are left-padded with ``position_ids = cumsum(attention_mask) - 1``, so every row's
  answer sits in the last column and only that column's logits are computed (``logits_to_keep=1``).
  Masked rows are right-padded; the head is applied to the mask positions only.
* All rows of all requests of one ``score()`` call are sorted by length and run in chunks of at
  most ``chunk_size`` rows: batching across prompts, but in chunks (one 640-row forward was
  measured 3.5x slower than chunks of 64-128 on our CPUs). Where the chunks are cut is planned
  (:func:`plan_chunks`) to minimise padded tokens plus a per-forward overhead: a call with ONE
  prompt (every ``env.step``, SB3 agents, dev checks) has 32 rows of 22-72 tokens, and one chunk of
  them was 43% padding: on an idle 2-core machine a one-prompt SST-2 call took 1.66 s with one
  fixed chunk and 1.11 s with planned cuts (overhead 128), while a prompt inside a 20-prompt call
  took 1.03 s either way (benchmarks/RESULTS.md, "chunk planning").
* Label words longer than one token are scored by their **first token** (the usual choice of
  BBT/LM-BFF-style verbalizers); two label words with the same first token are rejected. All
  default verbalizers of the catalog are single tokens for SmolLM2, except DBPedia's "Athlete" and
  "Album", whose first tokens are unique.
* Tokenisation of text segments is cached: few-shot examples are scored thousands of times.
* :meth:`LocalLM.white_box` exposes the model, its input embeddings and a differentiable forward of
  soft-prompted rows (same row layout and padding as scoring) for the white-box reference agent;
  it is what an API never offers.
* ``torch.inference_mode()`` is used for every scoring forward. (Calling ``requires_grad_(False)``
  on bf16 weights was measured ~7x slower on CPU, so weights are left untouched.)

Fast paths (causal LMs only; :mod:`promptgym.lm.kv_cache` has the mechanics). Each is a flag of the
constructor and a plain attribute of the instance (``lm.input_cache = False`` turns it off on the
shared instance; :meth:`LocalLM.fast_paths` does it for a ``with`` block). All three are on by
default: in fp32 they give the plain path's scores to ~1e-6 (tests allow 1e-4); in bf16 the logits
move by rounding only (argmax agreement with the plain path is tested on the SST-2 test split).

* ``input_cache`` (prompt placed *after* the input, i.e. a non-empty left segment): the keys/values
  of ``[special prefix] left`` are computed once per distinct token sequence and kept across calls in
  an LRU bounded in bytes (``cache_bytes``, default 2 GiB; SmolLM2-135M needs 23,040 bytes per token
  in bf16, twice that in fp32). A call then runs only ``prompt + cue`` per row. A call whose distinct
  inputs alone would not fit in the budget is scored by the plain path (nothing could be reused).
* ``prefix_cache`` (prompt *before* the input, i.e. an empty left segment, non-empty prompt): the
  keys/values of ``[special prefix] prompt`` are computed once per request and shared by all its rows,
  which run only ``text + cue``. Token and soft prompts alike.
* ``memo``: a request identical to an earlier one (same prompt, rows, label words and scoring settings)
  returns the stored scores without a forward pass (an LRU of ``memo_size`` requests). It still counts
  in ``batch_calls``, and an env still charges it as an API call: a hosted API charges repeats too.

Masked LMs (bidirectional: every token sees the prompt) always take the plain path (the memo applies
to them too). Causal models with sliding-window layers (Gemma 3: 5 of 6 layers attend to a 512-token
window) take the fast paths only for rows of at most half the window
(:func:`promptgym.lm.kv_cache.kv_row_limit`): right-aligned pasts shift a row's absolute columns, which
a sliding layer would notice only beyond its window; longer rows take the plain path.

The embedding space is the one the transformer sees: the output of the model's input-embedding module.
For most models that is the table's rows; Gemma multiplies them by ``sqrt(hidden)`` (25.3 for Gemma 3
270M) inside its embedding module, and ``inputs_embeds`` bypass that module. So ``embed_tokens`` and
``embedding_stats`` report the module's outputs and soft prompts are taken on that scale: a soft prompt
equal to ``embed_tokens(ids)`` scores exactly like ``TokenPrompt(ids)`` (tested on Gemma).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from promptgym.errors import InvalidRequestError
from promptgym.lm.base import BlackBoxLM, ScoreRequest, ScoreResult, SoftPrompt
from promptgym.lm.kv_cache import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MEMO_SIZE,
    KVStore,
    Memo,
    assemble,
    kv_row_limit,
    nbytes_per_token,
    prompt_key,
    split_cache,
    supports_kv_reuse,
)
from promptgym.lm.layout import RowLayout, label_result, pad_token_id, special_tokens
from promptgym.lm.presets import LoadedModel
from promptgym.lm.tokenizer import TokenizerMixin

#: cost of one extra forward pass, in padded tokens (see :func:`plan_chunks`)
CHUNK_OVERHEAD = 128
#: at most this many padded past tokens (rows x longest past) in one fast-path forward
PAST_BUDGET = 8192
#: cost of one past token of a row relative to one computed token, when fast-path chunks are planned
PAST_WEIGHT = 0.05


def plan_chunks(lengths: Sequence[int], max_rows: int, overhead: int = CHUNK_OVERHEAD) -> list[tuple[int, int]]:
    """Cut rows sorted by length into ``[start, end)`` chunks of at most ``max_rows`` rows.

    Minimises ``sum(rows * width + overhead)`` over the chunks (width = the chunk's longest row,
    i.e. its last) by dynamic programming over the cut points, cutting only between rows of
    different lengths unless a run of equal lengths exceeds ``max_rows``. ``overhead`` is what one more
    forward pass costs in padded tokens: 0 would cut at every length step (many tiny, inefficient
    forwards), a huge value gives fixed ``max_rows`` chunks (the old behaviour).
    """
    n = len(lengths)
    if n == 0:
        return []
    if max_rows < 1:
        raise ValueError("max_rows must be >= 1")
    widths = np.asarray(lengths, dtype=np.int64)
    if np.any(np.diff(widths) < 0):
        raise ValueError("plan_chunks needs lengths sorted in ascending order")
    # cut only where the length changes (rows of one length share a chunk, so a row's padding does
    # not depend on where it sorts among equals), except inside a run of equals longer than max_rows
    allowed = np.zeros(n + 1, dtype=bool)
    allowed[[0, n]] = True
    allowed[1:n] = widths[1:] != widths[:-1]
    edges = np.flatnonzero(allowed)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b - a > max_rows:
            allowed[a:b] = True
    best = np.full(n + 1, np.iinfo(np.int64).max // 2, dtype=np.int64)
    best[0] = 0
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in np.flatnonzero(allowed)[1:]:
        starts = np.arange(max(0, end - max_rows), end)
        starts = starts[allowed[starts]]
        costs = best[starts] + (end - starts) * widths[end - 1] + overhead
        k = int(np.argmin(costs))
        best[end], cut[end] = costs[k], starts[k]
    chunks = []
    end = n
    while end > 0:
        chunks.append((int(cut[end]), end))
        end = int(cut[end])
    return chunks[::-1]


class LocalLM(TokenizerMixin, BlackBoxLM):
    """A frozen transformers LM behind the :class:`~promptgym.lm.base.BlackBoxLM` contract.

    :param chunk_size: most rows in one forward pass; ``chunk_overhead``: see :func:`plan_chunks`
    :param input_cache: reuse the keys/values of each example's text when the prompt follows it
        (causal LMs; see the module docstring). Also an attribute, like the next two.
    :param prefix_cache: share the keys/values of ``[special prefix] prompt`` among a request's rows
        when the prompt comes first (causal LMs)
    :param memo: return stored scores for a repeated identical request (any LM)
    :param cache_bytes: byte budget of the input cache (an LRU, ``kv_store``)
    :param memo_size: most requests the memo keeps (an LRU, ``memo_store``; an entry holds the
        ``rows x labels`` float32 scores)
    :param past_budget: most padded past tokens (rows x longest past) in one fast-path forward

    ``interrupt``: None, or a function called before every forward pass; whatever it raises ends the
    current call there (a server stops the work of a request whose client's timeout expired). Caches
    and memo only ever receive complete results, so an interrupted call leaves the LM as it was.
    """

    supports_white_box = True

    def __init__(self, loaded: LoadedModel, chunk_size: int = 64, max_length: int | None = None,
                 chunk_overhead: int = CHUNK_OVERHEAD, *, input_cache: bool = True, prefix_cache: bool = True,
                 memo: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES, memo_size: int = DEFAULT_MEMO_SIZE,
                 past_budget: int = PAST_BUDGET) -> None:
        self._model = loaded.model
        self.name = loaded.name
        self.use_tokenizer(loaded.tokenizer)
        self.is_masked = loaded.is_masked
        self.weights_sha256 = loaded.weights_sha256
        self.chunk_size = int(chunk_size)
        self.chunk_overhead = int(chunk_overhead)
        self._embed = self._model.get_input_embeddings()
        self.vocab_size = int(self._embed.weight.shape[0])
        self.embedding_dim = int(self._embed.weight.shape[1])
        self.dtype = self._embed.weight.dtype
        limit = getattr(self._model.config, "max_position_embeddings", 2048)
        if self.is_masked:
            limit -= 2 + (self._model.config.pad_token_id or 0)  # RoBERTa's positions start after pad
        self.max_length = int(max_length or min(limit, 1024))
        self.batch_calls = 0
        self.forward_passes = 0
        self.tokens_computed = 0  # real (non-padding) tokens run through the model, all forwards
        self.tokens_padded = 0  # rows x width of every forward (what the hardware computed)
        self.input_cache, self.prefix_cache, self.memo = bool(input_cache), bool(prefix_cache), bool(memo)
        self.past_budget = int(past_budget)
        self.past_weight = PAST_WEIGHT
        self.kv_store = KVStore(cache_bytes)
        self.memo_store = Memo(memo_size)
        self._kv_ok = not loaded.is_masked and supports_kv_reuse(self._model)
        self._kv_row_limit = kv_row_limit(self._model) if self._kv_ok else None
        self._kv_bytes = nbytes_per_token(self._model) if self._kv_ok else 0
        params = inspect.signature(self._model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._prefix, self._suffix = special_tokens(self.tokenizer)
        self.pad_id = pad_token_id(self.tokenizer)
        self.mask_id = getattr(self.tokenizer, "mask_token_id", None) if self.is_masked else None
        if self.is_masked and self.mask_id is None:
            raise InvalidRequestError(f"masked LM {self.name!r} has a tokenizer without a mask token")
        self._stats: tuple[float, float] | None = None
        self.interrupt: Callable[[], None] | None = None

    # ------------------------------------------------------------------ public, what an API exposes
    @property
    def mask_token(self) -> str | None:
        return getattr(self.tokenizer, "mask_token", None) if self.is_masked else None

    def embedding_stats(self) -> tuple[float, float]:
        """Mean and std of the input embeddings as the transformer sees them: the embedding module's
        outputs, which for Gemma are its table times ``sqrt(hidden)`` (see the module docstring)."""
        if self._stats is None:
            if type(self._embed) is torch.nn.Embedding:  # outputs are the table's rows
                w = self._embed.weight.detach().float()
                self._stats = (float(w.mean()), float(w.std()))
            else:
                self._stats = _module_embedding_stats(self._embed, self.vocab_size)
        return self._stats

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        idx = self.layout.check_ids(tuple(int(i) for i in ids))
        with torch.inference_mode():
            return self._embed(torch.tensor(idx, dtype=torch.long)).float().numpy().copy()

    @property
    def layout(self) -> RowLayout:
        """How this model's rows are built (read from the current attributes: tests may shorten
        ``max_length``); the OpenAI-compatible client builds the same rows from the same layout."""
        return RowLayout(self._prefix, self._suffix, self.pad_id, self.max_length, self.vocab_size,
                         self.embedding_dim, self.is_masked, self.mask_id)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if not requests:
            raise InvalidRequestError("score() needs at least one request")
        rows, owners, label_ids = self._build_rows(requests)
        # memo: a request seen before (or twice in this call) is not run again
        keys = [self._memo_key(req, label_ids[r]) for r, req in enumerate(requests)] if self.memo else None
        scores: list[np.ndarray | None] = [None] * len(requests)
        todo, first = [], {}
        for r in range(len(requests)):
            if keys is not None:
                if keys[r] in first:
                    continue
                first[keys[r]] = r
                hit = self.memo_store.get(keys[r])
                if hit is not None:
                    scores[r] = hit
                    continue
            todo.append(r)
        run_rows = [i for r in todo for i in owners[r]]
        logprobs = self._run([rows[i] for i in run_rows], [len(requests[r].prompt) for r in todo for _ in owners[r]])
        self.batch_calls += 1
        start = 0
        for r in todo:
            n = len(owners[r])
            lp = np.take_along_axis(logprobs[start:start + n], np.asarray(label_ids[r])[None, :].repeat(n, 0), axis=1)
            start += n
            scores[r] = lp
            if keys is not None:
                self.memo_store.put(keys[r], lp)
        results = []
        for r, req in enumerate(requests):
            lp = scores[r] if scores[r] is not None else scores[first[keys[r]]]
            ntok = sum(len(rows[i][0]) for i in owners[r])
            results.append(label_result(lp.copy(), req.label_only, ntok))
        return results

    def remember(self, requests: Sequence[ScoreRequest], results: Sequence[ScoreResult]) -> None:
        """Put replayed answers in the memo (nothing when it is off; label-only answers carry no log-probs).

        Why: a run resumed from its journal replays its calls without this model, so a second search of the
        same seed in the process (the reliability benchmark's snapshot ensemble after BBT) found an empty memo
        and recomputed all of them. The journal's log-probs are the bytes this model returned then.
        """
        if not self.memo:
            return
        for req, res in zip(requests, results, strict=True):
            if res.logprobs is None:
                continue
            # put, not get-then-put: a lookup would count as a memo hit
            self.memo_store.put(self._memo_key(req, self.label_token_ids(req.label_words)),
                                np.asarray(res.logprobs, dtype=np.float32).copy())

    # ------------------------------------------------------------------ fast-path switches
    @contextmanager
    def fast_paths(self, input_cache: bool | None = None, prefix_cache: bool | None = None,
                   memo: bool | None = None) -> Iterator[LocalLM]:
        """Set fast-path flags for a ``with`` block (None keeps a flag), restoring them afterwards.

        ``with lm.fast_paths(False, False, False):`` scores by the plain path only.
        """
        saved = (self.input_cache, self.prefix_cache, self.memo)
        try:
            for name, value in (("input_cache", input_cache), ("prefix_cache", prefix_cache), ("memo", memo)):
                if value is not None:
                    setattr(self, name, bool(value))
            yield self
        finally:
            self.input_cache, self.prefix_cache, self.memo = saved

    def clear_caches(self) -> None:
        """Forget every stored key/value past and memoised result."""
        self.kv_store.clear()
        self.memo_store.clear()

    def next_token_logprobs(self, inputs: Sequence[Sequence[int] | np.ndarray],
                            all_positions: bool = False) -> list[np.ndarray]:
        """Full-vocabulary log-probs after each input (causal LMs): what an OpenAI-style server returns.

        An input is token ids used as they are (no special tokens added) or an array ``(L, d)`` of input
        embeddings. Returns per input a ``(V,)`` array for its next token, or with ``all_positions`` an
        ``(L, V)`` array (row t: the distribution of token t+1). Rows are chunked as :meth:`score`'s plain
        path chunks them, so rows laid out as :meth:`score` lays them out get its plain-path bytes.
        """
        if self.is_masked:
            raise InvalidRequestError(f"{self.name} is a masked LM: it has no next-token distribution")
        rows = []
        for x in inputs:
            if isinstance(x, np.ndarray) and x.dtype.kind == "f":
                if x.ndim != 2 or x.shape[1] != self.embedding_dim or x.shape[0] < 1 or not np.all(np.isfinite(x)):
                    raise InvalidRequestError(f"input embeddings must be finite, shape (L >= 1, {self.embedding_dim})")
                rows.append(((self.pad_id,) * x.shape[0], 0, x, x.shape[0] - 1))
            else:
                ids = tuple(int(i) for i in x)
                if not ids or any(not 0 <= i < self.vocab_size for i in ids):
                    raise InvalidRequestError(f"an input needs 1 or more token ids in [0, {self.vocab_size})")
                rows.append((ids, len(ids), None, len(ids) - 1))
        out: list[np.ndarray] = [np.empty(0)] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        with torch.inference_mode():
            for start, end in plan_chunks([len(rows[i][0]) for i in order], self.chunk_size, self.chunk_overhead):
                chunk = order[start:end]
                if not all_positions:
                    for i, lp in zip(chunk, self._forward([rows[i] for i in chunk]), strict=True):
                        out[i] = lp
                    continue
                for i in chunk:  # one row at a time: (L, V) log-probs are large
                    self.forward_passes += 1
                    model_inputs, _ = self._inputs([rows[i]])
                    logits = self._model(**model_inputs).logits[0]
                    out[i] = torch.log_softmax(logits.float(), dim=-1).numpy()
        return out

    def _memo_key(self, req: ScoreRequest, label_ids: Sequence[int]):
        # the scoring settings are part of the key: results may differ by rounding between them
        settings = (self.chunk_size, self.chunk_overhead, self.input_cache, self.prefix_cache, self.max_length)
        segments = req.segments if isinstance(req.segments, tuple) else tuple(tuple(s) for s in req.segments)
        return (prompt_key(req.prompt), segments, tuple(label_ids), settings)

    # ------------------------------------------------------------------ white-box (never an API's)
    def white_box(self, dtype: str | None = None) -> WhiteBox:
        """The model's internals for back-propagation: reference agents only, never a black-box one.

        A hosted API offers nothing like this; having it is what makes an agent white-box (see
        ``promptgym.agent.check_compatible``). ``dtype`` "float32" gives the same weights in fp32 (loaded
        once more through the model cache if this one runs bf16: bf16 gradients are too coarse for small steps).
        """
        if dtype is None:
            return WhiteBox(self)
        from promptgym.lm import in_dtype

        return WhiteBox(in_dtype(self, dtype))

    # ------------------------------------------------------------------ internals
    def _build_rows(self, requests: Sequence[ScoreRequest]):
        """Validate everything, then lay out the rows (:meth:`promptgym.lm.layout.RowLayout.build`)."""
        return self.layout.build(requests, self.encode)

    def _run(self, rows, prompt_lengths: Sequence[int] | None = None) -> np.ndarray:
        """Vocabulary log-probs at every row's answer: fast paths where they apply, else plain chunks."""
        out = np.empty((len(rows), self.vocab_size), dtype=np.float32)
        fast = self._fast_rows(rows, prompt_lengths) if prompt_lengths is not None else {}
        plain = [i for i in range(len(rows)) if i not in fast]
        order = sorted(plain, key=lambda i: len(rows[i][0]))
        with torch.inference_mode():
            for start, end in plan_chunks([len(rows[i][0]) for i in order], self.chunk_size, self.chunk_overhead):
                chunk = order[start:end]
                out[chunk] = self._forward([rows[i] for i in chunk])
            if fast:
                self._run_fast(fast, out)
        return out

    # ------------------------------------------------------------------ fast paths (causal only)
    def _fast_rows(self, rows, prompt_lengths: Sequence[int]) -> dict:
        """``{row: (past_key, stored, past_row, new_ids, new_soft)}`` for rows a fast path can score.

        ``past_row`` is ``(ids, soft_start, soft, answer)`` of the reused part (the plain layout);
        ``new_soft`` is ``(start, embeds)`` of a soft prompt inside the new part, or None.
        """
        if not self._kv_ok or not (self.input_cache or self.prefix_cache):
            return {}
        n_pre = len(self._prefix)
        fast = {}
        soft_keys: dict[int, object] = {}  # id(embeds) -> key: hash each soft prompt once
        limit = self._kv_row_limit
        for i, ((ids, soft_start, soft, _), p_len) in enumerate(zip(rows, prompt_lengths, strict=True)):
            if limit is not None and len(ids) > limit:
                continue  # a sliding-window layer would see another window: the plain path scores it
            if soft_start > n_pre and self.input_cache and len(ids) > soft_start:
                past = tuple(ids[:soft_start])
                fast[i] = (("in", past), True, (past, 0, None, soft_start - 1), tuple(ids[soft_start:]),
                           (0, soft) if soft is not None else None)
            elif soft_start == n_pre and p_len > 0 and self.prefix_cache and len(ids) > n_pre + p_len:
                cut = n_pre + p_len
                past = tuple(ids[:cut])
                if soft is None:
                    key = ("pre", past)
                else:
                    if id(soft) not in soft_keys:
                        soft_keys[id(soft)] = ("pre", past[:n_pre], prompt_key(SoftPrompt(soft)))
                    key = soft_keys[id(soft)]
                fast[i] = (key, False, (past, n_pre, soft, cut - 1), tuple(ids[cut:]), None)
        # inputs that cannot all be kept would be computed and evicted: no gain, use the plain path
        distinct = {v[0]: len(v[2][0]) for v in fast.values() if v[1]}
        if sum(distinct.values()) * self._kv_bytes > self.kv_store.max_bytes:
            fast = {i: v for i, v in fast.items() if not v[1]}
        return fast

    def _run_fast(self, fast: dict, out: np.ndarray) -> None:
        pasts: dict = {}
        missing: dict = {}
        for key, stored, past_row, _, _ in fast.values():
            if key in pasts or key in missing:
                continue
            value = self.kv_store.get(key) if stored else None
            if value is None:
                missing[key] = past_row
            else:
                pasts[key] = value
        if missing:
            computed = self._compute_pasts(list(missing.values()))
            for key, value in zip(missing, computed, strict=True):
                pasts[key] = value
                if fast_stored(key):
                    self.kv_store.put(key, value)
        # a row costs its new tokens plus (attention, cache copies) a fraction of its padded past
        width = {i: len(fast[i][3]) + self.past_weight * pasts[fast[i][0]].shape[3] for i in fast}
        order = sorted(fast, key=lambda i: width[i])
        plan = plan_chunks([int(round(width[i])) for i in order], self.chunk_size, self.chunk_overhead)
        for start, end in plan:
            for chunk in self._past_budget_split(order[start:end], [pasts[fast[i][0]].shape[3] for i in
                                                                     order[start:end]]):
                out[chunk] = self._forward_with_past([pasts[fast[i][0]] for i in chunk],
                                                     [(fast[i][3], fast[i][4]) for i in chunk])

    def _past_budget_split(self, chunk: list[int], past_lengths: list[int]) -> list[list[int]]:
        """Cut a chunk so that rows x longest past stays within ``past_budget`` (memory of one forward)."""
        parts, current, longest = [], [], 0
        for i, n in sorted(zip(chunk, past_lengths, strict=True), key=lambda t: t[1]):
            if current and (len(current) + 1) * max(longest, n) > self.past_budget:
                parts.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        if current:
            parts.append(current)
        return parts

    def _compute_pasts(self, past_rows: list) -> list[torch.Tensor]:
        """Keys/values of each row (plain layout), as :func:`promptgym.lm.kv_cache.split_cache` pasts."""
        result: list = [None] * len(past_rows)
        order = sorted(range(len(past_rows)), key=lambda i: len(past_rows[i][0]))
        for start, end in plan_chunks([len(past_rows[i][0]) for i in order], self.chunk_size, self.chunk_overhead):
            chunk = order[start:end]
            rows = [past_rows[i] for i in chunk]
            self.forward_passes += 1
            inputs, offsets = self._inputs(rows)
            position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            output = self._model(**inputs, position_ids=position_ids, use_cache=True, logits_to_keep=1)
            cache = getattr(output, "cache", None) or output.past_key_values
            for i, value in zip(chunk, split_cache(cache, offsets, [len(r[0]) for r in rows]), strict=True):
                result[i] = value
        return result

    def _forward_with_past(self, pasts: list[torch.Tensor], news: list) -> np.ndarray:
        """Log-probs at the last token of each new part, run on top of its right-aligned past."""
        if self.interrupt is not None:
            self.interrupt()
        self.forward_passes += 1
        cache, past_mask = assemble(pasts)
        width = max(len(ids) for ids, _ in news)
        n = len(news)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        offsets = []
        for b, (row_ids, _) in enumerate(news):
            off = width - len(row_ids)
            ids[b, off:] = torch.tensor(row_ids, dtype=torch.long)
            mask[b, off:] = 1
            offsets.append(off)
        self.tokens_computed += int(mask.sum())
        self.tokens_padded += n * width
        inputs: dict = {"attention_mask": torch.cat([past_mask, mask], dim=1)}
        if any(soft is not None for _, soft in news):
            emb = self._embed(ids)
            for b, (_, soft) in enumerate(news):
                if soft is not None:
                    s = offsets[b] + soft[0]
                    emb[b, s:s + soft[1].shape[0]] = torch.as_tensor(soft[1], dtype=emb.dtype)
            inputs["inputs_embeds"] = emb
        else:
            inputs["input_ids"] = ids
        past_lengths = torch.tensor([p.shape[3] for p in pasts], dtype=torch.long)
        position_ids = past_lengths[:, None] + (mask.cumsum(-1) - 1).clamp(min=0)
        inputs[self._cache_kw] = cache
        logits = self._model(**inputs, position_ids=position_ids, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        return torch.log_softmax(logits.float(), dim=-1).numpy()

    def _forward(self, rows) -> np.ndarray:
        """Log-probabilities over the vocabulary at each row's answer position (no grad)."""
        self.forward_passes += 1
        inputs, offsets = self._inputs(rows)
        logits = self._answer_logits(inputs, [offsets[b] + r[3] for b, r in enumerate(rows)])
        return torch.log_softmax(logits.float(), dim=-1).numpy()

    def _inputs(self, rows) -> tuple[dict, list[int]]:
        """Model inputs (``attention_mask`` and ``input_ids`` or ``inputs_embeds``) of plain rows
        (every plain forward builds them here, so this is where ``interrupt`` is asked)."""
        if self.interrupt is not None:
            self.interrupt()
        ids, mask, offsets = self._layout(rows)
        self.tokens_computed += int(mask.sum())
        self.tokens_padded += int(mask.numel())
        inputs: dict = {"attention_mask": mask}
        if any(r[2] is not None for r in rows):
            emb = self._embed(ids)
            for b, (_, start, soft, _) in enumerate(rows):
                if soft is not None:
                    s = offsets[b] + start
                    emb[b, s:s + soft.shape[0]] = torch.as_tensor(soft, dtype=emb.dtype)
            inputs["inputs_embeds"] = emb
        else:
            inputs["input_ids"] = ids
        return inputs, offsets

    def _layout(self, rows) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Pad rows into ``(ids, attention_mask, offsets)``; a row's tokens start at its offset.

        Causal rows are left-padded so that every answer is in the last column; masked rows are
        right-padded. Scoring and the white-box forward share this, so both see the same layout.
        """
        width = max(len(r[0]) for r in rows)
        n = len(rows)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        offsets = []
        for b, (row_ids, _, _, _) in enumerate(rows):
            off = width - len(row_ids) if not self.is_masked else 0  # left pad causal, right pad masked
            ids[b, off:off + len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
            mask[b, off:off + len(row_ids)] = 1
            offsets.append(off)
        return ids, mask, offsets

    def _answer_logits(self, inputs: dict, answers: list[int]) -> torch.Tensor:
        """Vocabulary logits (model dtype) at the ``answers`` columns of padded ``inputs``.

        ``inputs`` holds ``attention_mask`` and ``input_ids`` or ``inputs_embeds``. Causal rows get
        ``position_ids = cumsum(mask) - 1`` (left padding must not shift positions) and only the
        last column's logits are computed; masked LMs apply their head at the answers only.
        Differentiable when called outside ``inference_mode`` (the white-box entry does).
        """
        if self.is_masked:
            return self._masked_logits(inputs, answers)
        position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return self._model(**inputs, position_ids=position_ids, logits_to_keep=1).logits[:, -1, :]

    def _masked_logits(self, inputs: dict, answers: list[int]) -> torch.Tensor:
        model = self._model
        head = getattr(model, "lm_head", None) or getattr(model, "cls", None)
        base = getattr(model, model.base_model_prefix, None)
        idx = torch.arange(len(answers))
        pos = torch.tensor(answers)
        if head is not None and base is not None:
            hidden = base(**inputs).last_hidden_state
            return head(hidden[idx, pos])
        return model(**inputs).logits[idx, pos]


class SoftRows:
    """Rows of one split laid out once for a soft prompt of ``prompt_length`` vectors.

    Tokenisation, truncation (room is left for the prompt) and the answer position are the
    backend's own (``LocalLM._build_rows``); the prompt positions hold pad ids until a forward
    overwrites them with the trainable vectors.
    """

    def __init__(self, rows: list, label_ids: list[int], prompt_length: int) -> None:
        self.rows, self.label_ids, self.prompt_length = rows, label_ids, prompt_length

    def __len__(self) -> int:
        return len(self.rows)


class WhiteBox:
    """What back-propagation through a :class:`LocalLM` needs, and nothing more.

    ``model`` is the torch module and ``embed`` its input-embedding module (to read word vectors or
    initialise a soft prompt: call it, ``embed(ids)``, rather than reading ``embed.weight``, which for
    Gemma lacks the ``sqrt(hidden)`` scale). :meth:`rows` lays out a split's rendered rows and :meth:`label_logits`
    runs the differentiable forward on them with a trainable soft prompt. The padding, position ids
    and answer positions are the scoring path's own code (``_layout`` / ``_answer_logits``), so a
    prompt trained here is scored by ``LocalLM.score`` exactly as it was trained.
    """

    def __init__(self, lm: LocalLM) -> None:
        self.lm = lm
        self.model = lm._model
        self.embed = lm._embed

    def rows(self, segments: Sequence[tuple[str, str]], label_words: Sequence[str], prompt_length: int) -> SoftRows:
        """``segments`` (rendered ``(left, right)`` rows) laid out for a soft prompt of ``prompt_length``."""
        placeholder = SoftPrompt(np.zeros((prompt_length, self.lm.embedding_dim), dtype=np.float32))
        rows, _, label_ids = self.lm._build_rows([ScoreRequest(placeholder, tuple(segments), tuple(label_words))])
        return SoftRows(rows, list(label_ids[0]), prompt_length)

    def label_logits(self, rows: SoftRows, prompt: torch.Tensor, idx: Sequence[int] | None = None) -> torch.Tensor:
        """Label-word logits ``(n, C)`` (fp32) of rows ``idx`` (default all) with soft prompt ``prompt``.

        Differentiable in ``prompt`` (a ``(prompt_length, embedding_dim)`` tensor); the embeddings of
        the other positions are detached, so gradients reach the prompt only. One forward, no chunking.
        """
        chosen = [rows.rows[i] for i in (range(len(rows)) if idx is None else idx)]
        ids, mask, offsets = self.lm._layout(chosen)
        n, length = len(chosen), prompt.shape[0]
        starts = torch.tensor([off + row[1] for off, row in zip(offsets, chosen, strict=True)])
        pos = starts[:, None] + torch.arange(length)[None, :]
        emb = self.embed(ids).detach().clone()
        emb = emb.index_put((torch.arange(n)[:, None].expand(n, length), pos),
                            prompt.to(emb.dtype).expand(n, -1, -1))
        answers = [off + row[3] for off, row in zip(offsets, chosen, strict=True)]
        logits = self.lm._answer_logits({"attention_mask": mask, "inputs_embeds": emb}, answers)
        return logits.float()[:, rows.label_ids]


def _module_embedding_stats(embed, vocab_size: int, block: int = 8192) -> tuple[float, float]:
    """``(mean, std)`` (unbiased, like ``Tensor.std``) of ``embed(id)`` over every id, in blocks of ids."""
    total = squares = 0.0
    count = 0
    with torch.inference_mode():
        for start in range(0, vocab_size, block):
            e = embed(torch.arange(start, min(start + block, vocab_size))).double()
            total += float(e.sum())
            squares += float((e * e).sum())
            count += e.numel()
    mean = total / count
    return mean, float(np.sqrt(max(squares - count * mean * mean, 0.0) / (count - 1)))


def fast_stored(key) -> bool:
    """True for keys of the input cache (kept across calls), False for per-call prompt prefixes."""
    return key[0] == "in"
