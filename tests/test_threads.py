"""Thread settings (``promptgym.threads``): recorded by a run, applied by its resume, restored after.

Why it matters: numpy's BLAS sums a product's terms in an order that depends on its thread count,
so an agent's arithmetic (pycma's eigendecomposition, SNPE's flows) is deterministic only on one
setting; a resume under another one would ask for other prompts than the killed run did.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import promptgym  # noqa: F401  (registers the env ids)
from promptgym.callbacks import Callback
from promptgym.errors import ConfigError
from promptgym.journal import CallJournal, journal_identity
from promptgym.runner import run_agent
from promptgym.threads import check_threads, current_threads, pinned_threads

ONE = {"torch": 1, "blas": 1}


def _bbt(journal: Path | None = None, callback: Callback | None = None):
    return run_agent("PromptSST2-Subspace-v0", "bbt", 80, seed=3, model="tiny-random-causal", dtype="float32",
                     env_kwargs={"intrinsic_dim": 16, "prompt_length": 4, "batch_size": 8},
                     agent_kwargs={"popsize": 6, "dev_every": 2}, progress=False, journal=journal, callback=callback)


class ThreadProbe(Callback):
    """Reads the thread settings at every charged call of the search."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def on_call(self, split, outcomes):
        self.seen.append(current_threads())


def test_pinned_threads_applies_inside_and_restores_after():
    before = current_threads()
    with pinned_threads({"torch": 3, "blas": 1}) as inside:
        assert torch.get_num_threads() == 3
        assert inside["torch"] == 3 and inside["blas"] in (1, None)  # None: no BLAS library found at all
    assert current_threads() == before
    with pinned_threads(None) as inside:  # nothing pinned: the process's own settings
        assert inside == before


def test_pinned_threads_restores_after_an_exception():
    before = current_threads()
    with pytest.raises(RuntimeError), pinned_threads({"torch": 3}):
        raise RuntimeError("killed")
    assert current_threads() == before


@pytest.mark.parametrize("bad", [{"torch": 0}, {"blas": -2}, {"torch": True}, {"torch": 1.5}, {"cores": 2}, [1, 2]])
def test_bad_thread_settings_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match="thread setting") as exc:
        check_threads(bad)
    assert "\n" not in str(exc.value)


def test_a_resume_searches_under_the_killed_runs_threads(tmp_path, kill_after_batches):
    with pinned_threads(ONE):
        whole = _bbt()
    path = tmp_path / "calls.journal"
    with pinned_threads(ONE), kill_after_batches(3):
        _bbt(path)
    recorded = CallJournal(path, journal_identity(path)).threads
    assert recorded is not None and recorded["torch"] == 1
    probe = ThreadProbe()
    with pinned_threads({"torch": 2}):  # the resuming process runs on other settings
        resumed = _bbt(path, probe)
        assert torch.get_num_threads() == 2  # restored once the run is over
    assert resumed.replayed_calls > 0 and probe.seen
    assert all(seen == recorded for seen in probe.seen)
    assert resumed.threads == recorded
    assert np.array_equal(np.asarray(resumed.result.action), np.asarray(whole.result.action))
    assert resumed.result.calls_used == whole.result.calls_used


def test_a_new_run_records_the_threads_it_searched_under(tmp_path):
    with pinned_threads({"torch": 1}):
        run = _bbt(tmp_path / "calls.journal")
    assert run.threads is not None and run.threads["torch"] == 1
    head = CallJournal(tmp_path / "calls.journal", journal_identity(tmp_path / "calls.journal"))
    assert head.threads == run.threads


def test_a_journal_written_before_threads_were_recorded_still_resumes(tmp_path, kill_after_batches):
    path = tmp_path / "calls.journal"
    with kill_after_batches(2):
        _bbt(path)
    lines = path.read_text().splitlines()
    head = json.loads(lines[0])
    head.pop("threads")
    path.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    resumed = _bbt(path)
    assert resumed.replayed_calls > 0
    assert resumed.threads == current_threads()
