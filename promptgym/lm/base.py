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

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from promptgym.errors import ConfigError, IncompatibleAgentError


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


class BlackBoxLM(abc.ABC):
    """What environments and agents may know about a frozen LM: subclass it to plug in a backend.

    A backend sets the required attributes (``name``, ``tokenizer``, ``vocab_size``, ``embedding_dim``,
    ``is_masked``; ``batch_calls`` counts its ``score()`` invocations) and implements the abstract
    methods. The optional capabilities below have defaults, so callers read them as plain attributes
    and a backend overrides only what it has (a served model its quota, an in-process one its
    white-box entry). An object of another class is accepted where a backend is expected only if it
    has every member, optional ones included (:func:`as_black_box`), e.g. a wrapper that delegates
    attribute access to a backend.
    """

    name: str
    tokenizer: Any
    vocab_size: int
    embedding_dim: int
    is_masked: bool
    batch_calls: int  # number of score() invocations so far (batched LM calls)

    # ------------------------------------------------------------------ optional capabilities
    #: sha256 of the weights ("": the backend does not say; leaderboard entries need it)
    weights_sha256: str = ""
    #: the tokenizer's mask token of a masked LM (templates put it in the cue); None for causal LMs
    mask_token: str | None = None
    #: the precision the model runs in (a torch dtype in process, its name over HTTP)
    dtype: Any = "unknown"
    #: most token positions of one row (what a server's completions endpoint accepts)
    max_length: int = 1024
    #: True when scores are not exact (e.g. rebuilt from top-k log-probs); ``promptgym submit`` refuses them
    approximate: bool = False
    #: called before every forward pass by backends that support it; whatever it raises stops the call
    #: (a server stops the work of a request whose client gave up); a backend may ignore it
    interrupt: Callable[[], None] | None = None
    #: whether :meth:`white_box` gives the model for back-propagation (in-process transformers models only)
    supports_white_box: bool = False

    @abc.abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request in one batched computation (chunked internally)."""

    @abc.abstractmethod
    def embedding_stats(self) -> tuple[float, float]:
        """Mean and standard deviation over all entries of the input word-embedding matrix."""

    @abc.abstractmethod
    def embed_tokens(self, ids: Sequence[int]) -> np.ndarray:
        """Input embeddings of token ids, shape (len(ids), embedding_dim)."""

    @abc.abstractmethod
    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of ``text`` without special tokens."""

    @abc.abstractmethod
    def label_token_ids(self, words: Sequence[str]) -> list[int]:
        """The token id scored for each label word (see the backend's docs for multi-token words)."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids: the tokenizer's ``decode`` if it has one, else the ids written out."""
        decode = getattr(self.tokenizer, "decode", None)
        return str(decode(list(ids))) if callable(decode) else f"token ids {list(ids)}"

    def remaining_calls(self) -> int | None:
        """Calls the backend will still answer (a served model's key quota); None: no limit known."""
        return None

    def remember(self, requests: Sequence[ScoreRequest], results: Sequence[ScoreResult]) -> None:
        """Take ``results``, obtained without this backend (a resumed run's call journal replays them), as its
        answers to ``requests``: a backend with a memo answers a later identical request from them instead of
        computing it again. The default keeps nothing."""
        return None

    def white_box(self, dtype: str | None = None) -> Any:
        """The model itself for back-propagation (white-box reference agents only); a black box has none.
        ``dtype`` ("float32"/"bfloat16"; None: the model's own) asks for the same weights in that precision."""
        raise IncompatibleAgentError(f"{type(self).__name__} is a black box: back-propagation needs an in-process "
                                     "transformers model")


#: what :func:`as_black_box` looks for on an object that does not subclass :class:`BlackBoxLM`
MEMBERS = ("name", "tokenizer", "vocab_size", "embedding_dim", "is_masked", "batch_calls", "score", "embedding_stats",
           "embed_tokens", "encode", "label_token_ids", "weights_sha256", "mask_token", "dtype", "max_length",
           "approximate", "interrupt", "supports_white_box", "decode", "remaining_calls", "remember", "white_box")


def as_black_box(model: object) -> BlackBoxLM:
    """``model`` as a backend: a :class:`BlackBoxLM` instance, or an object that has all of :data:`MEMBERS`
    (a wrapper delegating to a backend); anything else is a ConfigError naming what is missing.

    One check where a model object comes in, instead of probes with ``getattr`` wherever an optional
    capability is read.
    """
    if isinstance(model, BlackBoxLM):
        return model
    missing = [m for m in MEMBERS if not hasattr(model, m)]
    if missing:
        raise ConfigError(f"model {type(model).__name__} is not a promptgym.lm.BlackBoxLM: subclass it (it gives "
                          f"the optional capabilities defaults); missing {', '.join(missing)}")
    return model  # type: ignore[return-value]  # has every member: used as one
