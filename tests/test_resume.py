"""Resuming a killed run from its call journal (``promptgym.journal``), on the tiny random model.

The property that matters: a run killed after k calls and resumed ends with exactly the prompt, calls
and curve of the uninterrupted run of the same seed, and the killed calls are replayed, not re-asked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the env ids)
from promptgym import journal as journal_mod
from promptgym.cli import main
from promptgym.errors import ResumeError
from promptgym.journal import CallJournal, decode_result, encode_result, journal_identity
from promptgym.lm.base import ScoreRequest, ScoreResult, SoftPrompt, TokenPrompt
from promptgym.runner import run_agent
from promptgym.runs import JOURNAL_FILE

TINY = {"model": "tiny-random-causal", "dtype": "float32"}
SUBSPACE = {"intrinsic_dim": 16, "prompt_length": 4, "batch_size": 8}
DISCRETE = {"num_candidates": 30, "prompt_length": 4, "batch_size": 8}
CASES = {
    "bbt": ("PromptSST2-Subspace-v0", SUBSPACE, {"popsize": 6, "dev_every": 2}, 80),
    "bdpl": ("PromptSST2-v0", DISCRETE, {"samples": 6, "dev_every": 2}, 60),
}


def _run(agent: str, journal: Path | None = None):
    env_id, env_kwargs, agent_kwargs, budget = CASES[agent]
    return run_agent(env_id, agent, budget, seed=3, model=TINY["model"], dtype=TINY["dtype"], env_kwargs=env_kwargs,
                     agent_kwargs=agent_kwargs, progress=False, journal=journal)


@pytest.mark.parametrize("agent", sorted(CASES))
def test_a_killed_run_resumes_to_the_uninterrupted_result(agent, tmp_path, kill_after_batches):
    whole = _run(agent)
    path = tmp_path / "calls.journal"
    with kill_after_batches(3):
        _run(agent, path)
    killed_calls = CallJournal(path, journal_identity(path)).recorded_calls
    assert killed_calls > 0
    resumed = _run(agent, path)
    a, b = whole.result, resumed.result
    assert np.array_equal(np.asarray(a.action), np.asarray(b.action)) and a.prompt_text == b.prompt_text
    assert a.calls_used == b.calls_used == whole.env.unwrapped.budget.calls == resumed.env.unwrapped.budget.calls
    assert a.dev_metric == b.dev_metric and a.train_reward == b.train_reward
    assert [tuple(x) for x in a.curve] == [tuple(x) for x in b.curve]
    assert resumed.replayed_calls == killed_calls and whole.replayed_calls == 0
    # the resumed run journaled the rest: replaying the whole file asks the LM nothing
    again = _run(agent, path)
    assert again.replayed_calls == a.calls_used
    assert np.array_equal(np.asarray(again.result.action), np.asarray(a.action))


def test_a_journal_of_another_run_is_refused(tmp_path):
    path = tmp_path / "calls.journal"
    _run("bbt", path)
    env_id, env_kwargs, agent_kwargs, budget = CASES["bbt"]
    with pytest.raises(ResumeError, match="another run.*seed"):
        run_agent(env_id, "bbt", budget, seed=4, model=TINY["model"], dtype=TINY["dtype"], env_kwargs=env_kwargs,
                  agent_kwargs=agent_kwargs, progress=False, journal=path)


def test_a_resume_that_asks_for_other_prompts_stops(tmp_path, monkeypatch):
    path = tmp_path / "calls.journal"
    _run("bbt", path)
    real = journal_mod.request_fingerprint
    monkeypatch.setattr(journal_mod, "request_fingerprint", lambda reqs: real(reqs)[::-1])
    with pytest.raises(ResumeError, match="diverged from its journal at batch 1"):
        _run("bbt", path)


def test_results_round_trip_bit_exactly_and_a_torn_last_line_is_dropped(tmp_path):
    rng = np.random.default_rng(0)
    res = ScoreResult(predictions=np.array([1, 0, 1]), logprobs=rng.normal(size=(3, 2)),
                      label_logprobs=rng.normal(size=(3, 2)), num_tokens=17, extra={"approximate": True})
    back = decode_result(json.loads(json.dumps(encode_result(res))))
    assert np.array_equal(back.predictions, res.predictions) and back.predictions.dtype == res.predictions.dtype
    assert np.array_equal(back.logprobs, res.logprobs) and np.array_equal(back.label_logprobs, res.label_logprobs)
    assert back.num_tokens == 17 and back.extra == {"approximate": True}

    class Echo:
        calls = 0
        remembered: list = []

        def score(self, requests):
            Echo.calls += 1
            return [res for _ in requests]

        def remember(self, requests, results):
            Echo.remembered.append((list(requests), list(results)))

    reqs = [ScoreRequest(TokenPrompt((1, 2)), (("a", "b"),), ("x", "y")),
            ScoreRequest(SoftPrompt(np.ones((2, 3), np.float32)), (("a", "b"),), ("x", "y"))]
    path = tmp_path / "j"
    j = CallJournal(path, {"run": 1})
    j.score(Echo(), reqs)
    j.score(Echo(), reqs[:1])
    with path.open("ab") as fh:  # a kill in the middle of the third write
        fh.write(b'{"batch":3,"requ')
    j2 = CallJournal(path, {"run": 1})
    assert j2.recorded_batches == 2 and j2.recorded_calls == 3 and path.read_bytes().endswith(b"}\n")
    out = j2.score(Echo(), reqs)
    assert Echo.calls == 2 and np.array_equal(out[1].logprobs, res.logprobs) and j2.replayed_calls == 2
    assert len(Echo.remembered) == 1 and Echo.remembered[0] == (reqs, out)  # replayed answers go to the model
    with pytest.raises(ResumeError, match="diverged"):
        j2.score(Echo(), reqs)  # the second batch held one request, not two
    with pytest.raises(ResumeError, match="another run"):
        CallJournal(path, {"run": 2})


def test_a_replayed_journal_fills_the_models_memo(tiny_causal, tmp_path):
    """A second search of the seed in the same process (the snapshot ensemble after a resumed BBT) is answered
    from the memo: the replay hands the journal's answers to the model, bit for bit."""
    lm = tiny_causal
    segs = (("a fine film", " It was"), ("a dull film", " It was"))
    reqs = [ScoreRequest(TokenPrompt((5, 6, 7)), segs, ("great", "terrible")),
            ScoreRequest(TokenPrompt((8, 9)), segs, ("great", "terrible")),
            ScoreRequest(TokenPrompt((8, 9)), segs, ("great", "terrible"), label_only=True)]
    path = tmp_path / "j"
    lm.clear_caches()
    first = CallJournal(path, {"run": 1}).score(lm, reqs)
    lm.clear_caches()  # a new process: nothing in the memo
    replayed = CallJournal(path, {"run": 1}).score(lm, reqs)
    passes, hits = (lm.forward_passes, lm.tokens_computed), lm.memo_store.hits
    again = lm.score(reqs[:2])
    assert (lm.forward_passes, lm.tokens_computed) == passes  # answered from the memo
    assert lm.memo_store.hits == hits + 2  # the replay itself counted none
    for a, b in zip(again, first[:2], strict=True):
        assert np.array_equal(a.logprobs, b.logprobs) and np.array_equal(a.predictions, b.predictions)
    assert replayed[2].logprobs is None
    with lm.fast_paths(memo=False):
        lm.clear_caches()
        CallJournal(path, {"run": 1}).score(lm, reqs)
        assert len(lm.memo_store) == 0  # memo off: nothing is kept
    lm.clear_caches()


