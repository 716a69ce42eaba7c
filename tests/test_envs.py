"""The gym on a tiny random model: API conformance, budget semantics, errors, determinism."""

from __future__ import annotations

import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import promptgym
from promptgym.envs.registration import registered_ids
from promptgym.errors import BudgetExhausted, InvalidActionError

TINY = {"model": "tiny-random-causal", "dtype": "float32"}


def make(id_: str = "PromptSST2-v0", **kw):
    return gym.make(id_, **{**TINY, **kw})


def test_every_task_and_kind_is_registered():
    ids = registered_ids()
    assert len(ids) == 33
    for id_ in ("PromptSST2-v0", "PromptYelpP-v0", "PromptAGNews-v0", "PromptDBPedia-v0", "PromptMRPC-v0",
                "PromptRTE-v0", "PromptSNLI-v0", "PromptMNLI-v0", "PromptQNLI-v0", "PromptQQP-v0", "PromptCoLA-v0",
                "PromptSST2-Subspace-v0", "PromptSST2-Tokenwise-v0"):
        assert id_ in gym.registry


@pytest.mark.parametrize("id_", registered_ids())
def test_gymnasium_and_sb3_checkers_pass(id_):
    kw = {"intrinsic_dim": 20} if "Subspace" in id_ else {"num_candidates": 50}
    check_env(make(id_, prompt_length=4, **kw).unwrapped, skip_render_check=True)
    sb3_check_env(make(id_, prompt_length=4, **kw), warn=False)


def test_make_without_prior_import_in_a_fresh_process(tmp_path):
    code = ("import gymnasium as gym; env = gym.make('promptgym:PromptRTE-v0', model='tiny-random-causal', "
            "dtype='float32'); print(env.action_space)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MultiDiscrete" in out.stdout


def test_spaces_and_defaults():
    env = make().unwrapped
    assert env.action_space == gym.spaces.MultiDiscrete([200] * 10)
    assert env.observation_space.shape == (3,)
    assert len(env.candidates) == 200 and env.candidates.source.startswith("pmi")
    sub = make("PromptAGNews-Subspace-v0").unwrapped
    assert sub.action_space.shape == (500,)
    assert sub.observation_space.shape == (5,)  # 4 labels + accuracy
    assert sub.A.shape == (10 * sub.lm.embedding_dim, 500)
    tok = make("PromptSST2-Tokenwise-v0").unwrapped
    assert tok.action_space == gym.spaces.Discrete(200)
    assert tok.observation_space == gym.spaces.MultiDiscrete([201] * 10)


def test_observation_carries_the_scores_of_the_prompt():
    env = make()
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs, [0.5, 0.5, 0.0])
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    np.testing.assert_allclose(obs[:2], info["label_probs"], rtol=1e-6)
    assert abs(obs[:2].sum() - 1) < 1e-4
    assert obs[2] == pytest.approx(info["accuracy"])
    assert terminated and not truncated
    assert reward < 0  # minus a cross-entropy


def test_determinism_same_seed_same_candidates_projection_rewards():
    a, b = make().unwrapped, make().unwrapped
    assert a.candidates == b.candidates
    act = a.action_space.sample()
    assert a.score_actions([act])[0].reward == b.score_actions([act])[0].reward
    s1, s2 = make("PromptSST2-Subspace-v0").unwrapped, make("PromptSST2-Subspace-v0").unwrapped
    np.testing.assert_array_equal(s1.A, s2.A)
    np.testing.assert_array_equal(s1.p0, s2.p0)
    s3 = make("PromptSST2-Subspace-v0", projection_seed=5).unwrapped
    assert not np.array_equal(s1.A, s3.A)
    z = np.full(500, 0.5, dtype=np.float32)
    assert s1.score_actions([z])[0].reward == s2.score_actions([z])[0].reward
    # other split seeds give other data and other candidates
    c = make(split_seed=42).unwrapped
    assert c.train.sha256 != a.train.sha256


def test_minibatch_rows_follow_the_reset_seed():
    env = make(batch_size=8)
    base = env.unwrapped
    act = env.action_space.sample()
    env.reset(seed=3)
    r1 = env.step(act)[1]
    env.reset(seed=3)
    r2 = env.step(act)[1]
    assert r1 == r2
    assert base.budget.examples == 16


