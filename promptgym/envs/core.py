"""What every prompt environment shares: task data, the LM, the budget, and batched scoring.

Subclasses define only how an action becomes a prompt (``validate_action`` / ``prompt_of``) and how
an episode advances (``pending_prompt`` / ``advance``). Scoring is always batched: ``score_actions`` scores a
whole population in ONE LM call (charged one API call per prompt), which is what population agents
(BDPL, CMA-ES) and the vector env use. ``step`` is the one-prompt special case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from promptgym.envs.budget import BudgetView, QueryBudget
from promptgym.envs.config import EnvConfig
from promptgym.envs.scoring import Outcome, Scorer, Segments
from promptgym.errors import ConfigError, InvalidActionError
from promptgym.lm import get_lm
from promptgym.lm.base import BlackBoxLM, Prompt, TokenPrompt, as_black_box
from promptgym.tasks import get_task, load_split


class PromptEnvBase(gym.Env):
    """Base class; see :class:`DiscretePromptEnv`, :class:`SubspacePromptEnv`, :class:`TokenwisePromptEnv`.

    The constructor takes the fields of the kind's :attr:`config_class` as keyword arguments
    (``gym.make(ID, budget=1000, reward="hinge")``), or a whole ``config=`` (kwargs then override its
    fields); the config is validated before the data and the model load, so a typo costs nothing.
    ``env.unwrapped.config`` is the config the env was made with. Arguments common to all kinds
    (:class:`promptgym.envs.config.EnvConfig`):

        task: task name ("sst2", ...).
        model: preset name or Hugging Face id, or any object implementing ``BlackBoxLM``, or the URL of a
            served model: ``http://host:port`` (``promptgym serve``) or ``openai+http://host:port`` (vLLM and
            other OpenAI-compatible servers; see ``promptgym.lm.parse_served``).
        api_key: the served model's API key (default ``$PROMPTGYM_API_KEY``). When the server says the
            key has fewer calls left than ``budget``, the budget is capped at them (the server is the
            authority; a call it refuses raises ``BudgetExhausted`` with its message).
        dtype: "bfloat16" (default, fast on CPU) or "float32".
        split_seed: which published 16-shot split (13, 21, 42, 87, 100) to train and validate on.
        budget: API calls for the env's lifetime (default 8,000), or a shared ``QueryBudget``.
        reward: "ce" (default), "hinge", "accuracy" or "label_only" (see ``promptgym.envs.reward``).
        batch_size: None scores all train examples per call; an int scores a random minibatch (BDPL).
        prompt_position: "before" the input (default, as the papers) or "after" it, before the cue.
        template: "auto" (causal or masked by model), or a named template of the task.
        data_dir: local data mirror (default: ``$PROMPTGYM_DATA_DIR``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    #: the env kind: the one source of truth for registration, agent compatibility and leaderboards
    kind: ClassVar[str] = ""
    #: what the kind adds to the env id (``"-Subspace"``), and the id's version (``-v0``)
    id_suffix: ClassVar[str] = ""
    version: ClassVar[int] = 0
    #: the typed dataclass of the kind's arguments (names and defaults of the ``gym.make`` kwargs)
    config_class: ClassVar[type[EnvConfig]] = EnvConfig

    def __init__(self, config: EnvConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        # every argument is checked (by the config) before the data and the model load: a typo costs nothing
        self.config = cfg = self.config_class.build(config, kwargs)
        self.spec_task = get_task(cfg.task)
        self.reward_kind = cfg.reward.value
        self.budget = cfg.budget if isinstance(cfg.budget, QueryBudget) else QueryBudget(cfg.budget)
        self.render_mode = None if cfg.render_mode is None else cfg.render_mode.value
        self.prompt_position = cfg.prompt_position.value
        self.split_seed = cfg.split_seed
        self.data_dir = cfg.data_dir
        self.train = load_split(self.spec_task, "train", self.split_seed, self.data_dir)
        self.dev = load_split(self.spec_task, "dev", self.split_seed, self.data_dir)
        if cfg.batch_size is not None and cfg.batch_size > len(self.train):
            raise ConfigError(f"batch_size must be in 1..{len(self.train)} or None, got {cfg.batch_size}")
        self.batch_size = cfg.batch_size
        model = cfg.model
        self.lm = get_lm(model, cfg.dtype.value, api_key=cfg.api_key) if isinstance(model, str) else as_black_box(model)
        cap_budget(self.budget, self.lm)
        self.model_name = model if isinstance(model, str) else self.lm.name
        kind = cfg.template if cfg.template != "auto" else ("masked" if self.lm.is_masked else "causal")
        self.template = self.spec_task.template(kind)
        #: the one scorer of this env's LM, template, prompt position and reward (the harness reuses it)
        self.scorer = Scorer(self.lm, self.spec_task, self.template, self.prompt_position, self.reward_kind)
        self._splits = {"train": self.train, "dev": self.dev}
        n_labels = self.spec_task.num_labels
        self._last: Outcome | None = None
        self._last_prompt_text = ""
        self._reset_obs_probs = np.full(n_labels, 1.0 / n_labels, dtype=np.float32)
        # called as fn(split, outcomes) after every charged scoring: progress bars and run logs watch
        # the search without the agent's cooperation (:func:`promptgym.callbacks.hooked`); listeners must not score
        self.score_listeners: list[Callable[[str, list[Outcome]], None]] = []

    # ------------------------------------------------------------------ subclass hooks
    def validate_action(self, action: Any) -> Any:
        """Check a full-prompt action (raise InvalidActionError, charge nothing); return it normalised."""
        raise NotImplementedError

    def check_step(self, action: Any) -> Any:
        """Check a ``step`` action; for one-shot envs a step action is a full prompt."""
        return self.validate_action(action)

    def pending_prompt(self, action: Any) -> Prompt | None:
        """The prompt this step must score, or None when the step needs no LM call."""
        raise NotImplementedError

    def advance(self, action: Any, outcome: Outcome | None) -> tuple[Any, float, bool, bool, dict]:
        """Update the episode with a validated action and its scores; return the step tuple."""
        raise NotImplementedError

    def step(self, action: Any):
        checked = self.check_step(action)
        prompt = self.pending_prompt(checked)
        outcome = self._score_prompts([prompt], "train")[0] if prompt is not None else None
        return self.advance(checked, outcome)

    def _prompt_of(self, action: Any) -> Prompt:
        """The LM prompt of an action already validated by ``validate_action``."""
        raise NotImplementedError

    def prompt_of(self, action: Any) -> Prompt:
        """The LM prompt a full-prompt action stands for (validated; nothing is charged)."""
        return self._prompt_of(self.validate_action(action))

    def prompt_text(self, action: Any) -> str:
        """A readable form of the prompt an action stands for."""
        raise NotImplementedError

    def text_prompt(self, text: str) -> TokenPrompt:
        """A text prefix as a prompt the black-box API accepts (its tokens; nothing is charged).

        For prompts outside the action space, such as in-context demonstrations: clients of a
        hosted API tokenize locally with the published tokenizer, as this does.
        """
        return TokenPrompt(tuple(self.lm.encode(text)))

    def segments(self, split: str) -> Segments:
        """The rendered rows ``(left, right)`` of the "train" or "dev" split (the prompt goes between)."""
        _check_split(split)
        return self.scorer.segments(self._splits[split])

    def with_label_bias(self, outcome: Outcome, label_bias: np.ndarray) -> Outcome:
        """``outcome`` re-scored with an additive per-label bias: no LM call, nothing charged."""
        return self.scorer.rebias(outcome, label_bias)

    def record_calls(self, journal: Any) -> None:
        """Journal every charged LM call of this env in ``journal`` (a ``promptgym.journal.CallJournal``),
        replaying the calls it already holds: what makes a killed run resumable."""
        self.scorer.journal = journal

    # ------------------------------------------------------------------ scoring (charged)
    def score_actions(self, actions: Sequence[Any], split: str = "train") -> list[Outcome]:
        """Score full prompts in ONE batched LM call; charges ``len(actions)`` API calls.

        Every action is validated before anything is charged. ``split`` is "train" (the reward
        batch) or "dev" (all dev examples, for choosing a final prompt). The test split is not
        reachable from an environment.
        """
        _check_split(split)
        if len(actions) == 0:
            raise InvalidActionError("score_actions needs at least one action")
        checked = [self.validate_action(a) for a in actions]
        prompts = [self._prompt_of(a) for a in checked]
        return self._score_prompts(prompts, split)

    def score_prompts(self, prompts: Sequence[Prompt], split: str = "train") -> list[Outcome]:
        """Score LM prompts that are *not* actions of this env, charged like ``score_actions``.

        For baselines outside the action space that a black-box API still accepts: the template
        alone (``TokenPrompt(())``, valid for every env kind) or in-context demonstrations
        (``TokenPrompt(lm.encode(text))``). The LM validates the prompts.
        """
        _check_split(split)
        if len(prompts) == 0:
            raise InvalidActionError("score_prompts needs at least one prompt")
        return self._score_prompts(list(prompts), split)

    def evaluate_dev(self, action: Any) -> Outcome:
        """Score one prompt on the dev split (charged one API call)."""
        return self.score_actions([action], split="dev")[0]

    def _score_prompts(self, prompts: Sequence[Prompt], split: str) -> list[Outcome]:
        self.budget.require(len(prompts))
        rows = self._batch_rows(split)
        outcomes = self.scorer.score(prompts, self._splits[split], rows)
        n_tokens = sum(o.num_tokens for o in outcomes)
        self.budget.charge(len(prompts), len(prompts) * len(rows), n_tokens, split)
        for listener in self.score_listeners:
            listener(split, outcomes)
        return outcomes

    def _batch_rows(self, split: str) -> np.ndarray:
        n = len(self._splits[split])
        if split == "dev" or self.batch_size is None or self.batch_size >= n:
            return np.arange(n)
        return np.sort(self.np_random.choice(n, size=self.batch_size, replace=False))

    # ------------------------------------------------------------------ helpers for subclasses
    def _info(self, outcome: Outcome | None) -> dict[str, Any]:
        info: dict[str, Any] = {"budget": BudgetView(self.budget), "reward_kind": self.reward_kind}
        if outcome is not None:
            info.update(accuracy=outcome.accuracy, metric=outcome.metric, metric_name=self.spec_task.metric,
                        label_probs=outcome.label_probs.copy(), prompt_text=self._last_prompt_text)
        return info

    def _stats_obs(self, outcome: Outcome | None) -> np.ndarray:
        if outcome is None:
            return np.concatenate([self._reset_obs_probs, [0.0]]).astype(np.float32)
        return np.concatenate([np.clip(outcome.label_probs, 0, 1), [outcome.accuracy]]).astype(np.float32)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        lines = [f"task {self.spec_task.name} | calls {self.budget.calls}/{self.budget.max_calls}",
                 f"prompt: {self._last_prompt_text!r}"]
        if self._last is not None:
            probs = ", ".join(f"{n}={p:.2f}" for n, p in zip(self.spec_task.labels, self._last.label_probs))
            lines.append(f"reward {self._last.reward:.4f} | accuracy {self._last.accuracy:.3f} | "
                         f"{self.spec_task.metric} {self._last.metric:.3f} | mean probs: {probs}")
        return "\n".join(lines)


def _check_split(split: str) -> None:
    if split not in ("train", "dev"):
        raise InvalidActionError(f"environments score on 'train' or 'dev' only, got {split!r}; the test split is "
                                 "for the evaluation harness")


class OneShotPromptEnv(PromptEnvBase):
    """Each step proposes a whole prompt and is rewarded at once; an episode is ``episode_length`` steps.

    With the default ``episode_length=1`` every step is a complete episode (a contextual bandit whose
    context is the last scores), the form in which BBT/BDPL-style search and SB3 algorithms meet.
    The observation is ``[mean predicted probability of each label, accuracy]`` of the prompt scored
    at the previous step of the episode; at reset it is ``[1/C, ..., 1/C, 0]`` (nothing scored yet).
    It never includes the budget, which outlives episodes (it is in ``info``).
    """

    def __init__(self, config: EnvConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.episode_length = self.steps_per_episode()
        n = self.spec_task.num_labels
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(n + 1,), dtype=np.float32)
        self._t = 0

    def steps_per_episode(self) -> int:
        """The steps of an episode (the config's ``episode_length``)."""
        return int(self.config.episode_length)  # type: ignore[attr-defined]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._last = None
        return self._stats_obs(None), self._info(None)

    def pending_prompt(self, action: Any) -> Prompt:
        return self._prompt_of(action)

    def advance(self, action: Any, outcome: Outcome | None):
        assert outcome is not None
        self._t += 1
        self._last = outcome
        self._last_prompt_text = self.prompt_text(action)
        terminated = self._t >= self.episode_length
        return self._stats_obs(outcome), outcome.reward, terminated, self.budget.exhausted, self._info(outcome)


def cap_budget(budget: QueryBudget, lm: BlackBoxLM) -> None:
    """Cap ``budget`` at the calls a served model's key has left, if the server says fewer remain.

    The server enforces its quota whatever the client does; capping lets agents plan with the calls
    they really have (BBT stops its generations in time, a run spends exactly the quota). A key with
    nothing left is not capped to zero: the first call then gets the server's own message.
    """
    remaining = lm.remaining_calls()
    if remaining is not None and 0 < remaining < budget.remaining:
        budget.max_calls = budget.calls + int(remaining)
