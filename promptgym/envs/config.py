"""Env configs: one typed dataclass per env kind, validated when built, before any data or model loads.

``gym.make(ID, **kwargs)`` passes its kwargs to the kind's config (:attr:`PromptEnvBase.config_class
<promptgym.envs.core.PromptEnvBase>`): the kwarg names and defaults are the fields', the same since
v0, so every recorded run's ``env_kwargs`` still builds the same env. A field of the wrong type, a
choice outside its ``str`` enum or an unknown kwarg is refused in one line naming it (a
:class:`~promptgym.errors.ConfigError`, as agent configs refuse theirs). The CLI's
``--env-kwarg KEY=VALUE`` is typed by the same fields (``promptgym list envs`` prints them).

The env keeps plain strings for the choices (``env.reward_kind == "ce"``), as run records store them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from promptgym.envs.budget import DEFAULT_BUDGET, QueryBudget
from promptgym.errors import ConfigError, UnknownSeedError
from promptgym.lm import DEFAULT_MODEL, is_served, parse_served
from promptgym.lm.transport import resolve_api_key
from promptgym.tasks import get_task
from promptgym.tasks.data import SEEDS
from promptgym.tasks.spec import TaskSpec
from promptgym.typed_config import TypedConfig, field_names, parse_field, require


# ---------------------------------------------------------------------------------------------- choices
class DType(StrEnum):
    """Precision of an in-process model's forward passes."""

    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class RewardKind(StrEnum):
    """How label scores become a reward (``promptgym.envs.reward`` defines each)."""

    CE = "ce"
    HINGE = "hinge"
    ACCURACY = "accuracy"
    LABEL_ONLY = "label_only"


class PromptPosition(StrEnum):
    """Where the learned prompt goes: before the input (as the papers) or after it, before the cue."""

    BEFORE = "before"
    AFTER = "after"


class RenderMode(StrEnum):
    """Gymnasium render modes the envs support."""

    ANSI = "ansi"


class VocabMethod(StrEnum):
    """How the candidate list of discrete and tokenwise envs is ranked (``promptgym.envs.vocab``)."""

    PMI = "pmi"
    FREQUENCY = "frequency"


class Projection(StrEnum):
    """The distribution of the subspace env's random projection ``A``."""

    NORMAL = "normal"
    UNIFORM = "uniform"


class Init(StrEnum):
    """The subspace env's ``p0``: embeddings of real candidate words, or zeros."""

    WORDS = "words"
    ZEROS = "zeros"


# ---------------------------------------------------------------------------------------------- configs
@dataclass
class EnvConfig(TypedConfig):
    """The arguments every env kind takes (see :class:`promptgym.envs.core.PromptEnvBase`)."""

    task: str | TaskSpec = "sst2"  # task name or env name ("sst2", "SST2"); an env id sets it
    model: Any = DEFAULT_MODEL  # preset, Hugging Face id, served model URL (http://host:port), or a BlackBoxLM
    dtype: DType = DType.BFLOAT16  # precision of an in-process model
    split_seed: int = 13  # the published 16-shot split to train and validate on: 13, 21, 42, 87 or 100
    budget: int | QueryBudget = DEFAULT_BUDGET  # API calls for the env's lifetime, or a shared QueryBudget
    reward: RewardKind = RewardKind.CE  # reward of a prompt's label scores on the train batch
    batch_size: int | None = None  # None: every train example per call; n: a random minibatch of n (BDPL)
    prompt_position: PromptPosition = PromptPosition.BEFORE  # the prompt goes before the input or after it
    template: str = "auto"  # "auto" (causal or masked, by model) or a named template of the task
    data_dir: str | os.PathLike | None = None  # local data mirror (None: $PROMPTGYM_DATA_DIR, else the hub)
    render_mode: RenderMode | None = None  # "ansi" renders text; None renders nothing
    api_key: str | None = field(default=None, repr=False)  # a served model's key (None: $PROMPTGYM_API_KEY)

    def validate(self) -> None:
        spec = get_task(self.task)  # an unknown task raises UnknownTaskError
        if self.split_seed not in SEEDS:
            raise UnknownSeedError(f"split_seed must be one of the published 16-shot splits {SEEDS}, "
                                   f"got {self.split_seed!r}")
        if isinstance(self.budget, int):
            require(self.budget >= 1, f"budget must be at least 1 API call, got {self.budget!r}")
        require(self.batch_size is None or self.batch_size >= 1,
                f"batch_size must be a positive whole number or None, got {self.batch_size!r}")
        if self.template != "auto":
            spec.template(self.template)  # an unknown template name raises here
        if isinstance(self.model, str) and is_served(self.model):
            # a malformed URL or option, or a missing key, is refused before any connection
            resolve_api_key(self.api_key, required=parse_served(self.model)[0] == "native")
        elif self.api_key is not None:
            raise ConfigError("api_key is for a served model (model='http://host:port'), got model "
                              f"{self.model if isinstance(self.model, str) else type(self.model).__name__!r}")

    @classmethod
    def build(cls, config: EnvConfig | None = None, kwargs: dict[str, Any] | None = None) -> EnvConfig:
        """The config an env of this kind is made with: ``config`` (if given) updated by ``kwargs``, validated.

        Through ``gym.make(ID, config=...)`` the id's ``task`` is one of the kwargs, so the id's task wins.
        """
        kwargs = dict(kwargs or {})
        unknown = [k for k in kwargs if k not in field_names(cls)]
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; "
                              f"its fields: {', '.join(field_names(cls))}")
        if config is None:
            return cls(**kwargs)
        if not isinstance(config, cls):
            raise ConfigError(f"this env kind takes a {cls.__name__}, got {type(config).__name__}")
        return dataclasses.replace(config, **kwargs) if kwargs else config

    @classmethod
    def kwarg_names(cls) -> list[str]:
        """The fields a caller sets for an env id (all but ``task``, which the id sets)."""
        return [name for name in field_names(cls) if name != "task"]

    @classmethod
    def parse(cls, name: str, text: str) -> Any:
        """A command-line value of field ``name``, typed by the field (a choice stays plain text)."""
        return parse_field(cls, name, text)


