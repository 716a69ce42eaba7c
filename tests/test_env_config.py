"""Typed env configs: each kind's dataclass validates itself, gym.make takes the same kwargs as ever,
and ``--env-kwarg`` is typed by the fields (a bad key or value: one line, exit 2, nothing written)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import promptgym  # noqa: F401  (registers the env ids)
from promptgym.cli import main, parse_env_kwargs
from promptgym.envs.budget import QueryBudget
from promptgym.envs.config import (
    DiscreteConfig,
    DType,
    EnvConfig,
    Init,
    Projection,
    PromptPosition,
    RewardKind,
    SubspaceConfig,
    TokenwiseConfig,
    VocabMethod,
)
from promptgym.envs.registration import KINDS, env_config_class
from promptgym.errors import ConfigError, UnknownSeedError, UnknownTaskError
from promptgym.typed_config import choices

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "tiny-random-causal", "dtype": "float32"}
CONFIGS = [DiscreteConfig, TokenwiseConfig, SubspaceConfig]

#: the kwargs and defaults of v0 (the signatures before the configs): changing one would change what an
#: existing env id builds, so every recorded run would stop reproducing
V0_DEFAULTS = {
    "common": {"task": "sst2", "model": "smollm2-135m", "dtype": "bfloat16", "split_seed": 13, "budget": 8000,
               "reward": "ce", "batch_size": None, "prompt_position": "before", "template": "auto",
               "data_dir": None, "render_mode": None, "api_key": None},
    "discrete": {"prompt_length": 10, "num_candidates": 200, "vocab_method": "pmi", "episode_length": 1},
    "tokenwise": {"prompt_length": 10, "num_candidates": 200, "vocab_method": "pmi"},
    "subspace": {"intrinsic_dim": 500, "prompt_length": 10, "projection": "normal", "init": "words", "bound": 5.0,
                 "projection_seed": None, "episode_length": 1},
}


def _defaults(config_class: type) -> dict:
    return {f.name: f.default.value if hasattr(f.default, "value") else f.default
            for f in dataclasses.fields(config_class)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_names_and_defaults_are_those_of_v0(kind):
    assert _defaults(KINDS[kind].config_class) == {**V0_DEFAULTS["common"], **V0_DEFAULTS[kind]}


def test_the_enums_are_the_choices_the_rest_of_the_package_knows():
    from promptgym.envs.reward import REWARDS
    from promptgym.envs.subspace import INITS, PROJECTIONS
    from promptgym.envs.vocab import METHODS
    from promptgym.tasks.spec import PROMPT_POSITIONS

    assert choices(RewardKind) == REWARDS == ("ce", "hinge", "accuracy", "label_only")
    assert choices(PromptPosition) == PROMPT_POSITIONS
    assert choices(VocabMethod) == METHODS and choices(Projection) == PROJECTIONS and choices(Init) == INITS
    assert choices(DType) == ("bfloat16", "float32")


@pytest.mark.parametrize("config_class", CONFIGS)
def test_a_config_takes_text_or_members_for_choices_and_keeps_members(config_class):
    cfg = config_class(reward="hinge", prompt_position=PromptPosition.AFTER, dtype="float32", split_seed=np.int64(42))
    assert cfg.reward is RewardKind.HINGE and cfg.prompt_position is PromptPosition.AFTER and cfg.dtype is DType.FLOAT32
    assert type(cfg.split_seed) is int and cfg.split_seed == 42
    assert cfg.reward == "hinge"  # a str enum still compares as its text


@pytest.mark.parametrize(("config_class", "kwargs", "error", "message"), [
    (DiscreteConfig, {"reward": "mse"}, ConfigError,
     "DiscreteConfig.reward must be one of ce, hinge, accuracy, label_only, got 'mse'"),
    (DiscreteConfig, {"prompt_position": "middle"}, ConfigError, "prompt_position must be one of before, after"),
    (DiscreteConfig, {"render_mode": "human"}, ConfigError, "render_mode must be one of ansi (or None), got 'human'"),
    (DiscreteConfig, {"dtype": "float16"}, ConfigError, "dtype must be one of bfloat16, float32"),
    (DiscreteConfig, {"prompt_length": 2.5}, ConfigError, "DiscreteConfig.prompt_length must be int, got 2.5"),
    (DiscreteConfig, {"prompt_length": True}, ConfigError, "prompt_length must be int, got True"),
    (DiscreteConfig, {"prompt_length": 0}, ConfigError, "prompt_length must be >= 1, got 0"),
    (DiscreteConfig, {"num_candidates": 0}, ConfigError, "num_candidates must be >= 1"),
    (DiscreteConfig, {"episode_length": 0}, ConfigError, "episode_length must be >= 1"),
    (DiscreteConfig, {"vocab_method": "magic"}, ConfigError, "vocab_method must be one of pmi, frequency"),
    (DiscreteConfig, {"budget": 2.5}, ConfigError, "budget must be int or QueryBudget, got 2.5"),
    (DiscreteConfig, {"budget": 0}, ConfigError, "budget must be at least 1 API call, got 0"),
    (DiscreteConfig, {"batch_size": 0}, ConfigError, "batch_size must be a positive whole number or None, got 0"),
    (DiscreteConfig, {"split_seed": 7}, UnknownSeedError, "split_seed must be one of the published"),
    (DiscreteConfig, {"task": "nope"}, UnknownTaskError, "unknown task 'nope'"),
    (DiscreteConfig, {"template": "fancy"}, ConfigError, "no template 'fancy'"),
    (DiscreteConfig, {"api_key": "pg-x"}, ConfigError, "api_key is for a served model"),
    (TokenwiseConfig, {"prompt_length": -1}, ConfigError, "prompt_length must be >= 1"),
    (SubspaceConfig, {"intrinsic_dim": 0}, ConfigError, "intrinsic_dim must be >= 1"),
    (SubspaceConfig, {"bound": 0}, ConfigError, "bound must be a finite number > 0, got 0.0"),
    (SubspaceConfig, {"bound": float("inf")}, ConfigError, "SubspaceConfig.bound must be a finite number"),
    (SubspaceConfig, {"bound": "5"}, ConfigError, "SubspaceConfig.bound must be float, got '5'"),
    (SubspaceConfig, {"projection": "sparse"}, ConfigError, "projection must be one of normal, uniform"),
    (SubspaceConfig, {"init": "ones"}, ConfigError, "init must be one of words, zeros"),
    (SubspaceConfig, {"projection_seed": -1}, ConfigError, "projection_seed must be >= 0 or None"),
])
def test_each_config_refuses_a_bad_value_in_one_line_naming_it(config_class, kwargs, error, message):
    with pytest.raises(error) as info:
        config_class(**kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_unknown_kwargs_name_the_fields_and_a_config_object_is_updated_by_kwargs():
    with pytest.raises(ConfigError, match=r"TokenwiseConfig has no field 'episode_length'; its fields: task, "):
        TokenwiseConfig.build(None, {"episode_length": 2})
    with pytest.raises(ConfigError, match="this env kind takes a SubspaceConfig, got DiscreteConfig"):
        SubspaceConfig.build(DiscreteConfig(), {})
    base = DiscreteConfig(prompt_length=3)
    assert DiscreteConfig.build(base, {}) is base
    updated = DiscreteConfig.build(base, {"task": "rte", "reward": "accuracy"})
    assert (updated.task, updated.prompt_length, updated.reward) == ("rte", 3, RewardKind.ACCURACY)
    with pytest.raises(ConfigError, match="prompt_length must be >= 1"):  # an update is validated again
        DiscreteConfig.build(base, {"prompt_length": 0})


def test_a_served_model_s_key_is_not_in_the_repr():
    cfg = DiscreteConfig(model="http://127.0.0.1:1", api_key="pg-secret-key")  # checked, never connected
    assert cfg.api_key == "pg-secret-key" and "pg-secret-key" not in repr(cfg)


def test_a_shared_budget_object_is_kept():
    budget = QueryBudget(5)
    assert SubspaceConfig(budget=budget).budget is budget


def test_command_line_values_are_typed_by_the_fields():
    assert DiscreteConfig.parse("prompt_length", "7") == 7
    assert SubspaceConfig.parse("bound", "2") == 2.0 and isinstance(SubspaceConfig.parse("bound", "2"), float)
    assert DiscreteConfig.parse("batch_size", "none") is None and DiscreteConfig.parse("batch_size", "8") == 8
    assert SubspaceConfig.parse("projection_seed", "null") is None
    reward = DiscreteConfig.parse("reward", "hinge")
    assert reward == "hinge" and type(reward) is str  # run records store plain text
    assert DiscreteConfig.parse("render_mode", "ansi") == "ansi" and DiscreteConfig.parse("render_mode", "none") is None
    assert DiscreteConfig.parse("data_dir", "/data") == "/data"
    with pytest.raises(ConfigError, match="DiscreteConfig.prompt_length must be int, got 'ten'"):
        DiscreteConfig.parse("prompt_length", "ten")
    with pytest.raises(ConfigError, match="DiscreteConfig.reward must be one of ce, hinge, accuracy, label_only"):
        DiscreteConfig.parse("reward", "mse")
    with pytest.raises(ConfigError, match="no field 'bound'"):
        DiscreteConfig.parse("bound", "2")
    assert EnvConfig.kwarg_names()[0] == "model" and "task" not in SubspaceConfig.kwarg_names()


def test_parse_env_kwargs_checks_the_kwargs_together_before_anything_loads():
    assert parse_env_kwargs("PromptSST2-Subspace-v0", ["bound=2", "reward=label_only", "projection_seed=none"]) == {
        "bound": 2.0, "reward": "label_only", "projection_seed": None}
    assert parse_env_kwargs("PromptSST2-v0", []) == {}
    with pytest.raises(ConfigError, match=r"PromptSST2-v0 \(discrete kind\) takes no env kwarg 'bound'; its kwargs: "
                                          "model, dtype, "):
        parse_env_kwargs("PromptSST2-v0", ["bound=2"])
    with pytest.raises(ConfigError, match="takes no env kwarg 'task'"):
        parse_env_kwargs("PromptSST2-v0", ["task=rte"])  # the id sets the task
    with pytest.raises(ConfigError, match="prompt_length must be >= 1"):
        parse_env_kwargs("PromptSST2-Tokenwise-v0", ["prompt_length=0"])
    with pytest.raises(ConfigError, match="set by their own options"):
        parse_env_kwargs("PromptSST2-v0", ["budget=5"])


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize(("argv", "expect"), [
    (["--env", "PromptSST2-v0", "--env-kwarg", "num_cands=20"],
     "PromptSST2-v0 (discrete kind) takes no env kwarg 'num_cands'; its kwargs: model, dtype, split_seed"),
    (["--env", "PromptSST2-Subspace-v0", "--env-kwarg", "intrinsic_dim=ten"],
     "SubspaceConfig.intrinsic_dim must be int, got 'ten'"),
    (["--env", "PromptSST2-v0", "--env-kwarg", "reward=mse"],
     "DiscreteConfig.reward must be one of ce, hinge, accuracy, label_only, got 'mse'"),
    (["--env", "PromptSST2-Tokenwise-v0", "--env-kwarg", "episode_length=2"], "takes no env kwarg 'episode_length'"),
    (["--env", "PromptSST2-v0", "--env-kwarg", "batch_size=0"], "batch_size must be a positive whole number"),
])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_env_kwarg_is_one_line_exit_2_before_the_model_loads(command, argv, expect, capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a model that does not exist: had anything loaded it (or charged a call), the error would be another
    assert main([command, *argv, "--agent", "random", "--model", "no-such-model-anywhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptgym: error: ") and "Traceback" not in err, err
    assert expect in err, err
    assert list(tmp_path.iterdir()) == []


def test_list_envs_prints_each_kind_s_typed_fields(capsys):
    assert main(["list", "envs"]) == 0
    out = capsys.readouterr().out
    assert "DiscreteConfig" in out and "SubspaceConfig" in out and "TokenwiseConfig" in out
    assert "reward='ce'" in out and "ce|hinge|accuracy|label_only" in out and "intrinsic_dim=500" in out
    assert "budget=8000" in out and "actions lie in [-bound, bound]^d" in out


# ---------------------------------------------------------------------------------------------- gym.make
def _committed_env_kwargs() -> set[tuple[str, str]]:
    """(env id, env kwargs as JSON) of every committed leaderboard entry and run file that records them."""
    files = subprocess.run(["git", "ls-files", "leaderboards", "runs"], capture_output=True, text=True, cwd=ROOT,
                           check=True).stdout.split()
    found: set[tuple[str, str]] = set()

    def walk(node, env_id=None):
        if isinstance(node, dict):
            env_id = node["env_id"] if isinstance(node.get("env_id"), str) else env_id
            for key, value in node.items():
                if key == "env_kwargs" and isinstance(value, dict) and env_id and env_id.startswith("Prompt"):
                    found.add((env_id, json.dumps(value, sort_keys=True)))
                else:
                    walk(value, env_id)
        elif isinstance(node, list):
            for item in node:
                walk(item, env_id)

    for name in files:
        if name.endswith(".json"):
            try:
                walk(json.loads((ROOT / name).read_text()))
            except (OSError, json.JSONDecodeError):
                continue
    return found


def test_gym_make_takes_every_env_kwarg_the_committed_entries_and_runs_use():
    found = _committed_env_kwargs()
    assert ("PromptSST2-Subspace-v0", '{"reward": "label_only"}') in found  # the collection is not empty
    # the ablations (benchmarks/agent_table.py) ran with these, recorded in RESULTS.md rather than in files
    found |= {("PromptSST2-Subspace-v0", '{"reward": "hinge"}'), ("PromptSST2-v0", '{"prompt_position": "after"}')}
    for env_id, text in sorted(found):
        kwargs = json.loads(text)
        small = {"num_candidates": 20} if "Subspace" not in env_id else {"intrinsic_dim": 8}
        env = gym.make(env_id, budget=3, **TINY, **small, **kwargs).unwrapped
        for key, value in kwargs.items():
            assert getattr(env.config, key) == value, (env_id, key)
        assert env.reward_kind == kwargs.get("reward", "ce") and type(env.reward_kind) is str
        assert env.prompt_position == kwargs.get("prompt_position", "before")
        # the CLI reads the recorded values back to the same kwargs
        items = [f"{k}={v}" for k, v in kwargs.items()]
        assert parse_env_kwargs(env_id, items) == kwargs


def test_every_field_reaches_the_env_through_gym_make():
    data_dir = os.environ["PROMPTGYM_DATA_DIR"]
    common = dict(TINY, split_seed=21, budget=4, batch_size=8, template="causal", data_dir=data_dir,
                  render_mode="ansi")
    d = gym.make("PromptSST2-v0", reward="accuracy", prompt_position="after", prompt_length=3, num_candidates=20,
                 vocab_method="frequency", episode_length=2, **common).unwrapped
    assert (d.reward_kind, d.prompt_position, d.prompt_length, d.num_candidates, d.episode_length) == (
        "accuracy", "after", 3, 20, 2)
    assert (d.split_seed, d.budget.max_calls, d.batch_size, d.render_mode, d.data_dir) == (21, 4, 8, "ansi", data_dir)
    assert d.candidates.source.startswith("frequency:") and d.template is d.spec_task.causal
    t = gym.make("PromptSST2-Tokenwise-v0", prompt_length=2, num_candidates=10, **common).unwrapped
    assert t.episode_length == 2 and t.action_space == gym.spaces.Discrete(10)
    s = gym.make("PromptSST2-Subspace-v0", intrinsic_dim=6, prompt_length=2, projection="uniform", init="zeros",
                 bound=3, projection_seed=7, **common).unwrapped
    assert (s.intrinsic_dim, s.prompt_length, s.projection_kind, s.init, s.bound, s.projection_seed) == (
        6, 2, "uniform", "zeros", 3.0, 7)
    assert s.action_space == gym.spaces.Box(-3.0, 3.0, (6,), np.float32) and not s.p0.any()


def test_a_config_object_through_gym_make_and_the_ids_task_wins():
    cfg = DiscreteConfig(task="sst2", prompt_length=2, num_candidates=10, **TINY)
    env = gym.make("PromptRTE-v0", config=cfg, budget=5).unwrapped
    assert env.spec_task.name == "rte" and env.prompt_length == 2 and env.budget.max_calls == 5
    assert env.config.task == "rte" and cfg.task == "sst2"  # the caller's config is not changed
    assert env_config_class("PromptRTE-Subspace-v0") is SubspaceConfig


def test_configs_and_env_outcomes_are_unchanged_by_the_route():
    """kwargs and an equal config object build the same env: the same candidates and the same reward."""
    kwargs = dict(TINY, prompt_length=3, num_candidates=20, budget=2)
    a = gym.make("PromptSST2-v0", **kwargs).unwrapped
    b = gym.make("PromptSST2-v0", config=DiscreteConfig(**kwargs)).unwrapped
    assert a.candidates.texts == b.candidates.texts
    action = np.arange(3)
    assert a.score_actions([action])[0].reward == b.score_actions([action])[0].reward