def test_budget_lives_across_reset_truncates_then_raises():
    env = make(budget=3)
    base = env.unwrapped
    env.reset(seed=0)
    act = env.action_space.sample()
    assert env.step(act)[3] is False
    env.reset(seed=0)  # never refills
    assert base.budget.calls == 1 and base.budget.remaining == 2
    assert env.step(act)[3] is False
    env.reset()
    _, _, _, truncated, info = env.step(act)
    assert truncated is True and info["budget"].calls_left == 0
    with pytest.raises(BudgetExhausted, match="spent"):
        env.step(act)
    env.reset()
    with pytest.raises(BudgetExhausted):
        env.step(act)
    assert base.budget.calls == 3


def test_population_larger_than_remaining_is_refused_before_any_lm_call():
    base = make(budget=5).unwrapped
    calls_before = base.lm.batch_calls
    with pytest.raises(BudgetExhausted, match="only 5"):
        base.score_actions([base.action_space.sample() for _ in range(6)])
    assert base.budget.calls == 0 and base.lm.batch_calls == calls_before
    outs = base.score_actions([base.action_space.sample() for _ in range(5)])
    assert len(outs) == 5 and base.budget.calls == 5 and base.budget.examples == 5 * 32
    assert base.budget.tokens > 5 * 32


def test_dev_evaluation_is_charged_and_test_is_unreachable():
    base = make().unwrapped
    act = base.action_space.sample()
    out = base.evaluate_dev(act)
    assert base.budget.calls == 1 and base.budget.dev_calls == 1 and out.num_examples == 32
    with pytest.raises(ValueError, match="test split"):
        base.score_actions([act], split="test")
    assert not hasattr(base, "test")


@pytest.mark.parametrize("bad", [
    np.full(10, 200), np.full(10, -1), np.zeros(9, dtype=int), np.zeros((2, 10), dtype=int),
    np.full(10, np.nan), np.full(10, 1.5), np.array(["a"] * 10), [[1, 2], [3]],
])
def test_invalid_discrete_actions_raise_and_charge_nothing(bad):
    env = make()
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.unwrapped.step(bad)
    with pytest.raises(InvalidActionError):
        env.unwrapped.score_actions([env.action_space.sample(), bad])
    assert env.unwrapped.budget.calls == 0


@pytest.mark.parametrize("bad", [np.full(500, np.nan), np.full(500, np.inf), np.full(500, 6.0), np.zeros(499),
                                 np.zeros((500, 1))])
def test_invalid_subspace_actions_raise_and_charge_nothing(bad):
    env = make("PromptSST2-Subspace-v0")
    env.reset(seed=0)
    with pytest.raises(InvalidActionError):
        env.unwrapped.step(bad)
    assert env.unwrapped.budget.calls == 0


def test_tokenwise_episode_charges_only_the_final_step():
    env = make("PromptSST2-Tokenwise-v0", prompt_length=3)
    base = env.unwrapped
    obs, _ = env.reset(seed=0)
    assert list(obs) == [200, 200, 200]
    obs, r, term, _, _ = env.step(7)
    assert list(obs) == [7, 200, 200] and r == 0.0 and not term and base.budget.calls == 0
    env.step(8)
    obs, r, term, _, info = env.step(9)
    assert list(obs) == [7, 8, 9] and term and base.budget.calls == 1
    assert r == pytest.approx(base.score_actions([[7, 8, 9]])[0].reward, abs=1e-6)
    assert info["prompt_text"] == "".join(base.candidates.texts[i] for i in (7, 8, 9))
    with pytest.raises(InvalidActionError):
        base.step(200)


def test_vector_env_one_lm_call_per_step_charges_n():
    venv = gym.make_vec("PromptSST2-v0", num_envs=4, **TINY)
    lm = venv.lm
    venv.reset(seed=0)
    before = lm.batch_calls
    actions = venv.action_space.sample()
    obs, rewards, terms, truncs, infos = venv.step(actions)
    assert lm.batch_calls - before == 1
    assert venv.budget.calls == 4
    assert obs.shape == (4, 3) and rewards.shape == (4,) and terms.all()
    single = make().unwrapped
    np.testing.assert_allclose(rewards, [single.score_actions([a])[0].reward for a in actions], atol=1e-5)
    bad = actions.copy()
    bad[2, 0] = 10_000
    with pytest.raises(InvalidActionError):
        venv.step(bad)
    assert venv.budget.calls == 4


def test_vector_env_budget_truncates_all_then_raises():
    venv = gym.make_vec("PromptSST2-Subspace-v0", num_envs=2, budget=4, **TINY)
    venv.reset(seed=0)
    z = np.zeros((2, 500), dtype=np.float32)
    assert not venv.step(z)[3].any()
    assert venv.step(z)[3].all()
    with pytest.raises(BudgetExhausted):
        venv.step(z)


