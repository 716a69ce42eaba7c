"""WHITE-BOX reference: soft prompt tuning by back-propagation (Lester et al., 2021).

**Not a black-box agent.** It is the gradient-based reference that black-box methods are measured
against (BBT reports it at 68.2 on SST-2 with 16 shots): how far could the same prompt go with the
gradients an API never gives? It is the only agent allowed to reach into the local backend
(``env.unwrapped.lm._model``), because back-propagation needs the weights; it therefore only runs
on in-process transformers models (:class:`promptgym.lm.local.LocalLM`), never through an API.
``Result.extra["white_box"]`` is True so that tables and leaderboards can set it apart.

What it does: ``prompt_length`` vectors (the subspace env's length, else the discrete env's number
of positions, else 10) start from the env's own starting point (a subspace env's ``p0``; for
discrete envs the word embeddings of the first candidates) and are trained with Adam on the
cross-entropy of the gold label word, the softmax taken over the label words at the answer position
(the env's "ce" reward), in minibatches over the train rows for ``epochs`` epochs. The model runs in
fp32 (a bf16 env's model is loaded once more in fp32: bf16 gradients of a 135M model are too coarse
for small steps). After every epoch the prompt is scored on dev; the best dev prompt is returned
(ties: lower dev cross-entropy); ``Result.train_reward`` is minus the mean train cross-entropy over
that epoch's minibatches.

Costs are its own, not API calls: the env budget is untouched and ``Result.extra`` counts forward
and backward passes (one pass = one chunk of rows) and examples. The learned prompt is in
``Result.extra["soft_prompt"]`` (a ``(length, embedding_dim)`` float32 array); ``Result.action`` is
None because the prompt is not a point of any subspace.

Learning rate: SmolLM2's word embeddings have entry std ~0.14 (vector norm ~3.2), far smaller than
T5's, so Lester et al.'s 0.3 would move every entry by two standard deviations per step. A quick check
on SST-2 (split 13, subspace env's p0, 3 epochs, batch 8): lr 0.01 took train CE 0.91 -> 0.49 and dev
accuracy 0.56 -> 0.59-0.62; lr 0.1 took train CE 0.82 -> 0.57 and dev 0.56 -> 0.63-0.66. Both learn;
0.01 is the default because it fits steadily without overshooting on 32 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.base import Result, config_dict
from promptgym.tasks.metrics import compute_metric

DEFAULT_LENGTH = 10


@dataclass
class PromptTuningConfig:
    prompt_length: int | None = None   # None: the env's prompt_length (10 if it has none)
    lr: float = 0.01                   # Adam; see the module docstring
    epochs: int = 10
    batch_size: int = 8                # train rows per step
    seed: int = 0


def _local_lm(base: Any):
    """The env's in-process LM in fp32 (the same weights; loaded once more if the env runs bf16)."""
    import torch

    from promptgym.lm import get_lm
    from promptgym.lm.local import LocalLM

    if not isinstance(base.lm, LocalLM):
        raise ValueError("prompt tuning back-propagates through the model: it needs an in-process transformers "
                         f"model (LocalLM), not {type(base.lm).__name__}")
    return base.lm if base.lm.dtype == torch.float32 else get_lm(base.lm.name, "float32")


def initial_prompt(base: Any, length: int) -> tuple[np.ndarray, str]:
    """The env's own starting point: ``p0`` of a subspace env, else embeddings of its first candidates."""
    lm = base.lm
    p0 = getattr(base, "p0", None)
    if p0 is not None and len(p0) == length:
        return np.asarray(p0, dtype=np.float32), getattr(base, "p0_text", "")
    cands = getattr(base, "candidates", None)
    if cands is not None:
        ids = [cands.token_ids[i % len(cands)][0] for i in range(length)]
    else:
        ids = list(lm.encode(" the"))[:1] * length
    return lm.embed_tokens(ids).astype(np.float32), lm.decode(ids)


