"""``--log tensorboard``: a run's curves as TensorBoard events indexed by API calls, on the tiny model.

Events are read back with TensorBoard's own reader, so what is asserted is what the dashboard shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import promptgym  # noqa: F401  (registers the env ids)
from promptgym.bench import schema
from promptgym.cli import main
from promptgym.journal import CallJournal
from promptgym.runs import JOURNAL_FILE

TINY = ["--model", "tiny-random-causal", "--dtype", "float32", "--no-progress"]
BBT = ["train", "--env", "PromptSST2-Subspace-v0", "--agent", "bbt", "--budget", "60", "--seed", "1",
       "--env-kwarg", "intrinsic_dim=16", "--env-kwarg", "prompt_length=4", "--env-kwarg", "batch_size=8",
       "--agent-kwarg", "popsize=6", "--agent-kwarg", "dev_every=2", *TINY]


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def _run_dir(out: Path) -> Path:
    (run_dir,) = list(out.iterdir())
    return run_dir


def test_train_logs_curves_by_calls(tmp_path):
    assert main([*BBT, "--log", "tensorboard", "--out", str(tmp_path)]) == 0
    run_dir = _run_dir(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    acc = _events(run_dir / "tensorboard")
    tags = acc.Tags()
    assert {"train/best_reward", "train/batch_best_reward", "dev/best_metric", "budget/remaining_calls",
            "speed/calls_per_s"} <= set(tags["scalars"])
    steps = _steps(acc, "train/best_reward")
    best = [e.value for e in acc.Scalars("train/best_reward")]
    assert steps == sorted(set(steps)) and steps[0] == 6  # one point per generation of 6 calls
    assert best == sorted(best)  # best so far never drops
    used = config["budget_used"]["calls"]
    assert max(steps + _steps(acc, "dev/best_metric")) == used
    remaining = {e.step: e.value for e in acc.Scalars("budget/remaining_calls")}
    assert all(remaining[s] == 60 - s for s in remaining)
    assert {"prompt/best_train/text_summary", "config/text_summary"} <= set(tags["tensors"])
    text = acc.Tensors("prompt/best_train/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("soft prompt: 4 vectors") and "train reward" in text


def test_sb3_logs_into_the_same_run(tmp_path):
    args = ["train", "--env", "PromptSST2-v0", "--agent", "ppo", "--budget", "40", "--env-kwarg", "num_candidates=20",
            "--env-kwarg", "prompt_length=3", "--env-kwarg", "batch_size=8", "--agent-kwarg", "n_steps=8",
            "--agent-kwarg", "batch_size=8", "--agent-kwarg", "n_epochs=1", "--agent-kwarg", "dev_every=0", *TINY]
    assert main([*args, "--log", "tensorboard", "--out", str(tmp_path)]) == 0
    folder = _run_dir(tmp_path) / "tensorboard"
    ours = _events(folder).Tags()["scalars"]
    assert "train/best_reward" in ours
    sb3 = _events(folder / "sb3").Tags()["scalars"]
    assert any(t.startswith("train/") for t in sb3) and "promptgym/calls_used" in sb3
    prompt = _events(folder).Tensors("prompt/best_train/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert prompt.startswith("'")  # a discrete prompt is shown as its text


def test_a_resumed_run_logs_each_call_once(tmp_path, kill_after_batches):
    with kill_after_batches(4):
        main([*BBT, "--log", "tensorboard", "--out", str(tmp_path)])
    run_dir = _run_dir(tmp_path)
    from promptgym.journal import journal_identity

    killed = CallJournal(run_dir / JOURNAL_FILE, journal_identity(run_dir / JOURNAL_FILE)).recorded_calls
    assert killed > 0
    assert main(["train", "--resume", str(run_dir), "--log", "tensorboard"]) == 0
    acc = _events(run_dir / "tensorboard")
    steps = _steps(acc, "train/best_reward")
    assert steps == sorted(set(steps))  # the killed attempt's points are purged, not doubled
    assert min(_steps(acc, "speed/calls_per_s")) > killed  # calls/s counts live calls, not the fast replay
    assert steps[-1] <= json.loads((run_dir / "config.json").read_text())["budget_used"]["calls"]


def test_evaluate_logs_each_seed_and_its_test_score(tmp_path):
    schema.TIERS["unit"] = 30
    try:
        assert main(["evaluate", "--env", "PromptSST2-v0", "--agent", "random", "--tier", "unit", "--seeds", "13",
                     "--model", "tiny-random-causal", "--workdir", str(tmp_path), "--no-progress",
                     "--log", "tensorboard"]) == 0
    finally:
        del schema.TIERS["unit"]
    run = json.loads((tmp_path / "seed-13.json").read_text())
    acc = _events(tmp_path / "tensorboard" / "seed-13")
    (test,) = acc.Scalars("test/accuracy")
    assert test.step == run["calls_used"] and test.value == pytest.approx(run["test"]["metric"])
    assert acc.Scalars("test/ece")[0].value == pytest.approx(run["test"]["ece"])


def test_an_unknown_tracker_is_refused_before_anything(tmp_path, capsys):
    assert main([*BBT, "--log", "wandb", "--out", str(tmp_path)]) == 2
    assert "invalid choice" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
