"""How a scoring request becomes token rows: the one layout every backend scores.

One row per example::

    causal:  [special prefix] left [prompt] right [special suffix]   -> answer = next token after the row
    masked:  [CLS]            left [prompt] right [SEP]              -> answer at the mask inside ``right``

Why a module of its own: the in-process backend and the OpenAI-compatible client (which sends token
rows to an engine such as vLLM) must build *exactly* the same rows, or a prompt tuned through one
would be scored differently by the other. Everything that decides a row lives here: the special
tokens, where the prompt sits, how a long example is cut to ``max_length``, where the answer is read,
and which token of a label word is scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from promptgym.errors import InvalidPromptError, InvalidRequestError
from promptgym.lm.base import ScoreRequest, ScoreResult, SoftPrompt, TokenPrompt

Encode = Callable[[str], tuple[int, ...]]


class Row(NamedTuple):
    """One example's input: token ids, where the prompt starts, its soft vectors, the answer column.

    For a soft prompt the prompt positions of ``ids`` hold the pad id; a backend overwrites them in
    embedding space with ``soft`` (shape ``(len(prompt), embedding_dim)``).
    """

    ids: tuple[int, ...]
    soft_start: int
    soft: np.ndarray | None
    answer: int


def special_tokens(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The special ids a tokenizer puts before and after a text (e.g. ``<s>`` ... ``</s>``)."""
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("x")["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return tuple(full[:i]), tuple(full[i + len(plain):])
    return (), ()


def pad_token_id(tokenizer) -> int:
    """The id that fills padding and soft-prompt positions: pad, else eos, else unk, else 0."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def label_token_ids(words: Sequence[str], encode: Encode) -> list[int]:
    """The token scored for each label word: the first token of ``" " + word``.

    Multi-token words are scored by their first token (BBT/LM-BFF-style verbalizers); two words with
    the same first token are refused, since they could not be told apart.
    """
    if not words:
        raise InvalidRequestError("at least one label word is needed")
    ids = []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise InvalidRequestError(f"label words must be non-empty strings, got {w!r} in {list(words)}")
        toks = encode(" " + w.strip())
        if not toks:
            raise InvalidRequestError(f"label word {w!r} has no tokens")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise InvalidRequestError(f"label words {list(words)} share a first token; choose distinct words")
    return ids


def check_token_ids(ids: tuple[int, ...], vocab_size: int) -> tuple[int, ...]:
    """``ids`` if every id lies in ``[0, vocab_size)``, else an InvalidPromptError."""
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise InvalidPromptError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab_size})")
    return ids


def check_prompt(prompt: object, vocab_size: int, embedding_dim: int) -> None:
    """Refuse a prompt the model cannot take: ids outside the vocabulary, wrong shape, NaN/inf."""
    if isinstance(prompt, TokenPrompt):
        check_token_ids(tuple(prompt.ids), vocab_size)
    elif isinstance(prompt, SoftPrompt):
        e = np.asarray(prompt.embeds)
        if e.ndim != 2 or e.shape[1] != embedding_dim:
            raise InvalidPromptError(f"soft prompt must have shape (length, {embedding_dim}), got {tuple(e.shape)}")
        if not np.all(np.isfinite(e)):
            raise InvalidPromptError("soft prompt contains NaN or inf values")
    else:
        raise InvalidPromptError(f"prompt must be a TokenPrompt or SoftPrompt, got {type(prompt).__name__}")


@dataclass(frozen=True)
class RowLayout:
    """Everything about a model that decides its rows (see the module docstring).

    :param prefix: special ids before every row; ``suffix``: after it
    :param pad_id: the id at soft-prompt positions (and in padding)
    :param max_length: longest row in tokens; longer examples are cut (:meth:`fit`)
    :param vocab_size: token ids must lie in ``[0, vocab_size)``
    :param embedding_dim: a soft prompt's width
    :param is_masked: masked LM (answer at the mask) or causal (answer after the last token)
    :param mask_id: the mask token's id (masked LMs)
    """

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    max_length: int
    vocab_size: int
    embedding_dim: int
    is_masked: bool = False
    mask_id: int | None = None

    @classmethod
    def for_tokenizer(cls, tokenizer, *, max_length: int, vocab_size: int, embedding_dim: int,
                      is_masked: bool) -> RowLayout:
        """The layout of a model with this tokenizer (special tokens, pad and mask ids read from it)."""
        prefix, suffix = special_tokens(tokenizer)
        mask_id = getattr(tokenizer, "mask_token_id", None) if is_masked else None
        if is_masked and mask_id is None:
            raise InvalidRequestError("a masked LM needs a tokenizer with a mask token")
        return cls(prefix, suffix, pad_token_id(tokenizer), int(max_length), int(vocab_size), int(embedding_dim),
                   bool(is_masked), mask_id)

    def check_ids(self, ids: tuple[int, ...]) -> tuple[int, ...]:
        return check_token_ids(ids, self.vocab_size)

    def check_prompt(self, prompt: object) -> None:
        check_prompt(prompt, self.vocab_size, self.embedding_dim)

    def fit(self, l_ids: tuple[int, ...], r_ids: tuple[int, ...], n_prompt: int) -> tuple[tuple[int, ...], ...]:
        """Cut tokens from the start of the longer segment until the row fits ``max_length``."""
        budget = self.max_length - len(self.prefix) - len(self.suffix) - n_prompt
        if budget < 2:
            raise InvalidPromptError(f"prompt of {n_prompt} tokens leaves no room within {self.max_length}")
        excess = len(l_ids) + len(r_ids) - budget
        if excess <= 0:
            return l_ids, r_ids
        if len(l_ids) >= len(r_ids):
            return l_ids[excess:], r_ids
        return l_ids, r_ids[excess:]

    def build(self, requests: Sequence[ScoreRequest],
              encode: Encode) -> tuple[list[Row], list[list[int]], list[list[int]]]:
        """``(rows, owners, label_ids)`` of ``requests``: ``owners[r]`` lists request r's rows.

        Everything is validated first (nothing runs on a bad request), then the rows are laid out.
        """
        label_ids = []
        for req in requests:
            if not req.segments:
                raise InvalidRequestError("a request needs at least one example")
            self.check_prompt(req.prompt)
            label_ids.append(label_token_ids(req.label_words, encode))
        rows: list[Row] = []
        owners = []
        for req in requests:
            mine = []
            soft = req.prompt.embeds if isinstance(req.prompt, SoftPrompt) else None
            p_ids = (self.pad_id,) * len(req.prompt) if soft is not None else tuple(req.prompt.ids)
            for left, right in req.segments:
                l_ids, r_ids = self.fit(encode(left), encode(right), len(p_ids))
                ids = self.prefix + l_ids + p_ids + r_ids + self.suffix
                if not ids:
                    raise InvalidRequestError("an example renders to zero tokens (empty segments and no prompt)")
                soft_start = len(self.prefix) + len(l_ids)
                if self.is_masked:
                    pos = [i for i, t in enumerate(r_ids) if t == self.mask_id]
                    if not pos:
                        raise InvalidRequestError("masked LM: the rendered example has no mask token in its cue")
                    answer = soft_start + len(p_ids) + pos[-1]
                else:
                    answer = len(ids) - 1
                mine.append(len(rows))
                rows.append(Row(ids, soft_start, soft, answer))
            owners.append(mine)
        return rows, owners, label_ids


def label_result(lp: np.ndarray, label_only: bool, num_tokens: int) -> ScoreResult:
    """The result of one request from its label-word log-probs ``lp`` (rows x labels, full vocabulary).

    Predictions are the argmax label; ``label_logprobs`` renormalise over the labels. A ``label_only``
    request gets the predictions alone.
    """
    lp = np.asarray(lp, dtype=np.float32)
    preds = np.argmax(lp, axis=1)
    if label_only:
        return ScoreResult(predictions=preds, num_tokens=num_tokens)
    m = np.max(lp, axis=1, keepdims=True)
    norm = lp - (m + np.log(np.sum(np.exp(lp - m), axis=1, keepdims=True)))
    return ScoreResult(predictions=preds, logprobs=lp, label_logprobs=norm, num_tokens=num_tokens)


__all__ = ["Row", "RowLayout", "check_prompt", "check_token_ids", "label_result", "label_token_ids",
           "pad_token_id", "special_tokens"]
