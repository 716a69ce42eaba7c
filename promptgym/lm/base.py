"""The black-box LM contract: what goes in, what comes out, and nothing else.

A request is one prompt and a batch of rendered examples; scoring it is **one API call** (the
unit BBT and BDPL count). A backend scores a whole list of requests in one batched computation,
so population methods pay the LM cost once per generation, not once per prompt.

What leaks, on purpose (a real LM API exposes the same): the tokenizer, the vocabulary size, the
embedding dimension and summary statistics of the word embeddings (BBT scales its random
projection by them), and the embeddings of chosen token ids (an API that accepts soft prompts must
let users start from words). Weights, gradients and hidden states do not leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TokenPrompt:
    """A discrete prompt as token ids of the LM's tokenizer (may be empty: no prompt)."""

    ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class SoftPrompt:
    """A continuous prompt: ``embeds`` of shape (length, embedding_dim), fed as input embeddings."""

    embeds: np.ndarray

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


Prompt = TokenPrompt | SoftPrompt


@dataclass(frozen=True)
class ScoreRequest:
    """Score one prompt on a batch of examples.

    ``segments[i] = (left, right)`` is example i rendered by its template; the prompt goes between
    the two strings (see ``promptgym.tasks.spec``). ``label_words`` are the verbalizer words, one per
    label, without leading space.
    """

    prompt: Prompt
    segments: tuple[tuple[str, str], ...]
    label_words: tuple[str, ...]
    label_only: bool = False


@dataclass
class ScoreResult:
    """Outputs of one request.

    ``logprobs[i, c]``: log-probability of label word c at example i's answer position, normalised
    over the full vocabulary. ``label_logprobs``: the same renormalised over the label words only.
    For ``label_only`` requests both are None and only ``predictions`` is returned (likelihood-free).
    """

    predictions: np.ndarray
    logprobs: np.ndarray | None = None
    label_logprobs: np.ndarray | None = None
    num_tokens: int = 0
    extra: dict = field(default_factory=dict)


@runtime_checkable
class BlackBoxLM(Protocol):
    """What environments and agents may know about a frozen LM."""

    name: str
    tokenizer: object
    vocab_size: int
    embedding_dim: int
    is_masked: bool
    batch_calls: int  # number of score() invocations so far (batched LM calls)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request in one batched computation (chunked internally)."""
        ...

    def embedding_stats(self) -> tuple[float, float]:
        """Mean and standard deviation over all entries of the input word-embedding matrix."""
        ...

    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Input embeddings of token ids, shape (len(ids), embedding_dim)."""
        ...

    def label_token_ids(self, words: Sequence[str]) -> list[int]:
        """The token id scored for each label word (see the backend's docs for multi-token words)."""
        ...
