"""WHITE-BOX reference: soft prompt tuning by back-propagation (Lester et al., 2021).

**Not a black-box agent.** It is the gradient-based reference that black-box methods are measured
against (BBT reports it at 68.2 on SST-2 with 16 shots): how far could the same prompt go with the
gradients an API never gives? It is the only agent that uses the backend's white-box entry
(``LocalLM.white_box()``: the weights and a differentiable forward), so it only runs on in-process
transformers models, never through an API; the registry marks it ``white_box`` so that tables and
leaderboards set it apart.

What it does: ``prompt_length`` vectors (the subspace env's length, else the discrete env's number
of positions, else 10) start from the env's own starting point (a subspace env's ``p0``; for
discrete envs the word embeddings of the first candidates) and are trained with Adam on the
cross-entropy of the gold label word, the softmax taken over the label words at the answer position
(the env's "ce" reward), in minibatches over the train rows for ``epochs`` epochs. The model runs in
fp32 (a bf16 env's model is loaded once more in fp32: bf16 gradients of a 135M model are too coarse
for small steps). After every epoch the prompt is scored on dev; the best dev prompt is returned
(ties: lower dev cross-entropy); ``Result.train_reward`` is minus the mean train cross-entropy over
that epoch's minibatches.

Costs are its own, not API calls: the env budget is untouched, ``Result.curve_unit`` is "passes"
(its curves count forward + backward passes, one pass = one chunk of rows), and ``Result.extra``
counts forward and backward passes and examples. The learned prompt is ``Result.soft_prompt`` (a
``(length, embedding_dim)`` float32 array); ``Result.action`` is None because the prompt is not a
point of any subspace.

Learning rate: SmolLM2's word embeddings have entry std ~0.14 (vector norm ~3.2), far smaller than
T5's, so Lester et al.'s 0.3 would move every entry by two standard deviations per step. A quick check
on SST-2 (split 13, subspace env's p0, 3 epochs, batch 8): lr 0.01 took train CE 0.91 -> 0.49 and dev
accuracy 0.56 -> 0.59-0.62; lr 0.1 took train CE 0.82 -> 0.57 and dev 0.56 -> 0.63-0.66. Both learn;
0.01 is the default because it fits steadily without overshooting on 32 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import gymnasium as gym
import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, Result, config_dict, require
from promptgym.errors import IncompatibleAgentError
from promptgym.metrics import compute_metric
from promptgym.task_view import WhiteBoxTask

DEFAULT_LENGTH = 10


@dataclass
class PromptTuningConfig(AgentConfig):
    prompt_length: int | None = None   # None: the env's prompt_length (10 if it has none)
    lr: float = 0.01                   # Adam; see the module docstring
    epochs: int = 10                   # passes over the train rows; dev is checked after each
    batch_size: int = 8                # train rows per step
    seed: int = 0                      # seeds the env reset, torch and the minibatch order

    def validate(self) -> None:
        require(self.prompt_length is None or self.prompt_length >= 1,
                f"PromptTuningConfig.prompt_length must be >= 1 or None, got {self.prompt_length}")
        require(self.lr > 0, f"PromptTuningConfig.lr must be > 0, got {self.lr}")
        require(self.epochs >= 1, f"PromptTuningConfig.epochs must be >= 1, got {self.epochs}")
        require(self.batch_size >= 1, f"PromptTuningConfig.batch_size must be >= 1, got {self.batch_size}")
        require(self.seed >= 0, f"PromptTuningConfig.seed must be >= 0, got {self.seed}")


def fp32_white_box(base: WhiteBoxTask) -> Any:
    """The white-box entry of the env's model in fp32 (the same weights, loaded once more if the
    env runs bf16: bf16 gradients are too coarse for small steps)."""
    lm = base.lm
    if not lm.supports_white_box:
        raise IncompatibleAgentError("prompt tuning back-propagates through the model: it needs an in-process "
                                     f"transformers model, not {type(lm).__name__}")
    return lm.white_box("float32")


def initial_prompt(base: WhiteBoxTask, length: int) -> tuple[np.ndarray, str]:
    """The env's own starting point: ``p0`` of a subspace env, else embeddings of its first candidates."""
    lm = base.lm
    if base.kind == "subspace" and len(base.p0) == length:
        return np.asarray(base.p0, dtype=np.float32), base.p0_text
    cands = getattr(base, "candidates", None)
    if cands is not None:
        ids = [cands.token_ids[i % len(cands)][0] for i in range(length)]
    else:
        ids = list(lm.encode(" the"))[:1] * length
    return lm.embed_tokens(ids).astype(np.float32), lm.decode(ids)