class SoftPromptForward:
    """A differentiable forward of the LM on soft-prompted rows, laid out as ``LocalLM`` lays them out.

    Rows come from ``LocalLM._build_rows`` (so tokenisation, truncation and the answer position are
    the backend's own); causal rows are left-padded with ``position_ids = cumsum(mask) - 1``, masked
    rows right-padded, exactly as ``LocalLM._forward``. Returns label-word logits (n, C).
    """

    def __init__(self, lm: Any, segments: tuple[tuple[str, str], ...], label_words: tuple[str, ...],
                 length: int) -> None:
        from promptgym.lm.base import ScoreRequest, SoftPrompt

        placeholder = SoftPrompt(np.zeros((length, lm.embedding_dim), dtype=np.float32))
        rows, _, label_ids = lm._build_rows([ScoreRequest(placeholder, segments, label_words)])
        self.lm, self.rows, self.label_ids = lm, rows, list(label_ids[0])
        self.passes = 0

    def __call__(self, prompt, idx: np.ndarray):
        import torch

        lm = self.lm
        rows = [self.rows[i] for i in idx]
        width = max(len(r[0]) for r in rows)
        n = len(rows)
        ids = torch.full((n, width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        starts, answers = [], []
        for b, (row_ids, start, _, answer) in enumerate(rows):
            off = 0 if lm.is_masked else width - len(row_ids)
            ids[b, off:off + len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
            mask[b, off:off + len(row_ids)] = 1
            starts.append(off + start)
            answers.append(off + answer)
        emb = lm._embed(ids).detach().clone()
        length = prompt.shape[0]
        # rows hold pad ids at the prompt positions; scatter the trainable vectors there
        pos = torch.tensor(starts)[:, None] + torch.arange(length)[None, :]
        emb = emb.index_put((torch.arange(n)[:, None].expand(n, length), pos), prompt.expand(n, -1, -1))
        self.passes += 1
        model = lm._model
        if lm.is_masked:
            logits = model(inputs_embeds=emb, attention_mask=mask).logits[torch.arange(n), torch.tensor(answers)]
        else:
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(inputs_embeds=emb, attention_mask=mask, position_ids=position_ids,
                           logits_to_keep=1).logits[:, -1, :]
        return logits.float()[:, self.label_ids]


class PromptTuningAgent:
    """White-box soft prompt tuning (see the module docstring: NOT black-box)."""

    name = "prompt_tuning"

    def __init__(self, config: PromptTuningConfig | None = None) -> None:
        self.config = config or PromptTuningConfig()

    def learn(self, env) -> Result:
        import torch

        cfg = self.config
        base = env.unwrapped
        env.reset(seed=cfg.seed)
        lm = _local_lm(base)
        length = int(cfg.prompt_length or getattr(base, "prompt_length", DEFAULT_LENGTH))
        init, init_text = initial_prompt(base, length)
        words = base.template.verbalizers
        train = SoftPromptForward(lm, base._segments["train"], words, length)
        dev = SoftPromptForward(lm, base._segments["dev"], words, length)
        y_train = torch.as_tensor(np.asarray(base.train.labels))
        y_dev = np.asarray(base.dev.labels)
        metric = base.spec_task.metric
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        prompt = torch.nn.Parameter(torch.as_tensor(init, dtype=torch.float32).clone())
        opt = torch.optim.Adam([prompt], lr=cfg.lr)
        backward = examples = 0
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
                logits = train(prompt, idx)
                loss = torch.nn.functional.cross_entropy(logits, y_train[idx])
                opt.zero_grad()
                loss.backward(inputs=[prompt])
                opt.step()
                backward += 1
                examples += len(idx)
                losses.append(loss.item() * len(idx))
            with torch.no_grad():
                dev_logits = dev(prompt, np.arange(len(y_dev)))
                dev_lp = torch.log_softmax(dev_logits, dim=-1).numpy()
            examples += len(y_dev)
            dev_metric = compute_metric(metric, y_dev, dev_lp.argmax(axis=1))
            dev_ce = float(-dev_lp[np.arange(len(y_dev)), y_dev].mean())
            train_reward = -float(np.sum(losses) / n)
            passes = train.passes + dev.passes + backward
            if (dev_metric, -dev_ce) > best:
                best = (dev_metric, -dev_ce)
                best_prompt, best_train = prompt.detach().numpy().copy(), train_reward
            curve.append((passes, float(best[0])))
            train_curve.append((passes, max(train_reward, train_curve[-1][1] if train_curve else -np.inf)))
            history.append({"epoch": epoch + 1, "train_reward": train_reward, "dev_metric": dev_metric,
                            "dev_ce": dev_ce})
        return Result(
            self.name, None, f"<soft prompt: {length} vectors, white-box prompt tuning from {init_text!r}>",
            best_train, float(best[0]) if history else None, base.budget.calls, [], [],
            config=config_dict(cfg),
            extra={"white_box": True, "soft_prompt": best_prompt.astype(np.float32),
                   "forward_passes": train.passes + dev.passes, "backward_passes": backward,
                   "examples": examples, "curve": curve, "train_curve": train_curve,
                   "curve_unit": "forward+backward passes", "history": history, "init_text": init_text},
        )
