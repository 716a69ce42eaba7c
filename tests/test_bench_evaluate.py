"""evaluate -> submit -> render through the CLI, on the tiny random model, and every rejection path.

A ``unit`` tier of 30 calls is added to the tier table for these tests only, so five protocol
seeds of random search take seconds; everything else (env, agent, fp32 test scoring, verifier,
store, renderer) is the code the real leaderboard runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from promptgym.bench import schema
from promptgym.bench.evaluate import decode_predictions, encode_predictions
from promptgym.cli import main
from promptgym.metrics import compute_metric
from promptgym.tasks import load_split

MODEL = "tiny-random-causal"
ENV = "PromptSST2-v0"


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root/leaderboards (hidden files included)."""
    board = root / "leaderboards"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(board.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def submission(unit_tier, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("work")
    out = work / "sub.json"
    code = main(["evaluate", "--env", ENV, "--agent", "random", "--tier", unit_tier, "--model", MODEL,
                 "--workdir", str(work), "--out", str(out), "--no-progress", "--submitter", "ci"])
    assert code == 0
    return json.loads(out.read_text())


@pytest.fixture()
def board(submission, tmp_path) -> Path:
    """A leaderboard root holding the accepted submission."""
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(submission))
    (tmp_path / "leaderboards").mkdir()
    assert main(["submit", str(path), "--root", str(tmp_path)]) == 0
    return tmp_path


def test_evaluate_writes_a_complete_submission(submission):
    assert submission["env_id"] == ENV and submission["tier"] == "unit" and submission["budget_calls"] == 30
    assert [r["seed"] for r in submission["runs"]] == list(schema.BENCH_SEEDS)
    assert submission["model"]["name"] == MODEL and len(submission["model"]["weights_sha256"]) == 64
    assert submission["data_sha256"] and all(len(h) == 64 for h in submission["data_sha256"].values())
    labels = load_split("sst2", "test").labels
    for run in submission["runs"]:
        assert 0 < run["calls_used"] <= 30
        assert len(run["prompt"]["action"]) == 10
        preds = decode_predictions(run["test"]["predictions"])
        assert len(preds) == run["test"]["n"] == len(labels)
        assert run["test"]["metric"] == pytest.approx(compute_metric("accuracy", labels, preds))
        calls = [c for c, _ in run["curve"]]
        assert calls == sorted(calls) and calls[-1] <= run["calls_used"]
    assert submission["command"].startswith("promptgym evaluate")


def test_submit_rescores_and_renders(board):
    readme = (board / "leaderboards" / "README.md").read_text()
    html = (board / "leaderboards" / "index.html").read_text()
    assert ENV in readme and "random" in readme
    assert "<svg" in html or "<img" in html
    entries = list((board / "leaderboards" / ENV).glob("*.json"))
    assert len(entries) == 1
    before = snapshot(board)
    assert main(["leaderboard", "--root", str(board)]) == 0
    assert snapshot(board) == before  # rendering is a pure function of the committed entries


def _forge_predictions(sub: dict) -> dict:
    """Claim gold-label predictions (and their true metric) for seed 13: self-consistent, not earned."""
    labels = np.asarray(load_split("sst2", "test").labels)
    sub["runs"][0]["test"]["predictions"] = encode_predictions(labels)
    sub["runs"][0]["test"]["metric"] = 1.0
    return sub


def _over_budget(sub: dict) -> dict:
    sub["runs"][1]["calls_used"] = sub["budget_calls"] + 1
    return sub


def _wrong_data_hash(sub: dict) -> dict:
    key = sorted(sub["data_sha256"])[0]
    sub["data_sha256"][key] = "0" * 64
    return sub


def _wrong_weights(sub: dict) -> dict:
    sub["model"]["weights_sha256"] = "f" * 64
    return sub


def _metric_not_of_predictions(sub: dict) -> dict:
    sub["runs"][2]["test"]["metric"] = min(1.0, sub["runs"][2]["test"]["metric"] + 0.1)
    return sub


def _swapped_prompt(sub: dict) -> dict:
    """Another final prompt than the one that earned the scores: a label bias that flips the answers.

    (On the tiny random model every token prompt gives the same answers, so the bias is the part
    of the prompt that changes them.)
    """
    sub["runs"][0]["prompt"]["label_bias"] = [50.0, 0.0]
    return sub


def _invalid_action(sub: dict) -> dict:
    sub["runs"][0]["prompt"]["action"] = [999] * 10
    return sub


@pytest.mark.parametrize("forge, message", [
    (_forge_predictions, "re-scored|scores|claimed"),
    (_over_budget, "exceeds"),
    (_wrong_data_hash, "data_sha256"),
    (_wrong_weights, "weights_sha256"),
    (_metric_not_of_predictions, "not the metric of the submitted predictions"),
    (_invalid_action, "not a valid action"),
])
def test_rejected_submissions_leave_the_board_unchanged(board, submission, forge, message, capsys, tmp_path):
    before = snapshot(board)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forge(json.loads(json.dumps(submission)))))
    capsys.readouterr()
    assert main(["submit", str(path), "--root", str(board)]) == 2
    err = capsys.readouterr().err
    assert "promptgym: error:" in err
    assert re.search(message, err), err
    assert snapshot(board) == before