TRAIN = ["train", "--env", "PromptSST2-Subspace-v0", "--agent", "bbt", "--budget", "80", "--seed", "3",
         "--model", TINY["model"], "--dtype", TINY["dtype"], "--no-progress",
         *[a for k, v in SUBSPACE.items() for a in ("--env-kwarg", f"{k}={v}")],
         "--agent-kwarg", "popsize=6", "--agent-kwarg", "dev_every=2"]


def _only_run_dir(out: Path) -> Path:
    (run_dir,) = list(out.iterdir())
    return run_dir


def test_cli_resume_finishes_a_killed_train_run(tmp_path, monkeypatch, capsys, kill_after_batches):
    assert main([*TRAIN, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((_only_run_dir(tmp_path / "whole") / "prompt.json").read_text())
    with kill_after_batches(4):
        main([*TRAIN, "--out", str(tmp_path / "killed")])
    run_dir = _only_run_dir(tmp_path / "killed")
    assert [p.name for p in run_dir.iterdir()] == [JOURNAL_FILE]
    spent = CallJournal(run_dir / JOURNAL_FILE, journal_identity(run_dir / JOURNAL_FILE)).recorded_calls
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "replayed from the journal" in capsys.readouterr().out
    resumed = json.loads((run_dir / "prompt.json").read_text())
    assert resumed["action"] == whole["action"] and resumed["calls_used"] == whole["calls_used"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed_calls"] == spent >= 12 and config["budget"] == 80 and config["agent_config"]["popsize"] == 6
    assert not (run_dir / JOURNAL_FILE).exists()
    # a finished folder, a folder without a journal and --resume with --env: one line each, exit 2
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "finished run" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--env", "PromptSST2-v0"]) == 2
    assert "do not pass --env" in capsys.readouterr().err
    assert main(["train", "--agent", "bbt"]) == 2
    assert "needs --env and --agent" in capsys.readouterr().err


def test_a_bad_request_leaves_no_run_folder(tmp_path):
    assert main(["train", "--env", "PromptSST2-Subspace-v0", "--agent", "bbt", "--budget", "0",
                 "--model", TINY["model"], "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_sigkill_then_resume_in_a_real_process(tmp_path):
    """A real SIGKILL of ``promptgym train`` (no Python handler runs), then ``--resume``."""
    args = [a if a != "80" else "2000" for a in TRAIN]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "promptgym.cli", *args, "--out", str(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            runs = list(tmp_path.iterdir())
            if runs and (runs[0] / JOURNAL_FILE).is_file() and \
                    (runs[0] / JOURNAL_FILE).read_bytes().count(b"\n") >= 6:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the run did not journal 5 batches within 120 s")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    run_dir = _only_run_dir(tmp_path)
    assert not (run_dir / "config.json").exists()
    spent = CallJournal(run_dir / JOURNAL_FILE, journal_identity(run_dir / JOURNAL_FILE)).recorded_calls
    assert spent >= 12  # five or more batches: generations of 6 and dev checks of 1
    assert main(["train", "--resume", str(run_dir)]) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed_calls"] == spent and config["budget_used"]["calls"] <= 2000
