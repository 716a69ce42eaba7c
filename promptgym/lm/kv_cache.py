"""Key/value caches and a result memo for :class:`promptgym.lm.local.LocalLM` (causal LMs only).

A causal row is ``[special prefix] left [prompt] right``. Whatever comes first in a row can be run
once and its attention keys/values reused, because later tokens never change earlier ones:

* **input cache** (prompt *after* the input): the keys/values of ``[special prefix] left`` (the
  example's own text) do not depend on the prompt. They are computed once per distinct token
  sequence and kept in a :class:`KVStore` (an LRU bounded in bytes) across calls, so a call runs
  only ``prompt + cue`` for each row.
* **shared prefix** (prompt *before* the input): the keys/values of ``[special prefix] prompt`` are
  computed once per prompt and call, and shared by all rows of that prompt, which run only their own
  ``text + cue``.
* **memo** (:class:`Memo`): a repeated request (same prompt, rows, label words and LM settings)
  returns the stored scores without a forward pass. Budgets live in the env, so a repeat is still
  charged there as one API call, as a hosted API would charge it.

A stored past is one tensor ``(layers, 2, kv_heads, length, head_dim)`` holding only real tokens
(no padding). :func:`assemble` right-aligns the pasts of a chunk (left padding, zeros at padded
slots, masked out) and hands transformers a ``DynamicCache``; the new tokens follow with
``position_ids`` continuing each row's own past length, so every real token sees the positions and
keys it would see in a plain forward of its row.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np
import torch

#: default byte budget of the input cache (2 GiB; SmolLM2-135M bf16 needs 23,040 bytes per token)
DEFAULT_CACHE_BYTES = 2 << 30
#: default number of memoised requests
DEFAULT_MEMO_SIZE = 4096


class KVStore:
    """An LRU of per-sequence key/value tensors, bounded by ``max_bytes`` (thread-safe).

    Entries are evicted least-recently-used first when a put would exceed the budget; an entry larger
    than the whole budget is not stored. ``hits``/``misses`` count lookups.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> torch.Tensor | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= old.numel() * old.element_size()
            if size > self.max_bytes:
                return
            while self._data and self.nbytes + size > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self.nbytes -= evicted.numel() * evicted.element_size()
            self._data[key] = value
            self.nbytes += size

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0


class Memo:
    """An LRU of request results bounded by ``max_entries`` (thread-safe)."""

    def __init__(self, max_entries: int = DEFAULT_MEMO_SIZE) -> None:
        self.max_entries = int(max_entries)
        self.hits = 0
        self._data: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
            return value

    def put(self, key: Hashable, value: object) -> None:
        if self.max_entries < 1:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def prompt_key(prompt) -> Hashable:
    """A hashable identity of a TokenPrompt (its ids) or SoftPrompt (a digest of its float32 values)."""
    ids = getattr(prompt, "ids", None)
    if ids is not None:
        return ("t", tuple(int(i) for i in ids))
    e = np.ascontiguousarray(np.asarray(prompt.embeds, dtype=np.float32))
    return ("s", e.shape, hashlib.blake2b(e.tobytes(), digest_size=16).digest())


def split_cache(cache, offsets: Sequence[int], lengths: Sequence[int]) -> list[torch.Tensor]:
    """Per-row pasts ``(layers, 2, kv_heads, length, head_dim)`` (contiguous copies, real tokens only)
    from the cache of a left-padded forward whose row ``b`` holds ``lengths[b]`` real tokens from
    column ``offsets[b]``."""
    keys = torch.stack([layer.keys for layer in cache.layers])
    values = torch.stack([layer.values for layer in cache.layers])
    kv = torch.stack([keys, values], dim=1)  # (layers, 2, batch, heads, width, head_dim)
    return [kv[:, :, b, :, off:off + n].clone() for b, (off, n) in enumerate(zip(offsets, lengths, strict=True))]


def assemble(pasts: Sequence[torch.Tensor]):
    """``(DynamicCache, past_mask)`` of right-aligned pasts (zeros and mask 0 at the padded slots)."""
    from transformers import DynamicCache

    n_layers, _, heads, _, head_dim = pasts[0].shape
    width = max(p.shape[3] for p in pasts)
    kv = torch.zeros((n_layers, 2, len(pasts), heads, width, head_dim), dtype=pasts[0].dtype)
    mask = torch.zeros((len(pasts), width), dtype=torch.long)
    for b, p in enumerate(pasts):
        n = p.shape[3]
        if n:
            kv[:, :, b, :, width - n:] = p
            mask[b, width - n:] = 1
    cache = DynamicCache(ddp_cache_data=[(kv[i, 0], kv[i, 1]) for i in range(n_layers)])
    return cache, mask


def nbytes_per_token(model) -> int:
    """Bytes one token's keys and values take in a :class:`KVStore` for ``model``."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    size = torch.empty((), dtype=model.get_input_embeddings().weight.dtype).element_size()
    return 2 * cfg.num_hidden_layers * heads * head_dim * size


def supports_kv_reuse(model) -> bool:
    """True for causal LMs whose layers attend to the full past or to a sliding window of it (the
    latter only for rows short enough, :func:`kv_row_limit`); False for encoder-decoders and for
    layer kinds the fast paths do not know."""
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        return False
    types = getattr(cfg, "layer_types", None)
    return not types or all(t in ("full_attention", "sliding_attention") for t in types)


def kv_row_limit(model) -> int | None:
    """The longest row (in tokens) a fast path may score on ``model``; None: any length.

    The fast paths right-align pasts of different lengths in one padded tensor, so a row's tokens
    sit at shifted absolute columns. A full-attention layer does not care; a sliding-window layer
    (Gemma 3: 5 of 6 layers see the last 512 tokens) masks by column distance and would see another
    window. Rows of at most half the window keep every chunk's padded past plus its padded new part
    within the window, where a sliding layer sees exactly what a full one does; longer rows take the
    plain path. (SST-2 rows with a 50-token prompt are ~60-120 tokens.)
    """
    cfg = model.config
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    sliding = bool(window) and (("sliding_attention" in types) if types else getattr(cfg, "use_sliding_window", True))
    return int(window) // 2 if sliding else None


__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_MEMO_SIZE", "KVStore", "Memo", "assemble", "nbytes_per_token",
           "kv_row_limit", "prompt_key", "split_cache", "supports_kv_reuse"]