@dataclass
class CandidateConfig(EnvConfig):
    """What the two kinds over the candidate list share (discrete, tokenwise)."""

    prompt_length: int = 10  # L: candidates per prompt
    num_candidates: int = 200  # K: size of the candidate list
    vocab_method: VocabMethod = VocabMethod.PMI  # how the candidate n-grams are ranked

    def validate(self) -> None:
        super().validate()
        require(self.prompt_length >= 1, f"prompt_length must be >= 1, got {self.prompt_length!r}")
        require(self.num_candidates >= 1, f"num_candidates must be >= 1, got {self.num_candidates!r}")


@dataclass
class DiscreteConfig(CandidateConfig):
    """The discrete kind (``Prompt<Task>-v0``): one whole prompt per step."""

    episode_length: int = 1  # steps per episode (1: every step is an episode)

    def validate(self) -> None:
        super().validate()
        require(self.episode_length >= 1, f"episode_length must be >= 1, got {self.episode_length!r}")


@dataclass
class TokenwiseConfig(CandidateConfig):
    """The tokenwise kind (``Prompt<Task>-Tokenwise-v0``): an episode is ``prompt_length`` steps."""


@dataclass
class SubspaceConfig(EnvConfig):
    """The subspace kind (``Prompt<Task>-Subspace-v0``): a soft prompt ``A z + p0``."""

    intrinsic_dim: int = 500  # d: size of the action vector z
    prompt_length: int = 10  # soft prompt vectors
    projection: Projection = Projection.NORMAL  # distribution of the random projection A
    init: Init = Init.WORDS  # p0: embeddings of real candidate words, or zeros
    bound: float = 5.0  # actions lie in [-bound, bound]^d
    projection_seed: int | None = None  # seed of A and p0 (None: the split seed)
    episode_length: int = 1  # steps per episode (1: every step is an episode)

    def validate(self) -> None:
        super().validate()
        require(self.intrinsic_dim >= 1, f"intrinsic_dim must be >= 1, got {self.intrinsic_dim!r}")
        require(self.prompt_length >= 1, f"prompt_length must be >= 1, got {self.prompt_length!r}")
        require(self.bound > 0, f"bound must be a finite number > 0, got {self.bound!r}")
        require(self.projection_seed is None or self.projection_seed >= 0,
                f"projection_seed must be >= 0 or None, got {self.projection_seed!r}")
        require(self.episode_length >= 1, f"episode_length must be >= 1, got {self.episode_length!r}")


__all__ = ["CandidateConfig", "DType", "DiscreteConfig", "EnvConfig", "Init", "Projection", "PromptPosition",
           "RenderMode", "RewardKind", "SubspaceConfig", "TokenwiseConfig", "VocabMethod"]
