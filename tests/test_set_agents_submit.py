"""`promptgym evaluate --agent ensemble|cma_elbo|abc_smc|snpe` -> `promptgym submit`, through the CLI.

The issue's acceptance path for the prompt-set agents, on the tiny random model (scores mean
nothing there): five protocol seeds under a 40-call test tier, every member scored on test in
fp32, then `submit` re-scores every member of every seed and accepts; a tampered member is refused
with exit code 2 and leaves the board as it was. Two agents cover the two kinds of set (CI time:
~1 min each): `cma_elbo` with `--calibrate` (averaged distributions, one bias per member) and
`abc_smc` on a label-only env (a weighted vote); `ensemble` and `snpe` return the same Result sets
(their learning is tested in test_dist_agents.py) and ran this path on SmolLM2 in
benchmarks/reliability.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptgym.bench import schema
from promptgym.cli import main

MODEL = "tiny-random-causal"
ENV = "PromptSST2-Subspace-v0"
TINY_ENV = ["intrinsic_dim=16", "prompt_length=4"]
#: agent -> (env kwargs, agent kwargs): small sets so that five seeds take seconds
AGENTS = {
    "cma_elbo": ([], ["samples=2", "popsize=4", "members=3", "dev_every=2"], ["--calibrate"]),
    "abc_smc": (["reward=label_only"], ["particles=4", "eps0_draws=8", "popsize=4"], []),
}


@pytest.fixture(scope="module")
def tier():
    schema.TIERS["unit40"] = 40
    yield "unit40"
    del schema.TIERS["unit40"]


def evaluate_cli(agent: str, tier: str, work: Path) -> dict:
    env_kwargs, agent_kwargs, extra = AGENTS[agent]
    args = ["evaluate", "--env", ENV, "--agent", agent, "--tier", tier, "--model", MODEL, "--workdir", str(work),
            "--out", str(work / "sub.json"), "--no-progress", "--submitter", "ci", *extra]
    for kv in TINY_ENV + env_kwargs:
        args += ["--env-kwarg", kv]
    for kv in agent_kwargs:
        args += ["--agent-kwarg", kv]
    assert main(args) == 0
    return json.loads((work / "sub.json").read_text())


@pytest.mark.parametrize("agent", list(AGENTS))
def test_set_agent_submissions_are_accepted_after_rescoring(agent, tier, tmp_path, capsys):
    sub = evaluate_cli(agent, tier, tmp_path / "work")
    assert len(sub["runs"]) == 5
    assert sub.get("calibration", False) is bool(AGENTS[agent][2])
    for run in sub["runs"]:
        assert run["calls_used"] <= 40
        assert len(run["prompt"]["members"]) == len(run["prompt"]["weights"]) >= 2
        assert set(run["test"]) >= {"ece", "nll", "brier", "aurc", "aurc_10bin", "ood"}
        if sub.get("calibration"):
            assert len(run["prompt"]["label_bias"]) == len(run["prompt"]["members"])
    cached = json.loads((tmp_path / "work" / "seed-13.json").read_text())  # the run file keeps the agent's reports
    assert isinstance(cached["extra"]["diagnostics"]["generations"], int)
    board = tmp_path / "board"
    (board / "leaderboards").mkdir(parents=True)
    assert main(["submit", str(tmp_path / "work" / "sub.json"), "--root", str(board), "--no-render"]) == 0
    entries = list((board / "leaderboards" / ENV).glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["agent"]["name"] == agent

    # averaged sets: a member swapped for another point of the space changes every probability and
    # re-scoring catches it; vote sets on the tiny model vote one label whatever the member (a swap is
    # then truly equivalent), so there a claimed metric is forged. Either way nothing is written.
    forged = json.loads(json.dumps(sub))
    if forged["runs"][2]["prompt"]["combine"] == "mean":
        members = forged["runs"][2]["prompt"]["members"]
        members[0] = [-v for v in members[0]] if any(members[0]) else [0.5] * len(members[0])
    else:
        forged["runs"][2]["test"]["nll"] += 0.5
    forged["submitter"] = "forger"
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    capsys.readouterr()
    before = sorted(p.name for p in (board / "leaderboards" / ENV).iterdir())
    assert main(["submit", str(path), "--root", str(board), "--no-render"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs[2]" in err[0]
    assert sorted(p.name for p in (board / "leaderboards" / ENV).iterdir()) == before

