"""Third-party agents and tasks by entry points: a real installed distribution (a ``*.dist-info`` with an
``entry_points.txt`` in a folder on ``sys.path``, which is how ``importlib.metadata`` finds what pip
installed) is found by ``promptgym train`` and ``promptgym list`` without editing promptgym."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

import promptgym  # noqa: F401  (registers the env ids)
from promptgym.agent import AGENT_REGISTRY, agent_spec, find_agent, load_agent_plugins
from promptgym.cli import main
from promptgym.envs.registration import check_env_id
from promptgym.errors import ConfigError, PluginError, UnknownAgentError, UnknownEnvError
from promptgym.tasks import TASKS, get_task, register_task
from promptgym.tasks.catalog import TASK_PLUGINS, load_task_plugins

ROOT = Path(__file__).resolve().parents[1]

AGENT_MODULE = '''
from dataclasses import dataclass, replace

import numpy as np

from promptgym.agent import AgentConfig, ConfiguredAgent, DevSelector, TrainCurve
from promptgym.tasks import get_task


@dataclass
class FirstConfig(AgentConfig):
    seed: int = 0  # the reset seed


class FirstCandidateAgent(ConfiguredAgent):
    """Scores the prompt of the first candidates once (a plugin agent for the tests)."""

    name = "first_candidate"
    config_class = FirstConfig
    kinds = ("discrete",)

    def learn(self, env):
        base = self.start(env)
        action = np.zeros(base.prompt_length, dtype=np.int64)
        (outcome,) = base.score_actions([action])
        train = TrainCurve()
        train.update(base.budget.calls, [action], [outcome.reward])
        dev = DevSelector(env)
        dev.consider(action, outcome.reward)
        return dev.result(self.name, action, train, self.config)


def make_task():
    """SST-2 again under another name: a task plugin's TaskSpec."""
    return replace(get_task("sst2"), name="sst2copy", env_name="SST2Copy", extra_templates={})
