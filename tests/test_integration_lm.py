"""Zero-shot SST-2 with the real default model (SmolLM2-135M-Instruct, bf16) on the real test split.

Measured before the project existed (MISSION.md): "Review: <s>\\nSentiment:" with
" negative"/" positive" scores ~78% zero-shot; the weak BBT template "<s> It was" with
" terrible"/" great" sits near chance because the model says "great" for almost every row. The
weak template is the default on purpose (it leaves room for a learned prompt), and this test pins
that known bias down so that a change in scoring that hides or breaks it is noticed.
"""

from __future__ import annotations

import numpy as np
import pytest

from promptgym.lm import ScoreRequest, TokenPrompt
from promptgym.metrics import compute_metric
from promptgym.tasks import get_task, load_split

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sst2_test():
    split = load_split("sst2", "test")
    assert len(split) == 872
    return split


def _zero_shot(lm, split, template):
    segments = tuple(template.render(t) for t in split.texts)
    calls = lm.batch_calls
    (result,) = lm.score([ScoreRequest(TokenPrompt(()), segments, template.verbalizers)])
    assert lm.batch_calls == calls + 1
    assert result.predictions.shape == (len(split),)
    return result


def test_review_template_zero_shot_accuracy(smollm2, sst2_test):
    spec = get_task("sst2")
    result = _zero_shot(smollm2, sst2_test, spec.template("review"))
    acc = compute_metric(spec.metric, sst2_test.labels, result.predictions)
    # measured 77.8% in bf16 (78.1% before the project existed); bf16 batching moves it by ~0.5 point
    assert acc >= 0.74, acc
    assert np.all(result.logprobs <= 0) and np.all(np.isfinite(result.logprobs))


def test_default_template_is_weak_and_says_great(smollm2, sst2_test):
    spec = get_task("sst2")
    template = spec.template("causal")
    assert template.verbalizers == ("terrible", "great")
    result = _zero_shot(smollm2, sst2_test, template)
    acc = compute_metric(spec.metric, sst2_test.labels, result.predictions)
    great = float(np.mean(result.predictions == 1))
    assert acc > 0.45, acc
    # the known bias: "great" for (almost) every row, so accuracy is close to the positive share (444/872)
    assert great >= 0.9, great
    assert abs(acc - 444 / 872) < 0.05, acc
