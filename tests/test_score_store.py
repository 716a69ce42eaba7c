"""The score store: test and OOD scores on disk, read back by any later process, never by a verifier.

On the tiny random model (code paths; the real-model use is the baselines sweep in benchmarks/RESULTS.md):
a store answers what it holds bit for bit and without an LM call, from a new evaluator and a new
connection (another process's view); its keys separate models and dtypes; a set's missing members are
scored a few per call and each call is kept at once, so an interrupted set resumes; a served model is
never stored; a bad file is one-line refused; and the protocol's second entry on a template (the
calibrated one) scores nothing its first entry stored.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from promptgym.agent import Result
from promptgym.bench.evaluate import evaluate
from promptgym.bench.ood import ood_metrics
from promptgym.cli import main
from promptgym.errors import ConfigError
from promptgym.evaluation import Evaluator, ScoreCache
from promptgym.lm import in_dtype
from promptgym.lm.base import ScoreRequest
from promptgym.runs import evaluate_workdir, seed_file
from promptgym.score_store import GROUP, ScoreStore

TINY = {"model": "tiny-random-causal", "dtype": "float32"}
ENV = "PromptSST2-v0"


@pytest.fixture(scope="module")
def env() -> gym.Env:
    return gym.make(ENV, budget=5, split_seed=13, **TINY)


@pytest.fixture
def lm_calls(env: gym.Env, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of requests of every call the env's fp32 LM gets (it scores as it would)."""
    lm = in_dtype(env.unwrapped.lm, "float32")
    score, seen = lm.score, []

    def spy(requests):
        seen.append(len(requests))
        return score(requests)

    monkeypatch.setattr(lm, "score", spy)
    return seen


def evaluator(env: gym.Env, store: ScoreStore | None) -> Evaluator:
    """An evaluator with a cache of its own: nothing in memory is shared between two of them."""
    return Evaluator.for_env(env, cache=ScoreCache(), store=store)


def members(env: gym.Env, n: int, seed: int) -> Result:
    space = env.action_space
    space.seed(seed)
    acts = [space.sample() for _ in range(n)]
    return Result("x", acts[0], "", 0.0, None, 0, members=acts)


def test_a_stored_score_is_read_back_bit_for_bit_without_an_lm_call(env, lm_calls, tmp_path):
    path = tmp_path / "scores.sqlite"
    result = members(env, 1, 7)
    plain = evaluator(env, None).score(result, dtype="float32")
    assert lm_calls == [1]
    first = evaluator(env, ScoreStore(path)).score(result, dtype="float32")
    assert lm_calls == [1, 1]  # nothing stored yet: scored, and kept
    again = ScoreStore(path)  # a new connection: what another process sees
    second = evaluator(env, again).score(result, dtype="float32")
    assert lm_calls == [1, 1] and again.hits == 1 and again.misses == 0 and len(again) == 1
    for got in (first, second):
        np.testing.assert_array_equal(got.predictions, plain.predictions)
        np.testing.assert_array_equal(got.probs, plain.probs)
        assert got.metric == plain.metric and got.metrics == plain.metrics
    # OOD rows (given segments) go through the store too
    ood = ood_metrics(env, result, "float32", store=again)
    n_ood = len(lm_calls) - 2
    assert n_ood == len(ood) > 0
    assert ood_metrics(env, result, "float32", store=ScoreStore(path)) == ood
    assert len(lm_calls) == 2 + n_ood  # the second panel: every OOD task read from the file


def test_keys_separate_models_settings_and_requests(env):
    base = env.unwrapped
    fp32, bf16 = in_dtype(base.lm, "float32"), in_dtype(base.lm, "bfloat16")
    chunked = copy.copy(fp32)
    chunked.chunk_size = fp32.chunk_size + 1  # another chunking rounds otherwise
    other_weights = copy.copy(fp32)
    other_weights.weights_sha256 = "0" * 64
    segments = (("Review: good.", " It was"),)
    req = ScoreRequest(base.prompt_of(env.action_space.sample()), segments, base.template.verbalizers, False)
    labels_only = ScoreRequest(req.prompt, segments, base.template.verbalizers, True)
    keys = {ScoreStore.key(lm, r) for lm in (fp32, bf16, chunked, other_weights) for r in (req, labels_only)}
    assert len(keys) == 8
    assert ScoreStore.key(fp32, req) == ScoreStore.key(in_dtype(base.lm, "float32"), req)  # the same model: one key