def test_swapped_prompt_is_caught_by_rescoring(board, submission, capsys, tmp_path):
    """The claimed scores belong to another prompt: only re-scoring on the model can notice."""
    forged = _swapped_prompt(json.loads(json.dumps(submission)))
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(forged))
    before = snapshot(board)
    assert main(["submit", str(path), "--root", str(board)]) == 2
    assert "but the prompt scores" in capsys.readouterr().err
    assert snapshot(board) == before


@pytest.mark.parametrize("raw", [
    b'{"schema_version": 1, "env_id": "PromptSST2-v0", "runs": [',   # truncated
    b"not json at all",
    b'{"schema_version": NaN}',
    b"[]",
])
def test_malformed_files_are_rejected_cleanly(board, raw, capsys, tmp_path):
    before = snapshot(board)
    path = tmp_path / "bad.json"
    path.write_bytes(raw)
    assert main(["submit", str(path), "--root", str(board)]) == 2
    assert "promptgym: error:" in capsys.readouterr().err
    assert snapshot(board) == before


def test_hostile_env_id_cannot_escape_the_board(board, submission, capsys, tmp_path):
    before = snapshot(board)
    forged = json.loads(json.dumps(submission))
    forged["env_id"] = "../../etc"
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(forged))
    assert main(["submit", str(path), "--root", str(board)]) == 2
    assert snapshot(board) == before
    assert not (tmp_path.parent / "etc").exists()


def test_missing_file_and_duplicate_submission(board, submission, capsys, tmp_path):
    assert main(["submit", str(tmp_path / "nope.json"), "--root", str(board)]) == 2
    before = snapshot(board)
    path = tmp_path / "again.json"
    path.write_text(json.dumps(submission))
    assert main(["submit", str(path), "--root", str(board)]) == 2
    assert "already" in capsys.readouterr().err
    assert snapshot(board) == before


