"""Candidate vocabularies (promptgym.envs.vocab): PMI n-grams as BDPL, frequency fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from promptgym.envs.vocab import CandidateList, build_candidates, ngram_stats, words
from promptgym.errors import InvalidActionError, UnknownSeedError, UnknownTaskError
from promptgym.tasks import TASK_NAMES

SENTIMENT = {"great", "bad", "worst", "best", "boring", "wonderful", "beautiful", "dull", "fun", "mess",
             "stupid", "terrific", "excellent", "hilarious", "enjoyable", "tedious", "lame", "the worst",
             "the best", "waste", "pointless", "poorly", "brilliant", "amazing", "touching", "bland"}
NEGATIVE = {"worst", "the worst", "bad", "dull", "boring", "stupid", "mess", "tedious", "pointless", "poorly",
            "unfunny", "waste", "lame", "bland", "ugly", "worse"}
POSITIVE = {"wonderful", "beautiful", "terrific", "hilarious", "excellent", "enjoyable", "the best", "touching",
            "brilliant", "amazing", "beautifully", "remarkable", "powerful", "solid"}


@pytest.fixture(scope="session")
def tok():
    from promptgym.lm.presets import smollm2_tokenizer

    return smollm2_tokenizer()


@pytest.fixture(scope="session")
def encode(tok):
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="session")
def sst2_pmi(encode, data_dir):
    return build_candidates("sst2", encode, k=200)


def _grams(cands: CandidateList) -> list[str]:
    return [t[1:] for t in cands.texts]


def test_words_tokenisation():
    assert words("It's NOT bad -- it 's 9/11 , isn #39;t great!") == ["it's", "not", "bad", "it", "isn", "great"]
    assert words("Great food.\\n\\nThe staff") == ["great", "food", "the", "staff"]  # Yelp's literal \n
    assert words("don’t 2nd 1999") == ["don't", "2nd"]


def _one_id_per_word(text: str) -> tuple[int, ...]:
    """A stand-in tokeniser: the ranking, not the tokeniser, is what must be deterministic."""
    return tuple(range(len(text.split())))


_FRESH = """
import json, sys
from promptgym.envs.vocab import build_candidates
enc = lambda text: tuple(range(len(text.split())))
json.dump({t: build_candidates(t, enc, k=200, seed=21).texts for t in ("cola", "mnli", "agnews", "rte")}, sys.stdout)
"""


def test_deterministic(encode, data_dir, sst2_pmi):
    assert build_candidates("sst2", encode, k=200) == sst2_pmi
    # a fresh interpreter with another string-hash seed (set and dict orders differ) gives the same lists
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PROMPTGYM_DATA_DIR": str(data_dir)}
    proc = subprocess.run([sys.executable, "-c", _FRESH], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = json.loads(proc.stdout)
    for task, texts in fresh.items():
        assert tuple(texts) == build_candidates(task, _one_id_per_word, k=200, seed=21).texts, task


@pytest.mark.parametrize("task", TASK_NAMES)
def test_exactly_k_unique_candidates(task, encode, data_dir):
    for method in ("pmi", "frequency"):
        cands = build_candidates(task, encode, k=200, method=method)
        assert len(cands) == 200
        assert len(set(cands.texts)) == 200
        assert len(set(cands.token_ids)) == 200
        for text, ids in zip(cands.texts, cands.token_ids):
            assert text.startswith(" ") and not text.startswith("  ") and text == text.rstrip()
            assert 1 <= len(ids) <= 4
            assert tuple(encode(text)) == ids
            assert 1 <= len(text.split()) <= 2
        split = "pool" if task in ("sst2", "mrpc", "rte") else "train-13"
        assert cands.source.endswith(f":{task}/{split}")
        assert cands.source.split(":")[0] in (("pmi", "pmi+frequency") if method == "pmi" else ("frequency",))


def test_source_names_split_and_seed(encode, data_dir, sst2_pmi):
    assert sst2_pmi.source == "pmi:sst2/pool"
    assert build_candidates("qqp", encode, method="frequency", seed=13).source == "frequency:qqp/train-13"
    a = build_candidates("qqp", encode, seed=13)
    b = build_candidates("qqp", encode, seed=42)
    assert a.source == "pmi:qqp/train-13" and b.source == "pmi:qqp/train-42"
    assert a.texts != b.texts  # no pool: the 16-shot split of the seed is the text source
    # with a pool the seed does not matter
    assert build_candidates("sst2", encode, seed=42) == sst2_pmi


def test_sst2_pmi_candidates_are_sentiment_laden(sst2_pmi):
    grams = _grams(sst2_pmi)
    top30, top200 = set(grams[:30]), set(grams)
    # measured: the top 30 hold 'worst', 'the worst', 'bad', 'stupid', 'hilarious', 'terrific', ...
    assert len(top30 & SENTIMENT) >= 8, grams[:30]
    assert len(top200 & SENTIMENT) >= 20, sorted(top200 & SENTIMENT)
    assert {"worst", "bad", "dull", "wonderful", "beautiful", "boring"} <= top200
    # both polarities are represented, interleaved (label round-robin), not one class first
    assert len(set(grams[:20]) & NEGATIVE) >= 4 and len(set(grams[:20]) & POSITIVE) >= 4
    # and no plain stop words
    assert not top200 & {"the", "a", "and", "of", "to", "is", "it", "film", "movie"}


def test_frequency_differs_from_pmi(encode, data_dir, sst2_pmi):
    freq = build_candidates("sst2", encode, k=200, method="frequency")
    assert freq.source == "frequency:sst2/pool"
    assert freq.texts != sst2_pmi.texts
    assert _grams(freq)[:5] == ["the", "a", "and", "of", "to"]
    assert len(set(freq.texts) & set(sst2_pmi.texts)) < 100
    counts = ngram_stats("sst2").counts
    freq_counts = [counts[g] for g in _grams(freq)]
    assert freq_counts == sorted(freq_counts, reverse=True)


def test_small_k_is_a_prefix_and_max_n(encode, data_dir, sst2_pmi):
    small = build_candidates("sst2", encode, k=20)
    assert small.texts == sst2_pmi.texts[:20]
    uni = build_candidates("sst2", encode, k=50, max_n=1)
    assert all(" " not in t[1:] for t in uni.texts)
    tri = build_candidates("snli", encode, k=200, max_n=3)
    assert any(len(t.split()) == 3 for t in tri.texts)
    assert max(len(t.split()) for t in tri.texts) <= 3


def test_pmi_filled_up_with_frequency_when_too_few(encode, data_dir):
    # CoLA's 32 training sentences have ~390 n-grams; some have no label association (e.g. split
    # evenly between the classes), so asking for all usable ones needs the frequency fill-up
    counts = ngram_stats("cola", seed=13).counts
    usable = {g for g in counts if 1 <= len(encode(" " + g)) <= 4}
    every = build_candidates("cola", encode, k=len(usable), seed=13)
    assert every.source == "pmi+frequency:cola/train-13"
    assert set(_grams(every)) == usable
    assert every.texts[:200] == build_candidates("cola", encode, k=200, seed=13).texts
    with pytest.raises(ValueError, match="lower k"):
        build_candidates("cola", encode, k=len(usable) + 1, seed=13)


def test_prompt_ids_concatenates(sst2_pmi):
    c = sst2_pmi
    assert c.prompt_ids([0, 1, 0]) == c.token_ids[0] + c.token_ids[1] + c.token_ids[0]
    assert c.prompt_ids(np.array([199, 3], dtype=np.int64)) == c.token_ids[199] + c.token_ids[3]
    assert c.prompt_ids(np.int64(5)) == c.token_ids[5]
    assert c.prompt_ids([]) == ()
    # one rule for every discrete action (the env's): floats holding whole numbers are indices
    assert c.prompt_ids([1.0, 2.0]) == c.token_ids[1] + c.token_ids[2]
    assert c.prompt_text([0, 1]) == c.texts[0] + c.texts[1]


@pytest.mark.parametrize("action", [[200], [0, -1], [10**9], np.array([1, 250]), [1.5, 2.0], [[0, 1]], ["a"],
                                    np.array([0.5]), [[0], [1, 2]], None, [True, False]])
def test_prompt_ids_rejects_bad_actions(sst2_pmi, action):
    with pytest.raises(InvalidActionError):
        sst2_pmi.prompt_ids(action)
    with pytest.raises(InvalidActionError):
        sst2_pmi.prompt_text(action)


def test_candidate_list_validates():
    with pytest.raises(ValueError):
        CandidateList((" a",), (), "x")
    with pytest.raises(ValueError):
        CandidateList((" a",), ((),), "x")
    c = CandidateList((" a", " b"), ((1,), (2, 3)), "manual")
    assert len(c) == 2 and c.prompt_ids((1, 0)) == (2, 3, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k"), ({"k": -3}, "k"), ({"method": "tfidf"}, "pmi, frequency"), ({"max_n": 0}, "max_n"),
])
def test_bad_arguments(encode, data_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_candidates("sst2", encode, **kwargs)


def test_unknown_task_and_seed(encode, data_dir):
    with pytest.raises(UnknownTaskError):
        build_candidates("imdb", encode)
    with pytest.raises(UnknownSeedError):
        build_candidates("cola", encode, seed=7)