def test_a_set_is_scored_a_few_members_per_call_and_an_interrupted_one_resumes(env, lm_calls, tmp_path, monkeypatch):
    path = tmp_path / "scores.sqlite"
    result = members(env, GROUP + 2, 11)
    lm = in_dtype(env.unwrapped.lm, "float32")
    spied = lm.score

    def dies_on_second_call(requests):
        if len(lm_calls) == 1:
            raise KeyboardInterrupt
        return spied(requests)

    monkeypatch.setattr(lm, "score", dies_on_second_call)
    with pytest.raises(KeyboardInterrupt):
        evaluator(env, ScoreStore(path)).score(result, dtype="float32")
    assert lm_calls == [GROUP] and len(ScoreStore(path)) == GROUP  # the first call's members are kept
    monkeypatch.setattr(lm, "score", spied)
    resumed = evaluator(env, ScoreStore(path)).score(result, dtype="float32")
    assert lm_calls == [GROUP, 2]  # only the members the interruption lost
    plain = evaluator(env, None).score(result, dtype="float32")
    np.testing.assert_array_equal(resumed.probs, plain.probs)


def test_a_model_it_cannot_identify_is_asked_and_never_stored(env, tmp_path):
    from promptgym.lm.openai_compat import OpenAICompatLM
    from promptgym.lm.remote import RemoteLM

    lm = in_dtype(env.unwrapped.lm, "float32")
    folder = copy.copy(lm)  # a local folder's "hash" is its name and revision, not its files
    folder.name = "./my-checkpoint"
    served = [cls.__new__(cls) for cls in (RemoteLM, OpenAICompatLM)]  # a served model's scoring is its receipt's
    assert ScoreStore.keeps(lm) and not any(ScoreStore.keeps(x) for x in (folder, *served))
    store = ScoreStore(tmp_path / "scores.sqlite")
    req = ScoreRequest(env.unwrapped.prompt_of(env.action_space.sample()), (("Good.", " It was"),),
                       env.unwrapped.template.verbalizers, False)
    asked = store.score(folder, [req])
    assert len(asked) == 1 and len(store) == 0 and store.misses == 0


def test_a_bad_store_file_is_refused_in_one_line_and_left_as_it_was(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a database, " * 100)
    before = text.read_bytes()
    with pytest.raises(ConfigError, match="not a promptgym score store"):
        ScoreStore(text)
    assert text.read_bytes() == before
    with pytest.raises(ConfigError, match="is a folder"):
        ScoreStore(tmp_path)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('format', '99')")
    foreign = tmp_path / "foreign.sqlite"  # somebody else's database with a table of the same name
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for path, message in ((other, "format 99"), (foreign, "not a promptgym score store")):
        as_it_was = path.read_bytes()
        with pytest.raises(ConfigError, match=message):
            ScoreStore(path)
        assert path.read_bytes() == as_it_was and not Path(f"{path}-wal").exists()  # refused untouched
    work = tmp_path / "work"
    code = main(["evaluate", "--env", ENV, "--agent", "manual", "--model", "tiny-random-causal", "--seeds", "13",
                 "--workdir", str(work), "--score-store", str(text), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not a promptgym score store" in err
    assert not work.exists() and text.read_bytes() == before


def test_the_calibrated_entry_reads_its_templates_scores_from_the_manual_entrys_store(tmp_path, unit_tier,
                                                                                       monkeypatch):
    from promptgym.evaluation import shared_cache
    from promptgym.lm import get_lm

    def forget() -> None:  # as in a new process: nothing in memory (other tests may have scored the template)
        for dtype in ("bfloat16", "float32"):
            shared_cache(get_lm("tiny-random-causal", dtype)).clear()

    forget()
    store = tmp_path / "scores.sqlite"
    root = tmp_path / "runs"
    manual = evaluate_workdir(ENV, "manual", unit_tier, root=root, model="tiny-random-causal")
    evaluate(ENV, "manual", unit_tier, "tiny-random-causal", (13,), workdir=manual, score_store=store)
    kept = len(ScoreStore(store))
    assert kept >= 2  # the template on test, and on each OOD task of the panel
    puts: list[int] = []
    put = ScoreStore.put
    monkeypatch.setattr(ScoreStore, "put", lambda self, items: (puts.append(len(items)), put(self, items))[1])
    forget()
    calibrated = evaluate_workdir(ENV, "calibrated", unit_tier, root=root, model="tiny-random-causal")
    evaluate(ENV, "calibrated", unit_tier, "tiny-random-causal", (13,), workdir=calibrated, score_store=store)
    assert puts == [] and len(ScoreStore(store)) == kept  # every test and OOD score came from the file
    run = json.loads(seed_file(calibrated, 13).read_text())
    assert run["extra"]["stored_answers"] == kept  # the run says its scores came from the file
    assert json.loads(seed_file(manual, 13).read_text())["extra"]["stored_answers"] == 0  # it scored them
    assert set(run["test"]["ood"]) == set(json.loads(seed_file(manual, 13).read_text())["test"]["ood"])
    assert Path(store).is_file()
