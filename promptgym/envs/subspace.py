"""The BBT setting: a continuous prompt in a random low-dimensional subspace."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from promptgym.envs.config import EnvConfig, Init, Projection, SubspaceConfig
from promptgym.envs.core import OneShotPromptEnv
from promptgym.errors import InvalidActionError
from promptgym.lm.base import SoftPrompt
from promptgym.typed_config import choices

PROJECTIONS: tuple[str, ...] = choices(Projection)
INITS: tuple[str, ...] = choices(Init)


class SubspacePromptEnv(OneShotPromptEnv):
    """Soft prompt ``p = A z + p0`` with ``z`` in a random subspace (BBT, Sun et al. 2022).

    ## Action Space
    ``Box(-bound, bound, (d,))``: the subspace vector ``z``. The soft prompt of ``prompt_length`` x
    ``embedding_dim`` is ``reshape(A @ z) + p0`` and goes in through the input embeddings.

    * ``A`` is drawn once from ``projection_seed`` (default: the split seed). ``projection="normal"``
      follows BBT's code: ``A_ij ~ N(0, s^2)`` with ``s = std_emb / sqrt(d)``, where ``std_emb`` is
      the standard deviation of the LM's word embeddings, so that ``z ~ N(0, I)`` moves each prompt
      entry by about one embedding standard deviation. ``"uniform"`` draws from ``U(-a, a)`` with the
      same variance.
    * ``p0``: ``"words"`` (default) are the embeddings of ``prompt_length`` tokens drawn (seeded) from
      the single-token words of the task's candidate list, i.e. a real-word prompt that ``z = 0``
      reproduces; ``"zeros"`` starts from zero vectors.
    * ``bound`` (default 5) is wide enough that CMA-ES with BBT's ``sigma0 = 1`` rarely touches it.
      Actions outside the box, of the wrong shape or with NaN/inf raise ``InvalidActionError`` and
      charge nothing.

    The arguments are the fields of :class:`promptgym.envs.config.SubspaceConfig`. Defaults are
    d = 500 (as BBT) and prompt length 10 (BBT used 50 with RoBERTa-large on GPUs; on a 2-core CPU
    with a 135M model a 50-vector prompt more than doubles every call's cost).

    ## Observation Space, Rewards, Episode End
    As :class:`promptgym.envs.discrete.DiscretePromptEnv`.

    ## Example
    >>> import gymnasium as gym, numpy as np, promptgym
    >>> env = gym.make("PromptSST2-Subspace-v0", budget=100)
    >>> env.action_space
    Box(-5.0, 5.0, (500,), float32)
    >>> obs, info = env.reset(seed=13)
    >>> outcomes = env.unwrapped.score_actions([np.zeros(500, np.float32)] * 4)  # one batched LM call
    >>> len(outcomes), env.unwrapped.budget.calls
    (4, 4)

    ## Version History
    * v0: initial version (d = 500, 10 vectors, normal projection scaled by the embedding std,
      p0 = embeddings of seeded candidate words).
    """

    kind = "subspace"
    id_suffix = "-Subspace"
    version = 0

    config_class: ClassVar[type[EnvConfig]] = SubspaceConfig
    config: SubspaceConfig

    def __init__(self, config: SubspaceConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.intrinsic_dim = cfg.intrinsic_dim
        self.prompt_length = cfg.prompt_length
        self.bound = cfg.bound
        self.projection_seed = self.split_seed if cfg.projection_seed is None else cfg.projection_seed
        projection, init = cfg.projection.value, cfg.init.value
        self.projection_kind, self.init = projection, init
        rng = np.random.default_rng(self.projection_seed)
        e = self.lm.embedding_dim
        _, std_emb = self.lm.embedding_stats()
        s = std_emb / np.sqrt(self.intrinsic_dim)
        shape = (self.prompt_length * e, self.intrinsic_dim)
        if projection == "normal":
            self.A = rng.normal(0.0, s, size=shape).astype(np.float32)
        else:
            a = s * np.sqrt(3.0)
            self.A = rng.uniform(-a, a, size=shape).astype(np.float32)
        if init == "words":
            from promptgym.envs.vocab import build_candidates

            cands = build_candidates(self.spec_task, self.lm.encode, k=200, seed=self.split_seed,
                                     data_dir=self.data_dir)
            words = sorted({t[0] for t in cands.token_ids if len(t) == 1}) or [t[0] for t in cands.token_ids]
            ids = [words[i] for i in rng.choice(len(words), size=self.prompt_length, replace=True)]
            self.p0 = self.lm.embed_tokens(ids).astype(np.float32)
            self.p0_text = self.lm.decode(ids)
        else:
            self.p0 = np.zeros((self.prompt_length, e), dtype=np.float32)
            self.p0_text = ""
        self.action_space = gym.spaces.Box(-self.bound, self.bound, shape=(self.intrinsic_dim,), dtype=np.float32)

    def validate_action(self, action: Any) -> np.ndarray:
        try:
            z = np.asarray(action, dtype=np.float64)
        except Exception as exc:
            raise InvalidActionError(f"action must be a vector of {self.intrinsic_dim} floats: {exc}") from None
        if z.shape != (self.intrinsic_dim,):
            raise InvalidActionError(f"action must have shape ({self.intrinsic_dim},), got {z.shape}")
        if not np.all(np.isfinite(z)):
            raise InvalidActionError("action contains NaN or inf")
        if np.any(np.abs(z) > self.bound * (1 + 1e-6)):
            raise InvalidActionError(f"action entries must lie in [-{self.bound}, {self.bound}] (max |z| = "
                                     f"{np.abs(z).max():.3g}); clip it or rescale")
        return z.astype(np.float32)

    def soft_prompt(self, z: np.ndarray) -> np.ndarray:
        """The (prompt_length, embedding_dim) soft prompt for subspace vector ``z``."""
        return (self.A @ z).reshape(self.prompt_length, -1) + self.p0

    def _prompt_of(self, action: np.ndarray) -> SoftPrompt:
        return SoftPrompt(self.soft_prompt(action))

    def prompt_text(self, action: Any) -> str:
        z = self.validate_action(action)
        return f"<soft prompt: {self.prompt_length} vectors, |z|={np.linalg.norm(z):.2f}, p0={self.p0_text!r}>"
