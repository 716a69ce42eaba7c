"""`promptgym audit`: re-run a built-in agent from its entry and check it returns the submitted prompt.

On the tiny random model under a 40-call test tier (scores mean nothing there, and its bf16 replays
are exact on any host). Two entries cover the two ways a mismatch is judged: a prompt set with
calibration (cma_elbo: CMA-ES, 3 members, one bias each; a mismatch there is "not reproduced on
this host" unless the auditor states the host is of the entry's CPU kind) and the template baseline
(manual: no LM call, so any mismatch is forged on every host). The genuine set entry is also audited
in a fresh process, so no cache is shared with the run that made it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from promptgym.bench import schema
from promptgym.bench.audit import EXIT_CODES, FORGED, NOT_REPRODUCED, REPRODUCED
from promptgym.bench.store import add_submission
from promptgym.cli import main
from promptgym.host import current_host, describe_host

MODEL = "tiny-random-causal"
TIER, BUDGET = "audit40", 40
SET_ENV = ["--env", "PromptSST2-Subspace-v0", "--env-kwarg", "intrinsic_dim=16", "--env-kwarg", "prompt_length=4"]
SET_AGENT = ["--agent", "cma_elbo", "--calibrate", "--agent-kwarg", "samples=2", "--agent-kwarg", "popsize=4",
             "--agent-kwarg", "members=3", "--agent-kwarg", "dev_every=2"]


@pytest.fixture(scope="module")
def tier():
    schema.TIERS[TIER] = BUDGET
    yield TIER
    del schema.TIERS[TIER]


def _evaluate(tier: str, work: Path, args: list[str]) -> Path:
    out = work / "sub.json"
    assert main(["evaluate", *args, "--tier", tier, "--model", MODEL, "--workdir", str(work), "--out", str(out),
                 "--no-progress", "--submitter", "ci"]) == 0
    return out


@pytest.fixture(scope="module")
def set_entry(tier, tmp_path_factory) -> Path:
    return _evaluate(tier, tmp_path_factory.mktemp("set"), [*SET_ENV, *SET_AGENT])


@pytest.fixture(scope="module")
def manual_entry(tier, tmp_path_factory) -> Path:
    return _evaluate(tier, tmp_path_factory.mktemp("manual"), ["--env", "PromptSST2-v0", "--agent", "manual"])


def _tampered(entry: Path, tmp_path: Path, edit) -> Path:
    sub = json.loads(entry.read_text())
    edit(sub)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(sub))
    return path


def _audit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", *argv, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_genuine_set_entry_is_reproduced_in_a_fresh_process(set_entry):
    script = ("import sys; from promptgym.bench import schema; from promptgym.cli import main; "
              f"schema.TIERS[{TIER!r}] = {BUDGET}; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", script, "audit", str(set_entry), "--seed", "42", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paragraph = proc.stdout.strip().splitlines()[-1]
    assert f"): {REPRODUCED}." in paragraph
    assert "all 3 members of the set (weights and label biases too) bit for bit" in paragraph
    assert "cma_elbo + calibration" in paragraph and "agent seed 42" in paragraph


def test_an_audit_replays_under_the_entrys_thread_settings(set_entry, tmp_path):
    """Every run records the threads its search ran under; a process started on other settings replays
    under the entry's (a BLAS rounds by thread count, and CMA-ES branches on such differences)."""
    runs = json.loads(set_entry.read_text())["runs"]
    assert all(isinstance(run["threads"]["torch"], int) and run["threads"]["torch"] >= 1 for run in runs)

    def two_threads(sub):
        for run in sub["runs"]:
            run["threads"] = {"torch": 2, "blas": 2}

    entry = _tampered(set_entry, tmp_path, two_threads)
    script = ("import sys; from promptgym.bench import schema; from promptgym.cli import main; "
              f"schema.TIERS[{TIER!r}] = {BUDGET}; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", script, "audit", str(entry), "--seed", "13", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paragraph = proc.stdout.strip().splitlines()[-1]
    assert f"): {REPRODUCED}." in paragraph
    assert "under the entry's thread settings (blas 2, torch 2)" in paragraph


def test_a_tampered_member_is_rejected(set_entry, tmp_path, capsys):
    """One value of one member changed: the replay returns the agent's own set. The run records the host kind it
    ran on: this one's, so the replay is exact and the mismatch "forged" (exit 4). Of another kind, or not
    recorded (older entries), "not reproduced" (exit 3), unless the auditor states the kinds match."""
    runs = json.loads(set_entry.read_text())["runs"]
    assert all(run["host"] == current_host() for run in runs)

    def edit(sub: dict) -> None:
        sub["runs"][1]["prompt"]["members"][2][5] += 0.25  # seed 21

    path = _tampered(set_entry, tmp_path, edit)
    code, out = _audit(capsys, str(path), "--seed", "21")
    assert code == EXIT_CODES[FORGED] == 4, out
    assert f"): {FORGED}." in out and "members: 1 of 3 differ (1 of 48 values differ, by up to 0.25)" in out
    assert f"The entry's run records this host's kind ({describe_host(current_host())})" in out

    other = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "bf16": ["AVX512-BF16", "AMX-BF16"], "torch": "2.13.0+cpu"}
    for host, said in ((other, "another kind than this host"), (None, "does not show the entry forged")):
        def moved(sub: dict, host=host) -> None:
            edit(sub)
            for run in sub["runs"]:
                run.pop("host")
                if host is not None:
                    run["host"] = host

        elsewhere = _tampered(set_entry, tmp_path, moved)
        code, out = _audit(capsys, str(elsewhere), "--seed", "21")
        assert code == EXIT_CODES[NOT_REPRODUCED] == 3, out
        assert f"): {NOT_REPRODUCED}." in out and "The replayed prompt scores" in out and said in out
        code, out = _audit(capsys, str(elsewhere), "--seed", "21", "--same-cpu")
        assert code == EXIT_CODES[FORGED] == 4, out
        assert f"): {FORGED}." in out and "--same-cpu" in out
    code, out = _audit(capsys, str(path), "--seed", "13")  # the other seeds are untouched
    assert code == 0, out