def test_tokenwise_vector_env_scores_only_at_episode_end():
    venv = gym.make_vec("PromptSST2-Tokenwise-v0", num_envs=3, prompt_length=2, **TINY)
    venv.reset(seed=0)
    before = venv.lm.batch_calls
    venv.step(np.array([1, 2, 3]))
    assert venv.lm.batch_calls == before and venv.budget.calls == 0
    _, rewards, terms, _, infos = venv.step(np.array([4, 5, 6]))
    assert venv.lm.batch_calls == before + 1 and venv.budget.calls == 3 and terms.all()
    assert "final_obs" in infos


@pytest.mark.parametrize("reward", ["ce", "hinge", "accuracy", "label_only"])
def test_reward_kinds(reward):
    base = make(reward=reward).unwrapped
    out = base.score_actions([base.action_space.sample()])[0]
    if reward == "label_only":
        assert out.label_logprobs is None and out.reward == pytest.approx(out.metric)
    elif reward == "accuracy":
        assert out.reward == pytest.approx(out.accuracy)
    elif reward == "hinge":
        assert out.reward <= 0
    else:
        assert out.reward == pytest.approx(np.mean(out.label_logprobs[np.arange(32), np.asarray(base.train.labels)]))


def test_bad_constructor_arguments_have_clear_errors():
    with pytest.raises(ValueError, match="reward"):
        make(reward="mse")
    with pytest.raises(ValueError, match="prompt_position"):
        make(prompt_position="middle")
    with pytest.raises(ValueError, match="batch_size"):
        make(batch_size=0)
    with pytest.raises(ValueError, match="budget"):
        make(budget=0)
    with pytest.raises(promptgym.errors.UnknownSeedError):
        make(split_seed=7)
    with pytest.raises(promptgym.errors.UnknownModelError):
        make(model="tiny-random-nonexistent")


@pytest.mark.parametrize(("env_id", "kwargs", "message"), [
    ("PromptSST2-v0", {"budget": 2.5}, "DiscreteConfig.budget must be int or QueryBudget, got 2.5"),
    ("PromptSST2-v0", {"budget": -3}, "budget must be at least 1 API call"),
    ("PromptSST2-v0", {"reward": "nope"}, "reward must be one of ce, hinge, accuracy, label_only, got 'nope'"),
    ("PromptSST2-v0", {"prompt_position": "middle"}, "prompt_position must be one of"),
    ("PromptSST2-v0", {"split_seed": 7}, "split_seed must be one of the published"),
    ("PromptSST2-v0", {"batch_size": 1.5}, "batch_size must be int or None, got 1.5"),
    ("PromptSST2-v0", {"batch_size": 0}, "batch_size must be a positive whole number"),
    ("PromptSST2-v0", {"prompt_length": 0}, "prompt_length must be >= 1"),
    ("PromptSST2-v0", {"vocab_method": "magic"}, "vocab_method must be one of"),
    ("PromptSST2-v0", {"template": "fancy"}, "no template 'fancy'"),
    ("PromptSST2-Subspace-v0", {"projection": "sparse"}, "projection must be one of"),
    ("PromptSST2-Subspace-v0", {"intrinsic_dim": 2.0}, "SubspaceConfig.intrinsic_dim must be int, got 2.0"),
    ("PromptSST2-Tokenwise-v0", {"episode_length": 2}, "TokenwiseConfig has no field 'episode_length'"),
    ("PromptSST2-Subspace-v0", {"bound": float("nan")}, "bound must be a finite number"),
])
def test_env_arguments_are_checked_before_the_model_loads(env_id, kwargs, message):
    """A model name that does not exist: had the env loaded it first, this would be UnknownModelError."""
    with pytest.raises(promptgym.errors.PromptGymError, match=re.escape(message)) as info:
        gym.make(env_id, model="no-such-model-anywhere", **kwargs)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, promptgym.errors.UnknownModelError)


def test_prompt_after_input_and_masked_model():
    env = make(prompt_position="after").unwrapped
    left, right = env.segments("train")[0]
    assert left == env.train.texts[0] and right == env.template.cue
    m = make("PromptSST2-Subspace-v0", model="tiny-random-masked").unwrapped
    assert m.template is m.spec_task.masked and "<mask>" in m.segments("train")[0][1]
    assert np.isfinite(m.score_actions([np.zeros(500, dtype=np.float32)])[0].reward)


def test_render_ansi_shows_prompt_and_scores():
    env = make(render_mode="ansi")
    env.reset(seed=0)
    act = env.action_space.sample()
    env.step(act)
    text = env.render()
    assert env.unwrapped.prompt_text(act) in text and "reward" in text and "calls 1/8000" in text