'''


def install(site: Path, dist: str, entry_points: str, modules: dict[str, str] | None = None) -> None:
    """Write an installed distribution ``dist`` 0.1 (its modules and its dist-info) into ``site``."""
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on ``sys.path`` to install distributions into; what they register is removed afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    agents, tasks, plugins, ids, modules = (set(AGENT_REGISTRY), set(TASKS), set(TASK_PLUGINS), set(gym.registry),
                                            set(sys.modules))
    yield folder
    for name in set(AGENT_REGISTRY) - agents:
        del AGENT_REGISTRY[name]
    for name in set(TASKS) - tasks:
        del TASKS[name]
    for name in set(TASK_PLUGINS) - plugins:
        del TASK_PLUGINS[name]
    for id_ in set(gym.registry) - ids:
        del gym.registry[id_]
    for name in set(sys.modules) - modules:
        if name.startswith("pg_"):
            del sys.modules[name]


@pytest.fixture
def demo(site):
    install(site, "pg-demo", """
        [promptgym.agents]
        first_candidate = pg_demo:FirstCandidateAgent

        [promptgym.tasks]
        sst2copy = pg_demo:make_task
    """, {"pg_demo": AGENT_MODULE})
    return site


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptgym: error: ") and "Traceback" not in err, err
    return err


def test_plugins_load_lazily_only_for_a_name_that_is_not_built_in(demo):
    assert "first_candidate" not in AGENT_REGISTRY and "pg_demo" not in sys.modules
    assert agent_spec("bbt").entry_point == "agents.bbt:BBTAgent" and "pg_demo" not in sys.modules
    spec = agent_spec("first_candidate")
    assert "pg_demo" in sys.modules and AGENT_REGISTRY["first_candidate"] is spec
    assert (spec.entry_point, spec.kinds, spec.plugin) == ("pg_demo:FirstCandidateAgent", ("discrete",), "pg-demo 0.1")
    assert spec.description.startswith("Scores the prompt of the first candidates once")
    assert "sst2copy" not in TASKS
    assert check_env_id("PromptSST2Copy-Subspace-v0") == "PromptSST2Copy-Subspace-v0"  # an unknown id loads tasks
    assert TASKS["sst2copy"].env_name == "SST2Copy" and TASK_PLUGINS["sst2copy"] == "pg-demo 0.1"
    assert get_task("SST2COPY") is TASKS["sst2copy"]


def test_a_fresh_process_imports_no_plugin_until_asked(demo):
    code = ("import sys, promptgym; from promptgym.tasks import get_task; a = 'pg_demo' in sys.modules; "
            "get_task('sst2copy'); print(a, 'pg_demo' in sys.modules, 'PromptSST2Copy-v0' in __import__('gymnasium')"
            ".registry)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(demo), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True", "True"]  # a registered task's env ids come with it


def test_list_and_train_find_an_installed_agent_and_task(demo, tmp_path, capsys):
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    agents = captured.out.split("agents (promptgym train --agent NAME):")[1]
    assert "first_candidate" in agents and "discrete" in agents and "(plugin: pg-demo 0.1)" in agents
    assert "sst2copy" in captured.out and "PromptSST2Copy-Tokenwise-v0" in captured.out
    assert main(["list", "--agent", "first_candidate"]) == 0
    assert "entry point: pg_demo:FirstCandidateAgent (plugin: pg-demo 0.1)" in capsys.readouterr().out

    data = tmp_path / "data" / "sst2copy" / "16-13"  # the plugin task's splits, in a data dir of its own
    data.mkdir(parents=True)
    for split in ("train", "dev"):
        source = Path(os.environ["PROMPTGYM_DATA_DIR"]) / "sst2" / "16-13" / f"{split}.jsonl"
        (data / f"{split}.jsonl").write_bytes(source.read_bytes())
    out = tmp_path / "runs"
    argv = ["train", "--env", "PromptSST2Copy-v0", "--agent", "first_candidate", "--model", "tiny-random-causal",
            "--budget", "3", "--out", str(out), "--quiet", "--env-kwarg", f"data_dir={tmp_path / 'data'}",
            "--env-kwarg", "num_candidates=20", "--env-kwarg", "prompt_length=3"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "calls used: 2/3" in capsys.readouterr().out  # one train call, one dev check
    (config,) = [json.loads(p.read_text()) for p in out.rglob("config.json")]
    assert (config["agent"], config["env_id"], config["task"]) == ("first_candidate", "PromptSST2Copy-v0", "sst2copy")
    assert config["env_kwargs"] == {"data_dir": str(tmp_path / "data"), "num_candidates": 20, "prompt_length": 3}


def test_a_plugin_agent_is_refused_where_it_does_not_run(demo, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", "PromptSST2-Subspace-v0", "--agent", "first_candidate"]) == 2
    assert "agent 'first_candidate' runs on discrete envs" in _one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # nothing written


def test_a_broken_plugin_is_one_line_naming_it(site, capsys, tmp_path, monkeypatch):
    install(site, "pg-broken", """
        [promptgym.agents]
        broken_agent = pg_broken:Agent
        not_a_class = pg_fine:helper

        [promptgym.tasks]
        broken_task = pg_broken:TASK
        bad_task = pg_fine:helper
    """, {"pg_broken": "import a_module_that_is_not_installed\n", "pg_fine": "def helper():\n    return 42\n"})
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env", "PromptSST2-v0", "--agent", "broken_agent"]) == 2
    err = _one_line_error(capsys)
    assert ("agent plugin 'broken_agent' (pg_broken:Agent from pg-broken 0.1): cannot be loaded: "
            "ModuleNotFoundError: No module named 'a_module_that_is_not_installed'") in err
    assert main(["train", "--env", "PromptSST2-v0", "--agent", "not_a_class"]) == 2
    assert "agent plugin 'not_a_class' (pg_fine:helper from pg-broken 0.1): must name an agent class with a " \
           "config_class" in _one_line_error(capsys)
    assert main(["zeroshot", "--task", "bad_task"]) == 2
    assert "task plugin 'bad_task' (pg_fine:helper from pg-broken 0.1): must name a promptgym.tasks.TaskSpec or " \
           "a function returning one, got int" in _one_line_error(capsys)
    with pytest.raises(UnknownEnvError, match=r"unknown env id 'PromptBroken-v0'.*\(note: task plugin "):
        check_env_id("PromptBroken-v0")
    # `list` still lists everything else, with one warning line per plugin it cannot use
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.splitlines()
    assert len(warnings) == 4 and all(w.startswith("promptgym: warning: ") for w in warnings), warnings
    assert "Traceback" not in captured.err and "bdpl" in captured.out and "sst2" in captured.out
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # nothing written


def test_a_plugin_never_shadows_a_built_in_name(site, capsys):
    install(site, "pg-shadow", """
        [promptgym.agents]
        bbt = pg_shadow:Agent

        [promptgym.tasks]
        sst2 = pg_shadow:TASK
    """, {"pg_shadow": "raise RuntimeError('must never be imported')\n"})
    assert agent_spec("bbt").entry_point == "agents.bbt:BBTAgent" and agent_spec("bbt").plugin == ""
    assert get_task("sst2").env_name == "SST2" and "pg_shadow" not in sys.modules
    problems = load_agent_plugins() + load_task_plugins()
    assert problems == [
        "agent plugin 'bbt' (pg_shadow:Agent from pg-shadow 0.1) is ignored: an agent of that name is already "
        "registered (agents.bbt:BBTAgent)",
        "task plugin 'sst2' (pg_shadow:TASK from pg-shadow 0.1) is ignored: a task of that name is already registered"]
    assert "pg_shadow" not in sys.modules
    assert main(["list"]) == 0
    assert "is ignored" in capsys.readouterr().err


def test_two_plugins_of_one_name_are_refused_not_picked_by_install_order(site):
    for dist in ("pg-one", "pg-two"):
        install(site, dist, f"""
            [promptgym.agents]
            twin = {dist.replace('-', '_')}:Agent
        """)
    with pytest.raises(PluginError, match=r"agent 'twin' is offered by 2 installed plugins .*uninstall all but one"):
        find_agent("twin")
    assert "ignored: another installed plugin has the name 'twin'" in " ".join(load_agent_plugins())
    with pytest.raises(UnknownAgentError, match="unknown agent 'nobody'"):
        agent_spec("nobody")


def test_register_task_refuses_a_clash_and_a_bad_name(site):
    sst2 = get_task("sst2")
    with pytest.raises(ConfigError, match="clashes with the registered task 'sst2'"):
        register_task(dataclasses.replace(sst2, name="other", env_name="sst2"))
    with pytest.raises(ConfigError, match="clashes with the registered task 'sst2'"):
        register_task(dataclasses.replace(sst2, name="sst2", env_name="Other"))
    with pytest.raises(ConfigError, match="task name must be lower-case"):
        register_task(dataclasses.replace(sst2, name="My Task", env_name="MyTask"))
    with pytest.raises(ConfigError, match="env_name must be letters and digits"):
        register_task(dataclasses.replace(sst2, name="mytask", env_name="My-Task"))
    spec = register_task(dataclasses.replace(sst2, name="mytask", env_name="MyTask"))
    assert TASKS["mytask"] is spec and "PromptMyTask-Subspace-v0" in gym.registry
