"""Task specs: templates render every real example, verbalizers fit the default tokenizer."""

from __future__ import annotations

import pytest

from promptgym.errors import ConfigError, SplitUnavailableError, UnknownTaskError
from promptgym.tasks import SEEDS, TASK_NAMES, TASKS, TaskSpec, get_task, load_split
from promptgym.tasks.spec import PROMPT_POSITIONS

MASK = "<mask>"
# Verbalizers of the catalog that are two tokens in SmolLM2 (scored by their first token, which is unique).
KNOWN_MULTI_TOKEN = {"Athlete", "Album"}


def _templates(spec: TaskSpec):
    yield "causal", spec.template("causal")
    yield "masked", spec.template("masked")
    for name in spec.extra_templates:
        yield name, spec.template(name)


def _available_splits(task: str):
    for seed in SEEDS:
        yield load_split(task, "train", seed)
        yield load_split(task, "dev", seed)
    for split in ("test", "pool"):
        try:
            yield load_split(task, split)
        except SplitUnavailableError:
            continue


@pytest.mark.parametrize("task", TASK_NAMES)
def test_templates_render_every_example(task):
    spec = get_task(task)
    n_rows = 0
    for split in _available_splits(task):
        texts, pairs = split.texts, split.text_pairs
        n_rows += len(texts)
        for kind, tpl in _templates(spec):
            mask = MASK if "{mask}" in tpl.cue else None
            for position in PROMPT_POSITIONS:
                for text, pair in zip(texts, pairs, strict=True):
                    left, right = tpl.render(text, pair, position=position, mask_token=mask)
                    cue = tpl.cue.format(text=text, text_pair=pair or "", mask=MASK)
                    if position == "before":
                        assert left == "" and right.endswith(cue), (kind, text)
                    else:
                        assert right == cue, (kind, text)
                    whole = left + right
                    assert text in whole
                    if pair is not None and "{text_pair}" in tpl.body + tpl.cue:
                        assert pair in whole
                    if "{" in tpl.body + tpl.cue and "{" not in text + (pair or ""):
                        assert "{" not in whole, (kind, whole)  # every placeholder was filled
                    if kind == "masked":
                        assert whole.count(MASK) == 1 and MASK in right
    assert n_rows >= 2 * len(SEEDS) * 16 * spec.num_labels


def test_masked_templates_have_a_mask_slot_and_causal_ones_do_not():
    for spec in TASKS.values():
        assert "{mask}" in spec.masked.cue, spec.name
        assert "{mask}" not in spec.causal.cue, spec.name
        assert spec.causal.cue and not spec.causal.cue[-1].isspace(), spec.name  # answer follows with a space


def test_pair_templates_use_the_pair():
    for spec in TASKS.values():
        for _, tpl in _templates(spec):
            uses_pair = "{text_pair}" in tpl.body + tpl.cue
            assert uses_pair == spec.pair, (spec.name, tpl)
            assert "{text}" in tpl.body + tpl.cue


def test_masked_pair_template_fills_the_pair_in_the_cue():
    tpl = get_task("mrpc").template("masked")
    assert tpl.render("A b.", "C d.", mask_token=MASK) == ("", "A b. ? <mask>, C d.")
    assert tpl.render("A b.", "C d.", position="after", mask_token=MASK) == ("A b. ?", " <mask>, C d.")


def test_causal_template_renders_exactly():
    tpl = get_task("sst2").template("review")
    assert tpl.render("a gem .") == ("", "Review: a gem .\nSentiment:")
    assert tpl.render("a gem .", position="after") == ("Review: a gem .", "\nSentiment:")
    assert get_task("sst2").causal.render("{x}") == ("", "{x} It was")  # braces in the data are kept


def test_render_errors():
    spec = get_task("sst2")
    with pytest.raises(ValueError, match="prompt position"):
        spec.causal.render("good", position="middle")
    with pytest.raises(ValueError, match="mask_token"):
        spec.masked.render("good")
    with pytest.raises(ConfigError, match="no template 'fancy'"):
        spec.template("fancy")


def test_verbalizers_one_word_per_label():
    for spec in TASKS.values():
        for kind, tpl in _templates(spec):
            assert len(tpl.verbalizers) == spec.num_labels, (spec.name, kind)
            assert len(set(tpl.verbalizers)) == spec.num_labels, (spec.name, kind)
            for word in tpl.verbalizers:
                assert word and word == word.strip() and " " not in word, (spec.name, kind, word)


@pytest.fixture(scope="module")
def tokenizer():
    from promptgym.lm.presets import smollm2_tokenizer

    return smollm2_tokenizer()


def test_verbalizer_first_tokens_are_distinct_in_smollm2(tokenizer):
    multi = set()
    for spec in TASKS.values():
        for kind, tpl in _templates(spec):
            ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in tpl.verbalizers]
            assert all(ids), (spec.name, kind)
            firsts = [t[0] for t in ids]
            assert len(set(firsts)) == len(firsts), (spec.name, kind, tpl.verbalizers, firsts)
            multi |= {w for w, t in zip(tpl.verbalizers, ids, strict=True) if len(t) > 1}
    # the catalog's promise: every word is a single token except these two DBPedia words
    assert multi == KNOWN_MULTI_TOKEN


def test_get_task_by_name_and_env_name():
    assert get_task("sst2") is get_task("SST2") is get_task("sSt2") is TASKS["sst2"]
    assert get_task("AGNews") is TASKS["agnews"]
    assert get_task(TASKS["rte"]) is TASKS["rte"]
    for spec in TASKS.values():
        assert get_task(spec.env_name) is spec


def test_get_task_unknown():
    with pytest.raises(UnknownTaskError, match="known tasks: sst2, yelpp"):
        get_task("sst-5")
