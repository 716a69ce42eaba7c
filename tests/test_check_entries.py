"""`.ci/check-entries`, the CI step that verifies the leaderboard entries a change adds or modifies.

The real script runs in a real git repository made in tmp_path (`git init`, a main branch, a
branch per case), so what is tested is what CI does: the diff against the merge base, `promptgym
submit --check` in a fresh process, the board rendered from its files. The entries are the manual
template on the tiny random model in the real `lite` tier (a fresh process knows no test tier; the
template makes no call, so it is within any budget): scores mean nothing, the path is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from promptgym.bench.store import add_submission
from promptgym.cli import main
from promptgym.metrics.stats import encode_predictions
from promptgym.tasks import load_split

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "check-entries"
ENV = "PromptSST2-v0"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.org", "-c", "commit.gpgsign=false",
                           *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def check(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    data = str(Path(os.environ["PROMPTGYM_DATA_DIR"]).resolve())
    full = {k: v for k, v in os.environ.items() if k != "PROMPTGYM_BASE_REF"}
    full.update({"PYTHON": sys.executable, "PROMPTGYM_DATA_DIR": data, "OMP_NUM_THREADS": "1", **env})
    return subprocess.run([str(SCRIPT)], cwd=repo, env=full, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("work")
    assert main(["evaluate", "--env", ENV, "--agent", "manual", "--tier", "lite", "--model", "tiny-random-causal",
                 "--workdir", str(work), "--out", str(work / "sub.json"), "--no-progress", "--submitter", "ci"]) == 0
    return json.loads((work / "sub.json").read_text())


@pytest.fixture()
def repo(tmp_path) -> Path:
    """A fresh clone's state: main checked out, a board with no entry yet."""
    repo = tmp_path / "repo"
    (repo / "leaderboards").mkdir(parents=True)
    (repo / "leaderboards" / "PROTOCOL.md").write_text("the protocol\n")
    (repo / "README.md").write_text("promptgym\n")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "base")
    return repo


def forged(sub: dict) -> dict:
    """Gold-label predictions and their true metric for seed 13: self-consistent, not earned."""
    out = json.loads(json.dumps(sub))
    labels = np.asarray(load_split("sst2", "test").labels)
    out["runs"][0]["test"]["predictions"] = encode_predictions(labels)
    out["runs"][0]["test"]["metric"] = 1.0
    out["submitter"] = "forger"
    return out


def test_on_main_itself_nothing_is_checked_and_no_python_starts(repo):
    proc = check(repo, PYTHON="/bin/false")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to verify" in proc.stdout


def test_a_genuine_entry_passes_and_a_forged_one_fails(repo, genuine):
    git(repo, "checkout", "-q", "-b", "genuine", "main")
    path = add_submission(repo, genuine).relative_to(repo)
    commit_all(repo, "add an entry")
    proc = check(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok: {path}" in proc.stdout and "1 entries verified" in proc.stdout

    # a forged entry, correctly named after its content (so only re-scoring can tell), in its own branch
    git(repo, "checkout", "-q", "-b", "forged", "main")
    path = add_submission(repo, forged(genuine)).relative_to(repo)
    commit_all(repo, "add a better entry")
    proc = check(repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"promptgym: error: {path}: runs[0].test.metric"), proc.stderr


def test_an_entry_edited_after_it_landed_fails(repo, genuine):
    """Its scores are still genuine, but the file is no longer the one that was verified (its name is its hash)."""
    path = add_submission(repo, genuine)
    commit_all(repo, "an entry on main")
    git(repo, "checkout", "-q", "-b", "edit", "main")
    path.write_text(path.read_text().replace('"submitter": "ci"', '"submitter": "someone else"'))
    commit_all(repo, "edit the entry")
    proc = check(repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "file name does not match its content" in proc.stderr


def test_entries_land_alone_and_pages_are_rendered_not_written(repo, genuine):
    git(repo, "checkout", "-q", "-b", "mixed", "main")
    add_submission(repo, genuine)
    (repo / "README.md").write_text("promptgym, changed\n")
    commit_all(repo, "an entry and a code change")
    proc = check(repo, PYTHON="/bin/false")  # refused before any Python runs
    assert proc.returncode == 2 and "must change nothing else (also changed: README.md)" in proc.stderr

    git(repo, "checkout", "-q", "-b", "page", "main")
    (repo / "leaderboards" / "index.html").write_text("<p>first place: me</p>\n")
    commit_all(repo, "a page written by hand")
    proc = check(repo)
    assert proc.returncode == 2
    assert "leaderboards/index.html is not what `promptgym leaderboard` renders" in proc.stderr


def test_a_missing_base_is_an_error_not_a_skip(repo):
    proc = check(repo, PROMPTGYM_BASE_REF="nope")
    assert proc.returncode == 2 and "unknown base nope" in proc.stderr
    git(repo, "checkout", "-q", "--orphan", "unrelated")  # no merge base, as in a shallow clone
    commit_all(repo, "unrelated history")
    proc = check(repo)
    assert proc.returncode == 2 and "no merge base of main and HEAD" in proc.stderr
