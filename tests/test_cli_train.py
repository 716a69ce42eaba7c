"""``promptgym train``: the run folder and its files, on the tiny random model; the custom-agent example."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the env ids)
from promptgym.cli import main, parse_kv
from promptgym.errors import ConfigError
from promptgym.runs import load_result

ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--model", "tiny-random-causal", "--dtype", "float32"]
RUN_FILES = {"config.json", "prompt.json", "prompt.txt", "curve.csv", "curve.png"}


def _train(tmp_path: Path, *args: str) -> Path:
    assert main(["train", *args, *TINY_ARGS, "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    return run_dir


def _curve(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "curve.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_train_discrete_writes_a_complete_run_folder(tmp_path, capsys):
    run_dir = _train(tmp_path, "--env", "PromptSST2-v0", "--agent", "bdpl", "--budget", "30", "--seed", "3",
                     "--env-kwarg", "num_candidates=30", "--env-kwarg", "prompt_length=4",
                     "--env-kwarg", "batch_size=8", "--agent-kwarg", "samples=8", "--agent-kwarg", "dev_every=1")
    assert run_dir.name.startswith("PromptSST2-v0-bdpl-s13-3-")
    assert "run folder" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_id"] == "PromptSST2-v0" and config["env_kind"] == "discrete"
    assert config["budget"] == 30 and config["seed"] == 3 and config["split_seed"] == 13
    assert config["agent"] == "bdpl" and config["agent_config"]["seed"] == 3 and config["agent_config"]["samples"] == 8
    assert config["env_kwargs"] == {"num_candidates": 30, "prompt_length": 4, "batch_size": 8}
    assert config["model"] == "tiny-random-causal" and config["dtype"] == "float32"
    assert 0 < config["budget_used"]["calls"] <= 30 and config["versions"]["stable-baselines3"]
    assert len(config["data"]["train_sha256"]) == 64 and config["candidates"]["count"] == 30

    prompt = json.loads((run_dir / "prompt.json").read_text())
    assert prompt["action_kind"] == "candidate_indices" and len(prompt["action"]) == 4
    assert prompt["calls_used"] == config["budget_used"]["calls"]
    assert 0.0 <= prompt["dev_metric"] <= 1.0 and prompt["metric"] == "accuracy"
    text = (run_dir / "prompt.txt").read_text()
    assert repr(prompt["prompt_text"]) in text and f"[[{prompt['prompt_text']}]]" in text

    rows = _curve(run_dir)
    assert list(rows[0]) == ["calls", "best_train_reward", "best_dev_metric"]
    calls = [int(r["calls"]) for r in rows]
    assert calls == sorted(calls) and calls[-1] <= 30
    train = [float(r["best_train_reward"]) for r in rows if r["best_train_reward"]]
    dev = [float(r["best_dev_metric"]) for r in rows if r["best_dev_metric"]]
    assert train == sorted(train) and dev == sorted(dev) and dev
    png = (run_dir / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    result = load_result(run_dir)
    np.testing.assert_array_equal(result.action, prompt["action"])
    assert result.dev_metric == prompt["dev_metric"]


def test_train_subspace_and_calibrated_runs_write_readable_prompts(tmp_path):
    run_dir = _train(tmp_path / "bbt", "--env", "PromptSST2-Subspace-v0", "--agent", "bbt", "--budget", "24",
                     "--env-kwarg", "intrinsic_dim=12", "--env-kwarg", "batch_size=8", "--agent-kwarg", "popsize=6",
                     "--quiet")
    prompt = json.loads((run_dir / "prompt.json").read_text())
    assert prompt["action_kind"] == "z" and len(prompt["action"]) == 12
    assert "z (12 values" in (run_dir / "prompt.txt").read_text()

    run_dir = _train(tmp_path / "cal", "--env", "PromptSST2-Tokenwise-v0", "--agent", "calibrated", "--budget", "5",
                     "--quiet")
    prompt = json.loads((run_dir / "prompt.json").read_text())
    assert prompt["action"] is None and len(prompt["label_bias"]) == 2 and prompt["calls_used"] == 2
    assert "label bias: terrible" in (run_dir / "prompt.txt").read_text()
    assert len(_curve(run_dir)) == 2


def test_train_rejects_bad_arguments_with_clear_messages(tmp_path, capsys):
    assert main(["train", "--env", "PromptSST2-v0", "--agent", "bbt", "--budget", "5", *TINY_ARGS,
                 "--out", str(tmp_path), "--quiet"]) == 2
    assert "subspace envs" in capsys.readouterr().err
    assert main(["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--budget", "5", *TINY_ARGS,
                 "--out", str(tmp_path), "--agent-kwarg", "nope=1"]) == 2
    assert "has no field 'nope'" in capsys.readouterr().err
    assert main(["train", "--env", "PromptSST2-v0", "--agent", "bdpl", "--budget", "5", *TINY_ARGS,
                 "--out", str(tmp_path), "--agent-kwarg", "lr=fast"]) == 2
    assert "BDPLConfig.lr must be float, got 'fast'" in capsys.readouterr().err
    assert main(["train", "--env", "PromptSST2-v0", "--agent", "unknown"]) == 2
    assert "unknown agent 'unknown'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_parse_kv():
    assert parse_kv(["a=1", "b=0.5", "c=hinge", "d=true", "e=none", "f=[1, 2]", 'g={"x": 1}', "h=x=y"]) == {
        "a": 1, "b": 0.5, "c": "hinge", "d": True, "e": None, "f": [1, 2], "g": {"x": 1}, "h": "x=y"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_kv(["novalue"])


def test_custom_agent_example_runs():
    spec = importlib.util.spec_from_file_location("custom_agent", ROOT / "docs" / "custom_agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = gym.make("PromptSST2-v0", model="tiny-random-causal", dtype="float32", budget=16, num_candidates=30,
                   prompt_length=4, batch_size=8)
    result = module.CoordinateAgent(batch=5).learn(env)
    assert result.agent == "coordinate" and result.calls_used == env.unwrapped.budget.calls == 16
    env.unwrapped.validate_action(result.action)
    assert 0.0 <= result.dev_metric <= 1.0 and len(result.train_curve) == 3


def test_demo_glue_on_the_tiny_model(tmp_path, capsys):
    """`promptgym demo` is a real SmolLM2 run (~3 min); its code path is checked here on the tiny model."""
    assert main(["demo", "--budget", "21", "--model", "tiny-random-causal", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "learned prompt: '" in out and "test accuracy: manual template 0." in out
    assert len(list(tmp_path.iterdir())) == 1
