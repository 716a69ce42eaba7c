"""Experiment tracking: a run's curves in TensorBoard, indexed by API calls.

The tracker listens to the env's charged scorings, as the progress bar does, so it follows any
agent (built-in or a user's own) without its cooperation. Every point is logged at step = API calls
used so far, not wall time: calls are the unit budgets, tiers and the papers' curves are in, and
wall time differs threefold between our two kinds of hosts. Logged:

* ``train/best_reward`` (best so far), ``train/batch_best_reward``, ``dev/best_metric``, ``dev/metric``;
* ``budget/remaining_calls``, ``speed/calls_per_s`` (over the run so far), ``speed/tokens_per_call``;
* ``prompt/best_train`` and ``prompt/best_dev`` (text, each time the best changes): the prompt's text for
  token prompts, its size and norm for soft prompts;
* at the end, ``final/dev_metric`` and (``promptgym evaluate``) ``test/<metric>``, ``test/ece``.

An agent may add its own statistics into the same run by defining ``use_tracking(logdir)``: SB3
agents send SB3's logger (losses, entropy, ...) there, indexed by SB3's timesteps (one per prompt
scored). A resumed run (:mod:`promptgym.journal`) replays its calls through the callback, so the
writer first purges the killed attempt's events and the curves come out once, as uninterrupted.
W&B is not wrapped: ``wandb sync --sync-tensorboard <logdir>`` imports these event files as they are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptgym.callbacks import Callback
from promptgym.envs.scoring import Outcome
from promptgym.errors import ConfigError
from promptgym.lm.base import Prompt, SoftPrompt

#: the values of ``--log``
TRACKERS = ("tensorboard",)
#: the folder of a run's TensorBoard events, inside its run or work folder
TENSORBOARD_DIR = "tensorboard"
#: per split: the Outcome field tracked, the batch-best and best-so-far scalar tags, the text label
_SPLIT_TAGS = {"train": ("reward", "train/batch_best_reward", "train/best_reward", "train reward"),
               "dev": ("metric", "dev/metric", "dev/best_metric", "dev metric")}


def check_tracker(name: str | None) -> None:
    """Refuse an unknown ``--log`` value, and ``tensorboard`` when the package is missing, before any model loads."""
    if name is None:
        return
    if name not in TRACKERS:
        raise ConfigError(f"unknown tracker {name!r}; trackers: {', '.join(TRACKERS)}")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("--log tensorboard needs the tensorboard package: "
                          "pip install 'promptgym[tracking]'") from None


def prompt_text(base: Any, prompt: Prompt | None) -> str:
    """What a tracked prompt looks like to a reader."""
    if prompt is None:
        return "-"
    if isinstance(prompt, SoftPrompt):
        e = np.asarray(prompt.embeds, dtype=np.float64)
        return f"soft prompt: {e.shape[0]} vectors x {e.shape[1]}, mean L2 norm {np.linalg.norm(e, axis=1).mean():.3f}"
    return repr(base.lm.decode(list(prompt.ids)))


def log_values(logdir: str | Path, values: dict[str, float | None], step: int) -> None:
    """Add end-of-run values (e.g. ``test/accuracy``) to a run's events after its tracker closed."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(logdir)) as writer:
        for key, value in values.items():
            if value is not None and math.isfinite(float(value)):
                writer.add_scalar(key, float(value), int(step))


class TensorBoardTracker(Callback):
    """Writes a run's curves to ``logdir`` (see the module docstring): a callback
    (``agent.learn(env, callback=tracker)``, or :func:`promptgym.callbacks.hooked`); its end closes the events file.

    :param base: the unwrapped env
    :param logdir: the run's event folder (created)
    :param description: shown as the run's ``config`` text (env, agent, config, budget, seeds)
    :param replaying: whether calls are being answered from a journal (a resumed run): calls/s is then
        measured from the first live call, not inflated by the replay
    """

    def __init__(self, base: Any, logdir: str | Path, description: dict[str, Any] | None = None,
                 replaying: Callable[[], bool] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.base = base
        self.logdir = Path(logdir)
        # purge_step=0: a resumed run re-logs its replayed calls; the killed attempt's events are hidden
        self.writer = SummaryWriter(log_dir=str(self.logdir), purge_step=0)
        self.best = {"train": -math.inf, "dev": -math.inf}  # best so far per split
        self.started = time.monotonic()
        self.calls_at_start = base.budget.calls
        self.replaying = replaying
        self.live = replaying is None or not replaying()
        if description:
            lines = "\n".join(f"* **{k}**: `{v}`" for k, v in description.items())
            self.writer.add_text("config", lines, 0)

    def on_call(self, split: str, outcomes: Sequence[Outcome]) -> None:
        step = int(self.base.budget.calls)
        w = self.writer
        split = "train" if split == "train" else "dev"
        field, batch_tag, best_tag, label = _SPLIT_TAGS[split]
        values = [getattr(o, field) for o in outcomes]
        i = int(np.argmax(values))
        w.add_scalar(batch_tag, values[i], step)
        if values[i] > self.best[split]:
            self.best[split] = values[i]
            w.add_text(f"prompt/best_{split}", f"{prompt_text(self.base, outcomes[i].prompt)} "
                       f"({label} {values[i]:.4f})", step)
        w.add_scalar(best_tag, self.best[split], step)
        w.add_scalar("budget/remaining_calls", self.base.budget.remaining, step)
        if not self.live and self.replaying is not None and not self.replaying():
            self.live = True  # the replay is over: time the live calls from here
            self.started, self.calls_at_start = time.monotonic(), step
        seconds = time.monotonic() - self.started
        if self.live and seconds > 0 and step > self.calls_at_start:
            w.add_scalar("speed/calls_per_s", (step - self.calls_at_start) / seconds, step)
        w.add_scalar("speed/tokens_per_call", float(np.mean([o.num_tokens for o in outcomes])), step)

    def on_learn_end(self) -> None:
        self.writer.close()