def test_an_edited_record_is_rejected_with_the_call_where_it_parts(set_entry, tmp_path, capsys):
    """The prompt as the agent returns it, but a better dev curve and fewer calls than the run had."""
    claimed = json.loads(set_entry.read_text())["runs"][0]
    point = claimed["curve"][1]

    def edit(sub: dict) -> None:
        run = sub["runs"][0]
        run["curve"][1][1] = min(1.0, point[1] + 0.25)
        run["calls_used"] -= 1

    code, out = _audit(capsys, str(_tampered(set_entry, tmp_path, edit)), "--seed", "13")
    assert code == 4, out  # the run records this host's kind: the replay is exact, the edit is forgery
    assert f"calls used: the replay used {claimed['calls_used']}, the entry claims {claimed['calls_used'] - 1}" in out
    assert f"dev curve: parts from the entry's at call {point[0]}" in out
    assert f"The dev curves part at call {point[0]}" in out


def test_the_template_baseline_is_judged_forged_on_any_host(manual_entry, tmp_path, capsys):
    """manual makes no LM call: its result is a function of the seed and config, so a mismatch is forgery."""
    code, out = _audit(capsys, str(manual_entry), "--seed", "87")
    assert code == 0 and "the prompt bit for bit" in out and "(0 calls, as the entry says)" in out, out

    def edit(sub: dict) -> None:
        sub["runs"][3]["prompt"]["label_bias"] = [0.0, 1.5]  # seed 87

    code, out = _audit(capsys, str(_tampered(manual_entry, tmp_path, edit)), "--seed", "87")
    assert code == 4, out
    assert f"): {FORGED}." in out and "label_bias: the entry has 2 values, the replay none" in out
    assert "The replay made no LM call" in out

    def unrecorded(sub: dict) -> None:  # a config field the entry does not record: the replay assumes its default
        edit(sub)
        del sub["agent"]["config"]["check_dev"]

    code, out = _audit(capsys, str(_tampered(manual_entry, tmp_path, unrecorded)), "--seed", "87")
    assert code == 3, out
    assert "not conclusive even here" in out and "Note: config field(s) check_dev are not recorded" in out


def test_an_entry_is_found_by_its_file_name_in_the_board(manual_entry, tmp_path, capsys):
    (tmp_path / "leaderboards").mkdir()
    dest = add_submission(tmp_path, json.loads(manual_entry.read_text()))
    code, out = _audit(capsys, dest.name, "--seed", "13", "--root", str(tmp_path))
    assert code == 0 and str(dest) in out, out


@pytest.mark.parametrize(("argv", "edit", "expect"), [
    (["nope.json", "--seed", "13", "--root", "TMP"], None, "unknown entry 'nope.json': no such file, nor a"),
    (["ENTRY", "--seed", "7"], None, "seed 7 is not in the entry; its seeds: 13, 21, 42, 87, 100"),
    (["ENTRY", "--seed", "13"], lambda s: s["agent"].update(name="my_agent"),
     "agent 'my_agent' is not registered here: an audit re-runs the agent's own code"),
    (["ENTRY", "--seed", "13"], lambda s: s["agent"]["config"].update(warp=3),
     "cannot replay the entry (made with promptgym 0.1.0): agent 'manual' has no config field(s) ['warp']"),
    (["ENTRY", "--seed", "13"], lambda s: s["model"].update(weights_sha256="0" * 64),
     "model.weights_sha256: does not match the local weights of tiny-random-causal"),
    (["ENTRY", "--seed", "13"], lambda s: s["runs"][0].update(calls_used=BUDGET + 1), "exceeds"),
    (["ENTRY"], None, "the following arguments are required: --seed"),
])
def test_bad_input_is_one_line_exit_2(argv, edit, expect, manual_entry, tmp_path, capsys):
    path = _tampered(manual_entry, tmp_path, edit) if edit else manual_entry
    capsys.readouterr()
    fill = {"ENTRY": str(path), "TMP": str(tmp_path)}
    assert main(["audit", *[fill.get(a, a) for a in argv], "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("promptgym: error: ") and expect in err, err


def test_help_states_the_exit_codes(capsys):
    assert main(["audit", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for verdict, code in EXIT_CODES.items():
        assert f"{code} {verdict}" in out
    assert "2 bad input" in out
