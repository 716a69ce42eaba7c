"""``promptgym sweep`` on a real local Ray (2 CPUs), the tiny random model and a 30-call ``unit`` tier.

What matters: a sweep's trial writes exactly the seed file ``promptgym evaluate`` would cache, in the
folder ``evaluate`` reads, so ``evaluate`` assembles the submission from it without running anything;
a re-run skips finished seeds and resumes a killed one from its journal; a failed trial is reported and
the exit code says so; bad input is refused in one line (exit 2) before Ray starts or a file is written.
One Ray session serves the whole module (its start-up is most of the cost); the sweep uses a session
its caller started.
"""

from __future__ import annotations

import copy
import json
import logging
import shlex
import sys
from pathlib import Path

import pytest
import torch

from promptgym.bench import schema
from promptgym.bench import sweep as sweep_mod
from promptgym.bench.evaluate import evaluate
from promptgym.cli import main
from promptgym.journal import CallJournal, journal_identity
from promptgym.runs import evaluate_workdir, seed_file, seed_journal
from promptgym.score_store import ScoreStore

MODEL = "tiny-random-causal"
ENV = "PromptSST2-v0"
TIER = "unit"


@pytest.fixture(scope="module", autouse=True)
def unit_tier():
    """A 30-call tier (the driver's tier table travels with each trial: its worker adds it too)."""
    schema.TIERS[TIER] = 30
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a trial with --cpus-per-trial 1: in-process reference runs score alike
    yield TIER
    torch.set_num_threads(threads)
    del schema.TIERS[TIER]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    # Ray starts its workers at nice 15: beside another pytest worker's real-model tests (make test runs
    # two) a trial then got a few percent of a core and this module took 20 minutes instead of 3
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             _system_config={"worker_niceness": 0})
    yield ray
    ray.shutdown()


def sweep_args(root: Path, agents: str, seeds: str, *extra: str) -> list[str]:
    return ["sweep", "--envs", ENV, "--agents", agents, "--seeds", seeds, "--tier", TIER, "--model", MODEL,
            "--workroot", str(root), *extra]


def stable(run: dict) -> dict:
    """A seed run without what differs between two runs of the same seed (wall-clock times, the thread
    settings: a Ray trial searches on its CPUs' worth of threads, the reference on this process's; and the
    score store's count)."""
    run = copy.deepcopy(run)
    run.pop("wall_seconds")
    run.pop("threads", None)
    run["extra"].pop("test_wall_seconds")
    run["extra"].pop("stored_answers", None)  # a trial with a score store says how many answers it read
    return run


