"""Tokenising in process, as every backend with a local tokenizer does it: cached, and one copy of it.

The in-process backend, the client of ``promptgym serve`` (which runs the server's published tokenizer
locally) and the OpenAI-compatible client (which sends token ids, never text) all encode text, decode
ids and pick label tokens the same way; :class:`TokenizerMixin` holds that once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promptgym.lm.layout import label_token_ids


class CachedTokenizer:
    """``encode``/``decode`` of a tokenizer without special tokens; encodings are cached.

    Few-shot examples are tokenised thousands of times during a search, always the same strings.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            self._cache[text] = ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))


class TokenizerMixin:
    """``encode``/``decode``/``label_token_ids`` of a :class:`~promptgym.lm.base.BlackBoxLM` by a tokenizer
    run in this process (list it before ``BlackBoxLM`` among the bases; call :meth:`use_tokenizer` in
    ``__init__``). Label words are scored by the first token of ``" " + word``
    (:func:`~promptgym.lm.layout.label_token_ids`), the rule every backend shares."""

    tokenizer: Any
    _codec: CachedTokenizer

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Tokenise with ``tokenizer`` (a Hugging Face tokenizer or anything with its call and ``decode``)."""
        self.tokenizer = tokenizer
        self._codec = CachedTokenizer(tokenizer)

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without special tokens (cached)."""
        return self._codec.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._codec.decode(ids)

    def label_token_ids(self, words: Sequence[str]) -> list[int]:
        return label_token_ids(words, self.encode)


__all__ = ["CachedTokenizer", "TokenizerMixin"]