class PromptTuningAgent(ConfiguredAgent):
    """White-box soft prompt tuning (see the module docstring: NOT black-box)."""

    name = "prompt_tuning"
    config_class = PromptTuningConfig

    def search(self, env: gym.Env) -> Result:
        import torch

        cfg = self.config
        wb = fp32_white_box(env.unwrapped)
        base = cast(WhiteBoxTask, self.start(env))  # the white-box reference reads the LM and the rows
        length = int(cfg.prompt_length or getattr(base, "prompt_length", DEFAULT_LENGTH))
        init, init_text = initial_prompt(base, length)
        words = base.template.verbalizers
        train_rows = wb.rows(base.segments("train"), words, length)
        dev_rows = wb.rows(base.segments("dev"), words, length)
        y_train = torch.as_tensor(np.asarray(base.train.labels))
        y_dev = np.asarray(base.dev.labels)
        metric = base.spec_task.metric
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        prompt = torch.nn.Parameter(torch.as_tensor(init, dtype=torch.float32).clone())
        opt = torch.optim.Adam([prompt], lr=cfg.lr)
        forward = backward = examples = 0
        best = (-np.inf, -np.inf)   # (dev metric, -dev CE)
        best_prompt, best_train = init.copy(), float("nan")
        curve: list[tuple[int, float]] = []
        train_curve: list[tuple[int, float]] = []
        history = []
        n = len(y_train)
        for epoch in range(cfg.epochs):
            losses = []
            order = rng.permutation(n)
            for s in range(0, n, cfg.batch_size):
                idx = order[s:s + cfg.batch_size]
                logits = wb.label_logits(train_rows, prompt, idx)
                loss = torch.nn.functional.cross_entropy(logits, y_train[idx])
                opt.zero_grad()
                loss.backward(inputs=[prompt])
                opt.step()
                forward += 1
                backward += 1
                examples += len(idx)
                losses.append(loss.item() * len(idx))
            with torch.no_grad():
                dev_lp = torch.log_softmax(wb.label_logits(dev_rows, prompt), dim=-1).numpy()
            forward += 1
            examples += len(y_dev)
            dev_metric = compute_metric(metric, y_dev, dev_lp.argmax(axis=1))
            dev_ce = float(-dev_lp[np.arange(len(y_dev)), y_dev].mean())
            train_reward = -float(np.sum(losses) / n)
            passes = forward + backward
            if (dev_metric, -dev_ce) > best:
                best = (dev_metric, -dev_ce)
                best_prompt, best_train = prompt.detach().numpy().copy(), train_reward
            curve.append((passes, float(best[0])))
            train_curve.append((passes, max(train_reward, train_curve[-1][1] if train_curve else -np.inf)))
            history.append({"epoch": epoch + 1, "train_reward": train_reward, "dev_metric": dev_metric,
                            "dev_ce": dev_ce})
        return Result(
            self.name, None, f"<soft prompt: {length} vectors, white-box prompt tuning from {init_text!r}>",
            best_train, float(best[0]), base.budget.calls, curve, train_curve, config=config_dict(cfg),
            soft_prompt=best_prompt.astype(np.float32), curve_unit="passes",
            extra={"forward_passes": forward, "backward_passes": backward, "examples": examples,
                   "history": history, "init_text": init_text},
        )