def same_run(a: object, b: object) -> bool:
    """Equal runs: floats to 1e-4 relative (in one process the LM's fast paths, warmed by earlier tests, give
    scores equal to the plain path to ~1e-5, not bit for bit), everything else exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_run(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_run(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return b == pytest.approx(a, rel=1e-4, abs=1e-7, nan_ok=True)
    return a == b


def reference(agent: str, seed: int, tmp: Path, agent_kwargs: dict | None = None) -> dict:
    """The seed file ``evaluate`` writes for this run, made in this process with one torch thread, as a Ray
    trial of one CPU runs (the thread count changes summation order, hence the last bits of the scores)."""
    import torch

    work = tmp / f"ref-{agent}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluate(ENV, agent, TIER, MODEL, (seed,), agent_kwargs=agent_kwargs, workdir=work)
    finally:
        torch.set_num_threads(threads)
    return json.loads(seed_file(work, seed).read_text())


# ---------------------------------------------------------------------------------------------- bad input
BAD = [
    (["--envs", "PromptSST2-v9"], "unknown env id"),
    (["--agents", "random,randm"], "unknown agent 'randm'"),
    (["--agents", "prompt_tuning"], "white-box"),
    (["--seeds", "13,14"], "subset of the protocol seeds"),
    (["--seeds", "13,x"], "--seeds takes"),
    (["--seeds", "13,13"], "names a seed twice"),
    (["--tier", "huge"], "invalid choice"),
    (["--agents", "bbt"], "no agent of the sweep runs on any of its envs"),
    (["--agent-kwarg", "batch=ten"], "must be int"),
    (["--agent-kwarg", "batch=4,4"], "lists a value of batch twice"),
    (["--agent-kwarg", "batch=[4"], "unbalanced"),
    (["--agent-kwarg", "batch="], "empty value"),
    (["--agent-kwarg", "popsize=10,20"], "no config field 'popsize'"),
    (["--agent-kwarg", "bbt:popsize=10"], "scoped to 'bbt'"),
    (["--agent-kwarg", "seed=1,2"], "sweep the split seeds with --seeds"),
    (["--agent-kwarg", "batch=4", "--agent-kwarg", "batch=5"], "given twice"),
    (["--env-kwarg", "intrinsic_dim=10,20"], "takes no env kwarg 'intrinsic_dim'"),
    (["--env-kwarg", "budget=10"], "set by their own options"),
    (["--model", "http://user:pw@127.0.0.1:1"], "credentials"),
    (["--cpus-per-trial", "3", "--num-cpus", "2"], "no trial could start"),
    (["--cpus-per-trial", "0"], "must be > 0"),
    (["--num-cpus", "2", "--address", "auto"], "for a local Ray"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[" ".join(c) for c, _ in BAD])
def test_bad_input_is_one_line_before_ray_starts(change, message, tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(sweep_mod, "run_sweep", never)
    monkeypatch.setattr(sweep_mod, "import_ray", never)
    args = sweep_args(tmp_path / "root", "random", "13")
    for i in range(0, len(change), 2):  # an option given twice is given twice; otherwise it replaces the default
        flag, value = change[i], change[i + 1]
        if flag in args and flag not in change[:i] and flag not in ("--agent-kwarg", "--env-kwarg"):
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("promptgym: error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "root").exists()


def test_a_missing_ray_is_one_line_naming_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    assert main(sweep_args(tmp_path / "root", "random", "13")) == 2
    err = capsys.readouterr().err.strip()
    assert "needs Ray Tune" in err and 'pip install "ray[tune]"' in err and "\n" not in err
    assert not (tmp_path / "root").exists()


def test_grid_syntax_and_work_folders():
    assert sweep_mod.split_values('10,20') == ["10", "20"]
    assert sweep_mod.split_values('[32,32],[64], "a, b"') == ["[32,32]", "[64]", '"a, b"']
    plan = sweep_mod.plan_sweep("PromptSST2-v0,PromptSST2-Subspace-v0", "bbt,random", TIER, (13, 21), MODEL,
                                ["bbt:popsize=10,20", "bbt:sigma0=0.5", "random:batch=5"], ["reward=ce,hinge"],
                                root="R")
    # bbt runs on the subspace env only; popsize 20 is bbt's default, so it is not in the tag
    assert plan.skipped == ["bbt on PromptSST2-v0 (agent for subspace envs)"]
    names = sorted(p.workdir.name for p in plan.points)
    assert names == sorted([
        "PromptSST2-v0-random@batch=5,env.reward=ce-unit", "PromptSST2-v0-random@batch=5,env.reward=hinge-unit",
        "PromptSST2-Subspace-v0-bbt@popsize=10,sigma0=0.5,env.reward=ce-unit",
        "PromptSST2-Subspace-v0-bbt@popsize=10,sigma0=0.5,env.reward=hinge-unit",
        "PromptSST2-Subspace-v0-bbt@sigma0=0.5,env.reward=ce-unit",
        "PromptSST2-Subspace-v0-bbt@sigma0=0.5,env.reward=hinge-unit",
        "PromptSST2-Subspace-v0-random@batch=5,env.reward=ce-unit",
        "PromptSST2-Subspace-v0-random@batch=5,env.reward=hinge-unit"])
    assert len(plan.pending) == 16 and plan.pending[0][1] == 13 and plan.pending[-1][1] == 21  # seed-major
    default = sweep_mod.plan_sweep(ENV, "random", TIER, (13,), MODEL, ["batch=20"], root="R").points[0]
    assert default.tag == "" and default.workdir == evaluate_workdir(ENV, "random", TIER, root="R", model=MODEL)
    odd = sweep_mod.point_tag("random", {}, {"template": "a b/c"})
    assert odd.startswith("kw-") and len(odd) == 13


# ---------------------------------------------------------------------------------------------- real sweeps
def test_a_sweep_caches_what_evaluate_caches_and_evaluate_assembles_it(ray_session, tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    manual = evaluate_workdir(ENV, "manual", TIER, root=root, model=MODEL)
    evaluate(ENV, "manual", TIER, MODEL, (21, 42, 87, 100), workdir=manual)  # the other protocol seeds, in process
    capsys.readouterr()
    # random at a non-default batch: a grid point of its own, in its own tagged folder
    store = tmp_path / "scores.sqlite"
    assert main(sweep_args(root, "random,manual", "13", "--agent-kwarg", "random:batch=10",
                           "--cpus-per-trial", "1", "--score-store", str(store))) == 0
    out = capsys.readouterr().out
    assert len(ScoreStore(store)) >= 4  # the trials kept their test and OOD scores in the one file
    assert "2 to run, 0 cached" in out and out.count(" done ") == 2, out
    random_work = evaluate_workdir(ENV, "random", TIER, root=root, tag="batch=10", model=MODEL)
    assert random_work.name == f"{ENV}-random@batch=10-{TIER}"
    assert not evaluate_workdir(ENV, "random", TIER, root=root, model=MODEL).exists()
    for agent, work, kwargs in (("random", random_work, {"batch": 10}), ("manual", manual, None)):
        swept = json.loads(seed_file(work, 13).read_text())
        assert same_run(stable(swept), stable(reference(agent, 13, tmp_path, kwargs)))
        assert sorted(p.name for p in work.iterdir() if p.name.startswith("seed-13")) == ["seed-13.json"]
    assert json.loads(seed_file(random_work, 13).read_text())["extra"]["agent_config"]["batch"] == 10
    # the summary: one row per grid point, and the evaluate command of the point with every seed cached
    assert "1/1" in out and "accuracy" in out
    command = [line.strip() for line in out.splitlines() if line.strip().startswith("promptgym evaluate")]
    assert len(command) == 1 and "--agent manual" in command[0], out

    def no_rerun(*args, **kwargs):
        raise AssertionError("evaluate ran a seed again")

    monkeypatch.setattr("promptgym.bench.evaluate.run_seed", no_rerun)
    sub_path = tmp_path / "sub.json"
    assert main([*shlex.split(command[0])[1:], "--out", str(sub_path), "--no-progress"]) == 0
    sub = json.loads(sub_path.read_text())
    assert [r["seed"] for r in sub["runs"]] == list(schema.BENCH_SEEDS)
    swept = json.loads(seed_file(manual, 13).read_text())
    assert sub["runs"][0] == {k: v for k, v in swept.items() if k != "extra"}


def test_a_rerun_skips_finished_seeds_resumes_a_killed_one_and_reports_a_failure(ray_session, tmp_path,
                                                                                   capsys, kill_after_batches):
    root = tmp_path / "root"
    random_work = evaluate_workdir(ENV, "random", TIER, root=root, model=MODEL)
    evaluate(ENV, "random", TIER, MODEL, (13,), workdir=random_work)  # a finished seed
    finished = seed_file(random_work, 13).read_bytes()
    with kill_after_batches(2):  # seed 21 killed after two batched calls
        evaluate(ENV, "random", TIER, MODEL, (21,), workdir=random_work)
    journal = seed_journal(random_work, 21)
    killed_calls = CallJournal(journal, journal_identity(journal)).recorded_calls
    assert 0 < killed_calls < 30 and not seed_file(random_work, 21).exists()
    manual = evaluate_workdir(ENV, "manual", TIER, root=root, model=MODEL)
    evaluate(ENV, "manual", TIER, MODEL, (21,), workdir=manual)
    seed_journal(manual, 13).write_text("not a journal\n")  # a trial that fails: its journal is not one
    capsys.readouterr()

    assert main(sweep_args(root, "random,manual", "13,21")) == 1
    out = capsys.readouterr().out
    assert "2 to run (2 resume from a journal), 2 cached" in out, out
    assert seed_file(random_work, 13).read_bytes() == finished  # skipped: never reached Ray
    resumed = json.loads(seed_file(random_work, 21).read_text())
    assert resumed["extra"]["resumed_calls"] == killed_calls and not journal.exists()
    assert f"{killed_calls} replayed from the journal" in out
    expected = stable(reference("random", 21, tmp_path))
    got = stable(resumed)
    got["extra"]["resumed_calls"] = expected["extra"]["resumed_calls"]
    assert same_run(got, expected)  # the resumed seed is the uninterrupted run
    assert "FAILED" in out and "is not a promptgym call journal" in out
    assert "1 trial(s) did not finish; run the same command again" in out
    assert not seed_file(manual, 13).exists() and "0/1 (1 failed)" not in out and "1/2 (1 failed)" in out
