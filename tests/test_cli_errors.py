"""Bad input on the command line: one line on stderr, exit code 2, nothing left behind.

Each case is run from an empty working directory, so "nothing left behind" is checked by looking
at that directory afterwards (``runs/evaluate/...`` used to be created before the agent was
checked). The tiny random model keeps the cases that do load a model quick.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptgym.cli import build_parser, main

TINY = ["--model", "tiny-random-causal"]


def _fails_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str], cwd: Path, expect: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptgym: error: "), err
    assert expect in err, err
    assert "Traceback" not in err
    assert list(cwd.iterdir()) == [], f"left behind: {list(cwd.iterdir())}"


@pytest.mark.parametrize(("argv", "expect"), [
    (["train", "--env", "PromptNope-v0", "--agent", "bbt"], "unknown env id 'PromptNope-v0'"),
    (["train", "--env", "PromptSST2-v0", "--agent", "nope"], "unknown agent 'nope'; registered agents: bdpl"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bbt"], "agent 'bbt' runs on subspace envs"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--agent-kwarg", "lr=abc"],
     "BDPLConfig.lr must be float, got 'abc'"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--agent-kwarg", "samples=1"], "samples"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--agent-kwarg", "lr"], "expected KEY=VALUE"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--budget", "0"], "budget must be at least 1"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--budget", "2.5"], "invalid int value: '2.5'"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--env-kwarg", "reward=nope", *TINY],
     "DiscreteConfig.reward must be one of ce, hinge, accuracy, label_only, got 'nope'"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--env-kwarg", "budget=5"], "set by their own options"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--env-kwarg", "api_key=pg-secret"], "PROMPTGYM_API_KEY"),
    (["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--split-seed", "7"], "split_seed must be one of"),
    (["evaluate", "--env", "PromptNope-v0", "--agent", "bbt"], "unknown env id 'PromptNope-v0'"),
    (["evaluate", "--env", "PromptSST2-v0", "--agent", "nope"], "unknown agent 'nope'"),
    (["evaluate", "--env", "PromptSST2-v0", "--agent", "bbt"], "agent 'bbt' runs on subspace envs"),
    (["evaluate", "--env", "PromptSST2-v0", "--agent", "random", "--seeds", "abc"], "--seeds takes comma-separated"),
    (["evaluate", "--env", "PromptSST2-v0", "--agent", "random", "--seeds", "13,7"], "seeds must be a non-empty"),
    (["evaluate", "--env", "PromptSST2-v0", "--agent", "prompt_tuning"], "white-box"),
    (["evaluate", "--env", "PromptSST2-v0", "--agent", "random", "--tier", "huge"], "invalid choice: 'huge'"),
    (["submit", "missing.json"], "missing.json: no such file"),
    (["leaderboard"], "no leaderboards/ folder"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(argv, expect, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fails_cleanly(argv, capsys, tmp_path, expect)


def test_submit_a_directory_says_which_file_to_pass(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    assert main(["submit", "work"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory; pass the submission file" in err and "submission.json" in err


def test_leaderboard_outside_a_checkout_creates_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--root", str(tmp_path / "elsewhere")]) == 2
    assert "no leaderboards/ folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_a_subset_of_seeds_says_the_run_was_saved_and_how_to_finish(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--env", "PromptSST2-v0", "--agent", "manual", "--seeds", "13", *TINY,
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    work = Path("runs") / "evaluate" / "tiny-random-causal" / "PromptSST2-v0-manual-lite"  # a non-default preset
    assert f"seed runs saved in {work}" in out and "--seeds 13,21,42,87,100" in out
    run = json.loads((tmp_path / work / "seed-13.json").read_text())
    assert run["seed"] == 13 and run["calls_used"] == 0 and run["test"]["n"] == 872
    # the cached run says how to reproduce it from the file alone
    assert run["extra"]["env_id"] == "PromptSST2-v0" and run["extra"]["model"] == "tiny-random-causal"
    assert run["extra"]["agent"] == "manual" and run["extra"]["agent_config"]["seed"] == 13
    assert not (tmp_path / work / "submission.json").exists()


def test_the_installed_command_prints_no_traceback(tmp_path):
    """The real entry point, in a fresh process: the reported first-use case of an unknown env id."""
    proc = subprocess.run([sys.executable, "-m", "promptgym.cli", "train", "--env", "PromptNope-v0", "--agent", "bbt"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "did you mean" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_and_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("promptgym ")
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: 8000)" in out and "--no-progress" in out


def test_list_shows_agents_with_their_config_fields_and_env_kwargs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "agents (promptgym train --agent NAME):" in out and "bbt" in out and "prompt_tuning" in out
    assert main(["list", "--agent", "bdpl"]) == 0
    out = capsys.readouterr().out
    assert "discrete (Prompt<Task>-v0), tokenwise" in out
    assert "samples" in out and "prompts per iteration" in out and "0.005" in out
    assert main(["list", "envs"]) == 0
    out = capsys.readouterr().out
    assert "intrinsic_dim=500" in out and "budget=8000" in out


def test_progress_estimates_the_whole_run_from_the_first_calls():
    import gymnasium as gym

    from promptgym.callbacks import hooked
    from promptgym.progress import LiveMonitor

    env = gym.make("PromptSST2-v0", model="tiny-random-causal", dtype="float32", budget=40, num_candidates=20)
    base = env.unwrapped
    with hooked(env, LiveMonitor(base, "t", enabled=False)) as monitor:
        base.score_actions([env.action_space.sample() for _ in range(2)])
        assert monitor.estimate is None  # too few calls timed yet
        base.score_actions([env.action_space.sample() for _ in range(4)])
    assert monitor.estimate is not None and "the remaining 34 of 40 calls would take about" in monitor.estimate


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command parser below ``parser``, nested ones (``keys add``) included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(name, sub)] + [(f"{name} {n}", p) for n, p in _subparsers(sub)]
    return found


def test_every_optional_flag_that_takes_a_value_states_its_default() -> None:
    """The README's promise: `--help` shows each value flag's default (repeatable and required ones aside)."""
    missing = []
    for name, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if (not action.option_strings or action.nargs == 0 or action.required
                    or isinstance(action, argparse._AppendAction)):
                continue
            if "default" not in (action.help or ""):
                missing.append(f"{name} {action.option_strings[0]}")
    assert missing == []