def test_submit_check_verifies_several_files_and_writes_nothing(submission, capsys, tmp_path):
    """What CI runs on the entries a pull request adds: every check of submit, no board needed, no write."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps(submission))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_forge_predictions(json.loads(json.dumps(submission)))))
    malformed = tmp_path / "malformed.json"
    malformed.write_text("{")
    capsys.readouterr()
    assert main(["submit", "--check", str(good), str(good)]) == 0
    out = capsys.readouterr().out
    assert out.count(f"ok: {good}") == 2 and out.rstrip().endswith("2 files verified; nothing written")
    assert main(["submit", "--check", str(good), str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    assert captured.out.count("ok: ") == 1  # the first bad file ends it
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"promptgym: error: {bad}: runs[0].test.metric")
    assert main(["submit", "--check", str(good), str(malformed)]) == 2  # parsed before anything is re-scored
    captured = capsys.readouterr()
    assert "verifying" not in captured.out and captured.err.startswith(f"promptgym: error: {malformed}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "good.json", "malformed.json"]


def test_submit_adds_several_files_all_or_none(board, submission, capsys, tmp_path):
    """A grid's entries go in one process (shared prompts scored once); a bad or repeated file adds nothing."""
    files = []
    for name in ("alice", "bob", "carol"):  # three valid entries: the same runs under other submitters
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**submission, "submitter": name}))
        files.append(path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_forge_predictions(json.loads(json.dumps(submission))), "submitter": "dave"}))
    before = snapshot(board)
    assert main(["submit", str(files[0]), str(bad), "--root", str(board)]) == 2
    assert capsys.readouterr().err.startswith(f"promptgym: error: {bad}: ")
    assert snapshot(board) == before  # the good file before the bad one is not added either
    assert main(["submit", str(files[0]), str(files[0]), "--root", str(board)]) == 2
    assert "given twice; nothing written" in capsys.readouterr().err and snapshot(board) == before
    assert main(["submit", str(files[0]), str(files[1]), "--root", str(board)]) == 0
    out = capsys.readouterr().out
    assert out.count("accepted: ") == 2 and out.count("leaderboard updated") == 1
    added = snapshot(board)
    assert len([k for k in added if k.endswith(".json")]) == len([k for k in before if k.endswith(".json")]) + 2
    assert main(["submit", str(files[2]), str(files[1]), "--root", str(board)]) == 2  # bob is on the board now
    assert "already exists" in capsys.readouterr().err and snapshot(board) == added  # carol is not added alone


def test_a_cached_run_of_another_agent_config_or_a_seed_kwarg_is_refused(unit_tier, tmp_path, capsys):
    base = ["evaluate", "--env", ENV, "--agent", "random", "--tier", unit_tier, "--model", MODEL,
            "--workdir", str(tmp_path), "--no-progress", "--seeds", "13"]
    assert main([*base, "--agent-kwarg", "batch=5"]) == 0
    cached = (tmp_path / "seed-13.json").read_bytes()
    capsys.readouterr()
    # the same folder asked for the default config: refused, not reported as the default's run
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "was run with batch=5" in err and "another --workdir" in err
    assert (tmp_path / "seed-13.json").read_bytes() == cached
    # the protocol owns the agent seed
    assert main([*base, "--agent-kwarg", "seed=5", "--workdir", str(tmp_path / "other")]) == 2
    assert "do not pass seed" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_a_cached_run_of_another_model_is_refused_and_each_preset_has_its_own_folder(unit_tier, tmp_path, capsys):
    from promptgym.runs import evaluate_workdir

    base = ["evaluate", "--env", ENV, "--agent", "random", "--tier", unit_tier, "--workdir", str(tmp_path),
            "--no-progress", "--seeds", "13"]
    assert main([*base, "--model", MODEL]) == 0
    cached = (tmp_path / "seed-13.json").read_bytes()
    assert json.loads(cached)["extra"]["model"] == MODEL
    capsys.readouterr()
    # the same folder asked for another model: refused before any model loads, the cached run untouched
    assert main([*base, "--model", "tiny-random-masked"]) == 2
    err = capsys.readouterr().err
    assert f"was run on model {MODEL!r}, not 'tiny-random-masked'" in err and err.count("\n") == 1
    assert (tmp_path / "seed-13.json").read_bytes() == cached
    # runs cached before the model was recorded count as the default model's
    old = json.loads(cached)
    del old["extra"]["model"]
    (tmp_path / "seed-13.json").write_text(json.dumps(old))
    assert main([*base, "--model", MODEL]) == 2
    assert "was run on model 'smollm2-135m'" in capsys.readouterr().err
    # the default folders: the default model at the top, any other preset one level down, URLs at the top
    folder = f"{ENV}-bbt-lite"
    assert evaluate_workdir(ENV, "bbt", "lite", root="R") == Path("R") / folder
    assert evaluate_workdir(ENV, "bbt", "lite", root="R", model="gemma3-270m") == Path("R/gemma3-270m") / folder
    assert evaluate_workdir(ENV, "bbt", "lite", root="R", model="http://127.0.0.1:9") == Path("R") / folder
