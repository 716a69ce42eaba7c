"""What a task is: labels, verbalizer words, templates, metric.

A template is split in two parts so that a learned prompt can be placed either before the input
(as BBT and BDPL do) or after the input, just before the answer cue:

    position "before":  [prompt] body cue  -> answer
    position "after":   body [prompt] cue  -> answer

For a causal LM the answer is the next token after ``cue``; for a masked LM the cue holds a
``{mask}`` slot and the answer is predicted there. Rendering an example therefore yields a pair
of strings ``(left, right)`` and the prompt (tokens or soft vectors) goes between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from promptgym.errors import ConfigError

PromptPosition = Literal["before", "after"]
PROMPT_POSITIONS: tuple[str, ...] = ("before", "after")


@dataclass(frozen=True)
class Template:
    """A verbalised template.

    ``body`` and ``cue`` may use ``{text}`` and ``{text_pair}``; ``cue`` is the text the answer
    follows (causal LMs) or the text holding ``{mask}`` (masked LMs). Verbalizer words are given without
    their leading space; backends add it where the tokenizer needs one (see ``promptgym.lm``).
    """

    body: str
    cue: str
    verbalizers: tuple[str, ...]

    def render(self, text: str, text_pair: str | None = None, *, position: PromptPosition = "before",
               mask_token: str | None = None) -> tuple[str, str]:
        """Return ``(left, right)``: the prompt is inserted between the two strings."""
        if position not in PROMPT_POSITIONS:
            raise ValueError(f"prompt position must be one of {PROMPT_POSITIONS}, got {position!r}")
        if "{mask}" in self.cue and mask_token is None:
            raise ValueError("this template has a {mask} slot: pass the tokenizer's mask_token")
        # the cue may use {text_pair} too (masked pair templates: " {mask}, {text_pair}")
        fields = {"text": text, "text_pair": text_pair if text_pair is not None else "", "mask": mask_token}
        body = self.body.format(**fields)
        cue = self.cue.format(**fields)
        return ("", body + cue) if position == "before" else (body, cue)


@dataclass(frozen=True)
class HubSource:
    """Where the same task lives on the Hugging Face hub (used only when no data dir is set)."""

    path: str
    name: str | None
    text_field: str
    pair_field: str | None
    train_split: str = "train"
    test_split: str | None = "validation"
    label_map: dict[int, int] | None = None  # hub label id -> our label id, when they differ


@dataclass(frozen=True)
class TaskSpec:
    """Everything that defines one task, independent of any model."""

    name: str
    env_name: str
    labels: tuple[str, ...]
    pair: bool
    metric: str
    causal: Template
    masked: Template
    hub: HubSource
    description: str = ""
    extra_templates: dict[str, Template] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def template(self, kind: str = "causal") -> Template:
        """The template for ``kind`` = "causal", "masked" or one of ``extra_templates``."""
        if kind == "causal":
            return self.causal
        if kind == "masked":
            return self.masked
        if kind in self.extra_templates:
            return self.extra_templates[kind]
        known = ["causal", "masked", *self.extra_templates]
        raise ConfigError(f"task {self.name!r} has no template {kind!r}; known: {known}")
